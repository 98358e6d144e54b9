"""What must survive a restart, in one SQLite file: registrations, bans, and
the confirmed calls (with the VOS3000 address each lives on).

The engine keeps time on the monotonic clock, which means nothing after a
restart, so a binding is written with its wall-clock expiry and read back
against the monotonic clock of the new process (`to_rows`, `from_rows`).

The schema is versioned: `schema_version` holds the number of migrations
applied, and opening a file applies the ones it lacks, each in its own
transaction. A file written by a newer sbc (a higher version) is refused
rather than guessed at.

Every sqlite3 failure leaves this module as StoreError with the file name in
its message, so the CLI can print it and exit.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

from ..core.identify.registrar import Binding


class StoreError(Exception):
    """The database cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class BindingRow:
    aor: str
    contact: bytes
    channel: int
    host: str
    port: int
    expires_wall: float  # wall-clock seconds (time.time())
    call_id: bytes
    cseq: int
    gateway: str


# Migration n (1-based) brings the schema from version n-1 to n. Append only.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE bindings (
               aor TEXT NOT NULL,
               position INTEGER NOT NULL,
               contact BLOB NOT NULL,
               channel INTEGER NOT NULL,
               host TEXT NOT NULL,
               port INTEGER NOT NULL,
               expires_wall REAL NOT NULL,
               call_id BLOB NOT NULL,
               cseq INTEGER NOT NULL,
               gateway TEXT NOT NULL,
               PRIMARY KEY (aor, position)
           )""",
    ),
    (
        # One row per source ever banned: the active ban, or the last one (its
        # level makes a repeat offender's next ban longer). `lifted` marks an
        # unban; `updated_wall` lets a running sbc pick up an operator's
        # `sbc ban` / `sbc unban` from the file.
        """CREATE TABLE bans (
               host TEXT PRIMARY KEY,
               reason TEXT NOT NULL,
               counts TEXT NOT NULL,
               first_seen_wall REAL NOT NULL,
               last_seen_wall REAL NOT NULL,
               level INTEGER NOT NULL,
               banned_wall REAL NOT NULL,
               expires_wall REAL NOT NULL,
               manual INTEGER NOT NULL,
               lifted INTEGER NOT NULL,
               updated_wall REAL NOT NULL
           )""",
        "CREATE INDEX bans_updated ON bans (updated_wall)",
    ),
    (
        # Confirmed calls: what keeps concurrency right and lets sbc still send
        # the duration-limit BYEs after a restart in the middle of calls.
        """CREATE TABLE dialogs (
               call_id BLOB PRIMARY KEY,
               gateway TEXT NOT NULL,
               peer_channel INTEGER NOT NULL,
               peer_host TEXT NOT NULL,
               peer_port INTEGER NOT NULL,
               egress INTEGER NOT NULL,
               inbound INTEGER NOT NULL,
               from_value BLOB NOT NULL,
               to_value BLOB NOT NULL,
               peer_contact BLOB NOT NULL,
               backend_contact BLOB NOT NULL,
               cseq_peer INTEGER NOT NULL,
               cseq_backend INTEGER NOT NULL,
               created_wall REAL NOT NULL,
               confirmed_wall REAL NOT NULL,
               expire_wall REAL NOT NULL,
               bye_wall REAL NOT NULL
           )""",
    ),
    (
        # The VOS3000 address each call lives on (several may be configured);
        # empty in rows from before: those calls are on the primary.
        "ALTER TABLE dialogs ADD COLUMN backend_host TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE dialogs ADD COLUMN backend_port INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # The public TLS channel took number 2: private (egress) channels,
        # which dialogs keep as `egress`, start at 3 from here on.
        "UPDATE dialogs SET egress = egress + 1 WHERE egress >= 2",
    ),
    (
        # In a cluster, the node that made the ban ("": this one, alone).
        "ALTER TABLE bans ADD COLUMN node TEXT NOT NULL DEFAULT ''",
    ),
    (
        # The toll-fraud watch (sbc.state.fraud): each gateway's counters,
        # block and calls in progress under each rule, as one JSON record;
        # and the operators' clears, asked for by `sbc fraud clear` (applied
        # by the running sbc, which fills in applied_wall) or the admin API.
        """CREATE TABLE IF NOT EXISTS fraud_scopes (
               gateway TEXT NOT NULL,
               rule TEXT NOT NULL,
               body TEXT NOT NULL,
               updated_wall REAL NOT NULL,
               PRIMARY KEY (gateway, rule)
           )""",
        """CREATE TABLE IF NOT EXISTS fraud_clears (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               gateway TEXT NOT NULL,
               rule TEXT NOT NULL,
               by TEXT NOT NULL,
               note TEXT NOT NULL,
               requested_wall REAL NOT NULL,
               applied_wall REAL NOT NULL DEFAULT 0,
               lifted INTEGER NOT NULL DEFAULT 0
           )""",
        "CREATE INDEX IF NOT EXISTS fraud_clears_pending ON fraud_clears (applied_wall)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class DialogRow(NamedTuple):
    call_id: bytes
    gateway: str
    peer_channel: int
    peer_host: str
    peer_port: int
    egress: int
    inbound: bool
    from_value: bytes
    to_value: bytes
    peer_contact: bytes
    backend_contact: bytes
    cseq_peer: int
    cseq_backend: int
    created_wall: float
    confirmed_wall: float
    expire_wall: float
    bye_wall: float  # 0: no duration limit
    backend_host: str = ""  # the VOS3000 the call lives on; "": the primary
    backend_port: int = 0


@dataclass(frozen=True, slots=True)
class BanRow:
    host: str
    reason: str
    counts: dict[str, int]
    first_seen_wall: float
    last_seen_wall: float
    level: int
    banned_wall: float
    expires_wall: float
    manual: bool
    lifted: bool
    updated_wall: float
    node: str = ""


class FraudClearRow(NamedTuple):
    id: int
    gateway: str  # "*": every gateway
    rule: str  # "*": every rule
    by: str
    note: str
    requested_wall: float
    applied_wall: float  # 0: not applied yet
    lifted: bool  # a block stood and was lifted


class Store:
    """One SQLite connection, used from one thread."""

    __slots__ = ("_conn", "_name")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._name = os.fspath(path)
        try:
            # isolation_level=None: transactions are the explicit BEGIN/COMMIT below.
            self._conn = sqlite3.connect(self._name, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot open database: {e}") from None
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL still never corrupts the file; a power cut may
            # lose the last registrations, which the phones repeat anyway.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.Error as e:
            self._conn.close()
            raise StoreError(f"{self._name}: not a usable sbc database: {e}") from None
        except StoreError:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self._name}: schema version {version} is newer than this sbc "
                             f"understands ({SCHEMA_VERSION})")
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for n in range(version, SCHEMA_VERSION):
            with _transaction(conn):
                for sql in _MIGRATIONS[n]:
                    conn.execute(sql)
                conn.execute("UPDATE schema_version SET version = ?", (n + 1,))

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def save_bindings(self, aor: str, rows: list[BindingRow]) -> None:
        """Replace every stored row of `aor` with `rows` (none: forget the AOR),
        in one transaction; the order of `rows` is kept."""
        try:
            with _transaction(self._conn):
                self._conn.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
                self._conn.executemany(
                    "INSERT INTO bindings (aor, position, contact, channel, host, port,"
                    " expires_wall, call_id, cseq, gateway) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(aor, i, r.contact, r.channel, r.host, r.port, r.expires_wall, r.call_id,
                      r.cseq, r.gateway) for i, r in enumerate(rows)],
                )
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot save bindings: {e}") from None

    def load_bindings(self, wall_now: float) -> list[BindingRow]:
        """The rows that have not expired by `wall_now`, in saved order per AOR.

        Expired rows are left in place, not deleted: a wall clock that is wrong
        at boot must not destroy registrations. They go when their AOR is
        next saved."""
        try:
            cur = self._conn.execute(
                "SELECT aor, contact, channel, host, port, expires_wall, call_id, cseq, gateway"
                " FROM bindings WHERE expires_wall > ? ORDER BY aor, position", (wall_now,))
            return [BindingRow(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], bytes(r[6]), r[7],
                               r[8]) for r in cur]
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot load bindings: {e}") from None

    def save_ban(self, row: BanRow) -> None:
        self.save_bans([row])

    def save_bans(self, rows: list[BanRow]) -> None:
        """Many bans in one transaction (a flood bans thousands of sources at once)."""
        try:
            with _transaction(self._conn):
                self._conn.executemany(
                    "INSERT OR REPLACE INTO bans (host, reason, counts, first_seen_wall,"
                    " last_seen_wall, level, banned_wall, expires_wall, manual, lifted,"
                    " updated_wall, node) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(r.host, r.reason, json.dumps(r.counts, sort_keys=True), r.first_seen_wall,
                      r.last_seen_wall, r.level, r.banned_wall, r.expires_wall, int(r.manual),
                      int(r.lifted), r.updated_wall, r.node) for r in rows])
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot save bans: {e}") from None

    def load_bans(self, updated_after: float = -1.0, limit: int = 1_000_000) -> list[BanRow]:
        """Rows changed after `updated_after` (all by default), most recent last."""
        try:
            cur = self._conn.execute(
                "SELECT host, reason, counts, first_seen_wall, last_seen_wall, level, banned_wall,"
                " expires_wall, manual, lifted, updated_wall, node FROM bans WHERE updated_wall > ?"
                " ORDER BY updated_wall LIMIT ?", (updated_after, limit))
            return [BanRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7], bool(r[8]),
                           bool(r[9]), r[10], r[11]) for r in cur]
        except (sqlite3.Error, ValueError) as e:
            raise StoreError(f"{self._name}: cannot load bans: {e}") from None

    def prune_bans(self, older_than_wall: float) -> int:
        """Forget sources whose last ban ended before `older_than_wall`."""
        try:
            with _transaction(self._conn):
                cur = self._conn.execute("DELETE FROM bans WHERE expires_wall < ?",
                                         (older_than_wall,))
            return cur.rowcount
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot prune bans: {e}") from None

    def apply_dialogs(self, upserts: list[DialogRow], deletes: list[bytes]) -> None:
        """One transaction for a batch of dialog changes."""
        try:
            with _transaction(self._conn):
                if deletes:
                    self._conn.executemany("DELETE FROM dialogs WHERE call_id = ?",
                                           [(c,) for c in deletes])
                if upserts:
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO dialogs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [tuple(r) for r in upserts])
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot save dialogs: {e}") from None

    def load_dialogs(self, wall_now: float) -> list[DialogRow]:
        try:
            cur = self._conn.execute("SELECT * FROM dialogs WHERE expire_wall > ?", (wall_now,))
            return [DialogRow(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), bytes(r[7]),
                              bytes(r[8]), bytes(r[9]), bytes(r[10]), r[11], r[12], r[13], r[14],
                              r[15], r[16], r[17], r[18]) for r in cur]
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot load dialogs: {e}") from None

    # ------------------------------------------------------------------ toll-fraud watch

    def save_fraud(self, upserts: list[tuple[str, str, dict[str, Any]]],
                   deletes: list[tuple[str, str]], wall: float) -> None:
        """One transaction for the scopes that changed: (gateway, rule, record)."""
        try:
            with _transaction(self._conn):
                self._conn.executemany("DELETE FROM fraud_scopes WHERE gateway = ? AND rule = ?",
                                       deletes)
                self._conn.executemany(
                    "INSERT OR REPLACE INTO fraud_scopes VALUES (?,?,?,?)",
                    [(g, r, json.dumps(body, separators=(",", ":")), wall)
                     for g, r, body in upserts])
        except (sqlite3.Error, ValueError) as e:
            raise StoreError(f"{self._name}: cannot save fraud state: {e}") from None

    def load_fraud(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(r[0]) for r in self._conn.execute("SELECT body FROM fraud_scopes")]
        except (sqlite3.Error, ValueError) as e:
            raise StoreError(f"{self._name}: cannot load fraud state: {e}") from None

    def add_fraud_clear(self, gateway: str, rule: str, by: str, note: str, wall: float,
                        applied_wall: float = 0.0, lifted: bool = False) -> int:
        """An operator's clear; applied_wall 0: for the running sbc to apply."""
        try:
            with _transaction(self._conn):
                cur = self._conn.execute(
                    "INSERT INTO fraud_clears (gateway, rule, by, note, requested_wall,"
                    " applied_wall, lifted) VALUES (?,?,?,?,?,?,?)",
                    (gateway, rule, by, note, wall, applied_wall, int(lifted)))
            return int(cur.lastrowid or 0)
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot save a fraud clear: {e}") from None

    def fraud_clears(self, pending: bool = False, limit: int = 200) -> list[FraudClearRow]:
        """Clears, newest first (pending: not applied yet, oldest first)."""
        sql = ("SELECT id, gateway, rule, by, note, requested_wall, applied_wall, lifted"
               " FROM fraud_clears " + ("WHERE applied_wall = 0 ORDER BY id" if pending
                                        else "ORDER BY id DESC") + " LIMIT ?")
        try:
            return [FraudClearRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))
                    for r in self._conn.execute(sql, (limit,))]
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot read fraud clears: {e}") from None

    def fraud_clear_applied(self, clear_id: int, wall: float, lifted: bool) -> None:
        try:
            with _transaction(self._conn):
                self._conn.execute("UPDATE fraud_clears SET applied_wall = ?, lifted = ?"
                                   " WHERE id = ?", (wall, int(lifted), clear_id))
        except sqlite3.Error as e:
            raise StoreError(f"{self._name}: cannot save a fraud clear: {e}") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block raises."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def to_rows(bindings: Iterable[Binding], mono_now: float, wall_now: float) -> list[BindingRow]:
    """Bindings (monotonic expiry) as rows (wall-clock expiry)."""
    return [BindingRow(b.aor, b.contact, b.source[0], b.source[1], b.source[2],
                       wall_now + (b.expires_at - mono_now), b.call_id, b.cseq, b.gateway)
            for b in bindings]


def from_rows(rows: Iterable[BindingRow], mono_now: float, wall_now: float) -> list[Binding]:
    """Rows (wall-clock expiry) as bindings on this process's monotonic clock."""
    return [Binding(r.aor, r.contact, (r.channel, r.host, r.port),
                    mono_now + (r.expires_wall - wall_now), r.call_id, r.cseq, r.gateway)
            for r in rows]
