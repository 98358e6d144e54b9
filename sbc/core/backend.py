# mypy: disable-error-code="misc"
# (this module is one side of Engine, a mixin whose methods take `self: Engine`:
# mypy reports that self type as not a supertype of the mixin; the rest is checked)
"""Messages that arrive from VOS3000 on a private (egress) socket.

Responses follow the Via stack back to the public side. Requests go only to
a dialog peer (in-dialog), or to the binding of a registered digest account
(a new call towards it). VOS3000's OPTIONS keepalives are answered here.
Nothing else leaves: sbc is never an open relay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sip import (
    Message,
    SipParseError,
    build,
    header_param,
    header_value,
    parse_uri,
    parse_via,
    serialize,
)
from .dialogs import Dialog, DialogState
from .public import BYE_BRANCH, PING_BRANCH, _contact_uri
from .transactions import InviteTx, TxState
from .verdict import (
    PRIVATE,
    PUBLIC_TCP,
    PUBLIC_TLS,
    PUBLIC_UDP,
    Drop,
    Forward,
    Reply,
    Send,
    Source,
    Verdict,
)

if TYPE_CHECKING:
    from .engine import Engine

# The public channel a response goes back on, by the transport of the Via it
# follows (RFC 3261 §18.2.2: over the connection the request came in on).
_VIA_CHANNEL = {"UDP": PUBLIC_UDP, "TCP": PUBLIC_TCP, "TLS": PUBLIC_TLS}


class BackendSide:
    def _from_backend(self: Engine, msg: Message, src: Source, now: float) -> Verdict:
        if src.host not in self.health.hosts:
            return Drop("not_backend")
        if msg.method is None:
            return self._backend_response(msg, src, now)
        vi, via, via_line = self._received_via(msg, src)
        scan = self._scan(msg, vi, via_line)
        if scan.mf_zero:
            return self._reply_stateless(483, scan, src)
        dlg = self.dialogs.get(msg.call_id)
        in_dialog = header_param(header_value(scan.to_line), b"tag") is not None
        if dlg is None or (not in_dialog and msg.method != "INVITE"):
            if msg.method == "ACK":
                return Drop("no_dialog")
            if msg.method == "OPTIONS" and not in_dialog:
                return self._reply_stateless(200, scan, src)  # VOS3000 checking its gateway
            if msg.method == "INVITE" and not in_dialog:
                return self._call_to_binding(msg, src, now, scan, via)
            return self._reply_stateless(481, scan, src)
        dlg.cseq_backend = max(dlg.cseq_backend, msg.cseq)
        scan.lines[0] = self._via_public[dlg.peer_channel] + self._key(msg, via, b"b")
        out = serialize(msg.start, scan.lines, msg.body, msg.has_content_length)
        return Forward([(dlg.peer_channel, dlg.peer, out)])

    def _call_to_binding(self: Engine, msg: Message, src: Source, now: float, scan: object,
                         via: object) -> Verdict:
        """A new call from VOS3000 to a registered account (RFC 3261 §16.5: the
        Request-URI becomes the registered contact; sent to where it registered from)."""
        from .engine import _Scan

        assert isinstance(scan, _Scan)
        try:
            user = parse_uri(msg.uri).user
        except SipParseError:
            user = None
        bindings = self.registrar.lookup(user.decode("utf-8", "replace"), now) if (
            user and self.registrar is not None) else []
        if not bindings:
            return self._reply_stateless(480, scan, src)
        if len(self.dialogs) >= self.s.max_dialogs:
            return self._reply_stateless(503, scan, src, extra=(b"Retry-After: 5",))
        binding = bindings[0]
        channel, host, port = binding.source
        target = self.health.by_host(src.host)  # the VOS3000 the call comes from lives on
        dlg = Dialog(msg.call_id, (host, port), channel, now, now + self.s.dialog_setup_timeout,
                     gateway=binding.gateway, egress=src.channel, inbound=True,
                     backend=target.addr if target is not None else (src.host, src.port))
        dlg.from_value = header_value(scan.from_line)
        dlg.backend_contact = _contact_uri(msg)
        dlg.cseq_backend = msg.cseq
        self.dialogs.add(dlg)
        self.timers.push(dlg.expire_at, "D", dlg)
        lines = scan.lines
        lines[0] = self._via_public[channel] + self._key(msg, via, b"b")  # type: ignore[arg-type]
        lines[1:1] = self._rr_inbound[(channel, src.channel)]
        start = b"INVITE " + binding.contact + b" SIP/2.0"
        return Forward([(channel, (host, port), serialize(start, lines, msg.body, msg.has_content_length))])

    def _backend_response(self: Engine, msg: Message, src: Source, now: float) -> Verdict:
        egress = src.channel - PRIVATE
        lines, branch, nxt = self._pop_our_via(msg, self.egresses[egress], self._marker_egress[egress])
        if branch is None:
            return Drop("via_not_ours")
        if branch.startswith(BYE_BRANCH):
            return Drop("bye_answer")  # the answer to a BYE of our own
        if branch.startswith(PING_BRANCH):
            if msg.status >= 200:
                self._ping_answer(branch, msg.status, now)
            return Drop("ping_answer")
        tx = self.txs.get(branch) if msg.cseq_method in ("INVITE", "CANCEL") else None
        if tx is not None and msg.cseq_method == "CANCEL":
            return Drop("cancel_answer")  # the 200 for our own CANCEL
        if nxt is None:
            return Drop("no_next_via")  # RFC 3261 §16.7 step 3: nowhere to send it
        if tx is not None:
            if branch != tx.branch:  # an attempt sbc has moved on from
                return self._late_response(tx, branch, msg, now)
            return self._invite_response(tx, msg, lines, now)
        via = parse_via(nxt)
        channel = _VIA_CHANNEL.get(via.transport, PUBLIC_UDP)
        if msg.status == 401 or msg.status == 403:
            self.bans.offense(via.reply_address()[0], "backend_auth_failure", now)
        if msg.cseq_method == "BYE" and 200 <= msg.status < 300:
            self._end_dialog(msg.call_id, now, "bye_caller")
        out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        return Forward([(channel, via.reply_address(), out)])

    def _invite_response(self: Engine, tx: InviteTx, msg: Message, lines: list[bytes],
                         now: float) -> Verdict:
        status = msg.status
        sends: list[Send] = []
        if tx.state is TxState.CALLING and tx.target >= 0 and status not in self.s.failover_on:
            self._health_ok(tx.target, now)  # the attempt's first response: its target is alive
        if status < 200:
            first = tx.state is TxState.CALLING
            tx.step("provisional")
            if tx.state is TxState.PROCEEDING and not tx.cancelled:
                # Timer C (RFC 3261 §16.6 step 11), restarted by each provisional.
                if first or status > 100:
                    tx.b_at = now + self.s.proxy_timeout
                    self.timers.push(tx.b_at, "B", tx)
                if tx.cancel_pending:
                    tx.cancel_pending = False
                    tx.cancelled = True
                    sends.append((tx.egress, tx.dest, self._cancel_request(tx)))
            if status == 100 or tx.final:
                return Forward(sends) if sends else Drop("hop_by_hop_100")
            out = serialize(msg.start, lines, msg.body, msg.has_content_length)
            tx.last_response = out
            sends.append((tx.caller_channel, tx.caller, out))
            return Forward(sends)
        out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        if status < 300:
            # Every 2xx goes through, retransmissions too (RFC 3261 §16.7 step 5).
            if tx.step("2xx") and tx.expire_at == 0.0:
                self._expire_tx(tx, now)
                dlg = self.dialogs.get(tx.call_id)
                if tx.initial and dlg is not None and dlg.state is DialogState.EARLY:
                    dlg.to_value = msg.get("to") or b""
                    dlg.backend_contact = _contact_uri(msg)
                    self._confirm_dialog(dlg, now)
            return Forward([(tx.caller_channel, tx.caller, out)])
        # A non-2xx final answer: ACK it ourselves (hop by hop, §17.1.1.3), pass it on once.
        to_line = next((raw for name, raw in msg.headers if name == "to"), tx.to_line)
        ack = build.request(b"ACK", tx.uri, tx.our_via, tx.routes, tx.from_line, to_line,
                            tx.call_id_line, tx.cseq)
        sends.append((tx.egress, tx.dest, ack))
        if status in self.s.failover_on and self._can_fail_over(tx) and not tx.final:
            # RFC 3261 §16.7 step 6: try the next target; the caller sees nothing yet.
            sends.extend(self._fail_over(tx, now, f"status_{status}", done=True))
            return Forward(sends)
        if not tx.step("final"):
            return Reply(sends)  # a retransmitted final answer: re-ACK only
        if status == 401 or status == 403:
            self.bans.offense(tx.caller[0], "backend_auth_failure", now)
        tx.last_response = out
        sends.append((tx.caller_channel, tx.caller, out))
        self._complete(tx, now)
        if tx.initial:
            self._drop_dialog(tx.call_id, now, f"rejected_{status}")
        return Forward(sends)
