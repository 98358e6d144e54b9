"""The SIP message model a proxy needs: a start line, header lines kept as
their original bytes, and a body.

A proxy changes a handful of headers (Via, Route, Record-Route, Max-Forwards)
and must pass every other header through byte for byte. So a message keeps
each header line exactly as it arrived, next to its canonical lower-case long
name; values are decoded only when somebody asks. Serialising puts the lines
back as they were, with only the ones the proxy replaced or inserted being new.
"""

from __future__ import annotations

from collections.abc import Iterator

# (canonical lower-case long name, the raw header line without its CRLF; a
# folded header keeps its folding inside the raw bytes)
Header = tuple[str, bytes]


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

# Headers whose first line's index the parser records (Message.where): the
# single-value ones it checks, and Via.
INDEXED = frozenset(("via", "from", "to", "call-id", "cseq", "content-length", "max-forwards"))


def _index(headers: list[Header]) -> dict[str, int]:
    where: dict[str, int] = {}
    for i, (name, _raw) in enumerate(headers):
        if name in INDEXED and name not in where:
            where[name] = i
    return where


def header_value(raw: bytes) -> bytes:
    """The value part of a raw header line, unfolded and stripped."""
    value = raw[raw.index(b":") + 1 :]
    if b"\n" in value:
        # RFC 3261 §7.3.1: a line fold is equivalent to a single space.
        value = b" ".join(part.strip() for part in value.splitlines())
    return value.strip()


class Message:
    """A parsed SIP request or response.

    `method` is None for a response. `headers` is the list of header lines in
    wire order; the cached fields below were read from it by the parser and
    are what the proxy core looks at on every message.
    """

    __slots__ = (
        "body",
        "call_id",
        "cseq",
        "cseq_method",
        "has_content_length",
        "headers",
        "method",
        "reason",
        "start",
        "status",
        "uri",
        "where",
    )

    def __init__(
        self,
        start: bytes,
        method: str | None,
        uri: bytes,
        status: int,
        reason: bytes,
        headers: list[Header],
        body: bytes,
        call_id: bytes,
        cseq: int,
        cseq_method: str,
        has_content_length: bool,
        where: dict[str, int] | None = None,
    ) -> None:
        self.start = start
        self.method = method
        self.uri = uri
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.call_id = call_id
        self.cseq = cseq
        self.cseq_method = cseq_method
        self.has_content_length = has_content_length
        # The index in `headers` of the first line of each header in INDEXED
        # that the message has (the parser knows them already); a name of
        # INDEXED that is not here is not in the message. Headers are never
        # reordered after the parse, so the indexes hold.
        self.where: dict[str, int] = where if where is not None else _index(headers)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> bytes | None:
        """The value of the first header called `name` (canonical lower-case long form)."""
        if name in INDEXED:
            i = self.where.get(name)
            return None if i is None else header_value(self.headers[i][1])
        for hname, raw in self.headers:
            if hname == name:
                return header_value(raw)
        return None

    def get_all(self, name: str) -> list[bytes]:
        """The values of every header line called `name`, in order (not split on commas)."""
        return [header_value(raw) for hname, raw in self.headers if hname == name]

    def iter_raw(self, name: str) -> Iterator[tuple[int, bytes]]:
        for i, (hname, raw) in enumerate(self.headers):
            if hname == name:
                yield i, raw

    def to_bytes(self) -> bytes:
        return serialize(self.start, [raw for _, raw in self.headers], self.body,
                         self.has_content_length)


def serialize(start: bytes, lines: list[bytes], body: bytes, has_content_length: bool) -> bytes:
    """Join a start line, raw header lines and a body into wire bytes.

    A message that arrived without Content-Length (allowed over UDP) gets one,
    so it stays valid when it leaves over a stream transport.
    """
    if not has_content_length:
        lines = [*lines, b"Content-Length: %d" % len(body)]
    return start + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + body
