"""SIP parsing for a proxy's hot path: datagrams and TCP stream framing.

Written by hand because no maintained Python library parses SIP the way a
proxy needs it: fast enough to run per packet in the event loop, keeping each
header line's original bytes (so untouched headers go out byte for byte), and
failing with one typed error for any input whatsoever. General-purpose SIP
stacks either build full object trees per message or re-serialise headers.

The parser checks what a proxy relies on (RFC 3261 §7, §8.1.1, §18.3): a
well-formed start line, header lines with token names, the mandatory headers
Via, From, To, Call-ID, CSeq, a CSeq method that matches the request method,
and a body that agrees with Content-Length. Before anything can leave for
VOS3000 it also refuses what two readers could read differently (RFC 3261
§16.3, the RFC 4475 torture tests; the checks live in validate.py): a
single-value header twice, a control octet, a Request-URI in angle brackets
or with spaces, another SIP version, a Via, From, To or Contact line that
does not take its grammar. Everything else is left as bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ParseReason, SipParseError
from .message import COMPACT, Header, Message, header_value
from .validate import (
    CONTACT_VALUE,
    MAX_FORWARDS,
    NAME_ADDR_VALUE,
    NOT_CTL,
    URI_PLAIN,
    VIA_VALUE,
    check_contact,
    check_date,
    check_max_forwards,
    check_name_addr_line,
    check_request_uri,
    check_top_branch,
    check_via,
    control_fault,
    proxy_require,
    request_line_fault,
)

_TOKEN = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
# Raw header name bytes -> canonical name. Keyed by what a sender chose, so it
# is bounded: past the cap, new spellings are resolved without being cached.
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 512

_MANDATORY = frozenset(("via", "from", "to", "call-id", "cseq"))

# What the header loop does with a line, by canonical name. A header that may
# appear once is refused the second time, compact or long form alike (RFC
# 3261 §7.3.1 lets only comma-list headers repeat; RFC 4475 §3.3.8-9): two
# readers that each take another of two Call-IDs or Content-Lengths is how a
# message is smuggled past a proxy. Lines of the checked headers that do not
# take their usual shape (one regular expression, matched whole from the
# colon on), or that are folded, are checked in full once the loop has
# joined their folds. _PLAIN (0) is every other header: nothing to do.
_PLAIN, _ONCE, _NAME_ADDR, _MAX_FORWARDS, _VIA, _CONTACT, _LATER = range(7)
_KIND = {
    "call-id": _ONCE, "cseq": _ONCE, "content-length": _ONCE,
    "from": _NAME_ADDR, "to": _NAME_ADDR, "max-forwards": _MAX_FORWARDS,
    "via": _VIA, "contact": _CONTACT, "date": _LATER, "proxy-require": _LATER,
}
_DUPLICATE = {name: ParseReason("duplicate_" + name.replace("-", "_"))
              for name, kind in _KIND.items() if kind <= _MAX_FORWARDS}
_FULL_CHECK = {"from": check_name_addr_line, "to": check_name_addr_line,
               "max-forwards": check_max_forwards, "via": check_via,
               "contact": check_contact, "date": check_date}
_name_addr_shape = NAME_ADDR_VALUE.fullmatch
_contact_shape = CONTACT_VALUE.fullmatch
_via_shape = VIA_VALUE.fullmatch
# The shape of a line that is not checked (parse_message(strict=False)): any
# callable of (line, offset) that never returns None; `slice` is one in C.
_ANY_SHAPE: Callable[[bytes, int], object] = slice
# CRLFs that the head of a message with n lines holds, for n up to this.
_LINE_ENDS = [b"\r\n" * n for n in range(128)]
# The methods of RFC 3261 and its extensions, by their bytes: no token check
# and no decoding for them.
_METHODS = {m.encode("ascii"): m for m in (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")}
# The octet after "z9hG4bK" when that is all a branch is (RFC 4475 §3.2.1).
_BARE_COOKIE_END = frozenset(b";, \t\r")

# The header loop's one lookup per line: the line up to and including its
# first colon, as the sender spelled it -> (canonical name, kind, the offset
# of the value). A fold or a line without a colon finds nothing (no key
# starts with whitespace or is empty) and takes the long way. Seeded with
# the spellings real traffic uses, which a flood of invented names cannot
# push out; other spellings are cached up to the cap, like _NAME_CACHE.
_LINE_NAMES: dict[bytes, tuple[str, int, int]] = {}
_LINE_NAMES_MAX = 512


DEFAULT_MAX_DATAGRAM = 16384


def canonical_name(name: bytes) -> str:
    """Canonical lower-case long form of a header name, or SipParseError."""
    cached = _NAME_CACHE.get(name)
    if cached is not None:
        return cached
    if not name or not _TOKEN.issuperset(name):
        raise SipParseError(ParseReason.BAD_HEADER_NAME)
    lname = name.decode("ascii").lower()
    lname = COMPACT.get(lname, lname)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = lname
    return lname


def _line_name(key: bytes) -> tuple[str, int, int]:
    """(canonical name, kind, value offset) of a header line whose first
    colon ends `key`; SipParseError for a name that is not a token."""
    entry = _LINE_NAMES.get(key)
    if entry is None:
        lname = canonical_name(key[:-1].rstrip(b" \t"))
        entry = (lname, _KIND.get(lname, _PLAIN), len(key))
        if len(_LINE_NAMES) < _LINE_NAMES_MAX:
            _LINE_NAMES[key] = entry
    return entry


for _spelling in (
    "Via", "From", "To", "Call-ID", "Call-Id", "CSeq", "Cseq", "Contact", "Max-Forwards",
    "Content-Length", "Content-Type", "Content-Disposition", "Content-Encoding", "Route",
    "Record-Route", "Allow", "Allow-Events", "Supported", "Require", "Proxy-Require",
    "Accept", "Accept-Encoding", "Accept-Language", "User-Agent", "Server", "Expires",
    "Min-Expires", "Date", "Timestamp", "Authorization", "Proxy-Authorization",
    "WWW-Authenticate", "Proxy-Authenticate", "Retry-After", "Session-Expires", "Min-SE",
    "Privacy", "P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "Diversion",
    "Reason", "Event", "Subscription-State", "RSeq", "RAck", "Organization", "Subject",
    "Warning", "Unsupported", "X-Untouched", *COMPACT,
):
    for _raw in {_spelling, _spelling.lower(), _spelling.upper()}:
        _line_name(_raw.encode("ascii") + b":")
del _spelling, _raw


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_DATAGRAM, *, stream: bool = False,
                  strict: bool = True) -> Message:
    """Parse one whole SIP message (a datagram, or one frame cut from a stream).

    Raises SipParseError (400; 513 when over `max_size`; 505, 416, 420 for
    what a proxy refuses, see validate.py) for anything else. Over a stream
    the framer has already cut the body to Content-Length; over UDP octets
    past Content-Length are discarded, fewer are an error (RFC 3261 §18.3).

    This runs for every packet, so the usual message takes the short way:
    one pass over the head for stray line ends and control octets, one
    lookup per header line, and one match for each line whose shape is
    checked; only what fails a short way is looked at the long way.

    `strict=False` is for what VOS3000 sends (the private side, trusted):
    header values are not checked (the shapes of Via, From, To, Contact,
    Max-Forwards and Date, the top branch, Proxy-Require), since what must
    not be misread is what goes to VOS3000; the rest holds: framing, start
    line, control octets, single-value headers, CSeq, Content-Length.
    """
    if len(data) > max_size:
        raise SipParseError(ParseReason.TOO_LARGE, 513)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError(ParseReason.NO_HEADER_END)
    head = data[:end]
    lines = head.split(b"\r\n")
    nlines = len(lines)
    # A CR or LF that is not part of a CRLF would be forwarded untouched, and a
    # next hop that takes a bare LF as a line end would then read header lines
    # (or an end of headers) that this parser never saw (RFC 3261 §7: lines
    # end in CRLF, a fold is CRLF followed by whitespace, §7.3.1). Nor any
    # other control octet: a C string ends at a NUL, and a next hop that stops
    # there reads another message; the grammar has them only as a quoted-pair
    # inside a quoted string (§25.1). One pass, at C speed, keeps the control
    # octets and line ends of the head; the usual head has just its CRLFs.
    ends = head.translate(None, NOT_CTL)
    if nlines >= len(_LINE_ENDS) or ends != _LINE_ENDS[nlines - 1]:
        if head.count(b"\n") >= nlines or head.count(b"\r") >= nlines:
            raise SipParseError(ParseReason.BAD_LINE_BREAK)
        fault = control_fault(lines)
        if fault is not None:
            raise fault
    body = data[end + 4 :]
    start = lines[0]

    method: str | None
    if start.startswith(b"SIP/2.0 "):
        method = None
        code = start[8:11]
        if len(code) != 3 or not code.isdigit() or start[11:12] not in (b" ", b""):
            raise SipParseError(ParseReason.BAD_STATUS_LINE)
        status = int(code)
        if status < 100 or status > 699:
            raise SipParseError(ParseReason.BAD_STATUS_CODE)
        reason = start[12:]
        uri = mbytes = b""
    elif start[:4] == b"SIP/":
        if start[:8] == b"SIP/2.0":
            raise SipParseError(ParseReason.BAD_STATUS_LINE)
        raise SipParseError(ParseReason.BAD_SIP_VERSION, 505)
    else:
        parts = start.split(b" ")
        if len(parts) != 3 or parts[2] != b"SIP/2.0":
            raise request_line_fault(start, parts)
        mbytes, uri, _ = parts
        method = _METHODS.get(mbytes)
        if method is None:
            if not mbytes or not _TOKEN.issuperset(mbytes):
                raise SipParseError(ParseReason.BAD_REQUEST_LINE)
            method = mbytes.decode("ascii")
        # The usual Request-URI: sip:, sips: or tel:, printable, no "<>\"?".
        if uri.translate(None, URI_PLAIN) or not (
                uri[:4] == b"sip:" or uri[:4] == b"tel:" or uri[:5] == b"sips:"):
            if not uri or b":" not in uri or b"\t" in uri:
                raise SipParseError(ParseReason.BAD_REQUEST_LINE)
            check_request_uri(uri)
        status = 0
        reason = b""

    headers: list[Header] = []
    append = headers.append
    # Index of the one header line of each name that may appear once, and of
    # the first Via; the lines to check in full after the loop.
    where: dict[str, int] = {}
    later: list[int] = []
    get = _LINE_NAMES.get
    name_addr_shape: Callable[[bytes, int], object]
    via_shape: Callable[[bytes, int], object]
    contact_shape: Callable[[bytes, int], object]
    if strict:
        name_addr_shape, via_shape, contact_shape = _name_addr_shape, _via_shape, _contact_shape
    else:
        name_addr_shape = via_shape = contact_shape = _ANY_SHAPE
    kind = _PLAIN
    folded = False  # a Call-ID, CSeq or Content-Length line has a fold
    for line in lines[1:]:  # none is empty: the head ends at the first empty line
        entry = get(line[: line.find(b":") + 1])
        if entry is None:  # a fold, a name not seen before, or no header line at all
            first = line[0]
            if first == 32 or first == 9:  # a fold (SP or HTAB) of the line before
                if not headers:
                    raise SipParseError(ParseReason.FOLD_WITHOUT_HEADER)
                name, prev = headers[-1]
                headers[-1] = (name, prev + b"\r\n" + line)
                if kind == _ONCE:
                    folded = True
                elif kind >= _NAME_ADDR and (not later or later[-1] != len(headers) - 1):
                    later.append(len(headers) - 1)
                continue
            colon = line.find(b":")
            if colon <= 0:
                raise SipParseError(ParseReason.BAD_HEADER_LINE)
            entry = _line_name(line[: colon + 1])
        lname, kind, value_at = entry
        if kind:
            if kind <= _MAX_FORWARDS:
                if lname in where:
                    raise SipParseError(_DUPLICATE[lname])
                where[lname] = len(headers)
                if kind == _NAME_ADDR:
                    if name_addr_shape(line, value_at) is None:
                        later.append(len(headers))
                elif kind == _MAX_FORWARDS and line[value_at:].strip() not in MAX_FORWARDS:
                    later.append(len(headers))
            elif kind == _VIA:
                if "via" not in where:
                    where["via"] = len(headers)
                if via_shape(line, value_at) is None:
                    later.append(len(headers))
            elif kind == _LATER or contact_shape(line, value_at) is None:
                later.append(len(headers))
        append((lname, line))
    if not _MANDATORY.issubset(where):
        raise SipParseError(ParseReason.MISSING_MANDATORY_HEADER)
    required: list[bytes] = []
    if strict:
        for i in later:
            name, raw = headers[i]
            if name == "proxy-require":
                required.append(raw)
            else:
                _FULL_CHECK[name](raw)
        # The top Via's branch is not the bare magic cookie (check_top_branch).
        top = headers[where["via"]][1]
        cookie = top.find(b"z9hG4bK")
        if cookie >= 0 and (top[cookie - 7 : cookie] != b"branch=" or cookie + 7 == len(top)
                            or top[cookie + 7] in _BARE_COOKIE_END):
            check_top_branch(top)

    # Values of the headers every message needs: read once, unfolded.
    raw = headers[where["call-id"]][1]
    call_id = header_value(raw) if folded else raw[raw.index(b":") + 1 :].strip()
    # Call-ID is a word, or word@word: no whitespace inside (§25.1).
    if len(call_id.split()) != 1:
        raise SipParseError(ParseReason.BAD_CALL_ID)
    raw = headers[where["cseq"]][1]
    cparts = (header_value(raw) if folded else raw[raw.index(b":") + 1 :]).split()
    if len(cparts) != 2 or not cparts[0].isdigit() or len(cparts[0]) > 10:
        raise SipParseError(ParseReason.BAD_CSEQ)
    cseq = int(cparts[0])
    if cseq >= 2**31:
        raise SipParseError(ParseReason.BAD_CSEQ)
    cmethod = cparts[1]
    if method is not None and cmethod == mbytes:
        cseq_method = method  # the request's own, a token already
        if required:
            raise proxy_require(required)
    elif not _TOKEN.issuperset(cmethod):
        raise SipParseError(ParseReason.BAD_CSEQ)
    elif method is not None:
        raise SipParseError(ParseReason.CSEQ_METHOD_MISMATCH)
    else:
        cseq_method = cmethod.decode("ascii")
    content_length = -1
    if "content-length" in where:
        raw = headers[where["content-length"]][1]
        cl = header_value(raw) if folded else raw[raw.index(b":") + 1 :].strip()
        if not cl.isdigit() or len(cl) > 9:
            raise SipParseError(ParseReason.BAD_CONTENT_LENGTH)
        content_length = int(cl)

    if content_length >= 0:
        if len(body) < content_length:
            raise SipParseError(ParseReason.BODY_SHORTER_THAN_CONTENT_LENGTH)
        if len(body) > content_length:
            if stream:
                raise SipParseError(ParseReason.BODY_LONGER_THAN_CONTENT_LENGTH)
            body = body[:content_length]
    elif stream:
        raise SipParseError(ParseReason.MISSING_CONTENT_LENGTH)

    return Message(start, method, uri, status, reason, headers, body, call_id, cseq,
                   cseq_method, content_length >= 0, where)


class StreamFramer:
    """Cuts SIP messages out of a TCP byte stream by Content-Length (RFC 3261 §18.3).

    `feed` returns complete frames as bytes; an empty frame stands for a
    double-CRLF keepalive ping (RFC 5626 §3.5.1), which the transport answers
    with a single CRLF. Any error is final for the connection: the framer
    raises SipParseError and the caller closes.
    """

    __slots__ = ("_buf", "_scan", "_total", "max_buffer", "max_message")

    def __init__(self, max_message: int = 65536, max_buffer: int = 131072) -> None:
        self._buf = bytearray()
        self.max_message = max_message
        self.max_buffer = max_buffer
        # Progress on the frame at the front of the buffer, kept across feeds
        # so that a peer sending a large head or body a few bytes at a time
        # costs work in proportion to the bytes, not to bytes times reads:
        # where to resume looking for the end of the head, and the frame's
        # length once its head has been read (-1 before).
        self._scan = 0
        self._total = -1

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def pending(self) -> bytes:
        """The bytes not yet cut into frames: after a framing error, the
        message that caused it (what a refusal is built from)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        if len(buf) > self.max_buffer:
            raise SipParseError(ParseReason.STREAM_BUFFER_FULL, 513)
        frames: list[bytes] = []
        while buf:
            total = self._total
            if total < 0:
                # Keepalives and stray CRLFs between messages.
                if buf[:4] == b"\r\n\r\n":
                    del buf[:4]
                    frames.append(b"")
                    continue
                if buf[:2] == b"\r\n":
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break  # maybe the start of a ping; wait for more
                    del buf[:2]
                    continue
                end = buf.find(b"\r\n\r\n", self._scan)
                if end < 0:
                    if len(buf) > self.max_message:
                        raise SipParseError(ParseReason.TOO_LARGE, 513)
                    self._scan = max(len(buf) - 3, 0)
                    break
                total = end + 4 + _stream_content_length(bytes(buf[:end]))
                if total > self.max_message:
                    raise SipParseError(ParseReason.TOO_LARGE, 513)
                self._total = total
            if len(buf) < total:
                break
            frames.append(bytes(buf[:total]))
            del buf[:total]
            self._total = -1
            self._scan = 0
        return frames


def _stream_content_length(head: bytes) -> int:
    """The Content-Length of a frame's head, read as parse_message reads it.

    A second Content-Length is refused here, not left to the parser: the
    framer would cut the stream by one of the two, and whatever the other
    one says is in the body would then be read as the next message (RFC
    4475 §3.3.9; the request smuggling of RFC 9112 §6.3)."""
    lines = head.split(b"\r\n")
    found = -1
    for i in range(1, len(lines)):
        line = lines[i]
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].rstrip(b" \t").lower()
        if name == b"content-length" or name == b"l":
            if found >= 0:
                raise SipParseError(ParseReason.DUPLICATE_CONTENT_LENGTH)
            # Read the value as parse_message will, continuation lines
            # included (RFC 3261 §7.3.1), or the two disagree on the frame.
            end = i + 1
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1
            value = header_value(b"\r\n".join(lines[i:end]))
            if not value.isdigit() or len(value) > 9:
                raise SipParseError(ParseReason.BAD_CONTENT_LENGTH)
            found = int(value)
    if found < 0:
        raise SipParseError(ParseReason.MISSING_CONTENT_LENGTH)
    return found
