"""The trace ring (sbc.trace.ring): Call-ID found without a parse, credentials
redacted, the byte and count caps, oldest calls first, and a flood of refused
Call-IDs that cannot evict a real call."""

from __future__ import annotations

from sbc.trace.ring import (
    CALL_OVERHEAD,
    MAX_CALL_ID,
    MESSAGE_OVERHEAD,
    Message,
    Sampler,
    TraceRing,
    call_id_of,
    redact,
)

INVITE = (b"INVITE sip:100@10.0.0.1 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
          b"Call-ID: abc@192.0.2.1\r\n"
          b"Authorization: Digest username=\"acme\", response=\"deadbeef\"\r\n"
          b"proxy-authorization  :Digest username=\"acme\", response=\"cafe\"\r\n"
          b"Content-Length: 26\r\n\r\n"
          b"Authorization: body stays")


def msg(data: bytes = b"x" * 100, ts: int = 1) -> Message:
    return Message(ts, "public", "in", "udp", ("192.0.2.1", 5060), ("203.0.113.1", 5060), data)


def test_call_id_by_byte_search() -> None:
    assert call_id_of(INVITE) == b"abc@192.0.2.1"
    assert call_id_of(b"BYE sip:x SIP/2.0\r\ni:  compact-1 \r\n\r\n") == b"compact-1"
    assert call_id_of(b"BYE sip:x SIP/2.0\r\nCALL-ID:upper\r\n\r\n") == b"upper"
    assert call_id_of(b"garbage") == b""
    assert call_id_of(b"\x00\xff" * 100) == b""
    assert len(call_id_of(b"X\r\nCall-ID: " + b"a" * 5000 + b"\r\n")) == MAX_CALL_ID


def test_credentials_redacted_names_and_body_kept() -> None:
    out = redact(INVITE)
    assert b"deadbeef" not in out and b"cafe" not in out
    assert out.count(b"[redacted]") == 2
    assert b"Authorization: [redacted]\r\n" in out
    assert out.endswith(b"\r\n\r\nAuthorization: body stays")
    plain = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n"
    assert redact(plain) is plain


def test_byte_cap_drops_oldest_calls_first() -> None:
    ring = TraceRing(max_bytes=10 * (CALL_OVERHEAD + MESSAGE_OVERHEAD + 100), max_calls=1000,
                     max_call_bytes=5000, refused_share=0.0)
    for n in range(30):
        assert ring.add(b"call-%d" % n, [msg()], forwarded=True)
    kept = [t.call_id for t in ring.recent()]
    assert kept == [b"call-%d" % n for n in range(29, 19, -1)]
    assert ring.figures()["evicted"] == 20
    assert ring.size <= 10 * (CALL_OVERHEAD + MESSAGE_OVERHEAD + 100)


def test_count_cap_and_per_call_cap() -> None:
    ring = TraceRing(max_bytes=1 << 20, max_calls=3, max_call_bytes=CALL_OVERHEAD + 3 * 400,
                     refused_share=0.0)
    for n in range(5):
        ring.add(b"c%d" % n, [msg()], forwarded=True)
    assert len(ring) == 3 and b"c0" not in ring and b"c4" in ring
    for _ in range(10):  # one call repeating itself keeps at most its own cap
        ring.add(b"c4", [msg()], forwarded=False)
    trace = ring.get(b"c4")
    assert trace is not None and len(trace.messages) == 3 and trace.dropped == 8
    assert trace.size <= ring.max_call_bytes


def test_refused_flood_never_evicts_calls() -> None:
    ring = TraceRing(max_bytes=200_000, max_calls=100, max_call_bytes=20_000, refused_share=0.1)
    for n in range(50):
        ring.add(b"real-%d" % n, [msg(), msg()], forwarded=True)
    for n in range(100_000):
        ring.add(b"flood-%d" % n, [msg()], forwarded=False)
    assert all(b"real-%d" % n in ring for n in range(50))
    f = ring.figures()
    assert f["evicted"] == 0 and f["refused_evicted"] > 99_000
    assert ring.refused.bytes <= 20_000 and len(ring.refused.calls) <= 10
    assert ring.size <= 200_000


def test_refused_call_moves_to_calls_when_forwarded() -> None:
    ring = TraceRing(max_bytes=200_000, max_calls=100, max_call_bytes=20_000, refused_share=0.1)
    ring.add(b"auth", [msg(b"INVITE 1"), msg(b"SIP/2.0 407")], forwarded=False)
    assert b"auth" not in ring and ring.get(b"auth") is not None
    ring.add(b"auth", [msg(b"INVITE 2")], forwarded=True)
    trace = ring.get(b"auth")
    assert b"auth" in ring and trace is not None and not trace.refused
    assert [m.data for m in trace.messages] == [b"INVITE 1", b"SIP/2.0 407", b"INVITE 2"]
    assert ring.refused.bytes == 0 and ring.calls.bytes == trace.size


def test_no_refused_pool_no_empty_call_id_and_events_make_no_entry() -> None:
    ring = TraceRing(max_bytes=100_000, max_calls=10, max_call_bytes=10_000, refused_share=0.0)
    assert not ring.add(b"x", [msg()], forwarded=False)
    assert not ring.add(b"", [msg()], forwarded=True)
    ring.note(b"nobody", gateway="acme")
    assert len(ring) == 0
    ring.add(b"y", [msg()], forwarded=True)
    ring.note(b"y", gateway="acme", reason="bye_caller")
    trace = ring.get(b"y")
    assert trace is not None and trace.info == {"gateway": "acme", "reason": "bye_caller"}


def test_reconfigure_shrinks_now() -> None:
    ring = TraceRing(max_bytes=1 << 20, max_calls=100, max_call_bytes=10_000, refused_share=0.0)
    for n in range(50):
        ring.add(b"c%d" % n, [msg()], forwarded=True)
    ring.configure(max_bytes=1 << 20, max_calls=5, max_call_bytes=10_000, refused_share=0.0)
    assert [t.call_id for t in ring.recent()] == [b"c%d" % n for n in range(49, 44, -1)]


def test_sampler_keeps_its_rate_evenly() -> None:
    s = Sampler(0.1)
    kept = [n for n in range(1000) if s()]
    assert len(kept) == 100 and s.skipped == 900
    assert all(b - a == 10 for a, b in zip(kept, kept[1:]))
    assert not any(Sampler(0.0)() for _ in range(100))
    assert all(Sampler(1.0)() for _ in range(100))
