"""Messages that arrive from VOS3000 on a private (egress) socket.

Responses follow the Via stack back to the public side. Requests go only to
the peer of the dialog they name (Call-ID and both tags, from the dialog's
VOS3000 on the dialog's egress), to the binding of a registered digest
account (a new call towards it), or, for CANCEL, to where that call's INVITE
went; in a cluster, what another node holds goes one hop to that node's
private address, and what a live node relays is taken as from the VOS3000
under its Via (relay.py). VOS3000's OPTIONS keepalives are answered here.
Nothing else leaves: sbc is never an open relay.

What sbc sends to the public side carries a branch signed for that peer and
for the VOS3000 address the answer must go back to (routing.signed_branch),
so the public side can tell a real answer from a forged one without a table.
"""

from __future__ import annotations

from ...sip import Message, SipParseError, Via, header_param, header_value, parse_uri, parse_via, serialize
from .context import BYE_BRANCH, PING_BRANCH, Context, contact_uri
from .dialogs import Dialog, DialogState
from .failover import Failover
from ..reasons import Absorbed, DropReason, Offense
from .relay import RELAY_BRANCH, account_of, backend_behind, relay_branch, relay_request, \
    relayed_to, route_node
from .routing import signed_branch
from .scan import Scan
from .timers import TimerKind
from .transactions import InviteTx, TxEvent, TxState
from ..verdict import (
    PRIVATE,
    PUBLIC_TCP,
    PUBLIC_TLS,
    PUBLIC_UDP,
    Addr,
    Drop,
    Forward,
    Reply,
    Send,
    Source,
    Verdict,
)

# The public channel a response goes back on, by the transport of the Via it
# follows (RFC 3261 §18.2.2: over the connection the request came in on).
_VIA_CHANNEL = {"UDP": PUBLIC_UDP, "TCP": PUBLIC_TCP, "TLS": PUBLIC_TLS}
_AFTER_END = frozenset(("BYE", "ACK"))


