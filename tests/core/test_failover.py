"""Two VOS3000 addresses in memory: serial forking of a new call, health,
in-dialog requests where the dialog lives. No sockets; time passed in."""

from __future__ import annotations

import pytest

from sbc.core.proxy.dialogs import Dialog, DialogState
from sbc.core.engine import Engine
from sbc.core.settings import ProxySettings
from sbc.core.proxy.transactions import TxState
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source
from sbc.sip import build, parse_message, parse_via, split_values
from tools.standin import answer
from tools.standin import tag as standin_tag

from .test_engine import CALLER, in_dialog, invite, only

FIRST, SECOND = ("127.0.0.1", 5070), ("127.0.0.2", 5070)
B1, B2 = Source(PRIVATE, *FIRST), Source(PRIVATE, *SECOND)
SETTINGS = ProxySettings(t1=0.5, invite_timeout=32.0, standby=(SECOND,), failover_timeout=2.0,
                         down_after=3, up_after=2)


@pytest.fixture
def engine() -> Engine:
    return Engine(SETTINGS, secret=b"k" * 16)


def respond(request: bytes, status: int, tag: str = "v1") -> bytes:
    """A final or provisional response to `request`, its headers copied (§8.2.6.2)."""
    msg = parse_message(request)
    lines = {name: raw for name, raw in reversed(msg.headers)}
    vias = [raw for name, raw in msg.headers if name == "via"]
    return build.response(status, vias, lines["from"], lines["to"], lines["call-id"],
                          lines["cseq"], to_tag=tag.encode())


def top_branch(data: bytes) -> bytes:
    via = parse_message(data).get_all("via")[0]
    return parse_via(split_values(via)[0]).branch or b""


def to_backend(sends: list, addr: tuple[str, int] | None = None) -> list[bytes]:
    return [d for ch, a, d in sends if ch >= PRIVATE and (addr is None or a == addr)]


def to_caller(sends: list) -> list[bytes]:
    return [d for ch, _, d in sends if ch == PUBLIC_UDP]


def first_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


