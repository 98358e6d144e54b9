"""The proxy engine in memory: caller → engine → VOS3000 stand-in, no sockets,
time passed in by hand."""

from __future__ import annotations

import pytest

from sbc.core.engine import Engine
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_UDP, Source
from sbc.sip import header_param, name_addr_uri, parse_message, parse_via, split_values
from tools.standin import answer
from tools.standin import tag as standin_tag

SETTINGS = ProxySettings(t1=0.5, invite_timeout=32.0, proxy_timeout=180.0, linger=32.0)
CALLER = Source(PUBLIC_UDP, "127.0.0.1", 5061)
CALLER_TCP = Source(PUBLIC_TCP, "127.0.0.1", 40000)
BACKEND = Source(PRIVATE, "127.0.0.1", 5070)
PUB = "127.0.0.1:5060"


def invite(branch: str = "z9hG4bK-1", call_id: str = "c1@x", extra: str = "",
           transport: str = "UDP", port: int = 5061) -> bytes:
    return (
        f"INVITE sip:1000@{PUB} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        f"From: \"Alice\" <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:1000@{PUB}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:{port}>\r\n"
        f"X-Untouched:   keep  these   bytes \r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def in_dialog(method: str, ok: bytes, cseq: int, branch: str, port: int = 5061,
              transport: str = "UDP") -> bytes:
    """A caller's in-dialog request built from the 200 OK, route set reversed (RFC 3261 §12.1.2)."""
    msg = parse_message(ok)
    rr = [v for raw in msg.get_all("record-route") for v in split_values(raw)]
    to = msg.get("to")
    assert to is not None
    contact = name_addr_uri(msg.get("contact") or b"").decode()
    routes = "".join(f"Route: {v.decode()}\r\n" for v in reversed(rr))
    return (
        f"{method} {contact} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch}\r\n"
        f"{routes}"
        f"From: \"Alice\" <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: {to.decode()}\r\n"
        f"Call-ID: {msg.call_id.decode()}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def only(sends, channel):
    out = [s for s in sends if s[0] == channel]
    assert len(out) == 1, sends
    return out[0]


@pytest.fixture
def engine() -> Engine:
    return Engine(SETTINGS, secret=b"k" * 16)


def test_full_call_caller_hangs_up(engine: Engine) -> None:
    events: list[str] = []
    engine.on_event = lambda ev, **kw: events.append(ev)
    v = engine.receive(invite(), CALLER, 0.0)
    assert v.kind == "forward"
    trying = only(v.sends, PUBLIC_UDP)
    assert trying[1] == ("127.0.0.1", 5061) and trying[2].startswith(b"SIP/2.0 100 Trying")
    _, to, out = only(v.sends, PRIVATE)
    assert to == ("127.0.0.1", 5070)
    fwd = parse_message(out)
    vias = [parse_via(split_values(x)[0]) for x in fwd.get_all("via")]
    assert (vias[0].host, vias[0].port) == ("127.0.0.1", 5080)
    assert vias[1].params[b"received"] == b"127.0.0.1" and vias[1].params[b"rport"] == b"5061"
    assert fwd.get_all("record-route") == [b"<sip:127.0.0.1:5080;lr;r2=on>", b"<sip:127.0.0.1:5060;lr;r2=on>"]
    assert fwd.get("max-forwards") == b"70"  # absent: we add 70
    assert b"X-Untouched:   keep  these   bytes \r\n" in out

    # VOS3000 answers: 100 is hop-by-hop, 180 and 200 go to the caller.
    replies = answer(out, "127.0.0.1", 5070)
    verdicts = [engine.receive(r, BACKEND, 0.01) for r in replies]
    assert verdicts[0].kind == "drop" and verdicts[0].reason == "hop_by_hop_100"
    ringing = only(verdicts[1].sends, PUBLIC_UDP)
    ok = only(verdicts[2].sends, PUBLIC_UDP)
    assert ringing[1] == ok[1] == ("127.0.0.1", 5061)
    okmsg = parse_message(ok[2])
    assert len(okmsg.get_all("via")) == 1
    # Accepted (RFC 6026): only a compact entry that absorbs retransmitted INVITEs.
    assert not engine.txs and len(engine.ctx.calls.accepted) == 1
    assert engine.receive(invite(), CALLER, 0.015).reason == "retransmission"  # type: ignore[union-attr]
    assert events == ["call_setup"]

    # ACK for 2xx goes end to end, our Route entries removed.
    v = engine.receive(in_dialog("ACK", ok[2], 1, "z9hG4bK-ack"), CALLER, 0.02)
    _, to, ack = only(v.sends, PRIVATE)
    assert to == ("127.0.0.1", 5070)
    assert parse_message(ack).get("route") is None

    v = engine.receive(in_dialog("BYE", ok[2], 2, "z9hG4bK-bye"), CALLER, 1.0)
    _, _, bye = only(v.sends, PRIVATE)
    (bye_ok,) = answer(bye, "127.0.0.1", 5070)
    v = engine.receive(bye_ok, BACKEND, 1.01)
    assert only(v.sends, PUBLIC_UDP)[2].startswith(b"SIP/2.0 200")
    assert events == ["call_setup", "call_end"]


def test_backend_hangs_up_reaches_caller_only_through_dialog(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    out = only(v.sends, PRIVATE)[2]
    *_, ok = answer(out, "127.0.0.1", 5070)
    engine.receive(ok, BACKEND, 0.0)
    fwd = parse_message(out)
    bye = (
        "BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKvos1\r\n"
        "Route: <sip:127.0.0.1:5080;lr;r2=on>, <sip:127.0.0.1:5060;lr;r2=on>\r\n"
        f"From: <sip:1000@127.0.0.1>;tag={standin_tag(fwd.call_id).decode()}\r\nTo: \"Alice\" <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"Call-ID: {fwd.call_id.decode()}\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    v = engine.receive(bye, BACKEND, 1.0)
    ch, to, data = only(v.sends, PUBLIC_UDP)
    assert to == ("127.0.0.1", 5061)
    m = parse_message(data)
    assert m.get("route") is None
    assert parse_via(m.get("via") or b"").host == "127.0.0.1"
    # The caller's 200 goes back to VOS3000.
    resp = data.split(b"\r\n", 1)[1]
    vias = b"".join(raw + b"\r\n" for name, raw in m.headers if name == "via")
    rest = b"".join(raw + b"\r\n" for name, raw in m.headers if name in ("from", "to", "call-id", "cseq"))
    ok200 = b"SIP/2.0 200 OK\r\n" + vias + rest + b"Content-Length: 0\r\n\r\n"
    assert resp
    v = engine.receive(ok200, CALLER, 1.01)
    _, to, back = only(v.sends, PRIVATE)
    assert to == ("127.0.0.1", 5070)
    assert b"z9hG4bKvos1" in back and b"5060;branch" not in back


def test_request_from_backend_without_dialog_is_refused(engine: Engine) -> None:
    bye = (
        "BYE sip:victim@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: nope\r\nCSeq: 1 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    v = engine.receive(bye, BACKEND, 0.0)
    assert v.kind == "reply"
    ch, to, data = only(v.sends, PRIVATE)
    assert to == ("127.0.0.1", 5070) and data.startswith(b"SIP/2.0 481")


def test_private_socket_only_takes_backend(engine: Engine) -> None:
    v = engine.receive(invite(), Source(PRIVATE, "10.9.9.9", 5060), 0.0)
    assert v.kind == "drop" and v.reason == "not_backend"


def test_retransmitted_invite_absorbed_and_answered_with_last_provisional(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    out = only(v.sends, PRIVATE)[2]
    again = engine.receive(invite(), CALLER, 0.4)
    assert again.kind == "reply"
    assert only(again.sends, PUBLIC_UDP)[2].startswith(b"SIP/2.0 100")
    _, ringing, _ = answer(out, "127.0.0.1", 5070)
    engine.receive(ringing, BACKEND, 0.5)
    again = engine.receive(invite(), CALLER, 0.9)
    assert only(again.sends, PUBLIC_UDP)[2].startswith(b"SIP/2.0 180")
    assert engine.tally.dropped["retransmission"] == 0 and len(engine.txs) == 1


def test_silent_backend_retransmits_then_408(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    out = only(v.sends, PRIVATE)[2]
    sent_at = []
    t = 0.0
    while True:
        nd = engine.next_deadline()
        assert nd is not None
        t = nd
        sends = engine.on_timer(t)
        if any(s[0] == PUBLIC_UDP for s in sends):
            break
        assert [s[2] for s in sends] == [out]
        sent_at.append(t)
    # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (doubling), then Timer B at 32.
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert t == 32.0
    final = only(sends, PUBLIC_UDP)[2]
    assert final.startswith(b"SIP/2.0 408")
    assert header_param(parse_message(final).get("to") or b"", b"tag") is not None
    assert engine.dialogs.active_total() == 0
    # The caller's ACK for our 408 is absorbed; Timer G stops.
    ack = invite().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    v = engine.receive(ack, CALLER, 32.1)
    assert v.kind == "drop" and v.reason == "ack_absorbed"


def test_408_retransmitted_to_udp_caller_until_ack(engine: Engine) -> None:
    engine.receive(invite(), CALLER, 0.0)
    resent = []
    t = 0.0
    while (nd := engine.next_deadline()) is not None and nd < 40:
        t = nd
        resent += [s for s in engine.on_timer(t) if s[0] == PUBLIC_UDP]
    assert len(resent) >= 3 and all(s[2].startswith(b"SIP/2.0 408") for s in resent)


def test_cancel_before_answer(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    out = only(v.sends, PRIVATE)[2]
    _, ringing, _ = answer(out, "127.0.0.1", 5070)
    engine.receive(ringing, BACKEND, 0.1)
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    v = engine.receive(cancel, CALLER, 1.0)
    assert only(v.sends, PUBLIC_UDP)[2].startswith(b"SIP/2.0 200")
    _, _, c = only(v.sends, PRIVATE)
    cm = parse_message(c)
    assert cm.method == "CANCEL"
    assert parse_via(cm.get("via") or b"").branch == parse_via(parse_message(out).get("via") or b"").branch
    # VOS3000: 200 for CANCEL (absorbed), 487 for INVITE (ACKed by us, passed on).
    ok_cancel = answer(c, "127.0.0.1", 5070)[0]
    assert engine.receive(ok_cancel, BACKEND, 1.01).reason == "cancel_answer"  # type: ignore[union-attr]
    r487 = answer(out, "127.0.0.1", 5070)[0].replace(b"100 Trying", b"487 Request Terminated")
    r487 = r487.replace(b"To: <sip:1000@127.0.0.1:5060>", b"To: <sip:1000@127.0.0.1:5060>;tag=v")
    v = engine.receive(r487, BACKEND, 1.02)
    ack = parse_message(only(v.sends, PRIVATE)[2])
    assert ack.method == "ACK" and ack.cseq == 1
    assert only(v.sends, PUBLIC_UDP)[2].startswith(b"SIP/2.0 487")
    assert engine.dialogs.active_total() == 0


def test_cancel_without_transaction_gets_481(engine: Engine) -> None:
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    v = engine.receive(cancel, CALLER, 0.0)
    assert only(v.sends, PUBLIC_UDP)[2].startswith(b"SIP/2.0 481")


def test_max_forwards_zero_gets_483_and_loop_gets_482(engine: Engine) -> None:
    v = engine.receive(invite(extra="Max-Forwards: 0\r\n"), CALLER, 0.0)
    assert v.kind == "reply" and v.sends[0][2].startswith(b"SIP/2.0 483")
    looped = invite(branch="z9hG4bK-2", call_id="c2@x",
                    extra="Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKold\r\n")
    v = engine.receive(looped, CALLER, 0.0)
    assert v.kind == "reply" and v.sends[0][2].startswith(b"SIP/2.0 482")
    assert not any(s[0] == PRIVATE for s in v.sends)


def test_tcp_caller_udp_backend(engine: Engine) -> None:
    v = engine.receive(invite(transport="TCP", port=40000), CALLER_TCP, 0.0)
    assert only(v.sends, PUBLIC_TCP)[1] == ("127.0.0.1", 40000)
    out = only(v.sends, PRIVATE)[2]
    assert b"Record-Route: <sip:127.0.0.1:5060;transport=tcp;lr;r2=on>" in out
    *_, ok = answer(out, "127.0.0.1", 5070)
    v = engine.receive(ok, BACKEND, 0.1)
    assert only(v.sends, PUBLIC_TCP)[1] == ("127.0.0.1", 40000)
    # Over TCP nothing is retransmitted by us towards the caller, only towards UDP VOS3000.
    assert all(s[0] != PUBLIC_TCP for s in engine.on_timer(0.6))


def test_response_with_foreign_via_dropped(engine: Engine) -> None:
    resp = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKzz\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    assert engine.receive(resp, BACKEND, 0.0).reason == "via_not_ours"  # type: ignore[union-attr]
    assert engine.receive(resp, CALLER, 0.0).reason == "via_not_ours"  # type: ignore[union-attr]


def test_malformed_is_a_named_drop(engine: Engine) -> None:
    v = engine.receive(b"\x00\xff garbage", CALLER, 0.0)
    assert v.kind == "drop" and v.reason == "malformed"
    assert engine.tally.parse_errors["no_header_end"] == 1


def test_tables_expire(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    *_, ok = answer(only(v.sends, PRIVATE)[2], "127.0.0.1", 5070)
    engine.receive(ok, BACKEND, 0.0)
    engine.on_timer(SETTINGS.linger + 1)
    assert engine.txs == {}
    assert len(engine.dialogs) == 1
    engine.on_timer(SETTINGS.dialog_max_age + 1)
    assert engine.dialogs.active_total() == 0


def test_transaction_table_cap_gives_503() -> None:
    eng = Engine(ProxySettings(max_transactions=2), secret=b"k" * 16)
    for i in range(2):
        assert eng.receive(invite(branch=f"z9hG4bK-{i}", call_id=f"c{i}"), CALLER, 0.0).kind == "forward"
    v = eng.receive(invite(branch="z9hG4bK-9", call_id="c9"), CALLER, 0.0)
    assert v.kind == "reply" and v.sends[0][2].startswith(b"SIP/2.0 503")
    assert b"Retry-After:" in v.sends[0][2]
    assert len(eng.txs) == 2


def test_response_without_a_via_left_is_not_forwarded(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    out = parse_message(only(v.sends, PRIVATE)[2])
    ours = out.get("via") or b""
    resp = (
        f"SIP/2.0 487 Request Terminated\r\nVia: {ours.decode()}\r\n"
        "From: \"Alice\" <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:1000@127.0.0.1:5060>;tag=v\r\n"
        "Call-ID: c1@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    v = engine.receive(resp, BACKEND, 0.1)
    assert v.kind == "drop" and v.reason == "no_next_via"


def test_pings_to_backend_and_their_answers(engine: Engine) -> None:
    ((ch, to, ping),) = engine.failover.pings(0.0)
    assert ch == PRIVATE and to == ("127.0.0.1", 5070) and ping.startswith(b"OPTIONS sip:127.0.0.1:5070 ")
    assert not engine.health.is_up(0)
    (ok,) = answer(ping, "127.0.0.1", 5070)
    v = engine.receive(ok, BACKEND, 0.01)
    assert v.kind == "drop" and v.reason == "ping_answer"
    assert engine.health.is_up(0) and engine.health.targets[0].last_rtt == pytest.approx(0.01)

def test_pings_are_one_more_deadline_of_the_engine(engine: Engine) -> None:
    assert engine.next_deadline() is None  # no pings until asked: one node, no admin
    engine.start_pings(100.0)
    assert engine.next_deadline() == 100.0
    sends = engine.on_timer(100.0)
    assert [(ch, to) for ch, to, data in sends if data.startswith(b"OPTIONS ")] == [
        (PRIVATE, ("127.0.0.1", 5070))]
    # the next ping, or the unanswered one's timeout, whichever comes first
    deadline = engine.next_deadline()
    assert deadline is not None and 100.0 < deadline <= 100.0 + engine.health.interval
    assert not [s for s in engine.on_timer(100.0 + engine.health.interval - 0.001)
                if s[2].startswith(b"OPTIONS ")]
    assert [s for s in engine.on_timer(100.0 + engine.health.interval)
            if s[2].startswith(b"OPTIONS ")]
