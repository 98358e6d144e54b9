"""Strict checks on what the parser reads before anything can leave for
VOS3000 (RFC 3261 §16.3 step 1, "reasonable syntax", and the refusals a
proxy owes in steps 2 and 5), and the best-effort reply to a request the
checks refuse.

Two parsers that read one message differently are an attack: the proxy
forwards what it understood and the next hop acts on what it understands.
So sbc refuses what RFC 3261 and the RFC 4475 torture tests call invalid
instead of repairing it: a header that may appear once appearing twice, a
control byte where the grammar has none, a Request-URI in angle brackets, a
name-addr that does not close, a Via parameter that is empty.

The parser calls these helpers on the rare paths only (a control byte seen,
a request line that does not split in three) and for the handful of header
lines it checks anyway (Via, From, To, Contact); everything here raises
SipParseError with a fixed reason name and never anything else.
"""

from __future__ import annotations

import re

from .build import add_to_tag
from .errors import ParseReason, SipParseError, reply_phrase
from .headers import parse_via, split_values
from .message import COMPACT, header_value

# CTL (RFC 5234 §B.1) but HTAB, CR and LF: the parser already refuses a CR or
# LF that is not part of a line end or a fold, and HTAB is whitespace (LWS).
# The octets, and the same set as a pattern for the rare path that finds one.
CTLS = bytes((*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Every octet but the CTLs, CR and LF: what `head.translate(None, NOT_CTL)`
# deletes, so that one pass leaves exactly the head's line ends, "\r\n" per
# line after the first, when it has no bare CR or LF and no other CTL.
NOT_CTL = bytes(i for i in range(256) if i not in CTLS and i not in (0x0D, 0x0A))
# The Request-URI octets that need no second look: printable ASCII but the
# angle brackets, the double quote and "?" (the start of URI headers).
URI_PLAIN = bytes(i for i in range(0x21, 0x7F) if i not in b'<>"?')

# quoted-string (RFC 3261 §25.1): qdtext is LWS, %x21, %x23-5B, %x5D-7E or
# UTF-8; quoted-pair is "\" and any octet up to %x7F but CR and LF. The
# alternatives start with different octets, so matching is linear.
_QUOTED = re.compile(rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\r\n[ \t]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"')

# Headers whose grammar has quoted strings where a quoted-pair may carry a
# control octet (RFC 4475 §3.1.1.2 quotes a NUL in a To display name): the
# name-addr headers, long or compact. Everywhere else (unknown headers are
# TEXT-UTF8, §25.1) a control octet is refused.
_QUOTING = frozenset((b"to", b"t", b"from", b"f", b"contact", b"m", b"route", b"record-route",
                      b"reply-to"))

# An empty parameter or value in a Via line: ";;", ",,", ";,", a trailing ";"
# or "," (RFC 4475 §3.1.2.1), or nothing at all after the colon.
_EMPTY_VIA = re.compile(rb"[;,][ \t\r\n]*(?:[;,]|\Z)")
_EMPTY_START = re.compile(rb":[ \t\r\n]*(?:[;,]|\Z)")
_EMPTY_PARAM = re.compile(rb";[ \t]*(?:;|\Z)")

# The shapes nearly every line takes, matched whole in one call; a line that
# does not match is checked the long way (folds, escapes, LWS around ";", an
# addr-spec). Each is narrower than its long check, never wider.
_TOK = rb"[A-Za-z0-9\-.!%*_+`'~]"
_PARAMS = rb"(?:;" + _TOK + rb"+(?:=[^\s;,\"<>]+)?)*"
_ONE_ADDR = (rb"(?:(?:\"[^\"\\\x00-\x1f\x7f]*\"[ \t]*|(?:" + _TOK + rb"+[ \t]+)*)<[^\s<>\"]+>"
             rb"|[^\s<>\"?,;]+)" + _PARAMS)
NAME_ADDR_LINE = re.compile(rb"[^:]*:[ \t]*" + _ONE_ADDR + rb"[ \t]*")
CONTACT_LINE = re.compile(rb"[^:]*:[ \t]*" + _ONE_ADDR + rb"(?:[ \t]*,[ \t]*" + _ONE_ADDR
                           + rb")*[ \t]*")
_ONE_VIA = rb"SIP/2\.0/" + _TOK + rb"+ [^\s;,]+(?:;[^\s;,]+)*"
VIA_LINE = re.compile(rb"[^:]*:[ \t]*" + _ONE_VIA + rb"(?:[ \t]*,[ \t]*" + _ONE_VIA + rb")*[ \t]*")
# The same shapes matched from the octet after the colon, where the parser
# already is: `pattern.fullmatch(line, offset)`, run on nearly every message.
# Written for speed with the same language: whitespace spelled out (a class
# with \s in it is tested item by item, one without is a bitmap) and every
# repeat possessive (each is followed by what it cannot match).
_WS = rb" \t\r\n\x0b\x0c"
_PARAMS_FAST = rb"(?:;" + _TOK + rb"++(?:=[^" + _WS + rb";,\"<>]++)?)*+"
_ONE_ADDR_FAST = (rb"(?:(?:\"[^\"\\\x00-\x1f\x7f]*+\"[ \t]*+|(?:" + _TOK + rb"++[ \t]++)*+)<[^" + _WS
                  + rb"<>\"]++>|[^" + _WS + rb"<>\"?,;]++)" + _PARAMS_FAST)
_ONE_VIA_FAST = rb"SIP/2\.0/" + _TOK + rb"++ [^" + _WS + rb";,]++(?:;[^" + _WS + rb";,]++)*+"
NAME_ADDR_VALUE = re.compile(rb"[ \t]*+" + _ONE_ADDR_FAST + rb"[ \t]*+")
CONTACT_VALUE = re.compile(rb"[ \t]*+" + _ONE_ADDR_FAST + rb"(?:[ \t]*+,[ \t]*+" + _ONE_ADDR_FAST
                           + rb")*+[ \t]*+")
VIA_VALUE = re.compile(rb"[ \t]*+" + _ONE_VIA_FAST + rb"(?:[ \t]*+,[ \t]*+" + _ONE_VIA_FAST
                       + rb")*+[ \t]*+")

_TOKEN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
# An unquoted display-name is tokens separated by LWS (RFC 3261 §25.1).
_DISPLAY = _TOKEN | frozenset(b" \t")
_BRANCH_END = (b"", b";", b",", b" ", b"\t", b"\r")


def control_fault(lines: list[bytes]) -> SipParseError | None:
    """The error for a control octet in the start line or a header (`lines`:
    the head split at CRLF), or None when each one is a quoted-pair inside a
    quoted string of a name-addr header. Only called once CTL found one."""
    if CTL.search(lines[0]):
        return SipParseError(ParseReason.CONTROL_CHAR)
    logical: list[bytes] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and logical:
            logical[-1] += b"\r\n" + line
        else:
            logical.append(line)
    for raw in logical:
        if CTL.search(raw) is None:
            continue
        colon = raw.find(b":")
        name = raw[:colon].rstrip(b" \t").lower() if colon > 0 else b""
        if name not in _QUOTING or CTL.search(_QUOTED.sub(b"", raw[colon + 1 :])):
            return SipParseError(ParseReason.CONTROL_CHAR)
    return None


def request_line_fault(start: bytes, parts: list[bytes]) -> SipParseError:
    """Why a request line does not split into Method SP Request-URI SP SIP/2.0
    (RFC 3261 §7.1, RFC 4475 §3.1.2.8-10 and §3.1.2.16)."""
    if len(parts) >= 3 and b"" in parts:
        return SipParseError(ParseReason.REQUEST_LINE_SPACES)  # several SP, or SP at the end
    if len(parts) > 3 and parts[-1] == b"SIP/2.0":
        return SipParseError(ParseReason.REQUEST_URI_SPACE)
    if len(parts) == 3 and parts[2][:4].upper() == b"SIP/":
        return SipParseError(ParseReason.BAD_SIP_VERSION, 505)
    return SipParseError(ParseReason.BAD_REQUEST_LINE)


def check_request_uri(uri: bytes) -> None:
    """A Request-URI sbc can forward (RFC 3261 §16.3 steps 1-2): not in angle
    brackets, printable ASCII (the parser has refused controls and spaces),
    a scheme VOS3000 serves (else 416), and for sip/sips no headers part
    (§19.1.1 Table 1; RFC 4475 §3.1.2.11)."""
    if not uri.isascii() or b"<" in uri or b">" in uri or b'"' in uri:
        raise SipParseError(ParseReason.REQUEST_URI_BRACKETS if uri[:1] == b"<"
                            else ParseReason.BAD_REQUEST_URI)
    if uri[:4] == b"sip:" or uri[:5] == b"sips:":
        scheme = b"sip"
    else:
        scheme = uri[: uri.find(b":")].lower()
    if scheme == b"sip" or scheme == b"sips":
        if b"?" in uri and b"?" in uri[uri.rfind(b"@") + 1 :]:
            raise SipParseError(ParseReason.REQUEST_URI_HEADERS)
    elif scheme != b"tel":
        raise SipParseError(ParseReason.UNSUPPORTED_URI_SCHEME, 416)


def check_via(raw: bytes) -> None:
    """One Via header line: no empty value or parameter (RFC 4475 §3.1.2.1)."""
    if VIA_LINE.fullmatch(raw) is None and (
            _EMPTY_VIA.search(raw) or _EMPTY_START.match(raw, raw.find(b":"))):
        raise SipParseError(ParseReason.BAD_VIA)


def check_top_branch(raw: bytes) -> None:
    """The top Via's branch is not the bare magic cookie: "z9hG4bK" and no
    identifier would put every such request in one transaction (RFC 3261
    §8.1.1.7, RFC 4475 §3.2.1)."""
    p = raw.find(b"branch=z9hG4bK")
    if p >= 0:
        if raw[p + 14 : p + 15] in _BRANCH_END and raw.find(b",", 0, p) < 0:
            raise SipParseError(ParseReason.BAD_BRANCH)
    elif b"z9hG4bK" in raw and parse_via(split_values(header_value(raw))[0]).branch == b"z9hG4bK":
        raise SipParseError(ParseReason.BAD_BRANCH)  # spelled with LWS or another case: read properly


def check_name_addr(value: bytes) -> None:
    """A From, To or Contact value (unfolded): `"display" <uri>;params`,
    `display <uri>;params` with a display name of tokens, or an addr-spec
    `uri;params` whose URI has no "?", "," or space (RFC 3261 §20.10); no
    space just inside the angle brackets (RFC 4475 §3.1.2.14) and no empty
    parameter."""
    if value[:1] == b'"':
        m = _QUOTED.match(value)
        if m is None:
            raise SipParseError(ParseReason.BAD_QUOTED_STRING)  # RFC 4475 §3.1.2.6
        rest = value[m.end() :].lstrip(b" \t")
        if rest[:1] != b"<":
            raise SipParseError(ParseReason.BAD_NAME_ADDR)
        value, lt = rest, 0
    else:
        lt = value.find(b"<")
        if lt > 0 and not _DISPLAY.issuperset(value[:lt]):
            raise SipParseError(ParseReason.BAD_DISPLAY_NAME)  # RFC 4475 §3.1.2.15
    if lt >= 0:
        gt = value.find(b">", lt)
        if gt < 0:
            raise SipParseError(ParseReason.BAD_NAME_ADDR)
        inner = value[lt + 1 : gt]
        if not inner or b" " in inner or b"\t" in inner or b"<" in inner:
            raise SipParseError(ParseReason.BAD_NAME_ADDR)
        tail = value[gt + 1 :]
    else:
        semi = value.find(b";")
        uri = value if semi < 0 else value[:semi]
        uri = uri.rstrip(b" \t")
        if not uri or b"?" in uri or b"," in uri or b" " in uri or b"\t" in uri or b">" in uri \
                or b'"' in uri:
            raise SipParseError(ParseReason.BAD_NAME_ADDR)  # RFC 4475 §3.1.2.13
        tail = b"" if semi < 0 else value[semi:]
    if tail:
        tail = tail.lstrip(b" \t")
        if tail and (tail[:1] != b";" or _EMPTY_PARAM.search(tail)):
            raise SipParseError(ParseReason.BAD_NAME_ADDR)


def check_name_addr_line(raw: bytes) -> None:
    """check_name_addr on a From or To header line."""
    if NAME_ADDR_LINE.fullmatch(raw) is None:
        check_name_addr(header_value(raw))


def check_contact(raw: bytes) -> None:
    """A Contact line: `*`, or name-addr / addr-spec values (RFC 3261 §20.10)."""
    if CONTACT_LINE.fullmatch(raw) is not None:
        return
    value = header_value(raw)
    if value == b"*":
        return  # REGISTER removing every binding (RFC 3261 §10.2.2)
    for one in split_values(value):
        check_name_addr(one)


MAX_FORWARDS = frozenset(b"%d" % n for n in range(256))


def check_max_forwards(raw: bytes) -> None:
    """0-255 (RFC 3261 §20.22); leading zeros allowed (RFC 4475 §3.1.1.1)."""
    value = header_value(raw)
    if not value.isdigit() or (value.lstrip(b"0") or b"0") not in MAX_FORWARDS:
        raise SipParseError(ParseReason.BAD_MAX_FORWARDS)


def check_date(raw: bytes) -> None:
    """A SIP-date is an rfc1123-date and always GMT (RFC 3261 §20.17, RFC
    4475 §3.1.2.12)."""
    if not header_value(raw).endswith(b" GMT"):
        raise SipParseError(ParseReason.BAD_DATE)


def proxy_require(raws: list[bytes]) -> SipParseError:
    """sbc supports no proxy extension: a Proxy-Require is a 420 naming its
    option tags in Unsupported (RFC 3261 §16.3 step 5, RFC 4475 §3.3.5)."""
    tags = [t.strip() for raw in raws for t in header_value(raw).split(b",")]
    if not tags or not all(t and _TOKEN.issuperset(t) for t in tags):
        return SipParseError(ParseReason.BAD_PROXY_REQUIRE)
    return SipParseError(ParseReason.PROXY_REQUIRE, 420, (b"Unsupported: " + b", ".join(tags),))


# --------------------------------------------------------------------------
# The reply to a refused request


def _clean(raw: bytes) -> bool:
    """A header line that can go back as it came: no control octet, no CR or
    LF but those of a fold."""
    return CTL.search(raw) is None and raw.count(b"\r") == raw.count(b"\r\n") == raw.count(b"\n")


_VIA_VERSION = re.compile(rb"SIP[ \t]*/[ \t]*[0-9]{1,3}\.[0-9]{1,3}[ \t]*/", re.IGNORECASE)


def refusal(data: bytes, err: SipParseError, to_tag: bytes) -> bytes | None:
    """A stateless reply with `err`'s status and a phrase naming its fault,
    built from the request's own header lines as far as they can be read:
    its Via lines (down to the first one that cannot go back as it came),
    the first From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2). None for a
    response (never answered), an ACK (§17.1.1.3), or when the top Via
    cannot be read: there is nothing to answer along."""
    if data[:4] == b"SIP/":
        return None
    end = data.find(b"\r\n\r\n")
    lines = (data if end < 0 else data[:end]).split(b"\r\n")
    if lines[0].split(b" ", 1)[0] == b"ACK":
        return None
    logical: list[bytes] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and logical:
            logical[-1] += b"\r\n" + line
        else:
            logical.append(line)
    vias: list[bytes] = []
    vias_done = False
    picked: dict[str, bytes | None] = {}
    for raw in logical:
        colon = raw.find(b":")
        if colon <= 0:
            continue
        name_b = raw[:colon].rstrip(b" \t").lower()
        if not _TOKEN.issuperset(name_b):
            continue
        name = name_b.decode("ascii")
        name = COMPACT.get(name, name)
        if name == "via":
            if vias_done or not _clean(raw):
                vias_done = True
            else:
                vias.append(raw)
        elif name in ("from", "to", "call-id", "cseq") and name not in picked:
            picked[name] = raw if _clean(raw) else None
    if not vias:
        return None
    top = header_value(vias[0]).split(b",", 1)[0].strip()
    if err.status_hint == 505:
        # Another SIP version (RFC 4475 §3.1.2.16) has its Via in that
        # version too; the 505 goes back along it as it came.
        top = _VIA_VERSION.sub(b"SIP/2.0/", top, 1)
    try:
        parse_via(top)
    except SipParseError:
        return None
    out = [b"SIP/2.0 %d %s" % (err.status_hint, reply_phrase(err.reason)), *vias]
    for name in ("from", "to", "call-id", "cseq"):
        kept = picked.get(name)
        if kept is not None:
            out.append(add_to_tag(kept, to_tag) if name == "to" else kept)
    out.extend(err.extra)
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"
