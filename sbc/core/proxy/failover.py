"""Several VOS3000 addresses: health pings, and serial forking of a new call.

Health (see health.py): sbc sends each target an OPTIONS every ping interval;
an answer, or its absence within the ping timeout, is reported to the health
table. An INVITE that got no response at all before its failover deadline
counts as a failure too (passive health), and any response to an INVITE as
a success.

Failover of an initial INVITE (RFC 3261 §16.6, §16.7: a proxy may try targets
in sequence). The INVITE goes to the first target of the plan (the targets
that are not down, in priority order). The next one is tried, with a fresh
branch, when the current one
- answers with a final status listed in `backend.failover_on` (503 and 500
  by default): sbc ACKs it itself (hop by hop, §17.1.1.3) and the caller never
  sees it, unless it was the last target;
- sends nothing at all, not even 100 Trying, within `failover_timeout`: sbc
  stops retransmitting to it. It cannot CANCEL a request that has not been
  answered (§9.1), so the attempt is remembered: a provisional response that
  comes late is answered with a CANCEL, a late 2xx with ACK and BYE, a late
  error with the hop-by-hop ACK. The caller's call goes on with the next target.
Nothing fails over after the caller cancelled, after a provisional response
from the current attempt (the call is ringing there; Timer C applies), for a
re-INVITE (in-dialog requests go where the dialog lives), or past the last
target: the caller then gets the last target's answer, or 408 at Timer B.

The caller's transaction, its dialog and its call slot (CPS, concurrency) are
the same across attempts: a call is counted once, however many targets it
tries.
"""

from __future__ import annotations

import hashlib

from ...sip import Message, build
from ..reasons import Absorbed
from .context import BYE_BRANCH, PING_BRANCH, Context, contact_uri, hostport
from .routing import derive_branch
from .timers import TimerKind
from .transactions import Attempt, InviteTx, TxEvent, TxState
from ..verdict import PRIVATE, Addr, Drop, Send, Verdict


