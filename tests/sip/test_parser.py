"""parse_message and StreamFramer: wire bytes <-> Message, and every way in
which input is refused, by its reason name and status hint."""

from __future__ import annotations

import pytest

from sbc.sip import SipParseError, StreamFramer, canonical_name, header_value, parse_message
from sbc.sip.headers import split_values


def wire(*lines: str, body: bytes = b"") -> bytes:
    """Header lines joined with CRLF, the empty line, then the body."""
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

INVITE = wire(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
    f"Content-Length: {len(SDP)}",
    body=SDP,
)

OK_200 = wire(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bKnashds8;received=192.0.2.3",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
    "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Content-Length: 0",
)

# Every mandatory header in compact form; `l:` too.
COMPACT = wire(
    "BYE sip:bob@192.0.2.4 SIP/2.0",
    "v: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKcompact",
    "f: <sip:alice@atlanta.example.com>;tag=1",
    "t: <sip:bob@biloxi.example.com>;tag=2",
    "i: compact-1@192.0.2.1",
    "CSeq: 2 BYE",
    "m: <sip:alice@192.0.2.1>",
    "k: timer",
    "l: 0",
)

FOLDED = wire(
    "OPTIONS sip:carol@chicago.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKfold",
    "Subject: I know you're there,",
    "   pick up the phone",
    "\tand talk to me!",
    "To: <sip:carol@chicago.example.com>",
    "From: <sip:alice@atlanta.example.com>;tag=3",
    "Call-ID:",
    " folded-call-id@atlanta",
    "CSeq: 63104 OPTIONS",
    "Content-Length: 0",
)

MULTI = wire(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    'Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKa, SIP/2.0/TCP p2.example.com:5061'
    ';branch=z9hG4bKb ,SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKc',
    'Route: <sip:p1.example.com;lr>, "Proxy, Two" <sip:p2.example.com;lr>',
    "Record-Route: <sip:rr1.example.com;lr;x=a,b>,<sip:rr2.example.com;lr>",
    "To: <sip:bob@biloxi.example.com>",
    "From: <sip:alice@atlanta.example.com>;tag=4",
    "Call-ID: multi@atlanta",
    "CSeq: 1 INVITE",
    "Content-Length: 0",
)

IPV6 = wire(
    "REGISTER sip:[2001:db8::1]:5060 SIP/2.0",
    "Via: SIP/2.0/UDP [2001:db8::2]:5062;branch=z9hG4bKv6;rport",
    "To: <sip:alice@[2001:db8::1]>",
    "From: <sip:alice@[2001:db8::1]>;tag=5",
    "Call-ID: v6@[2001:db8::2]",
    "CSeq: 7 REGISTER",
    "Contact: <sip:alice@[2001:db8::2]:5062;transport=udp>",
    "Content-Length: 0",
)

CASES = {
    "invite": INVITE,
    "200": OK_200,
    "compact": COMPACT,
    "folded": FOLDED,
    "multi": MULTI,
    "ipv6": IPV6,
}


# --------------------------------------------------------------------------
# Good input


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_round_trip_is_byte_for_byte(data: bytes) -> None:
    msg = parse_message(data)
    assert msg.has_content_length
    assert msg.to_bytes() == data
    # The same bytes are a valid stream frame too.
    assert parse_message(data, stream=True).to_bytes() == data


def test_request_fields() -> None:
    msg = parse_message(INVITE)
    assert msg.is_request
    assert msg.method == "INVITE"
    assert msg.uri == b"sip:bob@biloxi.example.com"
    assert msg.start == b"INVITE sip:bob@biloxi.example.com SIP/2.0"
    assert (msg.status, msg.reason) == (0, b"")
    assert msg.call_id == b"a84b4c76e66710@pc33.atlanta.example.com"
    assert (msg.cseq, msg.cseq_method) == (314159, "INVITE")
    assert msg.body == SDP
    assert msg.get("max-forwards") == b"70"
    assert msg.get("content-type") == b"application/sdp"
    assert msg.get("record-route") is None
    assert [name for name, _ in msg.headers] == [
        "via", "max-forwards", "to", "from", "call-id", "cseq", "contact", "content-type",
        "content-length",
    ]


