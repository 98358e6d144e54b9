"""Messages that arrive on the public side: match them to the state they
claim, identify the source, then proxy to VOS3000.

Admission, in order:
0. a gateway that must show a TLS client certificate is admitted over TLS
   only (the transport verified the certificate at the handshake): from its
   addresses over UDP or TCP, 403 (requests) or a drop (responses, ACK);
1. state we created: retransmissions, the CANCEL and the non-2xx ACK of an
   INVITE transaction of ours (from the address that sent the INVITE); a
   CANCEL that matches none is 481 to a gateway or a proved source, and
   anyone else gets what an unknown source gets;
2. a request with a To-tag belongs to a dialog (RFC 3261 §12.2.2): found by
   Call-ID and both tags, and sent by that dialog's own peer, or refused:
   481 when no dialog has those identifiers, 403 (a gateway) or a silent
   drop (anyone else) when another source borrows them;
3. a gateway by source address (exact IP+port, then longest CIDR match);
4. a digest account (RFC 3261 §22, RFC 8760): challenge, verify, or refuse.
Anything else is an unknown source: dropped silently, or 403 when configured.
Out of dialog only the methods in FORWARDED go on (methods are
case-sensitive, §7.1: `invite` is not INVITE), and only they are worth a
challenge; an initial INVITE whose Call-ID and From-tag are those of a live
call is never a second call. A request that starts a dialog reaches VOS3000
without any Route header: ours are popped (§16.4), a customer's preloaded
ones removed (routing.without_preloaded_routes).

Replies to sources not yet authenticated go to the packet's source only and
are capped by a reply budget; a challenge over UDP carries one challenge
line, so it stays within a fixed number of bytes above the request's size
(README, "Reflection and amplification", states the bound and the factor).
Responses from the public side answer requests VOS3000 sent through sbc:
they go on only when their branch is one sbc signed for the address they
came from, and only to a VOS3000 address.
"""

from __future__ import annotations

from ...sip import Message, build, header_param, header_value, parse_via, serialize
from ..identify.auth import Account, AuthStatus
from .context import BYE_BRANCH, TAG_PREFIX, Context, contact_uri
from .dialogs import Dialog, DialogState
from .failover import Failover
from ..policy.numbers import dialled
from ..reasons import Absorbed, DropReason, Offense, Refusal
from .routing import branch_is_for, without_preloaded_routes
from .scan import Scan
from ..screen.screen import signature_in
from .timers import TimerKind
from .transactions import InviteTx, TxEvent, TxState
from ..verdict import (
    PRIVATE,
    PUBLIC_TLS,
    PUBLIC_UDP,
    STREAMS,
    Addr,
    Drop,
    Forward,
    Reply,
    Send,
    Source,
    Verdict,
)

# What a right answer on a nonce that cannot be used is asked again with:
# a fresh nonce and stale=true (RFC 7616 §3.3).
_STALE = frozenset((AuthStatus.STALE, AuthStatus.REPLAY, AuthStatus.NONCE_TABLE_FULL))

# Out of dialog, the requests that go on to VOS3000 (ACK and CANCEL have
# rules of their own). Anything else is answered 405, never forwarded.
FORWARDED = frozenset(("INVITE", "REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE", "NOTIFY", "PUBLISH"))
# Requests that exist only inside a dialog: without a To-tag, 481.
IN_DIALOG_ONLY = frozenset(("BYE", "UPDATE", "INFO", "PRACK", "REFER"))
# In a dialog that has ended (lingering for retransmissions), only these.
AFTER_END = frozenset(("BYE", "ACK"))
# A challenge (401/407), counted by why it was asked (RFC 3261 §22.1).
_CHALLENGED = {
    AuthStatus.NO_CREDENTIALS: Refusal.NO_CREDENTIALS,
    AuthStatus.BAD_NONCE: Refusal.BAD_NONCE,
    AuthStatus.STALE: Refusal.STALE,
    AuthStatus.REPLAY: Refusal.REPLAY,
    AuthStatus.NONCE_TABLE_FULL: Refusal.NONCE_TABLE_FULL,
}
ALLOW = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, REGISTER"


