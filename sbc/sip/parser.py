"""SIP parsing for a proxy's hot path: datagrams and TCP stream framing.

Written by hand because no maintained Python library parses SIP the way a
proxy needs it: fast enough to run per packet in the event loop, keeping each
header line's original bytes (so untouched headers go out byte for byte), and
failing with one typed error for any input whatsoever. General-purpose SIP
stacks either build full object trees per message or re-serialise headers.

The parser checks what a proxy relies on (RFC 3261 §7, §8.1.1, §18.3): a
well-formed start line, header lines with token names, the mandatory headers
Via, From, To, Call-ID, CSeq, a CSeq method that matches the request method,
and a body that agrees with Content-Length. Everything else is left as bytes.
"""

from __future__ import annotations

from .errors import SipParseError
from .message import Header, Message, header_value

# RFC 3261 §7.3.3 compact forms, plus the ones later RFCs registered.
COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

_TOKEN = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
# Raw header name bytes -> canonical name. Keyed by what a sender chose, so it
# is bounded: past the cap, new spellings are resolved without being cached.
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 512

_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_WATCHED = frozenset((*_MANDATORY, "content-length"))

DEFAULT_MAX_DATAGRAM = 16384


def canonical_name(name: bytes) -> str:
    """Canonical lower-case long form of a header name, or SipParseError."""
    cached = _NAME_CACHE.get(name)
    if cached is not None:
        return cached
    if not name or not _TOKEN.issuperset(name):
        raise SipParseError("bad_header_name")
    lname = name.decode("ascii").lower()
    lname = COMPACT.get(lname, lname)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = lname
    return lname


def _is_token(value: bytes) -> bool:
    return bool(value) and _TOKEN.issuperset(value)


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_DATAGRAM, *, stream: bool = False) -> Message:
    """Parse one whole SIP message (a datagram, or one frame cut from a stream).

    Raises SipParseError (400, or 513 when over `max_size`) for anything else.
    Over a stream the framer has already cut the body to Content-Length; over
    UDP octets past Content-Length are discarded (RFC 3261 §18.3).
    """
    if len(data) > max_size:
        raise SipParseError("too_large", 513)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("no_header_end")
    head = data[:end]
    lines = head.split(b"\r\n")
    # A CR or LF that is not part of a CRLF would be forwarded untouched, and a
    # next hop that takes a bare LF as a line end would then read header lines
    # (or an end of headers) that this parser never saw (RFC 3261 §7: lines
    # end in CRLF, a fold is CRLF followed by whitespace, §7.3.1).
    if head.count(b"\n") >= len(lines) or head.count(b"\r") >= len(lines):
        raise SipParseError("bad_line_break")
    body = data[end + 4 :]
    start = lines[0]

    method: str | None
    if start.startswith(b"SIP/2.0 "):
        method = None
        code = start[8:11]
        if len(code) != 3 or not code.isdigit() or start[11:12] not in (b" ", b""):
            raise SipParseError("bad_status_line")
        status = int(code)
        if status < 100 or status > 699:
            raise SipParseError("bad_status_code")
        reason = start[12:]
        uri = b""
    else:
        parts = start.split(b" ")
        if len(parts) != 3 or parts[2] != b"SIP/2.0":
            raise SipParseError("bad_request_line")
        mbytes, uri, _ = parts
        if not _is_token(mbytes) or not uri or b":" not in uri:
            raise SipParseError("bad_request_line")
        method = mbytes.decode("ascii")
        status = 0
        reason = b""

    headers: list[Header] = []
    append = headers.append
    # Index of the first header line of each name the parser itself reads.
    where: dict[str, int] = {}
    for line in lines[1:]:
        first = line[:1]
        if first == b" " or first == b"\t":
            if not headers:
                raise SipParseError("fold_without_header")
            name, prev = headers[-1]
            headers[-1] = (name, prev + b"\r\n" + line)
            continue
        colon = line.find(b":")
        if colon <= 0:
            raise SipParseError("bad_header_line")
        lname = canonical_name(line[:colon].rstrip(b" \t"))
        if lname in _WATCHED and lname not in where:
            where[lname] = len(headers)
        append((lname, line))
    if len(where) - ("content-length" in where) != len(_MANDATORY):
        raise SipParseError("missing_mandatory_header")

    # Values of the headers every message needs: read once, unfolded.
    call_id = header_value(headers[where["call-id"]][1])
    cseq_raw = header_value(headers[where["cseq"]][1])
    content_length = -1
    if "content-length" in where:
        cl = header_value(headers[where["content-length"]][1])
        if not cl.isdigit() or len(cl) > 9:
            raise SipParseError("bad_content_length")
        content_length = int(cl)
    if not call_id:
        raise SipParseError("bad_call_id")
    cparts = cseq_raw.split()
    if len(cparts) != 2 or not cparts[0].isdigit() or len(cparts[0]) > 10 or not _is_token(cparts[1]):
        raise SipParseError("bad_cseq")
    cseq = int(cparts[0])
    if cseq >= 2**31:
        raise SipParseError("bad_cseq")
    cseq_method = cparts[1].decode("ascii")
    if method is not None and cseq_method != method:
        raise SipParseError("cseq_method_mismatch")

    if content_length >= 0:
        if len(body) < content_length:
            raise SipParseError("body_shorter_than_content_length")
        if len(body) > content_length:
            if stream:
                raise SipParseError("body_longer_than_content_length")
            body = body[:content_length]
    elif stream:
        raise SipParseError("missing_content_length")

    return Message(start, method, uri, status, reason, headers, body, call_id, cseq,
                   cseq_method, content_length >= 0)


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

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        if len(buf) > self.max_buffer:
            raise SipParseError("stream_buffer_full", 513)
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
                        raise SipParseError("too_large", 513)
                    self._scan = max(len(buf) - 3, 0)
                    break
                total = end + 4 + _stream_content_length(bytes(buf[:end]))
                if total > self.max_message:
                    raise SipParseError("too_large", 513)
                self._total = total
            if len(buf) < total:
                break
            frames.append(bytes(buf[:total]))
            del buf[:total]
            self._total = -1
            self._scan = 0
        return frames


def _stream_content_length(head: bytes) -> int:
    lines = head.split(b"\r\n")
    for i in range(1, len(lines)):
        line = lines[i]
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].rstrip(b" \t").lower()
        if name == b"content-length" or name == b"l":
            # Read the value as parse_message will, continuation lines
            # included (RFC 3261 §7.3.1), or the two disagree on the frame.
            end = i + 1
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1
            value = header_value(b"\r\n".join(lines[i:end]))
            if not value.isdigit() or len(value) > 9:
                raise SipParseError("bad_content_length")
            return int(value)
    raise SipParseError("missing_content_length")