def test_response_fields() -> None:
    msg = parse_message(OK_200)
    assert not msg.is_request
    assert msg.method is None
    assert (msg.status, msg.reason, msg.uri) == (200, b"OK", b"")
    assert (msg.cseq, msg.cseq_method) == (314159, "INVITE")
    assert msg.body == b""
    assert len(msg.get_all("via")) == 2
    assert [i for i, _ in msg.iter_raw("via")] == [0, 1]


@pytest.mark.parametrize(
    ("start", "status", "reason"),
    [
        ("SIP/2.0 100 Trying", 100, b"Trying"),
        ("SIP/2.0 183 Session Progress", 183, b"Session Progress"),
        ("SIP/2.0 487 Request Terminated", 487, b"Request Terminated"),
        ("SIP/2.0 699 ", 699, b""),
        ("SIP/2.0 200", 200, b""),
    ],
)
def test_status_lines(start: str, status: int, reason: bytes) -> None:
    data = OK_200.replace(b"SIP/2.0 200 OK", start.encode(), 1)
    msg = parse_message(data)
    assert (msg.status, msg.reason) == (status, reason)
    assert msg.to_bytes() == data


@pytest.mark.parametrize(
    ("raw_name", "canonical"),
    [
        ("v", "via"),
        ("f", "from"),
        ("t", "to"),
        ("i", "call-id"),
        ("l", "content-length"),
        ("m", "contact"),
        ("c", "content-type"),
        ("e", "content-encoding"),
        ("s", "subject"),
        ("k", "supported"),
        ("o", "event"),
        ("r", "refer-to"),
        ("b", "referred-by"),
        ("u", "allow-events"),
        ("x", "session-expires"),
        ("V", "via"),
        ("I", "call-id"),
        ("VIA", "via"),
        ("cAll-Id", "call-id"),
        ("CONTENT-LENGTH", "content-length"),
        ("Record-Route", "record-route"),
        ("X-Custom", "x-custom"),
    ],
)
def test_canonical_names(raw_name: str, canonical: str) -> None:
    assert canonical_name(raw_name.encode()) == canonical


def test_compact_forms_map_to_long_names() -> None:
    msg = parse_message(COMPACT)
    assert [name for name, _ in msg.headers] == [
        "via", "from", "to", "call-id", "cseq", "contact", "supported", "content-length",
    ]
    assert msg.call_id == b"compact-1@192.0.2.1"
    assert msg.get("via") == b"SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKcompact"
    assert msg.get("contact") == b"<sip:alice@192.0.2.1>"
    # The raw line keeps the compact spelling.
    assert msg.headers[0][1] == b"v: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKcompact"


def test_case_insensitive_names() -> None:
    data = (INVITE.replace(b"Via:", b"VIA:", 1).replace(b"Call-ID:", b"cAll-Id:", 1)
            .replace(b"CSeq:", b"cseq  :", 1))
    msg = parse_message(data)
    assert msg.get("via") == b"SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"
    assert msg.call_id == b"a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.cseq == 314159
    assert msg.to_bytes() == data


def test_folded_headers_unfold_but_keep_raw_bytes() -> None:
    msg = parse_message(FOLDED)
    subject = [raw for name, raw in msg.headers if name == "subject"]
    assert subject == [b"Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!"]
    assert msg.get("subject") == b"I know you're there, pick up the phone and talk to me!"
    assert msg.call_id == b"folded-call-id@atlanta"
    assert msg.to_bytes() == FOLDED


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"Subject: hello", b"hello"),
        (b"Subject:hello", b"hello"),
        (b"Subject :  hello  ", b"hello"),
        (b"Subject:", b""),
        (b"Subject: a\r\n b", b"a b"),
        (b"Subject: a\r\n\t\tb\r\n c", b"a b c"),
        (b"Subject:\r\n  a", b"a"),
        (b"Via: SIP/2.0/UDP h:5060", b"SIP/2.0/UDP h:5060"),
    ],
)
def test_header_value(raw: bytes, value: bytes) -> None:
    assert header_value(raw) == value