class Failover:
    """Health pings and serial forking of new calls, over the engine's context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._ping_seq = 0

    # ------------------------------------------------------------------ health

    def pings(self, now: float) -> list[Send]:
        """An OPTIONS to every VOS3000 target (RFC 3261 §11), from the shared
        private socket; each times out on its own deadline."""
        ctx = self.ctx
        sends: list[Send] = []
        own = hostport(*ctx.egresses[0]).encode()
        from_line = b"From: <sip:sbc@" + own + b">;tag=" + ctx.local_tag(b"ping")
        call_id = b"Call-ID: " + ctx.local_tag(b"ping-call") + b"@" + own
        for target in ctx.health.targets:
            self._ping_seq += 1
            seq = self._ping_seq
            hp = target.hostport.encode()
            branch = PING_BRANCH + b"%d.%d" % (target.index, seq)
            data = build.request(b"OPTIONS", b"sip:" + hp, ctx.via_egress[0] + branch, [],
                                 from_line, b"To: <sip:" + hp + b">", call_id, seq)
            ctx.health.ping_sent(target.index, seq, now)
            ctx.calls.timers.push(now + ctx.health.timeout, TimerKind.PING, (target.index, seq))
            sends.append((PRIVATE, target.addr, data))
        return sends

    def ping_answer(self, branch: bytes, status: int, now: float) -> None:
        index, _, seq = branch[len(PING_BRANCH):].partition(b".")
        if not (index.isdigit() and seq.isdigit()):
            return
        self.ctx.health.ping_answered(int(index), int(seq), status, now)
        if self.ctx.health.changes:
            self.ctx.report_health()

    def ping_timeout(self, ping: tuple[int, int], now: float) -> None:
        self.ctx.health.ping_timed_out(ping[0], ping[1], now)
        if self.ctx.health.changes:
            self.ctx.report_health()

    # ------------------------------------------------------------------ failover

    def plan(self, tx: InviteTx, now: float) -> None:
        """Where a new call goes first, and when it moves on if that target is silent."""
        ctx = self.ctx
        plan = tx.plan = ctx.health.order
        tx.target = plan[0]
        tx.dest = ctx.health.targets[plan[0]].addr
        if len(plan) > 1:
            tx.fo_timer = ctx.calls.arm(tx.fo_timer, now + ctx.s.failover_timeout,
                                        TimerKind.FAILOVER, tx)

    def can_fail_over(self, tx: InviteTx) -> bool:
        return (tx.initial and tx.attempt + 1 < len(tx.plan)
                and not tx.cancelled and not tx.cancel_pending)

    def fail_over(self, tx: InviteTx, now: float, reason: str, done: bool) -> list[Send]:
        """Leave the current attempt and send the INVITE to the next target."""
        ctx = self.ctx
        calls = ctx.calls
        attempt = Attempt(tx.branch, tx.target, tx.dest, tx.our_via, done)
        if tx.attempts is None:
            tx.attempts = []
        tx.attempts.append(attempt)
        tx.attempt += 1
        target = ctx.health.targets[tx.plan[tx.attempt]]
        branch = derive_branch(ctx.secret, tx.key + b"|%d" % tx.attempt)
        via = ctx.via_egress[tx.egress - PRIVATE] + branch
        tx.out = tx.out.replace(tx.our_via, via, 1)
        tx.our_via = via
        tx.branch = branch
        tx.target = target.index
        tx.dest = target.addr
        calls.txs[branch] = tx
        tx.step(TxEvent.RETRY)
        s = ctx.s
        tx.a_interval = s.t1
        tx.a_timer = calls.arm(tx.a_timer, now + s.t1, TimerKind.RETRANSMIT, tx)
        tx.b_timer = calls.arm(tx.b_timer, now + s.invite_timeout, TimerKind.TIMEOUT, tx)
        calls.timers.cancel(tx.fo_timer)
        tx.fo_timer = None
        if tx.attempt + 1 < len(tx.plan):
            tx.fo_timer = calls.arm(None, now + s.failover_timeout, TimerKind.FAILOVER, tx)
        if tx.dialog is not None:
            tx.dialog.backend = tx.dest
        ctx.tally.failovers[reason] += 1
        return [(tx.egress, tx.dest, tx.out)]

    def failover_due(self, tx: InviteTx, now: float, sends: list[Send]) -> None:
        """The failover deadline: the current target sent nothing at all."""
        tx.fo_timer = None
        if tx.state is not TxState.CALLING:
            return
        self.ctx.health_failed(tx.target, now,
                               f"INVITE unanswered for {self.ctx.s.failover_timeout:g} s")
        if self.can_fail_over(tx):
            sends.extend(self.fail_over(tx, now, "timeout", done=False))

    def late_response(self, tx: InviteTx, branch: bytes, msg: Message, now: float) -> Verdict:
        """A response from a target sbc has moved on from: never to the caller."""
        ctx = self.ctx
        attempt = next((a for a in tx.attempts or () if a.branch == branch), None)
        if attempt is None:
            return Drop(Absorbed.LATE_RESPONSE)
        status = msg.status
        to_line = next((raw for name, raw in msg.headers if name == "to"), tx.to_line)
        if status < 200:
            if attempt.done or attempt.cancelled:
                return Drop(Absorbed.LATE_RESPONSE)
            attempt.cancelled = True  # now it may be cancelled (§9.1)
            cancel = build.request(b"CANCEL", tx.uri, attempt.via, tx.routes, tx.from_line,
                                   tx.to_line, tx.call_id_line, tx.cseq)
            return Drop(Absorbed.LATE_RESPONSE, [(tx.egress, attempt.dest, cancel)])
        first = not attempt.done
        attempt.done = True
        if status >= 300:  # the hop-by-hop ACK, for each copy (§17.1.1.3)
            ack = build.request(b"ACK", tx.uri, attempt.via, tx.routes, tx.from_line, to_line,
                                tx.call_id_line, tx.cseq)
            return Drop(Absorbed.LATE_RESPONSE, [(tx.egress, attempt.dest, ack)])
        # A 2xx the caller must not see: ACK each copy, and end that call on
        # its target with a BYE, once (RFC 3261 §13.2.2.4, §15).
        contact = contact_uri(msg) or tx.uri
        tag = hashlib.md5(ctx.secret + branch, usedforsecurity=False).hexdigest()[:16].encode()
        via = ctx.via_egress[tx.egress - PRIVATE] + BYE_BRANCH + tag
        sends: list[Send] = [(tx.egress, attempt.dest, build.request(
            b"ACK", contact, via + b"a", [], tx.from_line, to_line, tx.call_id_line, tx.cseq))]
        if first:
            sends.append((tx.egress, attempt.dest, build.request(
                b"BYE", contact, via + b"b", [], tx.from_line, to_line, tx.call_id_line,
                tx.cseq + 1)))
            ctx.tally.failovers["late_2xx_ended"] += 1
        return Drop(Absorbed.LATE_RESPONSE, sends)
