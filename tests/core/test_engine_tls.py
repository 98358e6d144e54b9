"""A TLS caller through the engine in memory: the public TLS channel, its Via
and Record-Route on the TLS port, and everything back on that channel."""

from __future__ import annotations

import pytest

from sbc.core.engine import Engine
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP, Source
from sbc.sip import parse_message, parse_via, split_values
from tools.standin import answer
from tools.standin import tag as standin_tag

from .test_engine import in_dialog, invite, only

SETTINGS = ProxySettings(t1=0.5, tls_port=5061)
CALLER = Source(PUBLIC_TLS, "127.0.0.1", 41000)
BACKEND = Source(PRIVATE, "127.0.0.1", 5070)
TLS_RR = b"<sip:127.0.0.1:5061;transport=tls;lr;r2=on>"


@pytest.fixture
def engine() -> Engine:
    return Engine(SETTINGS, secret=b"k" * 16)


def test_channel_numbers_keep_private_after_public() -> None:
    assert PUBLIC_UDP < PUBLIC_TCP < PUBLIC_TLS < PRIVATE


def test_tls_call_through_udp_backend_and_back(engine: Engine) -> None:
    v = engine.receive(invite(transport="TLS", port=41000), CALLER, 0.0)
    assert only(v.sends, PUBLIC_TLS)[2].startswith(b"SIP/2.0 100")
    _, to, out = only(v.sends, PRIVATE)
    fwd = parse_message(out)
    vias = [parse_via(split_values(x)[0]) for x in fwd.get_all("via")]
    assert vias[0].transport == "UDP" and vias[0].port == 5080  # towards VOS3000: UDP
    assert vias[1].transport == "TLS"
    assert vias[1].params[b"received"] == b"127.0.0.1" and vias[1].params[b"rport"] == b"41000"
    assert fwd.get_all("record-route") == [b"<sip:127.0.0.1:5080;lr;r2=on>", TLS_RR]

    *_, ok = answer(out, "127.0.0.1", 5070)
    v = engine.receive(ok, BACKEND, 0.1)
    _, to, ok_out = only(v.sends, PUBLIC_TLS)
    assert to == ("127.0.0.1", 41000)
    assert parse_message(ok_out).get_all("record-route")[-1] == TLS_RR
    # Nothing is retransmitted towards a caller on a reliable transport.
    assert all(s[0] != PUBLIC_TLS for s in engine.on_timer(0.6))

    # The caller's ACK and BYE route through us to VOS3000.
    v = engine.receive(in_dialog("ACK", ok_out, 1, "z9hG4bK-ack", 41000, "TLS"), CALLER, 0.2)
    assert parse_message(only(v.sends, PRIVATE)[2]).get("route") is None
    v = engine.receive(in_dialog("BYE", ok_out, 2, "z9hG4bK-bye", 41000, "TLS"), CALLER, 1.0)
    (bye_ok,) = answer(only(v.sends, PRIVATE)[2], "127.0.0.1", 5070)
    v = engine.receive(bye_ok, BACKEND, 1.01)
    assert only(v.sends, PUBLIC_TLS)[1] == ("127.0.0.1", 41000)


def test_backend_bye_goes_back_over_tls_with_our_tls_via(engine: Engine) -> None:
    v = engine.receive(invite(transport="TLS", port=41000), CALLER, 0.0)
    out = only(v.sends, PRIVATE)[2]
    *_, ok = answer(out, "127.0.0.1", 5070)
    engine.receive(ok, BACKEND, 0.0)
    bye = (
        "BYE sip:alice@127.0.0.1:41000;transport=tls SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKvos1\r\n"
        "Route: <sip:127.0.0.1:5080;lr;r2=on>, <sip:127.0.0.1:5061;transport=tls;lr;r2=on>\r\n"
        f"From: <sip:1000@127.0.0.1>;tag={standin_tag(parse_message(out).call_id).decode()}\r\n"
        "To: \"Alice\" <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"Call-ID: {parse_message(out).call_id.decode()}\r\nCSeq: 5 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    v = engine.receive(bye, BACKEND, 1.0)
    _, to, data = only(v.sends, PUBLIC_TLS)
    assert to == ("127.0.0.1", 41000)
    m = parse_message(data)
    assert m.get("route") is None
    top = parse_via(split_values(m.get_all("via")[0])[0])
    assert (top.transport, top.port) == ("TLS", 5061)
    # The caller's 200 comes back on the TLS channel; our TLS Via is recognised.
    vias = b"".join(raw + b"\r\n" for name, raw in m.headers if name == "via")
    rest = b"".join(raw + b"\r\n" for name, raw in m.headers
                    if name in ("from", "to", "call-id", "cseq"))
    v = engine.receive(b"SIP/2.0 200 OK\r\n" + vias + rest + b"Content-Length: 0\r\n\r\n",
                       CALLER, 1.01)
    assert only(v.sends, PRIVATE)[1] == ("127.0.0.1", 5070)


def test_tls_port_is_ours_only_when_tls_is_on() -> None:
    with_tls = Engine(SETTINGS, secret=b"k" * 16)
    without = Engine(ProxySettings(), secret=b"k" * 16)
    assert with_tls.own.is_own("127.0.0.1", 5061)
    assert not without.own.is_own("127.0.0.1", 5061)


def test_stream_framing_rules_apply_to_tls(engine: Engine) -> None:
    # On a stream a message without Content-Length is malformed (RFC 3261 §18.3).
    no_length = invite(transport="TLS", port=41000).replace(b"Content-Length: 0\r\n", b"")
    v = engine.receive(no_length, CALLER, 0.0)
    # Refused, to the caller on its TLS flow (no gateway table: a gateway), never forwarded.
    assert v.kind == "reply" and [s[:2] for s in v.sends] == [(PUBLIC_TLS, ("127.0.0.1", 41000))]
    assert v.sends[0][2].startswith(b"SIP/2.0 400 Missing Content-Length\r\n")
    assert engine.tally.parse_errors["missing_content_length"] == 1