class BackendSide:
    def __init__(self, ctx: Context, failover: Failover) -> None:
        self.ctx = ctx
        self.failover = failover

    def receive(self, msg: Message, src: Source, now: float) -> Verdict:
        ctx = self.ctx
        # Another node relaying what VOS3000 sent it (relay.py): only from a
        # live node's private address, exactly.
        relayed = ctx.nodes is not None and ctx.nodes.is_node(src.host, src.port, now)
        if not relayed and src.host not in ctx.health.hosts:
            return Drop(DropReason.NOT_BACKEND)
        if msg.method is None:
            return self.response(msg, src, now)
        backend_host = src.host  # the VOS3000 the request comes from
        if relayed:
            behind = backend_behind(msg)
            if behind is None or ctx.health.by_host(behind[0]) is None:
                return Drop(DropReason.RELAY_NOT_FROM_BACKEND)
            backend_host = behind[0]
        vi, via, via_line = ctx.received_via(msg, src)
        scan = ctx.scan(msg, vi, via_line)
        if scan.mf_zero:
            return ctx.reply_stateless(483, scan, src)
        method = msg.method
        to_tag = header_param(header_value(scan.to_line), b"tag")
        from_tag = header_param(header_value(scan.from_line), b"tag")
        if to_tag is None:
            if method == "OPTIONS":
                return ctx.reply_stateless(200, scan, src)  # VOS3000 checking its gateway
            if method == "INVITE":
                return self._call_to_binding(msg, src, now, scan, via, from_tag, backend_host,
                                             relayed)
            if method == "CANCEL":
                return self._cancel_to_binding(msg, src, now, scan, via, from_tag, backend_host,
                                               relayed)
            if method == "ACK":
                return Drop(DropReason.NO_DIALOG)
            return ctx.reply_stateless(481, scan, src)
        dlg = ctx.calls.dialogs.find(msg.call_id, from_tag, to_tag)
        if dlg is None:
            node = None if relayed or ctx.nodes is None else (
                route_node(scan, ctx.nodes, now) or
                (ctx.nodes.owner(account_of(msg) or "", now) if method == "ACK" else None))
            if node is not None:  # a dialog another node holds
                return self._relay(msg, src, scan, via, node)
            if method == "ACK":
                return Drop(DropReason.NO_DIALOG)
            return ctx.reply_stateless(481, scan, src)
        if src.channel != dlg.egress or backend_host != dlg.backend[0]:
            return Drop(DropReason.DIALOG_NOT_OWNER)  # another VOS3000, or another gateway's socket
        if dlg.state is DialogState.ENDED and method not in _AFTER_END:
            return ctx.reply_stateless(481, scan, src)
        dlg.cseq_backend = max(dlg.cseq_backend, msg.cseq)
        if method == "BYE":  # the call ends on the request, whatever answers it
            ctx.calls.end(dlg, now, "bye_backend" if not dlg.inbound else "bye_caller")
        return self._to_peer(msg, src, scan, via, dlg.peer_channel, dlg.peer)

    def _to_peer(self, msg: Message, src: Source, scan: Scan, via: Via, channel: int,
                 peer: Addr, start: bytes | None = None, record_route: bool = False) -> Forward:
        ctx = self.ctx
        material = ctx.key_material(msg, via, b"b")
        branch = signed_branch(ctx.secret, material, peer, (src.host, src.port))
        lines = scan.lines
        lines[0] = ctx.via_public[channel] + branch
        if record_route:
            lines[1:1] = ctx.rr_inbound[(channel, src.channel)]
        out = serialize(start or msg.start, lines, msg.body, msg.has_content_length)
        return Forward([(channel, peer, out)])

    def _relay(self, msg: Message, src: Source, scan: Scan, via: Via, node: Addr) -> Forward:
        """On to the node that holds the phone or its dialog (relay.py)."""
        ctx = self.ctx
        branch = relay_branch(ctx.secret, ctx.key_material(msg, via, b"r"),
                              src.channel - PRIVATE, node, (src.host, src.port))
        return relay_request(msg, src, scan, branch, ctx.via_egress[0], node)

    def _call_to_binding(self, msg: Message, src: Source, now: float, scan: Scan, via: Via,
                         from_tag: bytes | None, backend_host: str,
                         relayed: bool) -> Verdict:
        """A new call from VOS3000 to a registered account (RFC 3261 §16.5: the
        Request-URI becomes the registered contact; sent to where it registered from)."""
        ctx = self.ctx
        calls = ctx.calls
        live = calls.dialogs.get(msg.call_id, from_tag)
        if live is not None and live.inbound and live.active:
            # A retransmission of the INVITE (forwarded statelessly): the same way again.
            return self._to_peer(msg, src, scan, via, live.peer_channel, live.peer,
                                 start=b"INVITE " + live.peer_contact + b" SIP/2.0"
                                 if live.peer_contact else None, record_route=True)
        try:
            user = parse_uri(msg.uri).user
        except SipParseError:
            user = None
        aor = user.decode("utf-8", "replace") if user else ""
        bindings = ctx.registrar.lookup(aor, now) if (
            user and ctx.registrar is not None) else []
        if not bindings:
            node = ctx.nodes.owner(aor, now) if (
                aor and ctx.nodes is not None and not relayed) else None
            if node is not None:  # registered at another node: one hop there
                return self._relay(msg, src, scan, via, node)
            return ctx.reply_stateless(480, scan, src)
        if len(calls.dialogs) >= ctx.s.max_dialogs:
            return ctx.reply_stateless(503, scan, src, extra=(b"Retry-After: 5",))
        binding = bindings[0]
        channel, host, port = binding.source
        target = ctx.health.by_host(backend_host)  # the VOS3000 the call comes from lives on
        dlg = Dialog(msg.call_id, (host, port), channel, now, now + ctx.s.dialog_setup_timeout,
                     gateway=binding.gateway, egress=src.channel, inbound=True,
                     backend=target.addr if target is not None else (src.host, src.port),
                     tag=from_tag or b"")
        dlg.from_value = header_value(scan.from_line)
        dlg.backend_contact = contact_uri(msg)
        dlg.peer_contact = binding.contact  # until the phone's 2xx gives its own
        dlg.cseq_backend = msg.cseq
        calls.add_dialog(dlg)
        return self._to_peer(msg, src, scan, via, channel, (host, port),
                             start=b"INVITE " + binding.contact + b" SIP/2.0", record_route=True)

    def _cancel_to_binding(self, msg: Message, src: Source, now: float, scan: Scan, via: Via,
                           from_tag: bytes | None, backend_host: str,
                           relayed: bool) -> Verdict:
        """VOS3000 cancels a call it placed to a registered phone: the CANCEL
        goes where the INVITE went, with the INVITE's branch (RFC 3261 §9.1,
        §16.10); the phone's 200 and 487 come back like any response."""
        ctx = self.ctx
        dlg = ctx.calls.dialogs.get(msg.call_id, from_tag)
        if dlg is None and ctx.nodes is not None and not relayed:
            node = ctx.nodes.owner(account_of(msg) or "", now)
            if node is not None:  # the INVITE went to that node: so does its CANCEL
                return self._relay(msg, src, scan, via, node)
        if dlg is None or not dlg.inbound or dlg.state is not DialogState.EARLY:
            return ctx.reply_stateless(481, scan, src)
        if src.channel != dlg.egress or backend_host != dlg.backend[0]:
            return Drop(DropReason.DIALOG_NOT_OWNER)
        start = b"CANCEL " + dlg.peer_contact + b" SIP/2.0" if dlg.peer_contact else None
        return self._to_peer(msg, src, scan, via, dlg.peer_channel, dlg.peer, start=start)

    # ------------------------------------------------------------------ responses

    def response(self, msg: Message, src: Source, now: float) -> Verdict:
        ctx = self.ctx
        egress = src.channel - PRIVATE
        lines, branch, nxt = ctx.pop_our_via(msg, ctx.egresses[egress], ctx.marker_egress[egress])
        if branch is None:
            return Drop(DropReason.VIA_NOT_OURS)
        if branch.startswith(BYE_BRANCH):
            return Drop(Absorbed.BYE_ANSWER)  # the answer to a BYE of our own
        if branch.startswith(PING_BRANCH):
            if msg.status >= 200:
                self.failover.ping_answer(branch, msg.status, now)
            return Drop(Absorbed.PING_ANSWER)
        if branch.startswith(RELAY_BRANCH):
            return self._relayed_response(msg, src, lines, branch, nxt)
        tx = ctx.calls.txs.get(branch) if msg.cseq_method in ("INVITE", "CANCEL") else None
        if tx is not None and msg.cseq_method == "CANCEL":
            return Drop(Absorbed.CANCEL_ANSWER)  # the 200 for our own CANCEL
        if nxt is None:
            return Drop(DropReason.NO_NEXT_VIA)  # RFC 3261 §16.7 step 3: nowhere to send it
        if tx is not None:
            if branch != tx.branch:  # an attempt sbc has moved on from
                return self.failover.late_response(tx, branch, msg, now)
            if tx.dest[0] != src.host:
                return Drop(DropReason.RESPONSE_NOT_OURS)  # not the VOS3000 this INVITE went to
            return self._invite_response(tx, msg, lines, now)
        via = parse_via(nxt)
        channel = _VIA_CHANNEL.get(via.transport, PUBLIC_UDP)
        if msg.status == 401 or msg.status == 403:
            ctx.bans.offense(via.reply_address()[0], Offense.BACKEND_AUTH_FAILURE, now)
        out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        return Forward([(channel, via.reply_address(), out)])

    def _relayed_response(self, msg: Message, src: Source, lines: list[bytes], branch: bytes,
                          nxt: bytes | None) -> Verdict:
        """A node's answer to a request this node relayed to it: back to the
        VOS3000 address it was signed for, from the socket the request came in on."""
        ctx = self.ctx
        if nxt is None:
            return Drop(DropReason.NO_NEXT_VIA)
        origin = parse_via(nxt).reply_address()
        if ctx.health.by_addr(origin) is None:
            return Drop(DropReason.RESPONSE_NOT_TO_BACKEND)
        egress = relayed_to(ctx.secret, branch, (src.host, src.port), origin)
        if egress is None or egress >= len(ctx.egresses):
            return Drop(DropReason.RESPONSE_NOT_OURS)  # from no node we sent it to, or altered
        out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        return Forward([(PRIVATE + egress, origin, out)])

    def _invite_response(self, tx: InviteTx, msg: Message, lines: list[bytes],
                         now: float) -> Verdict:
        ctx = self.ctx
        calls = ctx.calls
        status = msg.status
        sends: list[Send] = []
        dlg = tx.dialog
        if tx.state is TxState.CALLING and tx.target >= 0 and status not in ctx.s.failover_on:
            ctx.health_ok(tx.target, now)  # the attempt's first response: its target is alive
        if status < 200:
            if tx.final:
                return Drop(Absorbed.HOP_BY_HOP_100 if status == 100 else Absorbed.LATE_PROVISIONAL)
            first = tx.state is TxState.CALLING
            tx.step(TxEvent.PROVISIONAL)
            calls.timers.cancel(tx.a_timer)
            tx.a_timer = None
            calls.timers.cancel(tx.fo_timer)  # it answered: the call stays on this target
            tx.fo_timer = None
            if not tx.cancelled:
                # Timer C (RFC 3261 §16.6 step 11), restarted by each provisional.
                if first or status > 100:
                    tx.b_timer = calls.arm(tx.b_timer, now + ctx.s.proxy_timeout,
                                           TimerKind.TIMEOUT, tx)
                if tx.cancel_pending:
                    tx.cancel_pending = False
                    tx.cancelled = True
                    sends.append((tx.egress, tx.dest, tx.cancel_request()))
            if status == 100:
                return Forward(sends) if sends else Drop(Absorbed.HOP_BY_HOP_100)
            if dlg is not None and dlg.state is DialogState.EARLY:
                dlg.add_answer_tag(header_param(msg.get("to") or b"", b"tag"))
            out = serialize(msg.start, lines, msg.body, msg.has_content_length)
            tx.last_response = out
            sends.append((tx.caller_channel, tx.caller, out))
            return Forward(sends)
        out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        if status < 300:
            # Every 2xx goes through, retransmissions too (RFC 3261 §16.7 step 5).
            if tx.can(TxEvent.SUCCESS):
                first = tx.state is not TxState.ACCEPTED
                tx.step(TxEvent.SUCCESS)
                if dlg is not None and dlg.state is not DialogState.ENDED:
                    dlg.add_answer_tag(header_param(msg.get("to") or b"", b"tag"))
                    if dlg.state is DialogState.EARLY:
                        dlg.to_value = msg.get("to") or b""
                        dlg.backend_contact = contact_uri(msg)
                        calls.confirm(dlg, now)
                if first:
                    calls.accept(tx, now)
            return Forward([(tx.caller_channel, tx.caller, out)])
        # A non-2xx final answer: ACK it ourselves (hop by hop, §17.1.1.3), pass it on once.
        to_line = next((raw for name, raw in msg.headers if name == "to"), tx.to_line)
        sends.append((tx.egress, tx.dest, tx.ack_request(to_line)))
        if status in ctx.s.failover_on and self.failover.can_fail_over(tx) and not tx.final:
            # RFC 3261 §16.7 step 6: try the next target; the caller sees nothing yet.
            sends.extend(self.failover.fail_over(tx, now, f"status_{status}", done=True))
            return Forward(sends)
        if not calls.final(tx, TxEvent.FINAL):
            return Reply(sends)  # a retransmitted final answer: re-ACK only
        if status == 401 or status == 403:
            ctx.bans.offense(tx.caller[0], Offense.BACKEND_AUTH_FAILURE, now)
        tx.last_response = out
        sends.append((tx.caller_channel, tx.caller, out))
        calls.complete(tx, now)
        if dlg is not None and dlg.state is DialogState.EARLY:
            calls.end(dlg, now, f"rejected_{status}")
        return Forward(sends)