def test_several_values_in_one_line() -> None:
    msg = parse_message(MULTI)
    assert split_values(msg.get("via") or b"") == [
        b"SIP/2.0/UDP p1.example.com;branch=z9hG4bKa",
        b"SIP/2.0/TCP p2.example.com:5061;branch=z9hG4bKb",
        b"SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKc",
    ]
    assert split_values(msg.get("route") or b"") == [
        b"<sip:p1.example.com;lr>",
        b'"Proxy, Two" <sip:p2.example.com;lr>',
    ]
    assert split_values(msg.get("record-route") or b"") == [
        b"<sip:rr1.example.com;lr;x=a,b>",
        b"<sip:rr2.example.com;lr>",
    ]


def test_ipv6_references() -> None:
    msg = parse_message(IPV6)
    assert msg.method == "REGISTER"
    assert msg.uri == b"sip:[2001:db8::1]:5060"
    assert msg.get("via") == b"SIP/2.0/UDP [2001:db8::2]:5062;branch=z9hG4bKv6;rport"
    assert msg.call_id == b"v6@[2001:db8::2]"


def test_without_content_length_one_is_appended() -> None:
    data = INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    msg = parse_message(data)
    assert not msg.has_content_length
    assert msg.body == SDP
    out = msg.to_bytes()
    assert out == data.replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % len(SDP), 1)
    again = parse_message(out, stream=True)
    assert again.has_content_length
    assert again.to_bytes() == out


def test_without_content_length_and_body() -> None:
    data = OK_200.replace(b"Content-Length: 0\r\n", b"")
    msg = parse_message(data)
    assert msg.body == b""
    assert msg.to_bytes() == OK_200


def test_udp_body_longer_than_content_length_is_truncated() -> None:
    data = INVITE + b"trailing junk"
    msg = parse_message(data)
    assert msg.body == SDP
    assert msg.to_bytes() == INVITE


def test_a_second_content_length_is_refused_not_ignored() -> None:
    # Two readers that each take another Content-Length cut another message
    # out of the same bytes (RFC 4475 §3.3.9): one is refused, never chosen.
    data = OK_200.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 5", 1)
    for stream in (False, True):
        with pytest.raises(SipParseError) as info:
            parse_message(data, stream=stream)
        assert info.value.reason == "duplicate_content_length"
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(data)
    assert info.value.reason == "duplicate_content_length"


def test_body_may_contain_blank_lines() -> None:
    body = b"a\r\n\r\nb\r\n\r\n"
    data = OK_200.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body
    msg = parse_message(data, stream=True)
    assert msg.body == body
    assert msg.to_bytes() == data


def test_max_size_is_inclusive() -> None:
    assert parse_message(INVITE, max_size=len(INVITE)).to_bytes() == INVITE


# --------------------------------------------------------------------------
# Refused input: (bytes, stream, reason, status hint)


def _drop(data: bytes, name: str) -> bytes:
    """The message with every header line called `name` (canonical) removed."""
    msg = parse_message(data)
    lines = [raw for hname, raw in msg.headers if hname != name]
    return msg.start + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + msg.body


def _replace(old: bytes, new: bytes, data: bytes = INVITE) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


