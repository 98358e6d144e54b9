"""Reading the few header values a proxy interprets: Via, name-addr headers
(From, To, Route, Record-Route, Contact) and SIP URIs, IPv6 references included.

Everything here takes bytes that the parser already cut out and raises
SipParseError for anything malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from .errors import ParseReason, SipParseError


def split_values(value: bytes) -> list[bytes]:
    """Split a header value on the commas that separate values (RFC 3261 §7.3.1),
    not on commas inside quoted strings or <...> URIs."""
    if b"," not in value:
        return [value.strip()]
    if b'"' not in value and b"<" not in value and b">" not in value:
        # Nothing to protect a comma (the usual Via line): split at C speed.
        out = [v.strip() for v in value.split(b",")]
        if not all(out):
            raise SipParseError(ParseReason.EMPTY_VALUE)
        return out
    out = []
    depth_angle = False
    in_quote = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == 0x5C:  # backslash escapes the next octet
                i += 1
            elif c == 0x22:
                in_quote = False
        elif c == 0x22:
            in_quote = True
        elif c == 0x3C:
            depth_angle = True
        elif c == 0x3E:
            depth_angle = False
        elif c == 0x2C and not depth_angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote or depth_angle:
        raise SipParseError(ParseReason.UNTERMINATED_VALUE)
    out.append(value[start:].strip())
    if any(not v for v in out):
        raise SipParseError(ParseReason.EMPTY_VALUE)
    return out


def parse_params(text: bytes) -> dict[bytes, bytes | None]:
    """`;a=b;c` -> {b'a': b'b', b'c': None}; names lower-cased."""
    params: dict[bytes, bytes | None] = {}
    for part in text.split(b";"):
        part = part.strip()
        if not part:
            continue
        eq = part.find(b"=")
        if eq < 0:
            params[part.lower()] = None
        else:
            params[part[:eq].strip().lower()] = part[eq + 1 :].strip()
    return params


def split_hostport(hostport: bytes) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (host without brackets, port)."""
    if hostport.startswith(b"["):
        close = hostport.find(b"]")
        if close < 0:
            raise SipParseError(ParseReason.BAD_IPV6_REFERENCE)
        host = hostport[1:close]
        rest = hostport[close + 1 :]
        if rest and not rest.startswith(b":"):
            raise SipParseError(ParseReason.BAD_HOSTPORT)
        port_b = rest[1:] if rest else b""
    else:
        colon = hostport.rfind(b":")
        if colon >= 0:
            host, port_b = hostport[:colon], hostport[colon + 1 :]
        else:
            host, port_b = hostport, b""
    if not host:
        raise SipParseError(ParseReason.BAD_HOST)
    try:
        host_s = host.decode("ascii")
    except UnicodeDecodeError:
        raise SipParseError(ParseReason.BAD_HOST) from None
    if port_b:
        if not port_b.isdigit() or len(port_b) > 5 or not 0 < int(port_b) < 65536:
            raise SipParseError(ParseReason.BAD_PORT)
        return host_s, int(port_b)
    return host_s, None


def format_hostport(host: str, port: int | None = None) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


class Via(NamedTuple):
    """One parsed Via value. A named tuple: made once or twice per message,
    at a third of a frozen dataclass's cost."""

    transport: str  # upper-case, e.g. "UDP"
    host: str
    port: int | None
    params: dict[bytes, bytes | None]

    @property
    def branch(self) -> bytes | None:
        return self.params.get(b"branch")

    def reply_address(self, default_port: int = 5060) -> tuple[str, int]:
        """Where responses go (RFC 3261 §18.2.2, RFC 3581 §4): received/rport
        when present, else the sent-by."""
        received = self.params.get(b"received")
        host = received.decode("ascii", "replace") if received else self.host
        rport = self.params.get(b"rport")
        # Only a port that fits a socket address; anything else (rport=0,
        # rport=99999, thousands of digits) falls back to the sent-by port.
        if rport and rport.isdigit() and len(rport) <= 5 and 0 < int(rport) < 65536:
            return host, int(rport)
        return host, self.port or default_port