def _called(msg: Message) -> tuple[str, ...]:
    """The called number, every way the Request-URI can be read (sip:, sips:
    or tel:, escapes decoded, parameters removed: sbc.core.policy.numbers.dialled);
    () when it names none, which a destination list refuses."""
    return dialled(msg.uri)


def owns(dlg: Dialog, src: Source) -> bool:
    """Whether `src` is the dialog's public-side peer: the same address and
    port over UDP; over TCP/TLS the same host on the same transport (a peer
    may open a new connection, and a connection's source is not forged)."""
    if src.channel != dlg.peer_channel or src.host != dlg.peer[0]:
        return False
    return src.channel in STREAMS or src.port == dlg.peer[1]


class PublicSide:
    def __init__(self, ctx: Context, failover: Failover) -> None:
        self.ctx = ctx
        self.failover = failover

    def receive(self, msg: Message, src: Source, now: float) -> Verdict:
        ctx = self.ctx
        if ctx.s.cert_gateways and src.channel != PUBLIC_TLS \
                and self._gateway_of(src) in ctx.s.cert_gateways:
            return self._certificate_required(msg, src, now)
        if msg.method is None:
            return self.response(msg, src, now)
        vi, via, via_line = ctx.received_via(msg, src)
        method = msg.method
        key = ctx.key(msg, via)

        # 1. Our own transactions.
        if method == "INVITE" or method == "CANCEL" or method == "ACK":
            tx = ctx.calls.txs.get(key)
            if tx is not None and tx.caller[0] == src.host:
                if method == "INVITE":  # a retransmission: absorbed, answered with what we said last
                    if tx.state is TxState.ACCEPTED or not tx.last_response:
                        return Drop(Absorbed.RETRANSMISSION)
                    return Reply([(tx.caller_channel, tx.caller, tx.last_response)])
                if method == "CANCEL":
                    return self._cancel(msg, src, now, vi, via_line, tx)
                if tx.state is TxState.COMPLETED:
                    tx.acked = True
                    ctx.calls.timers.cancel(tx.g_timer)
                    tx.g_timer = None
                    return Drop(Absorbed.ACK_ABSORBED)
            elif method == "INVITE" and ctx.calls.was_accepted(key, src.host):
                return Drop(Absorbed.RETRANSMISSION)  # of an INVITE already answered 2xx
            elif method == "CANCEL":
                return self._unknown_cancel(msg, src, now, vi, via_line)
            elif method == "ACK" and tx is None:
                to_tag = header_param(msg.get("to") or b"", b"tag")
                if to_tag is not None and to_tag.startswith(TAG_PREFIX):
                    return Drop(Absorbed.ACK_ABSORBED)  # ACK for a final answer we sent statelessly

        scan = ctx.scan(msg, vi, via_line)
        to_tag = header_param(header_value(scan.to_line), b"tag")
        from_tag = header_param(header_value(scan.from_line), b"tag")
        gateway = self._gateway_of(src)
        sig = ctx.signatures
        if sig is not None and (gateway is None or ctx.signatures_on_gateways) \
                and signature_in(sig, msg):
            ctx.bans.offense(src.host, Offense.SCANNER, now, spoofable=src.channel == PUBLIC_UDP)
            return Drop(DropReason.SCANNER_PARSED)

        # 2. In-dialog requests: the dialog they name, from its own peer.
        if to_tag is not None:
            dlg = ctx.calls.dialogs.find(msg.call_id, from_tag, to_tag)
            if dlg is None:
                if method == "ACK":  # never answered (§17.1.1.3); the ACK of our own 481 is one
                    return Drop(DropReason.NO_DIALOG)
                if gateway is None:
                    return ctx.unknown(scan, src, now)
                ctx.bans.offense(src.host, Offense.NO_DIALOG, now)
                return ctx.refuse_gateway(481, scan, src, Refusal.NO_DIALOG)
            if not owns(dlg, src):
                return self._not_owner(scan, src, now, gateway)
            if dlg.state is DialogState.ENDED and method not in AFTER_END:
                return ctx.refuse_gateway(481, scan, src, Refusal.DIALOG_ENDED)
            if scan.loop:
                return ctx.reply_stateless(482, scan, src)
            if scan.mf_zero:
                return ctx.reply_stateless(483, scan, src)
            dlg.cseq_peer = max(dlg.cseq_peer, msg.cseq)
            if method == "INVITE":  # a re-INVITE: where the dialog lives
                return self._invite(msg, src, now, key, scan, dlg.gateway, dlg.egress, None, dlg)
            if method == "BYE":  # the call ends on the request (RFC 3261 §15), whatever answers it
                ctx.calls.end(dlg, now, "bye_caller" if not dlg.inbound else "bye_callee")
            scan.lines[0] = ctx.via_egress[dlg.egress - PRIVATE] + key
            out = serialize(msg.start, scan.lines, msg.body, msg.has_content_length)
            return Forward([(dlg.egress, dlg.backend, out)])

        # 3./4. Out of dialog: a gateway by address, or a digest account.
        if method == "ACK":  # it matched no transaction of ours; an ACK is never answered (§17)
            return Drop(DropReason.NO_TRANSACTION)
        account: Account | None = None
        if gateway is None:
            if ctx.auth is None or not ctx.auth.has_accounts or method not in FORWARDED:
                # A method sbc would never pass on is not worth a challenge
                # (an answer to a stranger, larger than what it sent).
                return ctx.unknown(scan, src, now)
            verdict_or_account = self._authenticate(msg, scan, src, now)
            if not isinstance(verdict_or_account, Account):
                return verdict_or_account
            account = verdict_or_account
            gateway = account.gateway
            if gateway in ctx.s.cert_gateways:
                # Its certificate is checked at the TLS handshake, at the
                # gateway's own addresses; a digest account's request comes
                # from elsewhere, where none was asked for: fail closed.
                return self._refuse_certificate(scan, src, now)
            # The nonce was bound to this address: it answered us.
            ctx.proofs.note(src.host, now + ctx.auth.nonce_ttl)

        if method not in FORWARDED:
            if method in IN_DIALOG_ONLY:
                return ctx.refuse_gateway(481, scan, src, Refusal.NO_DIALOG)
            return self._not_allowed(scan, src)
        if scan.loop:
            return ctx.reply_stateless(482, scan, src)
        if scan.mf_zero:
            return ctx.reply_stateless(483, scan, src)
        if scan.route_idx:
            scan.lines, removed = without_preloaded_routes(scan.lines)
            if removed:
                ctx.tally.refusals[Refusal.PRELOADED_ROUTE] += 1
        info = ctx.gateway_info.get(gateway)
        egress = PRIVATE + info.egress_index if info else PRIVATE

        if method == "INVITE":
            live = ctx.calls.dialogs.get(msg.call_id, from_tag)
            if live is not None and live.active:
                # RFC 3261 §8.2.2.2: not a retransmission, yet the identity of
                # a call in progress. Never a second call that escapes counting.
                if not owns(live, src):
                    return self._not_owner(scan, src, now, gateway)
                return ctx.refuse_gateway(482, scan, src, Refusal.DIALOG_EXISTS)
            policy = ctx.policy
            called = _called(msg) if policy.matches_numbers else ()
            # -- toll-fraud watch (sbc.core.fraud): a block in force refuses
            fraud = None if ctx.fraud is None else ctx.fraud.match(gateway, msg.uri, called, now)
            if fraud is not None and fraud.block is not None:
                ctx.tally.refusals[Refusal.FRAUD_SUSPECTED] += 1
                return self._reject(key, 403, scan, src, now, b"Fraud Suspected")
            # --
            dialogs = ctx.calls.dialogs
            rejected = policy.check(gateway, called, dialogs.active(gateway),
                                    dialogs.active_total(), now)
            if rejected is not None:
                extra: tuple[bytes, ...] = ()
                if rejected.status == 403:
                    ctx.bans.offense(src.host, Offense.BLOCKED_DESTINATION, now)
                else:
                    extra = (b"Retry-After: %d" % policy.retry_after,)
                return self._reject(key, rejected.status, scan, src, now, rejected.reason, extra)
            verdict = self._invite(msg, src, now, key, scan, gateway, egress, from_tag, None)
            if fraud is not None and ctx.fraud is not None and verdict.kind == "forward":
                ctx.fraud.admit(fraud, (msg.call_id, from_tag or b""), msg.call_id, now)  # counted
            return verdict
        if method == "REGISTER" and account is not None and ctx.registrar is not None:
            return self._register(msg, scan, src, now, account)
        if method == "OPTIONS" and (info is None or info.options == "answer"):
            return ctx.reply_stateless(200, scan, src)  # keepalive: VOS3000 never sees it
        scan.lines[0] = ctx.via_egress[egress - PRIVATE] + key
        out = serialize(msg.start, scan.lines, msg.body, msg.has_content_length)
        return Forward([(egress, ctx.health.first, out)])

    # ------------------------------------------------------------------ admission

    def _gateway_of(self, src: Source) -> str | None:
        if self.ctx.gateways is None:
            return ""  # no gateway table: every source is admitted (in-memory tests)
        return self.ctx.gateways.by_source(src.host, src.port)

    def _certificate_required(self, msg: Message, src: Source, now: float) -> Verdict:
        """A message over UDP or TCP from the address of a gateway that must
        show a TLS client certificate (gateways[].tls.require_client_cert):
        that gateway is admitted over TLS only, where the transport verified
        its certificate at the handshake. Responses and ACKs are dropped
        (an ACK is never answered, RFC 3261 §17); requests are refused."""
        ctx = self.ctx
        if msg.method is None or msg.method == "ACK":
            return Drop(DropReason.CLIENT_CERT_REQUIRED)
        vi, _via, via_line = ctx.received_via(msg, src)
        return self._refuse_certificate(ctx.scan(msg, vi, via_line), src, now)

    def _refuse_certificate(self, scan: Scan, src: Source, now: float) -> Verdict:
        """403, not silence: the source is a configured customer's address
        (or credentials), not a scanner, and the one thing its operator needs
        to learn is why its trunk stopped working: the reason phrase says it.
        Over UDP the source may be forged, so the 403 goes to the packet's
        source only and within the reply budget, like any refusal to a
        source that has not proved itself; counted as `client_cert_required`."""
        return self.ctx.refuse(403, scan, src, now, Refusal.CLIENT_CERT_REQUIRED,
                               phrase=b"TLS Client Certificate Required")

    def _unknown_cancel(self, msg: Message, src: Source, now: float, vi: int,
                        via_line: bytes) -> Verdict:
        """A CANCEL that matches no transaction of ours. RFC 3261 §9.2 says a
        481 SHOULD answer it, and a CANCEL cannot be challenged (it cannot be
        resubmitted with credentials), so that 481 would go out before any
        authentication: to a stranger it says only that a SIP server listens
        here, a scanner's cheapest probe. So a gateway, or a source that has
        proved it is at its address (ctx.proved), gets the 481; anyone else
        what every unknown source gets: silence by default, the 481 (within
        the reply budget) with `auth.unknown_source: reject`."""
        ctx = self.ctx
        if not ctx.s.reject_unknown and self._gateway_of(src) is None \
                and not ctx.proved(src.host, now):
            return Drop(DropReason.UNKNOWN_SOURCE)
        return ctx.refuse(481, ctx.scan(msg, vi, via_line), src, now, Refusal.NO_TRANSACTION)

    def _not_owner(self, scan: Scan, src: Source, now: float, gateway: str | None) -> Verdict:
        """A request with the identifiers of a dialog that is not the sender's."""
        self.ctx.bans.offense(src.host, Offense.DIALOG_NOT_OWNER, now)
        if gateway is None:
            return Drop(DropReason.DIALOG_NOT_OWNER)
        return self.ctx.refuse_gateway(403, scan, src, Refusal.DIALOG_NOT_OWNER)

    def _not_allowed(self, scan: Scan, src: Source) -> Reply:
        ctx = self.ctx
        ctx.tally.refusals[Refusal.METHOD_NOT_ALLOWED] += 1
        return ctx.reply_stateless(405, scan, src, extra=(ALLOW,))

    def _authenticate(self, msg: Message, scan: Scan, src: Source, now: float
                      ) -> Verdict | Account:
        ctx = self.ctx
        assert ctx.auth is not None
        register = msg.method == "REGISTER"
        creds = msg.get("authorization" if register else "proxy-authorization")
        request_uri = msg.uri.decode("utf-8", "surrogateescape")
        result = ctx.auth.verify(msg.method or "", request_uri, creds, src.host, now)
        status = result.status
        account = result.account
        if status is AuthStatus.OK and account is not None:
            if not account.caller_allowed(header_value(scan.from_line)):
                # A trunk presents many caller IDs; an account that must not
                # says so (from_must_match), and then only its own name goes.
                ctx.bans.offense(src.host, Offense.DIGEST_FROM_MISMATCH, now)
                return ctx.refuse(403, scan, src, now, Refusal.DIGEST_FROM_MISMATCH)
            return account
        if status in _CHALLENGED:
            # RFC 3261 §22.1: 401 from a registrar, 407 from a proxy. A right
            # answer on a nonce-count already used is asked again with a fresh
            # nonce and stale=true (RFC 7616 §3.3: the digest was valid, the
            # nonce is not): a phone that shares one nonce between its
            # REGISTER and an INVITE sent at the same moment (baresip) retries
            # instead of giving up, and a replayer learns nothing it did not
            # know. A right answer the replay table has no room for is asked
            # again the same way (fail closed).
            stale = status in _STALE
            # Over UDP the source may be forged, and the challenge is the
            # largest answer sbc gives a stranger: one line (the first
            # configured algorithm) keeps it near the request's own size.
            # Over TCP and TLS the handshake proved the address: every line.
            lines = ctx.auth.challenge(src.host, now, proxy=not register, stale=stale,
                                       single=src.channel == PUBLIC_UDP)
            return ctx.refuse(401 if register else 407, scan, src, now, _CHALLENGED[status],
                              extra=tuple(lines))
        if status is AuthStatus.URI_MISMATCH:
            # RFC 7616 §3.4.6: the answer is for another resource.
            ctx.bans.offense(src.host, Offense.DIGEST_URI_MISMATCH, now)
            return ctx.refuse(400, scan, src, now, Refusal.DIGEST_URI_MISMATCH)
        if status is AuthStatus.MALFORMED:
            ctx.bans.offense(src.host, Offense.MALFORMED, now)
            return Drop(DropReason.MALFORMED_CREDENTIALS)
        # A wrong password, an unknown user name, an account used from outside
        # its from_cidrs: one answer, so that guessing names teaches nothing.
        ctx.bans.offense(src.host, Offense.DIGEST_FAILURE, now)
        return ctx.refuse(403, scan, src, now, Refusal.DIGEST_FAILURE)

    # ------------------------------------------------------------------ INVITE transactions

    def _invite(self, msg: Message, src: Source, now: float, key: bytes, scan: Scan,
                gateway: str, egress: int, from_tag: bytes | None, dlg: Dialog | None) -> Verdict:
        """An INVITE, transaction-stateful: the initial one of a call
        (`dlg` None: a new dialog, a slot) or a re-INVITE in `dlg`."""
        ctx = self.ctx
        calls = ctx.calls
        initial = dlg is None
        caller = (src.host, src.port)
        if len(calls.txs) >= ctx.s.max_transactions or (
            initial and len(calls.dialogs) >= ctx.s.max_dialogs
        ):
            return ctx.reply_stateless(503, scan, src, extra=(b"Retry-After: 5",))

        tx = InviteTx(key, caller, src.channel, now)
        tx.initial = initial
        tx.egress = egress
        if dlg is None:
            self.failover.plan(tx, now)  # the first VOS3000 that is up; a deadline to move on
        else:
            tx.dest = dlg.backend
        tx.call_id = msg.call_id
        tx.vias = scan.vias
        tx.from_line = scan.from_line
        tx.to_line = scan.to_line
        tx.call_id_line = scan.call_id_line
        tx.cseq_line = scan.cseq_line
        tx.cseq = msg.cseq
        tx.uri = msg.uri
        lines = scan.lines
        tx.our_via = lines[0] = ctx.via_egress[egress - PRIVATE] + key
        if initial:
            lines[1:1] = ctx.rr_outbound[(src.channel, egress)]
        tx.routes = [ln for ln in lines if ln[:6].lower() == b"route:"]
        tx.out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        trying = build.response(100, scan.vias, scan.from_line, scan.to_line, scan.call_id_line,
                                scan.cseq_line)
        tx.last_response = trying
        calls.txs[key] = tx
        tx.a_interval = ctx.s.t1
        tx.a_timer = calls.arm(None, now + ctx.s.t1, TimerKind.RETRANSMIT, tx)
        tx.b_timer = calls.arm(None, now + ctx.s.invite_timeout, TimerKind.TIMEOUT, tx)
        if dlg is None:
            dlg = Dialog(msg.call_id, caller, src.channel, now, now + ctx.s.dialog_setup_timeout,
                         gateway=gateway, egress=egress, backend=tx.dest, tag=from_tag or b"")
            dlg.from_value = header_value(scan.from_line)
            dlg.peer_contact = contact_uri(msg)
            dlg.cseq_peer = msg.cseq
            calls.add_dialog(dlg)
            tx.dialog = dlg
        return Forward([(src.channel, caller, trying), (egress, tx.dest, tx.out)])

    def _reject(self, key: bytes, status: int, sc: Scan, src: Source, now: float,
                reason: bytes | None = None, extra: tuple[bytes, ...] = ()) -> Reply:
        """A final answer of ours to an INVITE, kept as a completed transaction:
        retransmissions get the same answer (and are not judged again), the
        ACK is absorbed, and a UDP caller gets it again until it ACKs."""
        ctx = self.ctx
        response = build.response(status, sc.vias, sc.from_line, sc.to_line, sc.call_id_line,
                                  sc.cseq_line, to_tag=ctx.tag(key), reason=reason, extra=extra)
        tx = InviteTx(key, (src.host, src.port), src.channel, now)
        if ctx.calls.add_tx(tx):
            tx.step(TxEvent.FINAL)
            tx.last_response = response
            ctx.calls.complete(tx, now)
        return Reply([(src.channel, (src.host, src.port), response)])

    def _cancel(self, msg: Message, src: Source, now: float, vi: int, via_line: bytes,
                tx: InviteTx) -> Verdict:
        ctx = self.ctx
        scan = ctx.scan(msg, vi, via_line)
        ok = build.response(200, scan.vias, scan.from_line, scan.to_line, scan.call_id_line,
                            scan.cseq_line, to_tag=ctx.tag(tx.key))
        sends: list[Send] = [(src.channel, (src.host, src.port), ok)]
        if tx.final or tx.cancelled or tx.cancel_pending:
            return Reply(sends)
        if tx.state is TxState.PROCEEDING:
            sends.append((tx.egress, tx.dest, tx.cancel_request()))  # the current attempt
            tx.cancelled = True
        else:
            tx.cancel_pending = True  # RFC 3261 §9.1: not before a provisional
        # If VOS3000 never ends the INVITE, answer 487 ourselves (§9.1: 64*T1).
        tx.b_timer = ctx.calls.arm(tx.b_timer, now + 64 * ctx.s.t1, TimerKind.TIMEOUT, tx)
        return Forward(sends)

    def give_up(self, tx: InviteTx, now: float, sends: list[Send]) -> None:
        """Timer B or C ran out, or a CANCEL was never answered."""
        ctx = self.ctx
        tx.b_timer = None
        if tx.final:
            return
        status = 487 if (tx.cancelled or tx.cancel_pending) else 408
        if tx.state is TxState.CALLING and tx.target >= 0:
            ctx.health_failed(tx.target, now, "INVITE unanswered until Timer B")
        if tx.state is TxState.PROCEEDING and not tx.cancelled:
            sends.append((tx.egress, tx.dest, tx.cancel_request()))
            tx.cancelled = True
        tx.step(TxEvent.TIMEOUT)
        tx.last_response = build.response(status, tx.vias, tx.from_line, tx.to_line,
                                          tx.call_id_line, tx.cseq_line, to_tag=ctx.tag(tx.key))
        sends.append((tx.caller_channel, tx.caller, tx.last_response))
        ctx.calls.complete(tx, now)
        if tx.dialog is not None and tx.dialog.state is DialogState.EARLY:
            ctx.calls.end(tx.dialog, now, "timeout" if status == 408 else "cancelled")

    # ------------------------------------------------------------------ REGISTER

    def _register(self, msg: Message, scan: Scan, src: Source, now: float,
                  account: Account) -> Verdict:
        ctx = self.ctx
        assert ctx.registrar is not None
        result = ctx.registrar.register(msg, account.username, account.gateway,
                                        (int(src.channel), src.host, src.port), now)
        if result.changed:
            ctx.on_bindings(account.username, ctx.registrar.bindings(account.username))
        reply = build.response(result.status, scan.vias, scan.from_line, scan.to_line,
                               scan.call_id_line, scan.cseq_line, to_tag=ctx.local_tag(msg.call_id),
                               extra=result.headers)
        return Reply([(src.channel, (src.host, src.port), reply)])

    # ------------------------------------------------------------------ responses

    def response(self, msg: Message, src: Source, now: float) -> Verdict:
        """A peer answering a request VOS3000 sent through us: back to VOS3000 only."""
        ctx = self.ctx
        lines, branch, nxt = ctx.pop_our_via(msg, ctx.own_public[src.channel],
                                             ctx.marker_public[src.channel])
        if branch is None:
            return Drop(DropReason.VIA_NOT_OURS)
        if branch.startswith(BYE_BRANCH):
            return Drop(Absorbed.BYE_ANSWER)  # the answer to a BYE of our own
        if nxt is None:
            return Drop(DropReason.NO_NEXT_VIA)
        addr: Addr = parse_via(nxt).reply_address()
        if ctx.health.by_addr(addr) is None and not (
                ctx.nodes is not None and ctx.nodes.is_node(addr[0], addr[1], now)):
            return Drop(DropReason.RESPONSE_NOT_TO_BACKEND)  # nor a node that relayed it
        if not branch_is_for(ctx.secret, branch, (src.host, src.port), addr):
            return Drop(DropReason.RESPONSE_NOT_OURS)  # nobody sbc sent this request to, or altered
        from_tag = header_param(msg.get("from") or b"", b"tag")
        to_tag = header_param(msg.get("to") or b"", b"tag")
        dlg = ctx.calls.dialogs.get(msg.call_id, from_tag)
        if dlg is None or not dlg.inbound:
            dlg = ctx.calls.dialogs.find(msg.call_id, from_tag, to_tag)
        status = msg.status
        if dlg is not None and dlg.inbound and msg.cseq_method == "INVITE" \
                and dlg.state is DialogState.EARLY and owns(dlg, src):
            dlg.add_answer_tag(to_tag)
            if 200 <= status < 300:
                dlg.to_value = msg.get("to") or b""
                dlg.peer_contact = contact_uri(msg)
                ctx.calls.confirm(dlg, now)
            elif status >= 300:
                ctx.calls.end(dlg, now, f"rejected_{status}")
        egress = dlg.egress if dlg is not None else PRIVATE
        return Forward([(egress, addr, serialize(msg.start, lines, msg.body, msg.has_content_length))])
