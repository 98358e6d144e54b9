"""Digest access authentication math (RFC 3261 §22.4, RFC 7616, RFC 8760).

This module owns the wire side of digest: reading an Authorization or
Proxy-Authorization value into its parameters, the hashes (HA1, the expected
response), and writing a challenge line. It decides nothing: which nonces,
accounts and algorithms are acceptable is the verifier's business
(`sbc.core.auth`).

Only the algorithms SIP actually uses are supported: SHA-256 (RFC 8760 §2.2,
preferred) and MD5 (RFC 3261 §22.4, what most deployed phones and gateways
still send). The `-sess` variants and qop=auth-int are not.
"""

from __future__ import annotations

import hashlib
import re

from .errors import SipParseError

# Most preferred first: challenges are sent in this order (RFC 8760 §2.4).
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

    Raises SipParseError("bad_credentials") for any other scheme and for
    anything malformed, including a parameter given twice, more than
    MAX_CREDENTIALS_PARAMS parameters, or more than MAX_CREDENTIALS_SIZE bytes.
    """
    if len(value) > MAX_CREDENTIALS_SIZE:
        raise SipParseError("bad_credentials")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("bad_credentials") from None
    if _CONTROL.search(text):
        raise SipParseError("bad_credentials")
    m = _SCHEME.match(text)
    if m is None or m.group(1).lower() != "digest":
        raise SipParseError("bad_credentials")
    params: dict[str, str] = {}
    pos = m.end()
    end = len(text)
    while True:
        p = _PARAM.match(text, pos)
        if p is None:
            raise SipParseError("bad_credentials")
        name = p.group(1).lower()
        quoted = p.group(2)
        if name in params or len(params) >= MAX_CREDENTIALS_PARAMS:
            raise SipParseError("bad_credentials")
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
            raise SipParseError("bad_credentials")
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
