"""The SQLite store: registrations survive a restart; a bad file is a StoreError."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sbc.core.identify.registrar import Binding, Registrar
from sbc.core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP
from sbc.sip import parse_message
from sbc.state import store as store_module
from sbc.state.store import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    BindingRow,
    Store,
    StoreError,
    from_rows,
    to_rows,
)

WALL = 1_700_000_000.0


def row(aor: str = "alice", host: str = "192.168.1.5", expires_wall: float = WALL + 600,
        cseq: int = 1) -> BindingRow:
    return BindingRow(aor, f"sip:{aor}@{host}:5060;ob".encode(), int(PUBLIC_UDP), "203.0.113.7",
                      40123, expires_wall, b"reg-1@phone", cseq, "gw1")


def test_round_trip_in_memory() -> None:
    with Store(":memory:") as s:
        rows = [row(host="h1"), row(host="h2", expires_wall=WALL + 60)]
        s.save_bindings("alice", rows)
        assert s.load_bindings(WALL) == rows
        assert s.schema_version == SCHEMA_VERSION


def test_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sbc.db"
    s = Store(path)
    s.save_bindings("alice", [row(host="h2"), row(host="h1")])
    s.save_bindings("bob", [row("bob")])
    s.close()
    with Store(str(path)) as s:
        loaded = s.load_bindings(WALL)
    assert loaded == [row(host="h2"), row(host="h1"), row("bob")]  # saved order per AOR
    assert isinstance(loaded[0].contact, bytes) and isinstance(loaded[0].call_id, bytes)


def test_wal_mode_on_a_file(tmp_path: Path) -> None:
    with Store(tmp_path / "sbc.db"):
        pass
    conn = sqlite3.connect(tmp_path / "sbc.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_expired_rows_not_loaded(tmp_path: Path) -> None:
    with Store(tmp_path / "sbc.db") as s:
        s.save_bindings("alice", [row(host="old", expires_wall=WALL - 1),
                                  row(host="edge", expires_wall=WALL),
                                  row(host="live", expires_wall=WALL + 1)])
        assert [r.contact for r in s.load_bindings(WALL)] == [b"sip:alice@live:5060;ob"]
        # Not deleted: a wall clock that was wrong at boot loses nothing.
        assert len(s.load_bindings(WALL - 10)) == 3


def test_save_replaces_all_rows_of_that_aor_only() -> None:
    with Store(":memory:") as s:
        s.save_bindings("alice", [row(host="h1"), row(host="h2")])
        s.save_bindings("bob", [row("bob")])
        s.save_bindings("alice", [row(host="h3", cseq=2)])
        assert s.load_bindings(WALL) == [row(host="h3", cseq=2), row("bob")]
        s.save_bindings("alice", [])
        assert s.load_bindings(WALL) == [row("bob")]


def test_failed_save_keeps_the_old_rows() -> None:
    with Store(":memory:") as s:
        s.save_bindings("alice", [row(host="h1")])
        bad = BindingRow("alice", b"sip:x@h", 0, "h", 1, WALL + 9, b"c", 1, None)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="cannot save"):
            s.save_bindings("alice", [row(host="h2"), bad])
        assert s.load_bindings(WALL) == [row(host="h1")]


def test_monotonic_wall_conversion() -> None:
    mono, wall = 500.0, WALL
    b = Binding("alice", b"sip:alice@h", (PUBLIC_TCP, "198.51.100.2", 61000), mono + 120.0,
                b"c@x", 7, "gw1")
    (r,) = to_rows([b], mono, wall)
    assert r == BindingRow("alice", b"sip:alice@h", int(PUBLIC_TCP), "198.51.100.2", 61000,
                           wall + 120.0, b"c@x", 7, "gw1")
    # After a restart the monotonic clock starts elsewhere and 30 s have passed.
    (back,) = from_rows([r], 10.0, wall + 30.0)
    assert back == Binding("alice", b"sip:alice@h", (PUBLIC_TCP, "198.51.100.2", 61000),
                           10.0 + 90.0, b"c@x", 7, "gw1")


def test_registrar_through_a_restart(tmp_path: Path) -> None:
    """REGISTER, persist, stop; start with other clocks, load, look up."""
    msg = parse_message(
        b"REGISTER sip:sbc SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@sbc>;tag=1\r\nTo: <sip:alice@sbc>\r\nCall-ID: r1\r\n"
        b"CSeq: 3 REGISTER\r\nContact: <sip:alice@192.168.1.5>;expires=600\r\n"
        b"Content-Length: 0\r\n\r\n")
    reg = Registrar()
    source = (int(PUBLIC_UDP), "203.0.113.7", 40123)
    assert reg.register(msg, "alice", "gw1", source, 100.0).changed
    with Store(tmp_path / "sbc.db") as s:
        s.save_bindings("alice", to_rows(reg.bindings("alice"), 100.0, WALL))

    reg2 = Registrar()
    with Store(tmp_path / "sbc.db") as s:
        reg2.load(from_rows(s.load_bindings(WALL + 200), 5.0, WALL + 200), 5.0)
    (b,) = reg2.lookup("alice", 5.0)
    assert (b.contact, b.source, b.cseq, b.expires_at) == (b"sip:alice@192.168.1.5", source, 3,
                                                           405.0)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database, just some text that is long enough" * 100,
        b"SQLite format 3\x00" + b"\xff" * 200,
    ],
)
def test_corrupt_file_is_store_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sbc.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="sbc.db"):
        Store(path)


def test_unopenable_path_is_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open|not a usable"):
        Store(tmp_path / "missing-dir" / "sbc.db")
    with pytest.raises(StoreError):
        Store(tmp_path)  # a directory


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sbc.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_dialogs_from_before_the_backend_columns_migrate(tmp_path: Path) -> None:
    """A file at schema 3 (no VOS3000 address per call) gains the columns; its
    rows read back with an empty address (the engine puts them on the primary)."""
    path = tmp_path / "sbc.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE dialogs")
        conn.execute(store_module._MIGRATIONS[2][0])
        conn.execute("DROP TABLE bans")  # and the bans as they were then
        for sql in store_module._MIGRATIONS[1]:
            conn.execute(sql)
        conn.execute("INSERT INTO dialogs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (b"c@x", "acme", 0, "192.0.2.1", 5060, 2, 0, b"f", b"t", b"pc", b"bc", 1, 0,
                      WALL, WALL, WALL + 3600, 0.0))
        conn.execute("UPDATE schema_version SET version = 3")
    conn.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 7
        (row,) = s.load_dialogs(WALL)
        assert row.call_id == b"c@x" and (row.backend_host, row.backend_port) == ("", 0)
        s.apply_dialogs([row._replace(backend_host="10.0.0.2", backend_port=5070)], [])
        assert s.load_dialogs(WALL)[0][-2:] == ("10.0.0.2", 5070)


def test_dialogs_of_an_older_file_keep_their_egress_socket(tmp_path: Path) -> None:
    """Version 3 numbered the private channels from 2; from version 4 they
    start at 3 (the public TLS channel took 2). Opening migrates the rows."""
    path = tmp_path / "sbc.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (3)")
    for migration in _MIGRATIONS[:3]:
        for sql in migration:
            conn.execute(sql)
    for call_id, egress in ((b"shared", 2), (b"own-egress", 4)):
        conn.execute("INSERT INTO dialogs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (call_id, "gw1", int(PUBLIC_TCP), "203.0.113.7", 40123, egress, 0, b"f", b"t",
                      b"sip:a@h", b"sip:b@h", 1, 1, WALL, WALL, WALL + 60, 0.0))
    conn.commit()
    conn.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        egress = {r.call_id: r.egress for r in s.load_dialogs(WALL)}
    assert egress == {b"shared": PRIVATE, b"own-egress": PRIVATE + 2}
    assert PUBLIC_TLS == 2
