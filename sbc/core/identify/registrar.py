"""The location service for digest accounts (RFC 3261 §10.3): which contacts
an account has registered, from which source, until when.

Pure: the caller has already authenticated the REGISTER and names the
address-of-record (the account username); it passes `now` (monotonic
seconds) in and sends the response built from the returned status and header
lines. A call toward a binding goes to the binding's `source`, the address
the REGISTER came from, not to the host in its Contact: behind a NAT the
Contact names a private address nobody outside can reach.

Rules, in the order RFC 3261 §10.3 applies them:

- No Contact: a query; 200 with the current bindings, nothing changes.
- `Contact: *` must stand alone with `Expires: 0` (anything else is 400) and
  removes every binding of the address-of-record (step 6).
- Each other contact's lifetime is its `expires` parameter, else the Expires
  header, else `default_expires`. A lifetime of 0 removes the binding; a
  lifetime under `min_expires` fails the whole request with 423 and a
  Min-Expires header (step 5); a longer one than `max_expires` is cut to it.
- Step 7 is enforced: a request that would update or remove a binding with
  the same Call-ID and a CSeq that is not higher than the stored one fails
  with 500 (a reordered or replayed REGISTER must not undo a newer one).
- Updates are all or nothing: any failure leaves the bindings untouched.

Contacts are compared by scheme, user, host (case-insensitive), port and
`transport` parameter, a subset of the URI comparison of RFC 3261 §19.1.4
that treats URIs differing only in other parameters as one binding.

Everything is bounded: a contact value over `MAX_CONTACT_LEN` bytes is 400;
an address-of-record keeps at most `max_contacts` bindings, and when a
request brings more, the least recently registered bindings are dropped
(the newest registration wins, as a phone that re-registers after losing its
NAT mapping would expect); at most `max_aors` addresses-of-record hold
bindings, and a REGISTER that would add one more is 503.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from ...sip import Message, SipParseError, header_param, name_addr_uri, parse_uri, split_values

# (channel as in sbc.core.verdict.Channel, host, port) the REGISTER came from
Source = tuple[int, str, int]

MAX_CONTACT_LEN = 512
# RFC 3261 §20.19: a delta-seconds over 2**32-1 is taken as 2**32-1.
_MAX_DELTA = 2**32 - 1
# Octets allowed in a stored Contact URI: visible ASCII other than the
# delimiters of a name-addr. The URI goes back out as a Request-URI and in
# Contact lines, so nothing in it may end or split a line or a value.
_URI_OCTETS = frozenset(range(0x21, 0x7F)) - frozenset(b'<>"')


@dataclass(slots=True)
class Binding:
    aor: str  # the account username
    contact: bytes  # the Contact URI (without <>), as sent
    source: Source  # where the REGISTER came from: calls to this binding go here
    expires_at: float  # monotonic seconds
    call_id: bytes
    cseq: int
    gateway: str


@dataclass(frozen=True, slots=True)
class RegisterResult:
    status: int  # 200, 400, 423, 500, 503
    # Extra header lines for the response: one Contact line per current
    # binding on a 200, Min-Expires on a 423.
    headers: tuple[bytes, ...]
    changed: bool  # bindings of this address-of-record changed: persist them
    reason: str = ""  # a short fixed name for a failure, for logs and metrics


class _Reject(Exception):
    """A REGISTER that fails as a whole, with the status to answer."""

    def __init__(self, status: int, reason: str, headers: tuple[bytes, ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


_ContactKey = tuple[str, bytes | None, str, int | None, bytes]


class Registrar:
    """Bindings by address-of-record, each list ordered from the least to the
    most recently registered binding."""

    __slots__ = (
        "_count",
        "_deadlines",
        "_hosts",
        "_table",
        "default_expires",
        "max_aors",
        "max_contacts",
        "max_expires",
        "min_expires",
    )

    def __init__(self, *, min_expires: int = 60, max_expires: int = 3600,
                 default_expires: int = 3600, max_contacts: int = 5,
                 max_aors: int = 100_000) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        if max_contacts < 1 or max_aors < 1:
            raise ValueError("max_contacts and max_aors must be positive")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = min(max(default_expires, min_expires), max_expires)
        self.max_contacts = max_contacts
        self.max_aors = max_aors
        self._table: dict[str, list[Binding]] = {}
        self._count = 0
        self._hosts: dict[str, int] = {}  # bindings by the host they registered from
        # (expires_at, aor) per binding ever stored; entries for bindings since
        # refreshed or removed are skipped when they come up, and the heap is
        # rebuilt when they outnumber the live ones.
        self._deadlines: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return self._count

    # ------------------------------------------------------------------
    # REGISTER

    def register(self, msg: Message, aor: str, gateway: str, source: Source,
                 now: float) -> RegisterResult:
        """Apply an authenticated REGISTER for `aor`; never raises for bad input."""
        stored = self._table.get(aor, [])
        current = [b for b in stored if b.expires_at > now]
        try:
            values = _contact_values(msg)
            if values:
                new = self._updated(msg, aor, gateway, source, now, current, values)
            else:
                new = current
        except _Reject as r:
            return RegisterResult(r.status, r.headers, False, r.reason)
        if new and aor not in self._table and len(self._table) >= self.max_aors:
            self.expire(now)
            if len(self._table) >= self.max_aors:
                return RegisterResult(503, (), False, "registrar_full")
        changed = new != stored
        if changed:
            self._store(aor, new)
        return RegisterResult(200, tuple(_contact_line(b, now) for b in reversed(new)), changed)

    def _updated(self, msg: Message, aor: str, gateway: str, source: Source, now: float,
                 current: list[Binding], values: list[bytes]) -> list[Binding]:
        """The bindings `current` becomes after the request's contacts, or _Reject."""
        if b"*" in values:
            # RFC 3261 §10.3 step 6: the wildcard stands alone, with Expires: 0.
            header = msg.get("expires")
            if len(values) != 1 or header is None or _delta(header, "bad_expires") != 0:
                raise _Reject(400, "bad_wildcard")
            for b in current:
                _check_order(b, msg)
            return []
        header = msg.get("expires")
        header_expires = self.default_expires if header is None else _delta(header,
                                                                             "bad_expires")
        updates: dict[_ContactKey, tuple[bytes, int]] = {}
        for value in values:
            uri, key = _contact_uri(value)
            try:
                param = header_param(value, b"expires")
            except SipParseError:
                raise _Reject(400, "bad_contact") from None
            expires = header_expires if param is None else _delta(param, "bad_contact_expires")
            if 0 < expires < self.min_expires:
                raise _Reject(423, "interval_too_brief",
                              (b"Min-Expires: %d" % self.min_expires,))
            updates.pop(key, None)  # a repeated contact: the last one counts, as the newest
            updates[key] = (uri, min(expires, self.max_expires))
        new = []
        for b in current:
            key = _uri_key(b.contact)
            if key in updates:
                _check_order(b, msg)
            else:
                new.append(b)
        for uri, expires in updates.values():
            if expires > 0:
                new.append(Binding(aor, uri, source, now + expires, msg.call_id, msg.cseq,
                                   gateway))
        # Over the cap: the least recently registered bindings go.
        return new[-self.max_contacts :]

    # ------------------------------------------------------------------
    # Lookup, persistence, expiry

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """The unexpired bindings of `aor`, most recently registered first."""
        return [b for b in reversed(self._table.get(aor, ())) if b.expires_at > now]

    def bindings(self, aor: str) -> list[Binding]:
        """Every stored binding of `aor`, expired or not, least recently registered
        first (the order `load` expects back)."""
        return list(self._table.get(aor, ()))

    def aors(self) -> list[str]:
        """The addresses-of-record that hold bindings."""
        return list(self._table)

    def load(self, bindings: Iterable[Binding], now: float) -> None:
        """Restore bindings (least recently registered first per AOR), skipping
        expired ones; the same caps apply as to REGISTER."""
        grouped: dict[str, list[Binding]] = {}
        for b in bindings:
            if b.expires_at > now:
                grouped.setdefault(b.aor, []).append(b)
        for aor, restored in grouped.items():
            if aor not in self._table and len(self._table) >= self.max_aors:
                continue
            merged: dict[_ContactKey, Binding] = {}
            for b in [*self._table.get(aor, ()), *restored]:
                try:
                    key = _uri_key(b.contact)
                except _Reject:
                    continue
                merged.pop(key, None)
                merged[key] = b
            self._store(aor, list(merged.values())[-self.max_contacts :])

    def expire(self, now: float) -> list[str]:
        """Drop the bindings that expired by `now`; the AORs whose bindings changed."""
        changed: list[str] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, aor = heapq.heappop(heap)
            stored = self._table.get(aor)
            if stored is None:
                continue
            alive = [b for b in stored if b.expires_at > now]
            if len(alive) != len(stored):
                self._store(aor, alive)
                changed.append(aor)
        if len(heap) > 2 * self._count + 64:
            self._deadlines = [(b.expires_at, b.aor) for bs in self._table.values() for b in bs]
            heapq.heapify(self._deadlines)
        return changed

    def has_host(self, host: str, now: float) -> bool:
        """Whether an account registered from `host` (a live binding): proof
        that the address answers what is sent to it (the nonce was bound to it)."""
        return host in self._hosts

    def next_deadline(self) -> float | None:
        """When `expire` may next have something to do, or None."""
        return self._deadlines[0][0] if self._deadlines else None

    def _store(self, aor: str, new: list[Binding]) -> None:
        old = self._table.get(aor)
        self._count += len(new) - (len(old) if old else 0)
        hosts = self._hosts
        for b in old or ():
            left = hosts.get(b.source[1], 0) - 1
            if left > 0:
                hosts[b.source[1]] = left
            else:
                hosts.pop(b.source[1], None)
        for b in new:
            hosts[b.source[1]] = hosts.get(b.source[1], 0) + 1
        if new:
            self._table[aor] = new
            known = {id(b) for b in old} if old else set()
            for b in new:
                if id(b) not in known:
                    heapq.heappush(self._deadlines, (b.expires_at, aor))
        else:
            self._table.pop(aor, None)