BAD: list[tuple[str, bytes, bool, str, int]] = [
    ("empty", b"", False, "no_header_end", 400),
    ("no_blank_line", INVITE.split(b"\r\n\r\n")[0], False, "no_header_end", 400),
    ("lf_only", INVITE.replace(b"\r\n", b"\n"), False, "no_header_end", 400),
    ("only_crlfs", b"\r\n\r\n", False, "bad_request_line", 400),
    ("missing_via", _drop(INVITE, "via"), False, "missing_mandatory_header", 400),
    ("missing_from", _drop(INVITE, "from"), False, "missing_mandatory_header", 400),
    ("missing_to", _drop(INVITE, "to"), False, "missing_mandatory_header", 400),
    ("missing_call_id", _drop(INVITE, "call-id"), False, "missing_mandatory_header", 400),
    ("missing_cseq", _drop(INVITE, "cseq"), False, "missing_mandatory_header", 400),
    ("missing_compact_via", _drop(COMPACT, "via"), False, "missing_mandatory_header", 400),
    ("missing_via_in_response", _drop(OK_200, "via"), False, "missing_mandatory_header", 400),
    ("cseq_method_mismatch", _replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), False,
     "cseq_method_mismatch", 400),
    ("cseq_method_case", _replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 invite"), False,
     "cseq_method_mismatch", 400),
    ("cseq_no_method", _replace(b"CSeq: 314159 INVITE", b"CSeq: 314159"), False, "bad_cseq", 400),
    ("cseq_not_number", _replace(b"CSeq: 314159 INVITE", b"CSeq: x INVITE"), False, "bad_cseq",
     400),
    ("cseq_too_big", _replace(b"CSeq: 314159 INVITE", b"CSeq: 2147483648 INVITE"), False,
     "bad_cseq", 400),
    ("cseq_too_long", _replace(b"CSeq: 314159 INVITE", b"CSeq: 00000000001 INVITE"), False,
     "bad_cseq", 400),
    ("cseq_three_parts", _replace(b"CSeq: 314159 INVITE", b"CSeq: 1 INVITE x"), False,
     "bad_cseq", 400),
    ("empty_call_id", _replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
                               b"Call-ID:  "), False, "bad_call_id", 400),
    ("content_length_not_number", _replace(b"Content-Length: %d" % len(SDP),
                                           b"Content-Length: 1x"), False, "bad_content_length",
     400),
    ("content_length_negative", _replace(b"Content-Length: %d" % len(SDP),
                                         b"Content-Length: -1"), False, "bad_content_length", 400),
    ("content_length_too_long", _replace(b"Content-Length: %d" % len(SDP),
                                         b"Content-Length: 1234567890"), False,
     "bad_content_length", 400),
    ("body_shorter", INVITE[:-1], False, "body_shorter_than_content_length", 400),
    ("body_shorter_stream", INVITE[:-1], True, "body_shorter_than_content_length", 400),
    ("body_longer_stream", INVITE + b"x", True, "body_longer_than_content_length", 400),
    ("stream_without_content_length", _drop(INVITE, "content-length"), True,
     "missing_content_length", 400),
    ("request_line_two_parts", _replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                                        b"INVITE sip:bob@biloxi.example.com"), False,
     "bad_request_line", 400),
    ("request_line_four_parts", _replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                                         b"INVITE sip:bob@biloxi.example.com x SIP/2.0"), False,
     "request_uri_space", 400),
    ("request_line_double_space", _replace(b"INVITE sip:", b"INVITE  sip:"), False,
     "request_line_spaces", 400),
    ("request_line_version", _replace(b"example.com SIP/2.0\r\n", b"example.com SIP/3.0\r\n"),
     False, "bad_sip_version", 505),
    ("request_line_bad_method", _replace(b"INVITE sip:", b"INV(TE sip:"), False,
     "bad_request_line", 400),
    ("request_line_uri_no_colon", _replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                                           b"INVITE bob SIP/2.0"), False, "bad_request_line",
     400),
    ("request_line_http", _replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                                   b"GET / HTTP/1.1"), False, "bad_request_line", 400),
    ("status_line_short_code", _replace(b"SIP/2.0 200 OK", b"SIP/2.0 20 OK", OK_200), False,
     "bad_status_line", 400),
    ("status_line_long_code", _replace(b"SIP/2.0 200 OK", b"SIP/2.0 2000 OK", OK_200), False,
     "bad_status_line", 400),
    ("status_line_letters", _replace(b"SIP/2.0 200 OK", b"SIP/2.0 2x0 OK", OK_200), False,
     "bad_status_line", 400),
    ("status_line_no_code", _replace(b"SIP/2.0 200 OK", b"SIP/2.0 ", OK_200), False,
     "bad_status_line", 400),
    ("status_code_low", _replace(b"SIP/2.0 200 OK", b"SIP/2.0 099 Low", OK_200), False,
     "bad_status_code", 400),
    ("status_code_high", _replace(b"SIP/2.0 200 OK", b"SIP/2.0 700 High", OK_200), False,
     "bad_status_code", 400),
    ("fold_without_header", _replace(b"\r\nVia:", b"\r\n folded\r\nVia:"), False,
     "fold_without_header", 400),
    ("header_without_colon", _replace(b"Max-Forwards: 70", b"Max-Forwards 70"), False,
     "bad_header_line", 400),
    ("header_empty_name", _replace(b"Max-Forwards: 70", b": 70"), False, "bad_header_line",
     400),
    ("header_name_space_inside", _replace(b"Max-Forwards: 70", b"Max Forwards: 70"), False,
     "bad_header_name", 400),
    ("header_name_non_token", _replace(b"Max-Forwards: 70", b"Max(Forwards): 70"), False,
     "bad_header_name", 400),
    ("header_name_non_ascii", _replace(b"Max-Forwards: 70", "Mäx: 70".encode()), False,
     "bad_header_name", 400),
    ("bare_lf_in_header", _replace(b"Max-Forwards: 70", b"Max-Forwards: 70\nVia: x"), False,
     "bad_line_break", 400),
    ("bare_cr_in_header", _replace(b"Max-Forwards: 70", b"Max-Forwards: 70\rVia: x"), False,
     "bad_line_break", 400),
    ("bare_lf_in_request_line", _replace(b"INVITE sip:bob@", b"INVITE sip:\nbob@"), False,
     "bad_line_break", 400),
    ("bare_lf_in_fold", _replace(b"Max-Forwards: 70", b"Max-Forwards:\r\n 70\n"), False,
     "bad_line_break", 400),
    ("too_large", INVITE, False, "too_large", 513),
    # Strict validation before anything leaves for VOS3000 (issue 14 item 6;
    # RFC 3261 §16.3, RFC 4475 §3.1.2 and §3.3). The old parser let each through.
    # A header that may appear once, twice (either spelling the second time).
    ("duplicate_call_id", _replace(b"CSeq:", b"i: other@x\r\nCSeq:"), False, "duplicate_call_id",
     400),
    ("duplicate_cseq", _replace(b"Contact:", b"CSeq: 1 INVITE\r\nContact:"), False,
     "duplicate_cseq", 400),
    ("duplicate_from", _replace(b"Contact:", b"f: <sip:eve@x>;tag=9\r\nContact:"), False,
     "duplicate_from", 400),
    ("duplicate_to", _replace(b"Contact:", b"To: <sip:eve@x>\r\nContact:"), False,
     "duplicate_to", 400),
    ("duplicate_max_forwards", _replace(b"Contact:", b"Max-Forwards: 5\r\nContact:"), False,
     "duplicate_max_forwards", 400),
    ("duplicate_content_length", _replace(b"Contact:", b"Content-Length: 5\r\nContact:"), False,
     "duplicate_content_length", 400),
    ("duplicate_content_length_stream", _replace(b"Contact:", b"l: %d\r\nContact:" % len(SDP)),
     True, "duplicate_content_length", 400),
    # Control octets where the grammar has none.
    ("nul_in_header", _replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nX-A: a\x00b"), False,
     "control_char", 400),
    ("nul_in_request_uri", _replace(b"sip:bob@", b"sip:b\x00ob@"), False, "control_char", 400),
    ("esc_in_call_id", _replace(b"Call-ID: a84b", b"Call-ID: a\x1b84b"), False, "control_char",
     400),
    ("del_in_to", _replace(b"To: Bob", b"To: B\x7fob"), False, "control_char", 400),
    ("nul_in_quoted_pair_outside_name_addr", _replace(b"Max-Forwards: 70",
                                                      b'Max-Forwards: 70\r\nSubject: "\\\x00"'),
     False, "control_char", 400),
    # The Request-URI.
    ("request_uri_in_brackets", _replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                                         b"INVITE <sip:bob@biloxi.example.com> SIP/2.0"), False,
     "request_uri_brackets", 400),
    ("request_uri_with_space", _replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                                        b"INVITE sip:bob@biloxi.example.com; lr SIP/2.0"), False,
     "request_uri_space", 400),
    ("request_line_trailing_space", _replace(b"example.com SIP/2.0\r\n", b"example.com SIP/2.0 \r\n"),
     False, "request_line_spaces", 400),
    ("request_uri_with_tab", _replace(b"sip:bob@", b"sip:b\tob@"), False, "bad_request_line", 400),
    ("request_uri_headers", _replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@biloxi.example.com"
                                     b"?Route=%3Csip:x%3E SIP"), False, "request_uri_headers", 400),
    ("request_uri_unknown_scheme", _replace(b"sip:bob@biloxi.example.com SIP", b"urn:service:sos SIP"),
     False, "unsupported_uri_scheme", 416),
    ("request_uri_non_ascii", _replace(b"sip:bob@", "sip:böb@".encode()), False, "bad_request_uri",
     400),
    # The SIP version.
    ("response_version", _replace(b"SIP/2.0 200 OK", b"SIP/3.0 200 OK", OK_200), False,
     "bad_sip_version", 505),
    ("request_version_lower_case", _replace(b"example.com SIP/2.0\r\n", b"example.com sip/2.0\r\n"),
     False, "bad_sip_version", 505),
    # What a proxy refuses before it forwards (RFC 3261 §16.3 step 5).
    ("proxy_require", _replace(b"Contact:", b"Proxy-Require: foo, bar\r\nContact:"), False,
     "proxy_require", 420),
    # Header values that do not take their grammar.
    ("via_empty_params", _replace(b";branch=z9hG4bK776asdhds", b";;,;,,"), False, "bad_via", 400),
    ("via_trailing_semicolon", _replace(b";branch=z9hG4bK776asdhds", b";branch=z9hG4bK776asdhds;"),
     False, "bad_via", 400),
    ("via_bare_cookie", _replace(b"branch=z9hG4bK776asdhds", b"branch=z9hG4bK"), False,
     "bad_branch", 400),
    ("to_unterminated_quote", _replace(b"To: Bob <sip:", b'To: "Mr. Bob <sip:'), False,
     "bad_quoted_string", 400),
    ("to_spaces_inside_brackets", _replace(b"To: Bob <sip:bob@biloxi.example.com>",
                                           b"To: Bob < sip:bob@biloxi.example.com >"), False,
     "bad_name_addr", 400),
    ("from_display_name_not_token", _replace(b"From: Alice <", b"From: Liddell, Alice <"), False,
     "bad_display_name", 400),
    ("contact_addr_spec_with_headers", _replace(b"Contact: <sip:alice@pc33.atlanta.example.com>",
                                                b"Contact: sip:alice@pc33.atlanta.example.com?Route"
                                                b"=%3Csip:x%3E"), False, "bad_name_addr", 400),
    ("contact_empty_params", _replace(b"pc33.atlanta.example.com>\r\nContent-Type",
                                      b"pc33.atlanta.example.com>;;;;\r\nContent-Type"), False,
     "bad_name_addr", 400),
    ("max_forwards_over_255", _replace(b"Max-Forwards: 70", b"Max-Forwards: 300"), False,
     "bad_max_forwards", 400),
    ("date_not_gmt", _replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\n"
                              b"Date: Fri, 01 Jan 2010 16:00:00 EST"), False, "bad_date", 400),
    ("call_id_with_space", _replace(b"Call-ID: a84b4c76e66710@", b"Call-ID: a84b4c76e66710 @"),
     False, "bad_call_id", 400),
]


