"""Digest verification policy: which credentials identify a gateway.

A gateway that cannot be told by its source address authenticates with digest
(RFC 3261 §22): REGISTER is challenged with 401 / WWW-Authenticate, anything
else with 407 / Proxy-Authenticate. This module issues the challenges and
judges the answers; the engine decides what to send for each AuthStatus.

Nonces are stateless: a nonce carries the time it was issued and a MAC over
that time and the address it was issued to, so a flood of unauthenticated
requests costs no memory. The only table is the nonce-count memory for
replay protection (RFC 7616 §3.3, §5.5), and only a verified response adds to
it; it is bounded all the same.
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
from dataclasses import dataclass
from types import MappingProxyType

from ..sip.digest import (
    ALGORITHMS,
    canonical_algorithm,
    challenge_line,
    expected_response,
    ha1,
    parse_credentials,
)
from ..sip.errors import SipParseError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A nonce whose timestamp is this far ahead of `now` did not come from this
# clock as it runs; treat it like an expired one.
FUTURE_SKEW = 5.0
MIN_SECRET_SIZE = 16

_NONCE_TS = 8
_NONCE_MAC = 16
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")  # 24 bytes, base64 without padding
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_HEX = re.compile(r"[0-9A-Fa-f]{32}|[0-9A-Fa-f]{64}")


@dataclass(frozen=True, slots=True)
class Account:
    """A digest identity and the gateway it belongs to. `ha1` maps an
    algorithm name (one of sbc.sip.digest.ALGORITHMS) to the HA1 in hex, so
    the password itself need not be stored."""

    username: str
    realm: str
    gateway: str
    ha1: Mapping[str, str]
    from_cidrs: tuple[Network, ...] = ()  # empty = any source


def account_from_password(
    username: str,
    realm: str,
    gateway: str,
    password: str,
    from_cidrs: Iterable[Network] = (),
) -> Account:
    """An account that can answer with every supported algorithm."""
    hashes = {alg: ha1(alg, username, realm, password) for alg in ALGORITHMS}
    return Account(username, realm, gateway, MappingProxyType(hashes), tuple(from_cidrs))


def account_from_ha1(
    username: str,
    realm: str,
    gateway: str,
    ha1_md5: str | None,
    ha1_sha256: str | None,
    from_cidrs: Iterable[Network] = (),
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
    return Account(username, realm, gateway, MappingProxyType(hashes), tuple(from_cidrs))


class AuthStatus(enum.StrEnum):
    OK = "ok"
    NO_CREDENTIALS = "no_credentials"
    UNKNOWN_ACCOUNT = "unknown_account"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    BAD_RESPONSE = "bad_response"
    STALE = "stale"
    REPLAY = "replay"
    BAD_NONCE = "bad_nonce"
    MALFORMED = "malformed"


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
        "_max_entries",
        "_realm",
        "_secret",
        "_seen",
        "_ttl",
    )

    def __init__(
        self,
        accounts: Iterable[Account],
        *,
        secret: bytes,
        realm: str,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        max_nonce_entries: int = 100_000,
    ) -> None:
        if len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"secret must be at least {MIN_SECRET_SIZE} bytes")
        if not nonce_ttl > 0:
            raise ValueError("nonce_ttl must be positive")
        if max_nonce_entries < 1:
            raise ValueError("max_nonce_entries must be at least 1")
        chosen: set[str] = set()
        for name in algorithms:
            alg = canonical_algorithm(name)
            if alg is None:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            chosen.add(alg)
        if not chosen:
            raise ValueError("at least one digest algorithm is needed")
        # RFC 8760 §2.4: one challenge per algorithm, most preferred first,
        # whatever order the configuration listed them in.
        self._algorithms = tuple(alg for alg in ALGORITHMS if alg in chosen)
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
        self._seen: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    @property
    def has_accounts(self) -> bool:
        return bool(self._accounts)

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
        self, source_host: str, now: float, *, proxy: bool, stale: bool = False
    ) -> list[bytes]:
        """Challenge header lines (without CRLF), one per configured algorithm,
        SHA-256 first (RFC 8760 §2.4): Proxy-Authenticate for a 407 when
        `proxy`, else WWW-Authenticate for a 401 (REGISTER)."""
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self.make_nonce(source_host, now)
        return [
            challenge_line(header, self._realm, nonce, alg, stale=stale)
            for alg in self._algorithms
        ]

    # ------------------------------------------------------------------
    # Verify

    def verify(
        self, method: str, credentials: bytes | None, source_host: str, now: float
    ) -> AuthResult:
        """Judge an Authorization / Proxy-Authorization value (None when the
        request carried none) sent by `source_host` with a `method` request."""
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

        issued = self._nonce_time(nonce, source_host)
        if issued is None:
            return AuthResult(AuthStatus.BAD_NONCE)

        account = self._accounts.get((username, realm))
        if account is None:
            return AuthResult(AuthStatus.UNKNOWN_ACCOUNT)
        if not _source_allowed(source_host, account.from_cidrs):
            return AuthResult(AuthStatus.SOURCE_NOT_ALLOWED, account)

        bad = AuthResult(AuthStatus.BAD_RESPONSE, account)
        algorithm = canonical_algorithm(params.get("algorithm"))
        if algorithm is None or algorithm not in self._algorithms:
            return bad
        account_ha1 = account.ha1.get(algorithm)
        if account_ha1 is None:
            return bad
        # RFC 7616 §3.4 requires qop; the RFC 2069 form without it has no
        # client nonce and no count, so it could be replayed at will.
        qop = params.get("qop")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if qop != "auth" or nc is None or not _NC.fullmatch(nc):
            return bad
        if not cnonce:
            return bad
        # The digest covers the `uri` parameter as the client sent it; it is
        # not compared with the Request-URI byte for byte, because proxies and
        # NAT devices on the way may rewrite the Request-URI (RFC 3261 §16.6)
        # while the credentials travel unchanged. The response still binds
        # whatever uri the client hashed, so it must be there.
        uri = params.get("uri")
        if not uri:
            return bad

        expected = expected_response(algorithm, account_ha1, nonce, method, uri, qop, nc, cnonce)
        if not hmac.compare_digest(
            expected.encode("ascii"), response.lower().encode("utf-8", "surrogatepass")
        ):
            return bad

        if now - issued > self._ttl or issued - now > FUTURE_SKEW:
            # The client knows the password but used an old nonce: ask again
            # with stale=true so it retries without prompting (RFC 7616 §3.3).
            return AuthResult(AuthStatus.STALE, account)

        if not self._count(username, nonce, int(nc, 16), issued + self._ttl, now):
            return AuthResult(AuthStatus.REPLAY, account)
        return AuthResult(AuthStatus.OK, account)

    def _count(self, username: str, nonce: str, nc: int, deadline: float, now: float) -> bool:
        """Record a verified nonce-count; False when it is not above the
        highest one seen for this nonce (a replay, RFC 7616 §3.4.5)."""
        seen = self._seen
        key = (username, nonce)
        entry = seen.get(key)
        if entry is not None:
            if nc <= entry[0]:
                return False
            seen[key] = (nc, entry[1])
            return True
        # Lazy expiry from the old end: an entry whose nonce has expired can
        # never again produce OK, so forgetting it opens no replay.
        while seen:
            first_deadline = seen[next(iter(seen))][1]
            if first_deadline >= now:
                break
            seen.popitem(last=False)
        if len(seen) >= self._max_entries:
            seen.popitem(last=False)
        seen[key] = (nc, deadline)
        return True
