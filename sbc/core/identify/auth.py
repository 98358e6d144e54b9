"""Digest verification policy: which credentials identify a gateway.

A gateway that cannot be told by its source address authenticates with digest
(RFC 3261 §22): REGISTER is challenged with 401 / WWW-Authenticate, anything
else with 407 / Proxy-Authenticate. This module issues the challenges and
judges the answers; the engine decides what to send for each AuthStatus.

Nonces are stateless: a nonce carries the time it was issued and a MAC over
that time and the address it was issued to, so a flood of unauthenticated
requests costs no memory. The only table is the nonce-count memory for
replay protection (RFC 7616 §3.3, §5.5), and only a verified response adds to
it; it is bounded all the same, and when it is full it fails closed: a new
nonce is not admitted (the client is challenged again) rather than a live
one forgotten, so no answer is ever accepted twice.

An answer is bound to its request: its `uri` must be the Request-URI (RFC
7616 §3.4.6). An unknown user name, an account used from a source it is not
allowed from, and a wrong password are one status to the outside (the engine
answers all three alike), and cost the same hashing.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from ...sip.digest import (
    ALGORITHMS,
    canonical_algorithm,
    challenge_line,
    expected_response,
    ha1,
    hash_hex,
    parse_credentials,
    same_uri,
)
from ...sip.errors import SipParseError
from ...sip.headers import name_addr_uri, parse_uri
from ..reasons import Offense

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A nonce whose timestamp is this far ahead of `now` did not come from this
# clock as it runs; treat it like an expired one.
FUTURE_SKEW = 5.0
MIN_SECRET_SIZE = 16

# The order of the challenges when the configuration gives none. MD5 first:
# clients that read only the first challenge and know only MD5 (baresip 1.0
# as Debian ships it, sipsak, SIPp 3.6, many older phones) then authenticate;
# clients that know SHA-256 pick it from the second one. RFC 8760 §2.4 lets
# the server list the algorithms in its own order of preference.
DEFAULT_ALGORITHMS = ("MD5", "SHA-256")

# The offense kinds this policy gives rise to (recorded by the engine); they
# count towards a ban under the `bans.offenses.digest_failure` switch.
DIGEST_OFFENSES = frozenset((Offense.DIGEST_FAILURE, Offense.DIGEST_URI_MISMATCH,
                             Offense.DIGEST_FROM_MISMATCH))

_NONCE_TS = 8
_NONCE_MAC = 16
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")  # 24 bytes, base64 without padding
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_HEX = re.compile(r"[0-9A-Fa-f]{32}|[0-9A-Fa-f]{64}")


@dataclass(frozen=True, slots=True)
class Account:
    """A digest identity and the gateway it belongs to. `ha1` maps an
    algorithm name (one of sbc.sip.digest.ALGORITHMS) to the HA1 in hex, so
    the password itself need not be stored. `password` is kept only for an
    account configured with one: it is what answers to the `user@domain`
    spelling of the user name, whose HA1 covers that whole spelling.
    `from_must_match`: requests must also carry the user name in the From URI
    (see `caller_allowed`)."""

    username: str
    realm: str
    gateway: str
    ha1: Mapping[str, str]
    from_cidrs: tuple[Network, ...] = ()  # empty = any source
    from_must_match: bool = False
    password: str | None = field(default=None, repr=False, compare=False)

    def ha1_for(self, algorithm: str, sent_username: str) -> str | None:
        """The HA1 an answer with `sent_username` was computed with, or None
        when this account cannot tell. HA1 covers the user name as sent
        (RFC 7616 §3.4.2): `101@host` hashes differently from `101`, so only
        an account with a password can check that spelling (as Kamailio does
        from a plain-text password)."""
        if sent_username == self.username:
            return self.ha1.get(algorithm)
        if self.password is None or algorithm not in ALGORITHMS:
            return None
        return ha1(algorithm, sent_username, self.realm, self.password)

    def caller_allowed(self, from_value: bytes) -> bool:
        """Whether a request whose From header value is `from_value` may use
        this account: always, unless `from_must_match`; then the user part of
        the From URI, escapes decoded, must be the user name (with case, as
        RFC 3261 §19.1.4 compares users)."""
        if not self.from_must_match:
            return True
        try:
            user = parse_uri(name_addr_uri(from_value)).user
        except SipParseError:
            return False
        if user is None:
            return False
        # The user part ends where a password would begin (RFC 3261 §19.1.1).
        text = user.split(b":", 1)[0].decode("utf-8", "surrogateescape")
        return unquote(text, errors="surrogateescape") == self.username


def account_from_password(
    username: str,
    realm: str,
    gateway: str,
    password: str,
    from_cidrs: Iterable[Network] = (),
    *,
    from_must_match: bool = False,
) -> Account:
    """An account that can answer with every supported algorithm."""
    hashes = {alg: ha1(alg, username, realm, password) for alg in ALGORITHMS}
    return Account(username, realm, gateway, MappingProxyType(hashes), tuple(from_cidrs),
                   from_must_match, password)


def account_from_ha1(
    username: str,
    realm: str,
    gateway: str,
    ha1_md5: str | None,
    ha1_sha256: str | None,
    from_cidrs: Iterable[Network] = (),
    *,
    from_must_match: bool = False,
) -> Account:
    """An account from stored HA1 values; it can answer only with the
    algorithms it has an HA1 for."""
    hashes: dict[str, str] = {}
    for alg, value, size in (("SHA-256", ha1_sha256, 64), ("MD5", ha1_md5, 32)):
        if value is None:
            continue
        if len(value) != size or not _HEX.fullmatch(value):
            raise ValueError(f"HA1 for {alg} must be {size} hex digits")
        hashes[alg] = value.lower()
    if not hashes:
        raise ValueError("an account needs at least one HA1")
    return Account(username, realm, gateway, MappingProxyType(hashes), tuple(from_cidrs),
                   from_must_match)


class AuthStatus(enum.StrEnum):
    OK = "ok"
    NO_CREDENTIALS = "no_credentials"
    # Three statuses, one answer outside (403): which one it was is for
    # counters and logs only.
    UNKNOWN_ACCOUNT = "unknown_account"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    BAD_RESPONSE = "bad_response"
    STALE = "stale"
    REPLAY = "replay"
    BAD_NONCE = "bad_nonce"
    MALFORMED = "malformed"
    # The answer names another resource than the request (RFC 7616 §3.4.6):
    # 400, whatever the password.
    URI_MISMATCH = "uri_mismatch"
    # A right answer on a nonce the replay table has no room for: challenged
    # again like a stale one, never admitted unrecorded.
    NONCE_TABLE_FULL = "nonce_table_full"


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    account: Account | None = None


def _host_key(host: str) -> str:
    """One spelling per address, so a nonce issued to `::ffff:192.0.2.1` is
    valid from `192.0.2.1` (a dual-stack socket reports either)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _source_allowed(host: str, cidrs: tuple[Network, ...]) -> bool:
    if not cidrs:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        mapped = ip.ipv4_mapped
        return any(mapped in net or ip in net for net in cidrs)
    return any(ip in net for net in cidrs)


