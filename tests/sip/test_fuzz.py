"""Property tests for the SIP core: whatever the bytes, the parser, the stream
framer and the header helpers either give a value or raise SipParseError,
nothing else; and what they accept survives serialisation and re-framing."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.sip import (
    Message,
    SipParseError,
    StreamFramer,
    header_param,
    header_value,
    name_addr_uri,
    parse_message,
    parse_uri,
    parse_via,
    split_hostport,
    split_values,
)

# When a property fails, hypothesis's pytest plugin imports libcst to write a
# patch file; that import warns, and filterwarnings=error would turn the
# warning into an internal error that hides the falsifying example.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(FUZZ, max_examples=150)


def wire(*lines: bytes, body: bytes = b"") -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SEEDS = [
    wire(
        b"INVITE sip:bob@biloxi.example.com SIP/2.0",
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
        b"Max-Forwards: 70",
        b'To: "Bob, B" <sip:bob@biloxi.example.com>',
        b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        b"CSeq: 314159 INVITE",
        b"Route: <sip:p1.example.com;lr>, <sip:[2001:db8::1]:5060;lr>",
        b"Content-Type: application/sdp",
        b"Content-Length: 8",
        body=b"v=0\r\n\r\n\r",
    ),
    wire(
        b"SIP/2.0 180 Ringing",
        b"v: SIP/2.0/TCP [2001:db8::2]:5062;branch=z9hG4bKx;received=2001:db8::9;rport=5999",
        b"v: SIP/2.0/UDP h;branch=z9hG4bKy",
        b"t: <sip:b@h>;tag=2",
        b"f: sip:a@h;tag=1",
        b"i: x@y",
        b"CSeq: 1 INVITE",
        b"Subject: folded",
        b"  value",
        b"l: 0",
    ),
    wire(
        b"OPTIONS sips:[::1]:5061 SIP/2.0",
        b"VIA: SIP / 2.0 / TLS h:5061 ;branch=z9hG4bKz",
        b"TO: <sips:[::1]>",
        b"FROM: <sips:x@[::1]>;tag=3",
        b"CALL-ID: c",
        b"CSEQ: 9 OPTIONS",
    ),
]

# Pieces that steer random input into the parser's deeper branches.
VOCAB = [
    b"\r\n", b"\r\n\r\n", b"\r\n ", b"\r\n\t", b"\r", b"\n", b" ", b"\t", b":", b";", b",",
    b"<", b">", b'"', b"\\",
    b"[", b"]", b"@", b"=", b"/", b"SIP/2.0", b"SIP/2.0 ", b" SIP/2.0", b"INVITE ", b"sip:",
    b"SIP/2.0 200 OK", b"INVITE sip:a@b SIP/2.0", b"Via: ", b"v: ", b"From: ", b"f: ", b"To: ",
    b"t: ", b"Call-ID: ", b"i: ", b"CSeq: ", b"CSeq: 1 INVITE", b"Content-Length: ", b"l: ",
    b"0", b"1", b"5", b"99999", b"4294967296", b"branch=", b"tag=", b"rport", b"received=",
    b"[2001:db8::1]:5060", b"\xff", b"\x00",
]

sip_like = st.lists(st.one_of(st.sampled_from(VOCAB), st.binary(max_size=6)), max_size=60).map(
    b"".join
)
any_input = st.one_of(st.binary(max_size=512), sip_like)


def check_accepted(msg: Message, max_size: int) -> None:
    """What the parser accepted is self-consistent and survives a round trip,
    over a stream too."""
    names = [name for name, _ in msg.headers]
    for needed in ("via", "from", "to", "call-id", "cseq"):
        assert needed in names
    assert msg.call_id == msg.get("call-id")
    assert msg.is_request == (msg.method is not None)
    if msg.is_request:
        assert msg.cseq_method == msg.method
    else:
        assert 100 <= msg.status <= 699
    out = msg.to_bytes()
    again = parse_message(out, max(max_size, len(out)), stream=True)
    assert again.to_bytes() == out
    assert again.headers[: len(msg.headers)] == msg.headers
    assert (again.start, again.body, again.call_id, again.cseq) == (
        msg.start, msg.body, msg.call_id, msg.cseq)
    framer = StreamFramer(max_message=len(out), max_buffer=len(out))
    assert framer.feed(out) == [out]
    assert framer.buffered == 0


def parses_or_refuses(data: bytes, max_size: int = 16384) -> None:
    for stream in (False, True):
        try:
            msg = parse_message(data, max_size, stream=stream)
        except SipParseError as e:
            assert e.status_hint in (400, 416, 420, 505, 513)
            assert e.reason and e.reason.isidentifier()
        else:
            check_accepted(msg, max_size)


# --------------------------------------------------------------------------
# (a) arbitrary bytes


@FUZZ
@given(any_input)
def test_parse_message_arbitrary_bytes(data: bytes) -> None:
    parses_or_refuses(data)


@FEW
@given(any_input, st.integers(min_value=0, max_value=600))
def test_parse_message_any_max_size(data: bytes, max_size: int) -> None:
    parses_or_refuses(data, max_size)


# --------------------------------------------------------------------------
# (b) mutations of valid messages

mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "fold"]),
    st.floats(min_value=0.0, max_value=1.0),
    st.one_of(st.sampled_from(VOCAB), st.binary(min_size=1, max_size=4)),
)


def mutate(data: bytes, ops: list[tuple[str, float, bytes]]) -> bytes:
    for kind, where, chunk in ops:
        i = min(int(where * len(data)), len(data))
        if kind == "insert":
            data = data[:i] + chunk + data[i:]
        elif kind == "delete":
            data = data[:i] + data[i + len(chunk) :]
        elif kind == "fold":
            # Fold a header value after its colon (RFC 3261 §7.3.1).
            starts = [j for j in range(len(data)) if data.startswith(b": ", j)]
            if starts:
                j = starts[min(int(where * len(starts)), len(starts) - 1)]
                wsp = b"\t" if chunk[0] & 1 else b" "
                data = data[: j + 1] + b"\r\n" + wsp + data[j + 1 :]
        else:
            data = data[:i] + chunk + data[i + len(chunk) :]
    return data


@pytest.mark.parametrize("seed", SEEDS, ids=["invite", "180", "options"])
def test_seeds_are_valid(seed: bytes) -> None:
    check_accepted(parse_message(seed), 16384)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=4))
def test_parse_message_mutations(seed: bytes, ops: list[tuple[str, float, bytes]]) -> None:
    parses_or_refuses(mutate(seed, ops))


# --------------------------------------------------------------------------
# (c) stream framing

PING = b"\r\n\r\n"
keepalive = st.just(PING)
message = st.sampled_from([s for s in SEEDS if b"Content-Length" in s or b"l: " in s])


def feed_in_pieces(framer: StreamFramer, data: bytes, cuts: list[int]) -> list[bytes]:
    frames: list[bytes] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        frames += framer.feed(data[last:cut])
        last = cut
    return frames


@FUZZ
@given(st.lists(st.tuples(st.booleans(), st.one_of(message, keepalive)), max_size=6),
       st.lists(st.integers(min_value=0), max_size=12))
def test_framer_split_anywhere_same_frames(items: list[tuple[bool, bytes]],
                                           cuts: list[int]) -> None:
    # A stray CRLF may come before any message (not before a ping: two CRLFs
    # and a ping would be a ping and a stray CRLF).
    stream = b"".join((b"\r\n" if stray and item != PING else b"") + item for stray, item in items)
    expected = [b"" if item == PING else item for _, item in items]
    whole = StreamFramer().feed(stream)
    assert whole == expected
    framer = StreamFramer()
    assert feed_in_pieces(framer, stream, cuts) == expected
    assert framer.buffered == 0
    for frame in whole:
        if frame:
            assert parse_message(frame, stream=True).to_bytes() == frame


@FUZZ
@given(st.one_of(st.binary(max_size=600), sip_like), st.lists(st.integers(min_value=0),
                                                               max_size=12))
def test_framer_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    def run(pieces: list[int]) -> tuple[list[bytes], tuple[str, int] | None, int]:
        framer = StreamFramer(max_message=300, max_buffer=10**9)
        frames: list[bytes] = []
        last = 0
        try:
            for cut in sorted(c % (len(data) + 1) for c in pieces) + [len(data)]:
                frames += framer.feed(data[last:cut])
                last = cut
        except SipParseError as e:
            return frames, (e.reason, e.status_hint), framer.buffered
        return frames, None, framer.buffered

    whole_frames, whole_error, whole_left = run([])
    split_frames, split_error, split_left = run(cuts)
    # The framer cuts the same wherever the reads end, and an error is raised
    # as soon as it is certain: the same one whether or not data came in pieces.
    assert split_error == whole_error
    if whole_error is None:
        assert split_frames == whole_frames
        assert split_left == whole_left
        for frame in whole_frames:
            assert len(frame) <= 300
            parses_or_refuses(frame)
    else:
        assert whole_error[1] in (400, 513)


@FEW
@given(st.lists(st.one_of(message, keepalive), min_size=1, max_size=8),
       st.integers(min_value=1, max_value=4000))
def test_framer_buffer_cap(items: list[bytes], max_buffer: int) -> None:
    stream = b"".join(items)
    framer = StreamFramer(max_buffer=max_buffer)
    if len(stream) > max_buffer:
        with pytest.raises(SipParseError) as info:
            framer.feed(stream)
        assert (info.value.reason, info.value.status_hint) == ("stream_buffer_full", 513)
    else:
        assert len(framer.feed(stream)) == len(items)


# --------------------------------------------------------------------------
# (d) header helpers

helper_input = st.one_of(
    st.binary(max_size=80),
    st.lists(st.one_of(st.sampled_from(VOCAB), st.binary(max_size=3)), max_size=20).map(
        b"".join),
)


def _via(value: bytes) -> object:
    via = parse_via(value)
    assert isinstance(via.transport, str) and via.transport
    host, port = via.reply_address()
    assert isinstance(host, str)
    assert 0 < port < 65536
    return via


HELPERS: dict[str, Callable[[bytes], object]] = {
    "parse_via": _via,
    "parse_uri": parse_uri,
    "split_values": split_values,
    "name_addr_uri": name_addr_uri,
    "header_param": lambda v: header_param(v, b"tag"),
    "split_hostport": split_hostport,
    "header_value": lambda v: header_value(b"X:" + v),
}


@FUZZ
@given(st.sampled_from(sorted(HELPERS)), helper_input)
def test_header_helpers_arbitrary_bytes(name: str, value: bytes) -> None:
    try:
        HELPERS[name](value)
    except SipParseError as e:
        assert e.status_hint == 400


@FEW
@given(helper_input)
def test_split_hostport_port_range(value: bytes) -> None:
    try:
        host, port = split_hostport(value)
    except SipParseError:
        return
    assert host
    assert port is None or 0 < port < 65536


@FEW
@given(st.lists(helper_input, min_size=1, max_size=4))
def test_via_values_of_a_parsed_message(vias: list[bytes]) -> None:
    """Via values as the engine reads them: from a parsed message, split, parsed."""
    data = SEEDS[0].replace(
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
        b"Via: " + b", ".join(vias), 1)
    try:
        msg = parse_message(data)
        for raw in msg.get_all("via"):
            for value in split_values(raw):
                _via(value)
    except SipParseError:
        pass