# ----------------------------------------------------------------------
# Reading the request


def _contact_values(msg: Message) -> list[bytes]:
    values: list[bytes] = []
    try:
        for line in msg.get_all("contact"):
            values.extend(split_values(line))
    except SipParseError:
        raise _Reject(400, "bad_contact") from None
    return values


def _contact_uri(value: bytes) -> tuple[bytes, _ContactKey]:
    """The URI of one Contact value and its comparison key, or _Reject."""
    if len(value) > MAX_CONTACT_LEN:
        raise _Reject(400, "contact_too_long")
    try:
        uri = name_addr_uri(value)
    except SipParseError:
        raise _Reject(400, "bad_contact") from None
    return uri, _uri_key(uri)


def _uri_key(uri: bytes) -> _ContactKey:
    if not uri or not _URI_OCTETS.issuperset(uri):
        raise _Reject(400, "bad_contact")
    try:
        u = parse_uri(uri)
    except SipParseError:
        raise _Reject(400, "bad_contact") from None
    transport = u.params.get(b"transport") or b""
    return u.scheme, u.user, u.host, u.port, transport.lower()


def _delta(value: bytes, reason: str) -> int:
    """delta-seconds (RFC 3261 §25.1), or _Reject(400, reason)."""
    value = value.strip()
    if not value.isdigit():
        raise _Reject(400, reason)
    if len(value) > 10:
        return _MAX_DELTA
    return min(int(value), _MAX_DELTA)


def _check_order(b: Binding, msg: Message) -> None:
    # RFC 3261 §10.3 step 7: same Call-ID, CSeq not higher → the update is
    # out of order and the request fails.
    if b.call_id == msg.call_id and msg.cseq <= b.cseq:
        raise _Reject(500, "stale_cseq")


def _contact_line(b: Binding, now: float) -> bytes:
    remaining = max(1, round(b.expires_at - now))
    return b"Contact: <%s>;expires=%d" % (b.contact, remaining)
