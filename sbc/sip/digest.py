"""Digest access authentication math (RFC 3261 §22.4, RFC 7616, RFC 8760).

This module owns the wire side of digest: reading an Authorization or
Proxy-Authorization value into its parameters, the hashes (HA1, the expected
response), and writing a challenge line. It decides nothing: which nonces,
accounts and algorithms are acceptable is the verifier's business
(`sbc.core.identify.auth`).

Only the algorithms SIP actually uses are supported: SHA-256 (RFC 8760 §2.2)
and MD5 (RFC 3261 §22.4, what most deployed phones and gateways still send).
The `-sess` variants and qop=auth-int are not.

It also owns the URI comparison that binds an answer to its request (RFC 7616
§3.4.6: the `uri` parameter names the Request-URI), with the equivalence
rules of RFC 3261 §19.1.4.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from .errors import ParseReason, SipParseError

# The supported algorithms. The order of the challenges is the configured
# one (RFC 8760 §2.4 lets the server list them in its own preference); see
# sbc.core.identify.auth.DEFAULT_ALGORITHMS.
ALGORITHMS = ("SHA-256", "MD5")

MAX_CREDENTIALS_SIZE = 4096
MAX_CREDENTIALS_PARAMS = 32

_HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_BY_UPPER = {name.upper(): name for name in ALGORITHMS}

# One auth-param (RFC 3261 §25.1, RFC 7616 §3.4): a token name, "=", and a
# quoted-string or an unquoted value. Unquoted values are looser than a token:
# some user agents send `uri=sip:...` or `algorithm=SHA-256` bare, and nothing
# is lost by accepting any run of printable characters up to the next comma.
# The quoted-string alternatives are disjoint, so matching stays linear.
_LWS = r"[ \t\r\n]*"
_PARAM = re.compile(
    _LWS
    + r"([A-Za-z0-9.!%*_+`'~-]+)"
    + _LWS
    + "="
    + _LWS
    + r'(?:"((?:[^"\\]|\\.)*)"|([^ \t\r\n,"]+))'
    + _LWS,
    re.DOTALL,
)
_SCHEME = re.compile(_LWS + r"([A-Za-z0-9.!%*_+`'~-]+)[ \t\r\n]+")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Control characters other than whitespace have no place in credentials
# (RFC 3261 §25.1 qdtext); refusing them keeps them out of logs and lookups.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def canonical_algorithm(name: str | None) -> str | None:
    """The supported algorithm `name` denotes, compared case-insensitively, or
    None. A missing algorithm parameter means MD5 (RFC 2617 §3.2.2)."""
    if name is None:
        return "MD5"
    return _BY_UPPER.get(name.upper())


def parse_credentials(value: bytes) -> dict[str, str]:
    """Read a Digest Authorization / Proxy-Authorization value into its
    parameters: names lower-cased, quoted values unquoted and unescaped.

    Raises SipParseError(ParseReason.BAD_CREDENTIALS) for any other scheme and for
    anything malformed, including a parameter given twice, more than
    MAX_CREDENTIALS_PARAMS parameters, or more than MAX_CREDENTIALS_SIZE bytes.
    """
    if len(value) > MAX_CREDENTIALS_SIZE:
        raise SipParseError(ParseReason.BAD_CREDENTIALS)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(ParseReason.BAD_CREDENTIALS) from None
    if _CONTROL.search(text):
        raise SipParseError(ParseReason.BAD_CREDENTIALS)
    m = _SCHEME.match(text)
    if m is None or m.group(1).lower() != "digest":
        raise SipParseError(ParseReason.BAD_CREDENTIALS)
    params: dict[str, str] = {}
    pos = m.end()
    end = len(text)
    while True:
        p = _PARAM.match(text, pos)
        if p is None:
            raise SipParseError(ParseReason.BAD_CREDENTIALS)
        name = p.group(1).lower()
        quoted = p.group(2)
        if name in params or len(params) >= MAX_CREDENTIALS_PARAMS:
            raise SipParseError(ParseReason.BAD_CREDENTIALS)
        if quoted is None:
            params[name] = p.group(3)
        elif "\\" in quoted:
            params[name] = _QUOTED_PAIR.sub(r"\1", quoted)
        else:
            params[name] = quoted
        pos = p.end()
        if pos == end:
            return params
        if text[pos] != ",":
            raise SipParseError(ParseReason.BAD_CREDENTIALS)
        pos += 1


def hash_hex(algorithm: str, data: str) -> str:
    """H(data) in lower-case hex (RFC 7616 §3.4.1); `algorithm` is one of
    ALGORITHMS. Strings are hashed as UTF-8 (RFC 7616 §3.4.1, charset=UTF-8);
    a lone surrogate, which UTF-8 cannot carry, is passed through rather than
    raising, so no caller-supplied string can make hashing fail."""
    return _HASHES[algorithm](data.encode("utf-8", "surrogatepass")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2)."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def expected_response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """The request-digest a client holding `ha1_hex` would send.

    With qop="auth": H(HA1:nonce:nc:cnonce:qop:H(method:uri)) (RFC 7616
    §3.4.1). With no qop, the RFC 2069 form H(HA1:nonce:H(method:uri)) that
    RFC 3261 §22.4 still describes; the verifier never accepts it, it is here
    so tests can send it.
    """
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    if qop != "auth":
        raise ValueError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise ValueError("qop=auth needs nc and cnonce")
    return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


_CHALLENGE_HEADERS = ("WWW-Authenticate", "Proxy-Authenticate")


def _quote(value: str) -> str:
    if "\r" in value or "\n" in value or _CONTROL.search(value):
        raise ValueError("control character in a challenge parameter")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge_line(
    header: str,
    realm: str,
    nonce: str,
    algorithm: str,
    stale: bool = False,
    opaque: str | None = None,
) -> bytes:
    """One whole challenge header line, without CRLF, e.g.
    `WWW-Authenticate: Digest realm="sbc", nonce="...", algorithm=SHA-256, qop="auth"`.

    `header` is WWW-Authenticate (401, REGISTER) or Proxy-Authenticate (407).
    qop="auth" is always offered: it is what makes a client send nc and
    cnonce, without which replay protection is impossible (RFC 7616 §3.3
    makes qop mandatory).
    """
    if header not in _CHALLENGE_HEADERS:
        raise ValueError(f"not a challenge header: {header!r}")
    if algorithm not in _HASHES:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    parts = [f"realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    parts.append(f"algorithm={algorithm}")
    parts.append('qop="auth"')
    if stale:
        parts.append("stale=true")
    return f"{header}: Digest {', '.join(parts)}".encode()


# --------------------------------------------------------------------------
# URI equivalence (RFC 3261 §19.1.4)

# RFC 2396 §2.2 "reserved": escaped, these are not the same as written out.
_RESERVED = frozenset(b";/?:@&=+$,")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# A parameter that, present in one URI only, makes the two differ (§19.1.4:
# user, ttl, method and maddr; transport too, as the section's own examples
# `sip:bob@biloxi.com` / `sip:bob@biloxi.com;transport=udp` show).
_SIGNIFICANT_PARAMS = frozenset((b"user", b"ttl", b"method", b"maddr", b"transport"))


def _unescape(text: bytes) -> bytes:
    """%XX escapes decoded, except those of reserved characters, which stay
    escaped with upper-case hex (§19.1.4: `%61lice` is `alice`, `%40` is not `@`)."""

    def one(m: re.Match[bytes]) -> bytes:
        byte = int(m.group(1), 16)
        if byte in _RESERVED:
            return b"%" + m.group(1).upper()
        return bytes((byte,))

    return _ESCAPE.sub(one, text) if b"%" in text else text


@dataclass(frozen=True, slots=True)
class _UriKey:
    scheme: bytes
    userinfo: bytes | None
    host: bytes
    port: int | None
    params: dict[bytes, bytes | None]
    headers: frozenset[tuple[bytes, bytes]]


def _host_key(host: bytes) -> bytes:
    """A host compared without case; an IP address in one spelling
    (`[::1]` is `[0:0::1]`). A name never equals an address (§19.1.4)."""
    host = _unescape(host).lower()
    literal = host[1:-1] if host.startswith(b"[") and host.endswith(b"]") else host
    try:
        return ipaddress.ip_address(literal.decode("ascii")).compressed.encode()
    except (ValueError, UnicodeDecodeError):
        return host


def _sip_uri_key(scheme: bytes, rest: bytes) -> _UriKey | None:
    """What §19.1.4 compares of a sip/sips URI, or None when it does not parse."""
    # userinfo ends at an "@" that comes before any "?" (headers may carry an
    # unescaped "@", as in `?to=sip:bob@biloxi.com`).
    at, q = rest.find(b"@"), rest.find(b"?")
    userinfo: bytes | None = None
    if at >= 0 and (q < 0 or at < q):
        userinfo, rest = _unescape(rest[:at]), rest[at + 1 :]
    rest, _, header_part = rest.partition(b"?")
    hostport, _, param_part = rest.partition(b";")
    if hostport.startswith(b"["):
        close = hostport.find(b"]")
        host, port_part = hostport[: close + 1], hostport[close + 1 :]
        if close < 0 or (port_part and not port_part.startswith(b":")):
            return None
        port_part = port_part[1:]
        has_port = bool(hostport[close + 1 :])
    else:
        host, colon, port_part = hostport.partition(b":")
        has_port = bool(colon)
    if not host:
        return None
    port: int | None = None
    if has_port:
        if not port_part.isdigit() or len(port_part) > 5 or not 0 < int(port_part) < 65536:
            return None
        port = int(port_part)
    params: dict[bytes, bytes | None] = {}
    for part in param_part.split(b";") if param_part else ():
        name, eq, value = part.partition(b"=")
        name = _unescape(name).lower()
        if not name or name in params:
            return None
        params[name] = _unescape(value).lower() if eq else None
    headers: set[tuple[bytes, bytes]] = set()
    for part in header_part.split(b"&") if header_part else ():
        name, _, value = part.partition(b"=")
        headers.add((_unescape(name).lower(), _unescape(value)))
    return _UriKey(scheme, userinfo, _host_key(host), port, params, frozenset(headers))


def same_uri(a: str, b: str) -> bool:
    """Whether two URIs are equivalent by RFC 3261 §19.1.4.

    sip and sips never match each other. The scheme and host are compared
    without case, the userinfo (user and password) with case; escapes of
    unreserved characters equal the characters themselves. A port present in
    one URI only is a difference (no default is assumed). Parameters are
    compared without order and, values included, without case: any present in
    both must agree; user, ttl, method, maddr and transport present in one
    only are a difference; any other present in one only is ignored. Headers
    must be the same set. Other schemes (tel:, ...) match when equal after the
    scheme's case and escapes are normalised. A sip URI that does not parse
    equals only the very same text.
    """
    if a == b:
        return True
    raw_a = a.encode("utf-8", "surrogatepass")
    raw_b = b.encode("utf-8", "surrogatepass")
    scheme_a, colon_a, rest_a = raw_a.partition(b":")
    scheme_b, colon_b, rest_b = raw_b.partition(b":")
    scheme_a, scheme_b = scheme_a.lower(), scheme_b.lower()
    if not (colon_a and colon_b) or scheme_a != scheme_b:
        return False
    if scheme_a not in (b"sip", b"sips"):
        return _unescape(rest_a) == _unescape(rest_b)
    key_a = _sip_uri_key(scheme_a, rest_a)
    key_b = _sip_uri_key(scheme_b, rest_b)
    if key_a is None or key_b is None:
        return False
    if (key_a.userinfo, key_a.host, key_a.port, key_a.headers) != (
        key_b.userinfo, key_b.host, key_b.port, key_b.headers
    ):
        return False
    pa, pb = key_a.params, key_b.params
    for name in pa.keys() | pb.keys():
        if name in pa and name in pb:
            if pa[name] != pb[name]:
                return False
        elif name in _SIGNIFICANT_PARAMS:
            return False
    return True