_TOKEN = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
# RFC 3261 §25.1: sent-protocol is three tokens joined by SLASH (SWS "/" SWS),
# then LWS before sent-by; RFC 4475 §3.1.1.1 sends `SIP  /   2.0  /  UDP  host`.
_SENT_PROTOCOL = re.compile(rb"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([!%'*+\-.0-9A-Z_`a-z~]+)[ \t]+",
                            re.IGNORECASE)


def parse_via(value: bytes) -> Via:
    """One Via value: `SIP/2.0/UDP host:port;params`."""
    sp = value.find(b" ")
    parts = value[:sp].split(b"/") if sp > 0 else []
    if (len(parts) == 3 and parts[0].upper() == b"SIP" and parts[1] == b"2.0" and parts[2]
            and _TOKEN.issuperset(parts[2])):
        transport = parts[2].upper().decode("ascii")
        rest = value[sp + 1 :].strip()
    else:
        m = _SENT_PROTOCOL.match(value)
        if m is None:
            raise SipParseError(ParseReason.BAD_VIA)
        transport = m.group(1).upper().decode("ascii")
        rest = value[m.end() :].strip()
    semi = rest.find(b";")
    hostport = (rest if semi < 0 else rest[:semi]).strip()
    host, port = split_hostport(hostport)
    params = parse_params(rest[semi + 1 :]) if semi >= 0 else {}
    return Via(transport, host, port, params)


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str
    user: bytes | None
    host: str
    port: int | None
    params: dict[bytes, bytes | None]


def parse_uri(uri: bytes) -> SipUri:
    """A sip:/sips: URI (RFC 3261 §19.1): user, host, port, URI parameters."""
    colon = uri.find(b":")
    scheme = uri[:colon].lower() if colon > 0 else b""
    if scheme not in (b"sip", b"sips"):
        raise SipParseError(ParseReason.BAD_URI_SCHEME)
    rest = uri[colon + 1 :]
    q = rest.find(b"?")
    if q >= 0:
        rest = rest[:q]
    at = rest.rfind(b"@")
    user = rest[:at] if at >= 0 else None
    hostpart = rest[at + 1 :]
    if hostpart.startswith(b"["):
        close = hostpart.find(b"]")
        semi = hostpart.find(b";", max(0, close))
    else:
        semi = hostpart.find(b";")
    hostport = hostpart if semi < 0 else hostpart[:semi]
    params = parse_params(hostpart[semi + 1 :]) if semi >= 0 else {}
    host, port = split_hostport(hostport)
    return SipUri(scheme.decode("ascii"), user, host.lower(), port, params)


def _split_name_addr(value: bytes) -> tuple[bytes, bytes]:
    """(the URI, what follows it) of a name-addr or addr-spec value. In
    addr-spec form the URI ends at the first ';' (RFC 3261 §20.10)."""
    i = _skip_display_name(value)
    lt = value.find(b"<", i)
    if lt >= 0:
        gt = value.find(b">", lt)
        if gt < 0:
            raise SipParseError(ParseReason.BAD_NAME_ADDR)
        return value[lt + 1 : gt].strip(), value[gt + 1 :]
    semi = value.find(b";", i)
    if semi < 0:
        return value[i:].strip(), b""
    return value[i:semi].strip(), value[semi:]


def name_addr_uri(value: bytes) -> bytes:
    """The URI inside a name-addr or addr-spec value (From, To, Route, Contact)."""
    return _split_name_addr(value)[0]


def header_param(value: bytes, name: bytes) -> bytes | None:
    """A header parameter (not a URI parameter) of a name-addr value, e.g. the
    `tag` of From/To (RFC 3261 §20.10: in addr-spec form, parameters after the
    URI belong to the header)."""
    tail = _split_name_addr(value)[1]
    return parse_params(tail).get(name) if tail else None


def _skip_display_name(value: bytes) -> int:
    """Index just past a quoted display name, or 0."""
    s = value.lstrip()
    if not s.startswith(b'"'):
        return 0
    off = len(value) - len(s)
    i = 1
    while i < len(s):
        c = s[i]
        if c == 0x5C:
            i += 2
            continue
        if c == 0x22:
            return off + i + 1
        i += 1
    raise SipParseError(ParseReason.UNTERMINATED_DISPLAY_NAME)
