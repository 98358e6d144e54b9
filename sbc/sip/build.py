"""Building the messages a proxy originates: its own responses (100, 408,
483, 487, ...) and the ACK and CANCEL it sends downstream (RFC 3261 §8.2.6,
§9.1, §17.1.1.3). Header lines copied from the request are copied as bytes.
"""

from __future__ import annotations

REASONS = {
    100: b"Trying",
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    416: b"Unsupported URI Scheme",
    420: b"Bad Extension",
    423: b"Interval Too Brief",
    480: b"Temporarily Unavailable",
    481: b"Call/Transaction Does Not Exist",
    482: b"Loop Detected",
    483: b"Too Many Hops",
    487: b"Request Terminated",
    500: b"Server Internal Error",
    503: b"Service Unavailable",
    505: b"Version Not Supported",
    513: b"Message Too Large",
}


def add_to_tag(to_line: bytes, tag: bytes) -> bytes:
    """Add a tag to a raw To line unless it has one (RFC 3261 §8.2.6.2)."""
    colon = to_line.find(b":")
    value = to_line[colon + 1 :]
    gt = value.rfind(b">")
    params = value[gt + 1 :] if gt >= 0 else value
    if b";tag=" in params.lower().replace(b" ", b""):
        return to_line
    return to_line + b";tag=" + tag


def response(
    status: int,
    vias: list[bytes],
    from_line: bytes,
    to_line: bytes,
    call_id_line: bytes,
    cseq_line: bytes,
    to_tag: bytes | None = None,
    reason: bytes | None = None,
    extra: tuple[bytes, ...] = (),
) -> bytes:
    """A response built from the request's raw header lines."""
    if to_tag is not None and status > 100:
        to_line = add_to_tag(to_line, to_tag)
    lines = [b"SIP/2.0 %d %s" % (status, reason or REASONS.get(status, b"Unknown")), *vias,
             from_line, to_line, call_id_line, cseq_line, *extra, b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request(
    method: bytes,
    uri: bytes,
    via: bytes,
    routes: list[bytes],
    from_line: bytes,
    to_line: bytes,
    call_id_line: bytes,
    cseq: int,
) -> bytes:
    """An ACK or CANCEL for an INVITE we sent (RFC 3261 §9.1, §17.1.1.3)."""
    lines = [b"%s %s SIP/2.0" % (method, uri), via, *routes, b"Max-Forwards: 70", from_line,
             to_line, call_id_line, b"CSeq: %d %s" % (cseq, method), b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