@pytest.mark.parametrize(("data", "stream", "reason", "status"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_refused(data: bytes, stream: bool, reason: str, status: int) -> None:
    max_size = len(data) - 1 if reason == "too_large" else 16384
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_size, stream=stream)
    assert info.value.reason == reason
    assert info.value.status_hint == status
    assert str(info.value) == reason


def test_default_max_size_is_513() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"X-Pad: " + b"a" * 17000 + b"\r\nMax-Forwards: 70")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert (info.value.reason, info.value.status_hint) == ("too_large", 513)
    assert parse_message(data, max_size=len(data)).get("x-pad") == b"a" * 17000


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(SipParseError, ValueError)


# --------------------------------------------------------------------------
# StreamFramer


def test_framer_several_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE + OK_200 + COMPACT) == [INVITE, OK_200, COMPACT]
    assert framer.buffered == 0


def test_framer_byte_by_byte() -> None:
    framer = StreamFramer()
    stream = INVITE + OK_200 + FOLDED
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.feed(stream[i : i + 1])
    assert frames == [INVITE, OK_200, FOLDED]
    assert framer.buffered == 0


def test_framer_partial_message_waits() -> None:
    framer = StreamFramer()
    head, body = INVITE[: -len(SDP)], SDP
    assert framer.feed(head) == []
    assert framer.buffered == len(head)
    assert framer.feed(body[:10]) == []
    assert framer.feed(body[10:] + OK_200[:5]) == [INVITE]
    assert framer.buffered == 5


