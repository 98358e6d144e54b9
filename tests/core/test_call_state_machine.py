"""Call accounting under arbitrary interleavings (issue 13, /work/notes/spec13.md):
a Hypothesis state machine drives one engine, in memory, with two gateways
A and B (identified by IP, two concurrent calls each, CPS out of the way),
one VOS3000, and a stranger.

The gateways place calls (fresh Call-IDs, a Call-ID of their own that is
live, another gateway's Call-ID, another gateway's Call-ID *and* From-tag),
retransmit INVITEs, CANCEL, hang up, and try requests in dialogs that are
not theirs and INVITEs with invented To-tags; VOS3000 answers (100, 180,
200, 486, 503, 487 after a CANCEL) and hangs up; the stranger forges
responses and in-dialog requests; time advances and `on_timer` runs.

The model keeps, per call, only what the test itself did, so it knows a
lower bound (calls that are surely in progress: answered 200 and not hung
up, or placed less than 30 s ago, before any timer of sbc's could end them)
and an upper bound (calls not known to have ended) of each gateway's
calls. Invariants, after every step:
- 0 <= engine.dialogs.active(gw) <= the gateway's limit;
- lower bound <= engine.dialogs.active(gw) <= upper bound;
and at the end, once every call in progress was hung up by its owner and
time ran past every timeout, `engine.dialogs.active_total() == 0` and
nothing is left in the dialog and transaction tables.
Each step also checks the verdict the spec gives for it (503 exactly when
the gateway is at its limit, 482 / 403 / 481 / 405 refusals, drops named
`dialog_not_owner`, `response_not_ours`, `unknown_source`).

Against the code before the rewrite (commit 20cd649) this fails at once, in
several distinct ways (dialogs by Call-ID alone, the slot freed on the 2xx
to BYE, no ownership check for other gateways, forged responses relayed);
against the rewrite (commit 3f8b131 and on) it passes.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sbc.core.verdict import PUBLIC_UDP, Source, Verdict
from tests.core.test_call_identity import (
    BACKEND,
    FORGED_BRANCH,
    GW_A,
    GW_B,
    SBC,
    STRANGER,
    VOS,
    Call,
    in_dialog,
    make_engine,
    only_reply,
    request,
    respond,
    status_of,
    to_backend,
    to_public,
    vos_request,
)

# See tests/sip/test_fuzz.py: keep a failing property's report readable
# under filterwarnings=error.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

LIMIT = 2
SURE = 30.0  # seconds after its INVITE a call not yet answered surely still lives (Timer B: 32 s)
GATEWAYS = {"A": GW_A, "B": GW_B}
OTHER = {"A": "B", "B": "A"}

# What the model knows of a call.
CALLING, EARLY, CANCELLING = "calling", "early", "cancelling"
CONFIRMED, ENDED = "confirmed", "ended"
LIVE = (CALLING, EARLY, CANCELLING, CONFIRMED)

F = TypeVar("F", bound=Callable[..., Any])


def step(fn: F) -> F:
    """Marks the machine broken while a step runs, so that teardown does not
    pile a second failure on top of the one that stopped the run."""

    @functools.wraps(fn)
    def wrapper(self: CallMachine, *args: Any, **kwargs: Any) -> Any:
        event(fn.__name__)  # which rules ran: --hypothesis-show-statistics
        self.broken = True
        result = fn(self, *args, **kwargs)
        self.broken = False
        return result

    return wrapper  # type: ignore[return-value]


@dataclass
class Entry:
    call: Call
    gw: str
    state: str
    sent_at: float
    refused: bool = False  # refused 503 at once (no dialog), kept for retransmissions
    provisional: bool = False  # VOS3000 sent a provisional (the INVITE can be cancelled)
    cancel_sent: bool = False  # a CANCEL reached VOS3000 (so it may answer 487)


class CallMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.eng, self.bans = make_engine(limit=LIMIT, cps=1000.0, burst=1000.0)
        self.now = 0.0
        self.entries: list[Entry] = []
        self.ids = itertools.count()
        self.broken = False

    # ------------------------------------------------------------------ the model

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def surely_live(self, e: Entry) -> bool:
        return e.state == CONFIRMED or (e.state in (CALLING, EARLY, CANCELLING)
                                        and self.now - e.sent_at < SURE)

    def possibly_live(self, e: Entry) -> bool:
        return e.state in LIVE

    def identity_free(self, e: Entry) -> bool:
        """An ended call whose Call-ID and From-tag no call that may be live holds."""
        key = (e.call.call_id, e.call.from_tag)
        return e.state == ENDED and not any(
            self.possibly_live(o) and (o.call.call_id, o.call.from_tag) == key
            for o in self.entries)

    def pick(self, data: st.DataObject, cond: Callable[[Entry], bool]) -> Entry:
        return data.draw(st.sampled_from([e for e in self.entries if cond(e)]))

    def has(self, cond: Callable[[Entry], bool]) -> bool:
        return any(cond(e) for e in self.entries)

    def actives(self) -> tuple[int, int]:
        return self.eng.dialogs.active("A"), self.eng.dialogs.active("B")

    def advance(self, to: float) -> None:
        """Run every deadline up to `to`, in order, as the transport would."""
        for _ in range(100_000):
            nd = self.eng.next_deadline()
            if nd is None or nd > to:
                break
            self.eng.on_timer(max(nd, self.now))
        else:
            raise AssertionError("timers keep coming due")
        self.eng.on_timer(to)
        self.now = to

    # ------------------------------------------------------------------ initial INVITEs

    def place(self, gw: str, call_id: str, from_tag: str) -> tuple[Entry, Verdict]:
        """An initial INVITE that the spec makes a new call of `gw`'s:
        forwarded exactly when the gateway is below its limit, else 503."""
        src = GATEWAYS[gw]
        before = self.eng.dialogs.active(gw)
        call = Call(src, call_id, from_tag, self.fresh("z9hG4bK-sm-"))
        call.invite = request("INVITE", src, call_id, from_tag, call.branch)
        v = self.eng.receive(call.invite, src, self.now)
        e = Entry(call, gw, CALLING, self.now)
        fwd = to_backend(v)
        if before < LIMIT:
            assert len(fwd) == 1 and fwd[0][1] == VOS, (before, v)
            call.out = fwd[0][2]
            assert self.eng.dialogs.active(gw) == before + 1
        else:
            assert only_reply(v, src) == 503
            e.refused, e.state = True, ENDED
            assert self.eng.dialogs.active(gw) == before
        self.entries.append(e)
        return e, v

    @rule(gw=st.sampled_from(["A", "B"]))
    @step
    def invite_fresh_call_id(self, gw: str) -> None:
        self.place(gw, self.fresh("cid-"), self.fresh("ft-"))

    @precondition(lambda self: self.has(lambda e: not e.refused))
    @rule(data=st.data(), own=st.booleans())
    @step
    def invite_reusing_a_call_id(self, data: st.DataObject, own: bool) -> None:
        """A Call-ID in use (by this gateway or the other), a From-tag of its own: a new call."""
        e = self.pick(data, lambda e: not e.refused)
        gw = e.gw if own else OTHER[e.gw]
        self.place(gw, e.call.call_id, self.fresh("ft-"))

    @precondition(lambda self: self.has(self.identity_free))
    @rule(data=st.data(), own=st.booleans())
    @step
    def invite_reusing_an_ended_calls_identity(self, data: st.DataObject, own: bool) -> None:
        """Call-ID and From-tag of a call that has ended (or was refused): not
        live, so a new call."""
        e = self.pick(data, self.identity_free)
        gw = e.gw if own else OTHER[e.gw]
        self.place(gw, e.call.call_id, e.call.from_tag)

    @precondition(lambda self: self.has(self.surely_live))
    @rule(data=st.data())
    @step
    def invite_stealing_a_live_identity(self, data: st.DataObject) -> None:
        """The other gateway sends an initial INVITE with a live call's Call-ID and From-tag."""
        e = self.pick(data, self.surely_live)
        thief = GATEWAYS[OTHER[e.gw]]
        before, refused = self.actives(), self.eng.tally.refusals["dialog_not_owner"]
        v = self.eng.receive(request("INVITE", thief, e.call.call_id, e.call.from_tag,
                                     self.fresh("z9hG4bK-steal-")), thief, self.now)
        assert only_reply(v, thief) == 403
        assert self.eng.tally.refusals["dialog_not_owner"] == refused + 1
        assert (thief.host, "dialog_not_owner") in self.bans.seen
        assert self.actives() == before

    @precondition(lambda self: self.has(self.surely_live))
    @rule(data=st.data())
    @step
    def invite_again_from_the_owner_other_branch(self, data: st.DataObject) -> None:
        e = self.pick(data, self.surely_live)
        src = e.call.src
        before, refused = self.actives(), self.eng.tally.refusals["dialog_exists"]
        v = self.eng.receive(request("INVITE", src, e.call.call_id, e.call.from_tag,
                                     self.fresh("z9hG4bK-again-")), src, self.now)
        assert only_reply(v, src) == 482
        assert self.eng.tally.refusals["dialog_exists"] == refused + 1
        assert self.actives() == before

    @precondition(lambda self: self.has(lambda e: self.now - e.sent_at < SURE))
    @rule(data=st.data())
    @step
    def retransmit_invite(self, data: st.DataObject) -> None:
        e = self.pick(data, lambda e: self.now - e.sent_at < SURE)
        src = e.call.src
        before, n = self.actives(), len(self.eng.dialogs)
        v = self.eng.receive(e.call.invite, src, self.now)
        assert to_backend(v) == [], v.sends  # absorbed, never a second call
        assert all(s[1] == (src.host, src.port) for s in v.sends)
        if e.refused:
            assert only_reply(v, src) == 503  # the same answer, not judged again
        assert self.actives() == before and len(self.eng.dialogs) == n

    @rule(gw=st.sampled_from(["A", "B"]), method=st.sampled_from(["INVITE", "BYE", "INFO"]),
          stranger=st.booleans())
    @step
    def request_with_invented_to_tag(self, gw: str, method: str, stranger: bool) -> None:
        src = STRANGER if stranger else GATEWAYS[gw]
        before, n = self.actives(), len(self.eng.dialogs)
        refused = self.eng.tally.refusals["no_dialog"]
        v = self.eng.receive(request(method, src, self.fresh("cid-"), self.fresh("ft-"),
                                     self.fresh("z9hG4bK-inv-"), to_tag=self.fresh("made-up-")),
                             src, self.now)
        if stranger:
            assert v.kind == "drop" and v.reason == "unknown_source"  # type: ignore[union-attr]
            assert v.sends == []
        else:
            assert only_reply(v, src) == 481
            assert self.eng.tally.refusals["no_dialog"] == refused + 1
        assert self.actives() == before and len(self.eng.dialogs) == n

    # ------------------------------------------------------------------ the caller ends its call

    @precondition(lambda self: self.has(
        lambda e: e.state in (CALLING, EARLY) and self.now - e.sent_at < SURE))
    @rule(data=st.data())
    @step
    def cancel(self, data: st.DataObject) -> None:
        e = self.pick(data, lambda e: e.state in (CALLING, EARLY) and self.now - e.sent_at < SURE)
        src = e.call.src
        cancel = request("CANCEL", src, e.call.call_id, e.call.from_tag, e.call.branch)
        v = self.eng.receive(cancel, src, self.now)
        assert [status_of(s[2]) for s in to_public(v)] == [200]
        assert all(s[2].startswith(b"CANCEL ") for s in to_backend(v))
        e.cancel_sent = bool(to_backend(v))
        e.state = CANCELLING

    @precondition(lambda self: self.has(lambda e: e.state == CONFIRMED))
    @rule(data=st.data(), answered=st.booleans())
    @step
    def owner_hangs_up(self, data: st.DataObject, answered: bool) -> None:
        e = self.pick(data, lambda e: e.state == CONFIRMED)
        before = self.eng.dialogs.active(e.gw)
        v = self.eng.receive(in_dialog(e.call, "BYE"), e.call.src, self.now)
        fwd = to_backend(v)
        assert len(fwd) == 1 and fwd[0][1] == VOS, v.sends
        e.state = ENDED
        assert self.eng.dialogs.active(e.gw) == before - 1  # free on the request
        if answered:
            v = self.eng.receive(respond(fwd[0][2], 200), BACKEND, self.now)
            assert [s[1] for s in v.sends] == [(e.call.src.host, e.call.src.port)]
            assert self.eng.dialogs.active(e.gw) == before - 1

    # ------------------------------------------------------------------ VOS3000

    def answerable(self, e: Entry) -> bool:
        return e.state in (CALLING, EARLY, CANCELLING) and self.now - e.sent_at < SURE

    @precondition(lambda self: self.has(self.answerable))
    @rule(data=st.data(), status=st.sampled_from([100, 180, 200, 486, 503, 487]))
    @step
    def vos_answers(self, data: st.DataObject, status: int) -> None:
        self.answer(self.pick(data, self.answerable), status)

    @precondition(lambda self: self.has(self.answerable))
    @rule(data=st.data(), ringing=st.booleans())
    @step
    def vos_connects(self, data: st.DataObject, ringing: bool) -> None:
        """The usual way: (180, then) 200."""
        e = self.pick(data, self.answerable)
        if ringing:
            self.answer(e, 180)
        self.answer(e, 200)

    def answer(self, e: Entry, status: int) -> None:
        if status == 487 and not e.cancel_sent:
            status = 486  # VOS3000 says 487 only to a CANCEL it got
        call, src = e.call, e.call.src
        if status > 100 and not call.vos_tag:
            call.vos_tag = self.fresh("vos-")
        before = self.eng.dialogs.active(e.gw)
        v = self.eng.receive(respond(call.out, status, call.vos_tag), BACKEND, self.now)
        to_caller = [s for s in v.sends if s[1] == (src.host, src.port)]
        if any(s[2].startswith(b"CANCEL ") for s in to_backend(v)):
            e.cancel_sent = True  # the CANCEL sbc held until a provisional
        if status == 100:
            assert to_caller == []
            e.provisional = True
        elif status == 180:
            assert [status_of(s[2]) for s in to_caller] == [180]
            e.provisional = True
            if e.state == CALLING:
                e.state = EARLY
        elif status == 200:
            assert [status_of(s[2]) for s in to_caller] == [200]
            call.ok = to_caller[0][2]
            e.state = CONFIRMED
            ack = in_dialog(call, "ACK", now_cseq=1)
            assert to_backend(self.eng.receive(ack, src, self.now)), "the ACK for the 2xx goes on"
        else:
            assert [status_of(s[2]) for s in to_caller] == [status]
            e.state = ENDED
        assert self.eng.dialogs.active(e.gw) == before - (e.state == ENDED)

    @precondition(lambda self: self.has(lambda e: e.state == CONFIRMED))
    @rule(data=st.data())
    @step
    def vos_hangs_up(self, data: st.DataObject) -> None:
        e = self.pick(data, lambda e: e.state == CONFIRMED)
        src = e.call.src
        before = self.eng.dialogs.active(e.gw)
        v = self.eng.receive(vos_request(e.call), BACKEND, self.now)
        assert [(s[0], s[1]) for s in v.sends] == [(PUBLIC_UDP, (src.host, src.port))]
        e.state = ENDED
        assert self.eng.dialogs.active(e.gw) == before - 1
        # The owner's 200 goes back to VOS3000; the same bytes from the stranger do not.
        ok = respond(v.sends[0][2], 200)
        v = self.eng.receive(ok, STRANGER, self.now)
        assert v.kind == "drop" and v.reason == "response_not_ours"  # type: ignore[union-attr]
        v = self.eng.receive(ok, src, self.now)
        assert [s[1] for s in v.sends] == [VOS]
        assert self.eng.dialogs.active(e.gw) == before - 1

    # ------------------------------------------------------------------ attackers

    @precondition(lambda self: self.has(lambda e: e.state == CONFIRMED))
    @rule(data=st.data(), who=st.sampled_from(["other_gateway", "other_port", "stranger"]),
          method=st.sampled_from(["BYE", "INVITE", "INFO", "UPDATE"]))
    @step
    def request_in_someone_elses_dialog(self, data: st.DataObject, who: str, method: str) -> None:
        e = self.pick(data, lambda e: e.state == CONFIRMED)
        sender = {"other_gateway": GATEWAYS[OTHER[e.gw]],
                  "other_port": Source(PUBLIC_UDP, e.call.src.host, e.call.src.port + 1000),
                  "stranger": STRANGER}[who]
        before, n = self.actives(), len(self.eng.dialogs)
        refused = self.eng.tally.refusals["dialog_not_owner"]
        v = self.eng.receive(in_dialog(e.call, method, sender=sender), sender, self.now)
        if who == "stranger":
            assert v.kind == "drop" and v.reason == "dialog_not_owner"  # type: ignore[union-attr]
            assert v.sends == []
        else:
            assert only_reply(v, sender) == 403
            assert self.eng.tally.refusals["dialog_not_owner"] == refused + 1
        assert (sender.host, "dialog_not_owner") in self.bans.seen
        assert self.actives() == before and len(self.eng.dialogs) == n

    @rule(data=st.data(), method=st.sampled_from(["BYE", "INVITE"]),
          status=st.sampled_from([200, 486]), from_gateway=st.booleans())
    @step
    def forged_response(self, data: st.DataObject, method: str, status: int,
                        from_gateway: bool) -> None:
        """A response with sbc's Via host and a branch sbc never made."""
        known = bool(self.entries) and data.draw(st.booleans())
        if known:
            e = data.draw(st.sampled_from(self.entries))
            call_id, tag = e.call.call_id, e.call.from_tag
        else:
            call_id, tag = self.fresh("cid-"), self.fresh("ft-")
        src = GW_A if from_gateway else STRANGER
        forged = (
            f"SIP/2.0 {status} Whatever\r\n"
            f"Via: SIP/2.0/UDP {SBC};branch={FORGED_BRANCH}\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKvos-forged\r\n"
            f"From: <sip:1000@{SBC}>;tag=x\r\nTo: <sip:caller@h>;tag={tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        before, n = self.actives(), len(self.eng.dialogs)
        v = self.eng.receive(forged, src, self.now)
        assert v.kind == "drop" and v.reason == "response_not_ours"  # type: ignore[union-attr]
        assert v.sends == []
        assert self.actives() == before and len(self.eng.dialogs) == n

    # ------------------------------------------------------------------ time

    @rule(dt=st.sampled_from([0.2, 0.2, 2.0, 2.0, 31.0, 190.0, 400.0]))
    @step
    def time_passes(self, dt: float) -> None:
        self.advance(self.now + dt)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def calls_in_progress_are_within_bounds(self) -> None:
        self.broken = True
        for gw in GATEWAYS:
            n = self.eng.dialogs.active(gw)
            assert 0 <= n <= LIMIT, (gw, n)
            low = sum(1 for e in self.entries if e.gw == gw and self.surely_live(e))
            high = sum(1 for e in self.entries if e.gw == gw and self.possibly_live(e))
            assert low <= n <= high, (gw, low, n, high)
        self.broken = False

    def teardown(self) -> None:
        if self.broken:
            return  # the run already failed: that is the failure to report
        for e in self.entries:
            if e.state == CONFIRMED:
                v = self.eng.receive(in_dialog(e.call, "BYE"), e.call.src, self.now)
                assert len(to_backend(v)) == 1, v.sends
                e.state = ENDED
        self.advance(self.now + 400.0)
        assert self.eng.dialogs.active_total() == 0
        assert len(self.eng.dialogs) == 0 and len(self.eng.txs) == 0


CallMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_call_accounting_state_machine = CallMachine.TestCase