class DigestAuth:
    """Issues digest challenges and verifies the answers for a set of accounts.

    `secret` keys the nonce MAC; a fresh random one at each start is fine
    (nonces from before a restart then draw a fresh challenge). `now` is the
    caller's monotonic clock in seconds, the same one for challenge and verify.
    """

    __slots__ = (
        "_accounts",
        "_algorithms",
        "_decoy",
        "_max_entries",
        "_realm",
        "_secret",
        "_seen",
        "_sweep_after",
        "_ttl",
    )

    def __init__(
        self,
        accounts: Iterable[Account],
        *,
        secret: bytes,
        realm: str,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        max_nonce_entries: int = 100_000,
    ) -> None:
        if len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"secret must be at least {MIN_SECRET_SIZE} bytes")
        if not nonce_ttl > 0:
            raise ValueError("nonce_ttl must be positive")
        if max_nonce_entries < 1:
            raise ValueError("max_nonce_entries must be at least 1")
        chosen: dict[str, None] = {}
        for name in algorithms:
            alg = canonical_algorithm(name)
            if alg is None:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            chosen[alg] = None
        if not chosen:
            raise ValueError("at least one digest algorithm is needed")
        # RFC 8760 §2.4: one challenge per algorithm, in the server's order
        # of preference, which is the configured order (see DEFAULT_ALGORITHMS).
        self._algorithms = tuple(chosen)
        self._accounts: dict[tuple[str, str], Account] = {}
        for account in accounts:
            key = (account.username, account.realm)
            if key in self._accounts:
                raise ValueError(f"duplicate digest account {account.username!r}")
            self._accounts[key] = account
        self._secret = secret
        self._realm = realm
        self._ttl = float(nonce_ttl)
        self._max_entries = max_nonce_entries
        # (username, nonce) -> (highest nc verified, deadline when the nonce
        # expires). Insertion order is oldest first.
        self._seen: OrderedDict[tuple[str, str, str], tuple[int, float]] = OrderedDict()
        # No entry of the table expires before this (a lower bound, exact
        # after a sweep): a full table is swept only once one may have.
        self._sweep_after = math.inf
        # What an unknown user's answer is checked against, so that it costs
        # what a wrong password costs.
        self._decoy = {alg: hash_hex(alg, secret.hex() + alg) for alg in ALGORITHMS}

    @property
    def has_accounts(self) -> bool:
        return bool(self._accounts)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms challenged with, in the order of the challenges."""
        return self._algorithms

    @property
    def nonce_entries(self) -> int:
        """How many nonces the replay table remembers now."""
        return len(self._seen)

    # ------------------------------------------------------------------
    # Nonces

    def _mac(self, ts: bytes, host: str) -> bytes:
        msg = ts + _host_key(host).encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_NONCE_MAC]

    def make_nonce(self, source_host: str, now: float) -> str:
        """A nonce bound to `source_host` and to the time `now`."""
        ms = min(max(int(now * 1000), 0), 2**64 - 1) if math.isfinite(now) else 0
        ts = ms.to_bytes(_NONCE_TS, "big")
        raw = ts + self._mac(ts, source_host)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _nonce_time(self, nonce: str, source_host: str) -> float | None:
        """The time a nonce of ours was issued to `source_host`, or None when
        it is not one (wrong address, bad MAC, not decodable)."""
        if not _NONCE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        ts, mac = raw[:_NONCE_TS], raw[_NONCE_TS:]
        if not hmac.compare_digest(mac, self._mac(ts, source_host)):
            return None
        return int.from_bytes(ts, "big") / 1000.0

    # ------------------------------------------------------------------
    # Challenge

    @property
    def nonce_ttl(self) -> float:
        return self._ttl

    def challenge(
        self, source_host: str, now: float, *, proxy: bool, stale: bool = False,
        single: bool = False,
    ) -> list[bytes]:
        """Challenge header lines (without CRLF), one per configured algorithm
        in the configured order (RFC 8760 §2.4): Proxy-Authenticate for a 407
        when `proxy`, else WWW-Authenticate for a 401 (REGISTER).

        `single`: only the first configured algorithm's line. RFC 8760 §2.4
        lets the server offer any subset; one line keeps a challenge sent to
        an address nobody has proved (a UDP source may be forged) close to
        the size of the request it answers, so sbc amplifies little."""
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self.make_nonce(source_host, now)
        algorithms = self._algorithms[:1] if single else self._algorithms
        return [
            challenge_line(header, self._realm, nonce, alg, stale=stale)
            for alg in algorithms
        ]

    # ------------------------------------------------------------------
    # Verify

    def verify(
        self,
        method: str,
        request_uri: str,
        credentials: bytes | None,
        source_host: str,
        now: float,
    ) -> AuthResult:
        """Judge an Authorization / Proxy-Authorization value (None when the
        request carried none) sent by `source_host` with a `method` request
        for `request_uri` (its Request-URI)."""
        if credentials is None:
            return AuthResult(AuthStatus.NO_CREDENTIALS)
        try:
            params = parse_credentials(credentials)
        except SipParseError:
            return AuthResult(AuthStatus.MALFORMED)
        username = params.get("username")
        realm = params.get("realm")
        nonce = params.get("nonce")
        response = params.get("response")
        if username is None or realm is None or nonce is None or response is None:
            return AuthResult(AuthStatus.MALFORMED)

        # Only a source that got our nonce at its address gets further: from
        # here on a refusal can count against the address without a forged
        # datagram earning someone else a ban.
        issued = self._nonce_time(nonce, source_host)
        if issued is None:
            return AuthResult(AuthStatus.BAD_NONCE)

        # RFC 7616 §3.4.6: the answer is for the resource of this request.
        # Otherwise an answer seen on the way (or sent ahead of its request)
        # would admit a request to another destination. Judged before the
        # account, so the answer does not depend on the user name.
        uri = params.get("uri")
        if uri is None or not same_uri(uri, request_uri):
            return AuthResult(AuthStatus.URI_MISMATCH)

        # `101@host` (some phones) and `101@` (sipsak) name account 101, as
        # Kamailio reads them; the HA1 still covers what was sent.
        account = self._accounts.get((username.partition("@")[0], realm))

        algorithm = canonical_algorithm(params.get("algorithm"))
        # RFC 7616 §3.4 requires qop; the RFC 2069 form without it has no
        # client nonce and no count, so it could be replayed at will.
        qop = params.get("qop")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        matched = False
        if (algorithm is not None and algorithm in self._algorithms and qop == "auth"
                and nc is not None and _NC.fullmatch(nc) and cnonce):
            account_ha1 = account.ha1_for(algorithm, username) if account is not None else None
            # An unknown user is checked against a decoy: the same work, and
            # the same answer, as a wrong password.
            key = account_ha1 if account_ha1 is not None else self._decoy[algorithm]
            expected = expected_response(algorithm, key, nonce, method, uri, qop, nc, cnonce)
            same = hmac.compare_digest(
                expected.encode("ascii"), response.lower().encode("utf-8", "surrogatepass")
            )
            matched = same and account_ha1 is not None
        if account is None:
            return AuthResult(AuthStatus.UNKNOWN_ACCOUNT)
        if not _source_allowed(source_host, account.from_cidrs):
            return AuthResult(AuthStatus.SOURCE_NOT_ALLOWED, account)
        if not matched or nc is None:
            return AuthResult(AuthStatus.BAD_RESPONSE, account)

        if now - issued > self._ttl or issued - now > FUTURE_SKEW:
            # The client knows the password but used an old nonce: ask again
            # with stale=true so it retries without prompting (RFC 7616 §3.3).
            return AuthResult(AuthStatus.STALE, account)

        key_seen = (account.username, account.realm, nonce)
        return AuthResult(self._count(key_seen, int(nc, 16), issued + self._ttl, now), account)

    def _count(
        self, key: tuple[str, str, str], nc: int, deadline: float, now: float
    ) -> AuthStatus:
        """Record a verified nonce-count: OK; REPLAY when it is not above the
        highest one seen for this account and nonce (RFC 7616 §3.4.5);
        NONCE_TABLE_FULL when the nonce is new and the table has no room
        that an expired entry frees."""
        seen = self._seen
        entry = seen.get(key)
        if entry is not None:
            if nc <= entry[0]:
                return AuthStatus.REPLAY
            seen[key] = (nc, entry[1])
            return AuthStatus.OK
        # Lazy expiry from the old end: an entry whose nonce has expired can
        # never again produce OK, so forgetting it opens no replay.
        while seen:
            first_deadline = seen[next(iter(seen))][1]
            if first_deadline >= now:
                break
            seen.popitem(last=False)
        if len(seen) >= self._max_entries and now > self._sweep_after:
            self._sweep(now)
        if len(seen) >= self._max_entries:
            # Fail closed: forgetting a live nonce's count would let its
            # answers be accepted again.
            return AuthStatus.NONCE_TABLE_FULL
        seen[key] = (nc, deadline)
        self._sweep_after = min(self._sweep_after, deadline)
        return AuthStatus.OK

    def _sweep(self, now: float) -> None:
        """Forget every expired entry, wherever it is: entries are in the
        order they were first verified, and an old nonce verified late
        expires before younger ones verified earlier."""
        seen = self._seen
        for key in [k for k, (_, deadline) in seen.items() if deadline < now]:
            del seen[key]
        self._sweep_after = min((deadline for _, deadline in seen.values()), default=math.inf)