def test_framer_frames_parse_as_stream_messages() -> None:
    for frame in StreamFramer().feed(INVITE + OK_200 + MULTI):
        assert parse_message(frame, stream=True).to_bytes() == frame


def test_framer_compact_content_length() -> None:
    body = b"hello"
    data = COMPACT.replace(b"l: 0", b"L : 5") + body
    assert StreamFramer().feed(data + OK_200) == [data, OK_200]


def test_framer_body_with_blank_lines() -> None:
    body = b"\r\n\r\n\r\n\r\n"
    data = OK_200.replace(b"Content-Length: 0", b"Content-Length: 8") + body
    assert StreamFramer().feed(data + data) == [data, data]


@pytest.mark.parametrize(
    ("chunks", "frames", "left"),
    [
        ([b"\r\n\r\n"], [b""], 0),
        ([b"\r\n\r\n\r\n\r\n"], [b"", b""], 0),
        ([b"\r\n", b"\r\n"], [b""], 0),
        ([b"\r", b"\n", b"\r", b"\n"], [b""], 0),
        ([b"\r\n\r"], [], 3),
        ([b"\r\n"], [], 2),
        ([b"\r\n\r\n\r\n"], [b""], 2),
        ([INVITE + b"\r\n\r\n" + OK_200], [INVITE, b"", OK_200], 0),
        ([b"\r\n" + INVITE], [INVITE], 0),
        ([b"\r\n", INVITE], [INVITE], 0),
        ([INVITE + b"\r\n" + OK_200 + b"\r\n\r\n"], [INVITE, OK_200, b""], 0),
        ([b"\r\n\r\n", b"\r\n", OK_200], [b"", OK_200], 0),
    ],
)
def test_framer_keepalives_and_stray_crlfs(chunks: list[bytes], frames: list[bytes],
                                           left: int) -> None:
    framer = StreamFramer()
    got: list[bytes] = []
    for chunk in chunks:
        got += framer.feed(chunk)
    assert got == frames
    assert framer.buffered == left