def test_503_tries_the_next_target_and_the_call_lives_there(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    assert [first_line(d) for d in to_caller(v.sends)] == [b"SIP/2.0 100 Trying"]
    assert engine.dialogs.with_call_id(b"c1@x")[0].backend == FIRST

    # 503 from the first: sbc ACKs it (same branch, hop by hop), the caller hears nothing,
    # the INVITE goes to the second with a fresh branch.
    v = engine.receive(respond(inv1, 503), B1, 0.1)
    assert v.kind == "forward" and to_caller(v.sends) == []
    (ack,) = to_backend(v.sends, FIRST)
    assert first_line(ack).startswith(b"ACK ") and top_branch(ack) == top_branch(inv1)
    (inv2,) = to_backend(v.sends, SECOND)
    assert first_line(inv2) == first_line(inv1) and top_branch(inv2) != top_branch(inv1)
    assert inv2.replace(top_branch(inv2), b"") == inv1.replace(top_branch(inv1), b"")
    assert engine.tally.failovers == {"status_503": 1}
    assert engine.dialogs.with_call_id(b"c1@x")[0].backend == SECOND

    # A retransmitted 503 from the first is ACKed again, and goes no further.
    v = engine.receive(respond(inv1, 503), B1, 0.2)
    assert v.kind == "drop" and v.reason == "late_response"
    assert [first_line(d)[:4] for d in to_backend(v.sends, FIRST)] == [b"ACK "]

    # The second answers: the caller gets it; one call counted, on the second.
    _, ringing, ok = answer(inv2, *SECOND)
    assert to_caller(engine.receive(ringing, B2, 0.3).sends)
    (ok_out,) = to_caller(engine.receive(ok, B2, 0.4).sends)
    assert first_line(ok_out) == b"SIP/2.0 200 OK"
    dlg = engine.dialogs.with_call_id(b"c1@x")[0]
    assert dlg.state is DialogState.CONFIRMED and dlg.backend == SECOND
    assert engine.dialogs.active_total() == 1 and len(engine.dialogs) == 1

    # In-dialog requests from the caller go where the dialog lives.
    for method, cseq in (("ACK", 1), ("INFO", 2), ("BYE", 3)):
        v = engine.receive(in_dialog(method, ok_out, cseq, f"z9hG4bK-{method}"), CALLER, 1.0)
        assert [a for ch, a, _ in v.sends if ch >= PRIVATE] == [SECOND], method
    # The second's answer to the BYE is accepted as from the backend.
    (bye,) = to_backend(v.sends)
    v = engine.receive(respond(bye, 200), B2, 1.1)
    assert first_line(only(v.sends, PUBLIC_UDP)[2]) == b"SIP/2.0 200 OK"
    assert engine.dialogs.active_total() == 0


def test_every_target_refuses_the_caller_gets_the_last_answer(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    v = engine.receive(respond(inv1, 500), B1, 0.1)
    (inv2,) = to_backend(v.sends, SECOND)
    v = engine.receive(respond(inv2, 503, tag="v2"), B2, 0.2)
    (ack2,) = to_backend(v.sends, SECOND)
    assert first_line(ack2).startswith(b"ACK ") and top_branch(ack2) == top_branch(inv2)
    (final,) = to_caller(v.sends)
    assert first_line(final) == b"SIP/2.0 503 Service Unavailable" and b"tag=v2" in final
    assert b"z9hG4bK" in final and top_branch(final) == b"z9hG4bK-1"  # the caller's own Via only
    assert engine.tally.failovers == {"status_500": 1}
    assert not any(d.active for d in engine.dialogs.with_call_id(b"c1@x"))


def test_a_status_not_listed_goes_to_the_caller(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    v = engine.receive(respond(inv1, 486), B1, 0.1)
    assert to_backend(v.sends, SECOND) == []
    assert first_line(to_caller(v.sends)[0]).startswith(b"SIP/2.0 486 ")
    assert not engine.tally.failovers


def test_silent_target_fails_over_at_the_deadline_and_late_answers_are_ended(
        engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    assert engine.next_deadline() == 0.5  # Timer A
    sends = engine.on_timer(0.5)
    assert to_backend(sends, FIRST) == [inv1]  # retransmitted to the first
    assert to_backend(engine.on_timer(1.5), FIRST) == [inv1]
    sends = engine.on_timer(2.0)  # failover deadline: no CANCEL (nothing was heard, §9.1)
    assert [a for ch, a, _ in sends if ch >= PRIVATE] == [SECOND]
    (inv2,) = to_backend(sends)
    assert engine.tally.failovers == {"timeout": 1}
    assert engine.health.targets[0].fails == 1  # passive health
    assert engine.health.targets[0].reason == "INVITE unanswered for 2 s"
    # No more copies to the first; the second gets its own retransmissions.
    sends = engine.on_timer(3.0)
    assert to_backend(sends, FIRST) == [] and to_backend(sends, SECOND) == [inv2]

    # The first wakes up: its 180 is answered with a CANCEL, its 200 with ACK and BYE.
    trying, ringing, ok = answer(inv1, *FIRST)
    v = engine.receive(ringing, B1, 3.1)
    assert v.kind == "drop" and v.reason == "late_response" and to_caller(v.sends) == []
    (cancel,) = to_backend(v.sends, FIRST)
    assert first_line(cancel).startswith(b"CANCEL ") and top_branch(cancel) == top_branch(inv1)
    assert engine.receive(trying, B1, 3.15).reason == "late_response"  # nothing more to do
    v = engine.receive(ok, B1, 3.2)
    assert to_caller(v.sends) == []
    ack, bye = to_backend(v.sends, FIRST)
    assert first_line(ack) == b"ACK sip:vos@127.0.0.1:5070 SIP/2.0"
    assert first_line(bye) == b"BYE sip:vos@127.0.0.1:5070 SIP/2.0"
    assert b"CSeq: 2 BYE" in bye
    v = engine.receive(ok, B1, 3.3)  # a retransmitted 2xx: ACK again, no second BYE
    assert [first_line(d)[:4] for d in to_backend(v.sends)] == [b"ACK "]
    v = engine.receive(respond(bye, 200), B1, 3.4)
    assert v.reason == "bye_answer"
    assert engine.tally.failovers["late_2xx_ended"] == 1

    # Meanwhile the call completes on the second.
    *_, ok2 = answer(inv2, *SECOND)
    assert first_line(to_caller(engine.receive(ok2, B2, 3.5).sends)[0]) == b"SIP/2.0 200 OK"
    assert engine.dialogs.with_call_id(b"c1@x")[0].backend == SECOND


def test_the_last_target_silent_gives_408_at_timer_b(engine: Engine) -> None:
    engine.receive(invite(), CALLER, 0.0)
    assert to_backend(engine.on_timer(2.0), SECOND)
    assert {a for _, a, _ in engine.on_timer(4.0)} <= {SECOND}  # retransmissions only
    sends = engine.on_timer(2.0 + 32.0)
    assert [first_line(d) for d in to_caller(sends)] == [b"SIP/2.0 408 Request Timeout"]
    assert engine.health.targets[1].fails == 1  # silent until Timer B: a failure too


def test_cancel_during_failover_reaches_the_current_attempt(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    v = engine.receive(respond(inv1, 503), B1, 0.1)
    (inv2,) = to_backend(v.sends, SECOND)
    _, ringing, _ = answer(inv2, *SECOND)
    engine.receive(ringing, B2, 0.2)
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    v = engine.receive(cancel, CALLER, 0.3)
    assert first_line(to_caller(v.sends)[0]) == b"SIP/2.0 200 OK"
    (fwd,) = to_backend(v.sends, SECOND)
    assert first_line(fwd).startswith(b"CANCEL ") and top_branch(fwd) == top_branch(inv2)
    v = engine.receive(respond(inv2, 487), B2, 0.4)  # no failover after a CANCEL
    assert to_backend(v.sends, FIRST) == []
    assert first_line(to_caller(v.sends)[0]) == b"SIP/2.0 487 Request Terminated"


def test_cancel_while_the_first_is_silent_stops_failover(engine: Engine) -> None:
    engine.receive(invite(), CALLER, 0.0)
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    v = engine.receive(cancel, CALLER, 1.0)
    assert to_backend(v.sends) == []  # nothing heard yet: CANCEL waits (§9.1)
    sends = engine.on_timer(2.0)
    assert to_backend(sends, SECOND) == [] and not engine.tally.failovers
    sends = engine.on_timer(1.0 + 64 * 0.5)
    assert first_line(to_caller(sends)[0]) == b"SIP/2.0 487 Request Terminated"


def test_reinvite_goes_where_the_dialog_lives_without_failover(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    (inv2,) = to_backend(engine.receive(respond(inv1, 503), B1, 0.1).sends, SECOND)
    *_, ok = answer(inv2, *SECOND)
    (ok_out,) = to_caller(engine.receive(ok, B2, 0.2).sends)
    v = engine.receive(in_dialog("INVITE", ok_out, 2, "z9hG4bK-re"), CALLER, 1.0)
    (reinv,) = to_backend(v.sends, SECOND)
    tx = engine.txs[top_branch(reinv)]
    assert tx.plan == () and tx.dest == SECOND
    v = engine.receive(respond(reinv, 503), B2, 1.1)  # in dialog: the caller gets it
    assert to_backend(v.sends, FIRST) == []
    assert first_line(to_caller(v.sends)[0]) == b"SIP/2.0 503 Service Unavailable"


def test_requests_from_a_standby_reach_the_caller_and_strangers_are_refused(
        engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    (inv2,) = to_backend(engine.receive(respond(inv1, 503), B1, 0.1).sends, SECOND)
    *_, ok = answer(inv2, *SECOND)
    engine.receive(ok, B2, 0.2)
    fwd = parse_message(inv2)
    bye = (
        "BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-vbye\r\n"
        f"Route: {fwd.get_all('record-route')[0].decode()}\r\n"
        f"From: <sip:1000@127.0.0.1:5060>;tag={standin_tag(b'c1@x').decode()}\r\n"
        "To: \"Alice\" <sip:alice@127.0.0.1>;tag=a1\r\n"
        "Call-ID: c1@x\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert engine.receive(bye, Source(PRIVATE, "127.0.0.9", 5070), 1.0).reason == "not_backend"
    v = engine.receive(bye, B2, 1.0)
    assert only(v.sends, PUBLIC_UDP)[1] == ("127.0.0.1", 5061)


def test_a_down_primary_is_skipped_by_new_calls(engine: Engine) -> None:
    events: list[tuple[str, dict]] = []
    engine.on_event = lambda ev, **kw: events.append((ev, kw))
    for i in range(3):  # three pings in a row unanswered by the first; the second answers
        sends = engine.failover.pings(i * 5.0)
        assert [a for _, a, _ in sends] == [FIRST, SECOND]
        (ok,) = answer(sends[1][2], *SECOND)
        assert engine.receive(ok, B2, i * 5.0 + 0.01).reason == "ping_answer"
        engine.on_timer(i * 5.0 + 2.0)
    assert events == [("backend_down", {"target": "127.0.0.1:5070", "priority": 0,
                                        "reason": "no answer to OPTIONS within 2 s"})]
    ready, info = engine.health.state(15.0)
    assert ready and info["down"] == ["127.0.0.1:5070"]
    v = engine.receive(invite(), CALLER, 15.0)
    assert [a for ch, a, _ in v.sends if ch >= PRIVATE] == [SECOND]
    assert engine.next_deadline() == 15.5  # no failover deadline: nothing left to try
    # Out-of-dialog requests that are relayed go there too.
    opts = invite(call_id="o@x").replace(b"INVITE sip", b"MESSAGE sip").replace(
        b"1 INVITE", b"1 MESSAGE")
    v = engine.receive(opts, CALLER, 15.1)
    assert [a for ch, a, _ in v.sends if ch >= PRIVATE] == [SECOND]
    # The first comes back after up_after answers.
    for i in range(2):
        sends = engine.failover.pings(20.0 + i * 5)
        (ok,) = answer(sends[0][2], *FIRST)
        engine.receive(ok, B1, 20.01 + i * 5)
    assert events[-1] == ("backend_up", {"target": "127.0.0.1:5070", "priority": 0})
    v = engine.receive(invite(call_id="c2@x", branch="z9hG4bK-2"), CALLER, 30.0)
    assert [a for ch, a, _ in v.sends if ch >= PRIVATE] == [FIRST]


def test_silent_invites_mark_a_target_down(engine: Engine) -> None:
    """Passive health: three calls in a row unanswered by the first mark it down."""
    for i in range(3):
        engine.receive(invite(call_id=f"c{i}@x", branch=f"z9hG4bK-{i}"), CALLER, float(i))
    engine.on_timer(4.0)
    assert engine.health.order == (1,)
    v = engine.receive(invite(call_id="c9@x", branch="z9hG4bK-9"), CALLER, 5.0)
    assert [a for ch, a, _ in v.sends if ch >= PRIVATE] == [SECOND]


def test_a_response_to_an_invite_proves_the_target_alive(engine: Engine) -> None:
    engine.health.failure(0, 0.0, "x")
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    trying, *_ = answer(inv1, *FIRST)
    engine.receive(trying, B1, 0.1)
    assert engine.health.targets[0].fails == 0 and engine.health.is_up(0)
    assert engine.txs[top_branch(inv1)].state is TxState.PROCEEDING
    assert engine.on_timer(2.0) == [] and not engine.tally.failovers  # heard from: no failover


def test_transaction_expiry_forgets_every_attempt(engine: Engine) -> None:
    v = engine.receive(invite(), CALLER, 0.0)
    (inv1,) = to_backend(v.sends, FIRST)
    (inv2,) = to_backend(engine.receive(respond(inv1, 503), B1, 0.1).sends, SECOND)
    engine.receive(respond(inv2, 503), B2, 0.2)
    assert len(engine.txs) == 2
    engine.on_timer(100.0)
    assert engine.txs == {}


def test_restored_dialog_keeps_its_target_unless_it_is_gone(engine: Engine) -> None:
    kept = Dialog(b"k@x", ("127.0.0.1", 5061), PUBLIC_UDP, 0.0, 100.0, backend=SECOND)
    gone = Dialog(b"g@x", ("127.0.0.1", 5061), PUBLIC_UDP, 0.0, 100.0, backend=("10.9.9.9", 5060))
    old = Dialog(b"o@x", ("127.0.0.1", 5061), PUBLIC_UDP, 0.0, 100.0)  # a row from before
    for d in (kept, gone, old):
        d.state = DialogState.CONFIRMED
        engine.restore_dialog(d, 1.0)
    assert (kept.backend, gone.backend, old.backend) == (SECOND, FIRST, FIRST)
