"""Malformed input through the engine (issue 14 item 6): who is told why, who
gets silence, and what is never sent on. In memory; hand-built bytes.

Before this item every SipParseError was a silent Drop("malformed"), for a
gateway too, and the parser let through most of what is refused here (see
tests/core/test_parser.py BAD, and test_rfc4475.py for the RFC's corpus).
"""

from __future__ import annotations

import pytest

from sbc.core.screen.bans import BanTable
from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayInfo, GatewayTable
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP, Source
from sbc.sip import SipParseError, StreamFramer, header_param, parse_message
from tools.standin import answer

GATEWAY = Source(PUBLIC_UDP, "192.0.2.10", 5060)
STRANGER = Source(PUBLIC_UDP, "203.0.113.66", 5060)
BACKEND = Source(PRIVATE, "127.0.0.1", 5070)


def make_engine() -> Engine:
    return Engine(ProxySettings(), secret=b"k" * 16,
                  gateways=GatewayTable([("gw", ["192.0.2.10"], [])]),
                  gateway_info={"gw": GatewayInfo("gw", 0, "pass")},
                  bans=BanTable(max_offenses=1000))


def invite(request_line: str = "INVITE sip:1000@127.0.0.1 SIP/2.0", extra: str = "",
           to: str = "To: <sip:1000@127.0.0.1>", method: str = "INVITE",
           host: str = "192.0.2.10") -> bytes:
    return (
        f"{request_line}\r\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK-m1;rport\r\n"
        f"Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:alice@{host}>;tag=a1\r\n'
        f"{to}\r\n"
        f"Call-ID: m1@{host}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:alice@{host}:5060>\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


# One malformed request per fault the issue names, and the reply it earns.
FAULTS = {
    "duplicate_call_id": (invite(extra="Call-ID: other@x\r\n"), 400, b"Duplicate Call-ID"),
    "duplicate_cseq": (invite(extra="CSeq: 2 INVITE\r\n"), 400, b"Duplicate CSeq"),
    "duplicate_from": (invite(extra="f: <sip:eve@x>;tag=e\r\n"), 400, b"Duplicate From"),
    "duplicate_to": (invite(extra="t: <sip:eve@x>\r\n"), 400, b"Duplicate To"),
    "duplicate_max_forwards": (invite(extra="Max-Forwards: 69\r\n"), 400, b"Duplicate Max-Forwards"),
    "duplicate_content_length": (invite(extra="l: 0\r\n"), 400, b"Duplicate Content-Length"),
    "cseq_method": (invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400,
                    b"CSeq Method Mismatch"),
    "control_byte": (invite(extra="X-Note: a\x00b\r\n"), 400, b"Control Character In Message"),
    "request_uri_brackets": (invite("INVITE <sip:1000@127.0.0.1> SIP/2.0"), 400,
                             b"Request-URI In Angle Brackets"),
    "request_uri_space": (invite("INVITE sip:1000@127.0.0.1; lr SIP/2.0"), 400,
                          b"Space In Request-URI"),
    "sip_version": (invite("INVITE sip:1000@127.0.0.1 SIP/3.0"), 505, b"Version Not Supported"),
    "body_shorter": (invite().replace(b"Content-Length: 0", b"Content-Length: 10"), 400,
                     b"Body Shorter Than Content-Length"),
    "unknown_scheme": (invite("INVITE urn:service:sos SIP/2.0"), 416, b"Unsupported URI Scheme"),
    "proxy_require": (invite(extra="Proxy-Require: x-magic\r\n"), 420, b"Bad Extension"),
}


@pytest.mark.parametrize("name", FAULTS)
def test_a_gateway_is_told_the_fault_and_it_is_an_offense(name: str) -> None:
    data, status, phrase = FAULTS[name]
    eng = make_engine()
    v = eng.receive(data, GATEWAY, 0.0)
    assert v.kind == "reply"
    ((channel, addr, reply),) = v.sends  # to the packet's source only, nothing to VOS3000
    assert (channel, addr) == (PUBLIC_UDP, ("192.0.2.10", 5060))
    assert reply.startswith(b"SIP/2.0 %d %s\r\n" % (status, phrase))
    msg = parse_message(reply)
    assert msg.get("via") == b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-m1;rport"
    assert msg.call_id == b"m1@192.0.2.10" and msg.cseq == 1
    assert (header_param(msg.get("to") or b"", b"tag") or b"").startswith(b"sbc-")
    if status == 420:
        assert msg.get("unsupported") == b"x-magic"
    assert eng.tally.refusals["malformed"] == 1 and sum(eng.tally.parse_errors.values()) == 1
    assert eng.bans.offenses.count("192.0.2.10", 0.0) == 1
    # Stateless: nothing kept, nothing sent later.
    assert not eng.txs and len(eng.dialogs) == 0 and eng.on_timer(600.0) == []


@pytest.mark.parametrize("name", FAULTS)
def test_a_stranger_gets_silence_and_it_is_an_offense(name: str) -> None:
    data = FAULTS[name][0].replace(b"192.0.2.10", b"203.0.113.66")
    eng = make_engine()
    v = eng.receive(data, STRANGER, 0.0)
    assert (v.kind, v.reason, v.sends) == ("drop", "malformed", [])  # type: ignore[union-attr]
    assert eng.tally.dropped["malformed"] == 1 and eng.tally.refusals["malformed"] == 0
    assert eng.bans.offenses.count("203.0.113.66", 0.0) == 1


def test_the_same_malformed_request_again_gets_the_same_answer() -> None:
    # RFC 3261 §8.2.6.2: a retransmission's reply carries the same To-tag.
    eng = make_engine()
    data = FAULTS["request_uri_brackets"][0]
    first = eng.receive(data, GATEWAY, 0.0).sends
    assert eng.receive(data, GATEWAY, 0.5).sends == first


def test_the_ack_for_a_refusal_is_absorbed_never_forwarded() -> None:
    eng = make_engine()
    data = FAULTS["unknown_scheme"][0]
    reply = eng.receive(data, GATEWAY, 0.0).sends[0][2]
    tag = header_param(parse_message(reply).get("to") or b"", b"tag")
    assert tag is not None
    ack = invite(to=f"To: <sip:1000@127.0.0.1>;tag={tag.decode()}", method="ACK").replace(
        b"INVITE sip:1000@127.0.0.1 SIP/2.0", b"ACK sip:1000@127.0.0.1 SIP/2.0")
    v = eng.receive(ack, GATEWAY, 0.1)
    assert (v.kind, v.reason, v.sends) == ("drop", "ack_absorbed", [])  # type: ignore[union-attr]


@pytest.mark.parametrize("data", [
    # A malformed ACK: never answered (RFC 3261 §17.1.1.3).
    invite("ACK <sip:1000@127.0.0.1> SIP/2.0", method="ACK"),
    # A malformed response: never answered.
    (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\n"
     b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCall-ID: y\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n"
     b"\r\n"),
    # No Via to answer along.
    b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: x\r\n\r\n",
    b"\x00\xff garbage",
], ids=["ack", "response", "no_via", "garbage"])
def test_what_cannot_be_answered_is_dropped_even_from_a_gateway(data: bytes) -> None:
    eng = make_engine()
    v = eng.receive(data, GATEWAY, 0.0)
    assert (v.kind, v.reason, v.sends) == ("drop", "malformed", [])  # type: ignore[union-attr]
    assert eng.bans.offenses.count("192.0.2.10", 0.0) == 1


def test_a_malformed_message_from_vos3000_is_dropped_without_offense() -> None:
    eng = make_engine()
    v = eng.receive(FAULTS["duplicate_cseq"][0], BACKEND, 0.0)
    assert (v.kind, v.reason, v.sends) == ("drop", "malformed", [])  # type: ignore[union-attr]
    assert eng.bans.offenses.count("127.0.0.1", 0.0) == 0


def test_shapes_are_checked_on_what_goes_to_vos3000_not_on_what_it_sends() -> None:
    """parse_message(strict=False) for the private side: VOS3000's answer with
    an unquoted display name that has a comma (RFC 4475 §3.1.2.15) still
    reaches the caller; the same From in the caller's request is a 400."""
    eng = make_engine()
    v = eng.receive(invite(), GATEWAY, 0.0)
    out = next(s[2] for s in v.sends if s[0] >= PRIVATE)
    ok = answer(out, "127.0.0.1", 5070)[-1].replace(b'From: "Alice" <', b"From: Liddell, Alice <")
    v = eng.receive(ok, BACKEND, 0.1)
    assert [s[:2] for s in v.sends] == [(PUBLIC_UDP, ("192.0.2.10", 5060))]
    bad = invite().replace(b'From: "Alice" <', b"From: Liddell, Alice <").replace(b"m1@", b"m2@")
    v = eng.receive(bad, GATEWAY, 0.2)
    assert v.sends[0][2].startswith(b"SIP/2.0 400 Bad Display Name\r\n")


@pytest.mark.parametrize("channel", [PUBLIC_TCP, PUBLIC_TLS])
def test_a_stream_that_cannot_be_framed_tells_a_gateway_why(channel: int) -> None:
    """What sbc.io.tcp sends before it closes: the framer's error as a
    reply, built from the bytes it held; to a stranger, nothing."""
    data = invite(extra="Content-Length: 5\r\n")  # two Content-Lengths: no frame
    framer = StreamFramer()
    with pytest.raises(SipParseError) as info:
        framer.feed(data)
    eng = make_engine()
    gw = Source(channel, "192.0.2.10", 40000)
    ((ch, addr, reply),) = eng.refuse_unframed(framer.pending, gw, info.value, 0.0)
    assert (ch, addr) == (channel, ("192.0.2.10", 40000))
    assert reply.startswith(b"SIP/2.0 400 Duplicate Content-Length\r\n")
    stranger = Source(channel, "203.0.113.66", 40000)
    assert eng.refuse_unframed(framer.pending, stranger, info.value, 0.0) == []