@pytest.mark.parametrize(
    "content_length",
    [
        b"Content-Length: 2",
        b"Content-Length:\r\n 2",
        b"Content-Length:\r\n  2\r\n\t",
        b"Content-Length: 2\r\n ",
        b"l:\r\n\t2",
        b"L : 2",
        b"content-LENGTH\t: 2",
    ],
)
def test_framer_reads_content_length_as_the_parser_does(content_length: bytes) -> None:
    data = OK_200.replace(b"Content-Length: 0", content_length) + b"ab"
    msg = parse_message(data, stream=True)
    assert msg.body == b"ab"
    framer = StreamFramer()
    assert framer.feed(data + data) == [data, data]
    assert framer.buffered == 0


def test_framer_reads_a_head_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body trickling in a byte per read does not make the framer re-read
    the head on every read (a CPU cost a peer could multiply at will)."""
    from sbc.sip import parser

    calls: list[bytes] = []

    def counting(head: bytes) -> int:
        calls.append(head)
        return real(head)

    real = parser._stream_content_length
    monkeypatch.setattr(parser, "_stream_content_length", counting)
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(INVITE)):
        frames += framer.feed(INVITE[i : i + 1])
    assert frames == [INVITE]
    assert len(calls) == 1
    assert framer.feed(OK_200) == [OK_200]
    assert len(calls) == 2


def _framer_error(chunks: list[bytes], **limits: int) -> SipParseError:
    framer = StreamFramer(**limits)
    with pytest.raises(SipParseError) as info:
        for chunk in chunks:
            framer.feed(chunk)
    return info.value


@pytest.mark.parametrize(
    ("chunks", "limits", "reason", "status"),
    [
        ([_drop(INVITE, "content-length")], {}, "missing_content_length", 400),
        ([OK_200, _drop(OK_200, "content-length")], {}, "missing_content_length", 400),
        ([OK_200.replace(b"Content-Length: 0", b"Content-Length: zero")], {},
         "bad_content_length", 400),
        ([OK_200.replace(b"Content-Length: 0", b"Content-Length: 1234567890")], {},
         "bad_content_length", 400),
        # The head alone is complete but announces a body past the cap.
        ([OK_200.replace(b"Content-Length: 0", b"Content-Length: 999999999")], {},
         "too_large", 513),
        ([INVITE], {"max_message": len(INVITE) - 1}, "too_large", 513),
        # No end of headers yet, but already more than a message may be.
        ([b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * 100], {"max_message": 64}, "too_large", 513),
        ([b"a" * 40, b"a" * 40], {"max_message": 64}, "too_large", 513),
        # The buffer cap is on what is held, whole messages included.
        ([INVITE + INVITE], {"max_buffer": 2 * len(INVITE) - 1}, "stream_buffer_full", 513),
        ([INVITE[:-1], INVITE], {"max_buffer": 2 * len(INVITE) - 2}, "stream_buffer_full", 513),
    ],
)
def test_framer_refuses(chunks: list[bytes], limits: dict[str, int], reason: str,
                        status: int) -> None:
    err = _framer_error(chunks, **limits)
    assert (err.reason, err.status_hint) == (reason, status)


def test_framer_limits_are_inclusive() -> None:
    framer = StreamFramer(max_message=len(INVITE), max_buffer=len(INVITE))
    assert framer.feed(INVITE) == [INVITE]
    assert framer.feed(INVITE) == [INVITE]


def test_strict_false_skips_value_shapes_but_nothing_else() -> None:
    """What VOS3000 sends (parse_message(strict=False)) is not held to the
    shapes of its header values; framing, control octets, single-value
    headers and CSeq are checked all the same."""
    odd = _replace(b"From: Alice <", b"From: Liddell, Alice <", OK_200)  # RFC 4475 §3.1.2.15
    odd = _replace(b";received=192.0.2.3", b";;", odd)  # §3.1.2.1
    odd = _replace(b"Content-Length: 0", b"Date: Fri, 01 Jan 2010 16:00:00 EST\r\n"
                   b"Content-Length: 0", odd)  # §3.1.2.12
    with pytest.raises(SipParseError):
        parse_message(odd)
    assert parse_message(odd, strict=False).to_bytes() == odd
    for bad, reason in (
        (odd.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 INVITE\r\nCSeq: 1 INVITE"),
         "duplicate_cseq"),
        (odd.replace(b"Call-ID: a84b", b"Call-ID: a\x00b"), "control_char"),
        (odd.replace(b"SIP/2.0 200", b"SIP/3.0 200"), "bad_sip_version"),
    ):
        with pytest.raises(SipParseError) as info:
            parse_message(bad, strict=False)
        assert info.value.reason == reason
