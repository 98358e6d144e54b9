# mypy: disable-error-code="misc"
# (this module is one side of Engine, a mixin whose methods take `self: Engine`:
# mypy reports that self type as not a supertype of the mixin; the rest is checked)
"""Messages that arrive on the public side: identify the source, then proxy.

Admission, in order:
1. state we created: retransmissions, the CANCEL and the non-2xx ACK of an
   INVITE transaction of ours (from the address that sent the INVITE);
2. in-dialog requests from the peer of a dialog we record-routed;
3. a gateway by source address (exact IP+port, then longest CIDR match);
4. a digest account (RFC 3261 §22, RFC 8760): challenge, verify, or refuse.
Anything else is an unknown source: dropped silently, or 403 when configured.
Replies to sources not yet authenticated go to the packet's source only and
are capped by a reply budget, so sbc cannot be used to reflect traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from ..sip import (
    Message,
    SipParseError,
    build,
    header_param,
    header_value,
    name_addr_uri,
    parse_uri,
    parse_via,
    serialize,
    split_values,
)
from .auth import Account, AuthStatus
from .dialogs import Dialog, DialogState
from .transactions import InviteTx, TxState
from .verdict import PRIVATE, Addr, Drop, Forward, Reply, Send, Source, Verdict

if TYPE_CHECKING:
    from .engine import Engine, _Scan

TAG_PREFIX = b"sbc-"
BYE_BRANCH = b"z9hG4bKsbcbye"  # branches of the BYEs sbc sends itself (duration limit)
PING_BRANCH = b"z9hG4bKsbcping"  # branches of sbc's OPTIONS pings to VOS3000


def _called(msg: Message) -> str:
    """The called number: the user part of the Request-URI, without parameters,
    with %XX escapes decoded (RFC 3261 §19.1.4 compares URIs unescaped, so
    `%39%30%30` is 900 to the next hop too)."""
    try:
        user = parse_uri(msg.uri).user
    except SipParseError:
        return ""
    if not user:
        return ""
    return unquote_to_bytes(user.split(b";", 1)[0]).decode("utf-8", "replace")


def _contact_uri(msg: Message) -> bytes:
    contact = msg.get("contact")
    if not contact:
        return b""
    try:
        return name_addr_uri(split_values(contact)[0])
    except SipParseError:
        return b""


class PublicSide:
    def _from_public(self: Engine, msg: Message, src: Source, now: float) -> Verdict:
        if msg.method is None:
            return self._public_response(msg, src, now)
        vi, via, via_line = self._received_via(msg, src)
        method = msg.method
        key = self._key(msg, via)

        # 1. Our own transactions.
        if method == "INVITE" or method == "CANCEL" or method == "ACK":
            tx = self.txs.get(key)
            if tx is not None and tx.caller[0] == src.host:
                if method == "INVITE":  # a retransmission: absorbed, answered with what we said last
                    if tx.state is TxState.ACCEPTED or not tx.last_response:
                        return Drop("retransmission")
                    return Reply([(tx.caller_channel, tx.caller, tx.last_response)])
                if method == "CANCEL":
                    return self._cancel(msg, src, now, vi, via_line, tx)
                if tx.state is TxState.COMPLETED:
                    tx.acked = True
                    return Drop("ack_absorbed")
            elif method == "CANCEL":
                return self._refuse(481, self._scan(msg, vi, via_line), src, now)
            elif method == "ACK" and tx is None:
                to_tag = header_param(msg.get("to") or b"", b"tag")
                if to_tag is not None and to_tag.startswith(TAG_PREFIX):
                    return Drop("ack_absorbed")  # ACK for a final answer we sent statelessly

        scan = self._scan(msg, vi, via_line)
        to_tag = header_param(header_value(scan.to_line), b"tag")
        gateway = self._gateway_of(src)
        account: Account | None = None
        dlg: Dialog | None = None

        # 2. In-dialog requests.
        if to_tag is not None:
            dlg = self.dialogs.get(msg.call_id)
            if dlg is not None and dlg.peer[0] == src.host:
                gateway = dlg.gateway
                dlg.cseq_peer = max(dlg.cseq_peer, msg.cseq)
            elif gateway is None:
                return self._unknown(scan, src, now)
        # 3./4. Out-of-dialog from an unknown address: digest or nothing.
        elif gateway is None:
            if self.auth is None or not self.auth.has_accounts:
                return self._unknown(scan, src, now)
            verdict_or_account = self._authenticate(msg, scan, src, now)
            if not isinstance(verdict_or_account, Account):
                return verdict_or_account
            account = verdict_or_account
            gateway = account.gateway

        if scan.loop:
            return self._reply_stateless(482, scan, src)
        if scan.mf_zero:
            return self._reply_stateless(483, scan, src)
        info = self.gateway_info.get(gateway) if gateway is not None else None
        if dlg is not None:  # in-dialog: where the dialog lives
            egress, dest = dlg.egress, dlg.backend
        else:
            egress = PRIVATE + info.egress_index if info else PRIVATE
            dest = self.health.first

        if method == "INVITE":
            if to_tag is None:
                policy = self.policy
                called = _called(msg) if policy.matches_numbers else ""
                rejected = policy.check(gateway or "", called, self.dialogs.active(gateway or ""),
                                        self.dialogs.active_total(), now)
                if rejected is not None:
                    extra: tuple[bytes, ...] = ()
                    if rejected.status == 403:
                        self.bans.offense(src.host, "blocked_destination", now)
                    else:
                        extra = (b"Retry-After: %d" % self.policy.retry_after,)
                    return self._reject(key, rejected.status, scan, src, now, rejected.reason, extra)
            return self._invite(msg, src, now, key, scan, gateway or "", egress, dest,
                                to_tag is None)
        if method == "REGISTER" and account is not None and self.registrar is not None:
            return self._register(msg, scan, src, now, account)
        if method == "OPTIONS" and to_tag is None and (info is None or info.options == "answer"):
            return self._reply_stateless(200, scan, src)  # keepalive: VOS3000 never sees it
        scan.lines[0] = self._via_egress[egress - PRIVATE] + key
        out = serialize(msg.start, scan.lines, msg.body, msg.has_content_length)
        return Forward([(egress, dest, out)])

    # ------------------------------------------------------------------ admission

    def _gateway_of(self: Engine, src: Source) -> str | None:
        if self.gateways is None:
            return ""  # no gateway table: every source is admitted (in-memory tests)
        return self.gateways.by_source(src.host, src.port)

    def _authenticate(self: Engine, msg: Message, scan: _Scan, src: Source, now: float
                      ) -> Verdict | Account:
        assert self.auth is not None
        register = msg.method == "REGISTER"
        creds = msg.get("authorization" if register else "proxy-authorization")
        result = self.auth.verify(msg.method or "", creds, src.host, now)
        status = result.status
        if status is AuthStatus.OK and result.account is not None:
            return result.account
        if status in (AuthStatus.NO_CREDENTIALS, AuthStatus.BAD_NONCE, AuthStatus.STALE,
                      AuthStatus.REPLAY):
            # RFC 3261 §22.1: 401 from a registrar, 407 from a proxy. A replayed
            # nonce-count is refused with a fresh nonce: it may be an honest
            # retransmission whose answer was lost.
            lines = self.auth.challenge(src.host, now, proxy=not register,
                                        stale=status is AuthStatus.STALE)
            return self._refuse(401 if register else 407, scan, src, now, extra=tuple(lines),
                                reason=str(status))
        if status is AuthStatus.BAD_RESPONSE:
            self.bans.offense(src.host, "digest_failure", now)
            return self._refuse(403, scan, src, now, reason="digest_failure")
        if status is AuthStatus.MALFORMED:
            self.bans.offense(src.host, "malformed", now)
            return Drop("malformed_credentials")
        return self._unknown(scan, src, now)  # unknown account, or not from its allowed sources

    def _unknown(self: Engine, scan: _Scan, src: Source, now: float) -> Verdict:
        if self.s.reject_unknown:
            return self._refuse(403, scan, src, now, reason="unknown_source")
        return Drop("unknown_source")

    def _refuse(self: Engine, status: int, scan: _Scan, src: Source, now: float,
                extra: tuple[bytes, ...] = (), reason: str = "refused") -> Verdict:
        """A reply to a source that is not authenticated: to its address only, within the budget."""
        if not self.reply_budget.take(now):
            return Drop("reply_budget")
        reply = self._reply_stateless(status, scan, src, extra=extra)
        self.refusals[reason] += 1
        return reply

    # ------------------------------------------------------------------ methods

    def _invite(self: Engine, msg: Message, src: Source, now: float, key: bytes, scan: _Scan,
                gateway: str, egress: int, dest: Addr, initial: bool) -> Verdict:
        caller = (src.host, src.port)
        if len(self.txs) >= self.s.max_transactions or (
            initial and len(self.dialogs) >= self.s.max_dialogs and msg.call_id not in self.dialogs
        ):
            return self._reply_stateless(503, scan, src, extra=(b"Retry-After: 5",))

        tx = InviteTx(key, caller, src.channel, now)
        tx.initial = initial
        tx.egress = egress
        if initial:
            self._plan(tx, now)  # the first VOS3000 that is up; a deadline to move on
        else:
            tx.dest = dest
        tx.call_id = msg.call_id
        tx.vias = scan.vias
        tx.from_line = scan.from_line
        tx.to_line = scan.to_line
        tx.call_id_line = scan.call_id_line
        tx.cseq_line = scan.cseq_line
        tx.cseq = msg.cseq
        tx.uri = msg.uri
        lines = scan.lines
        tx.our_via = lines[0] = self._via_egress[egress - PRIVATE] + key
        if initial:
            lines[1:1] = self._rr_outbound[(src.channel, egress)]
        tx.routes = [ln for ln in lines if ln[:6].lower() == b"route:"]
        tx.out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        trying = build.response(100, scan.vias, scan.from_line, scan.to_line, scan.call_id_line,
                                scan.cseq_line)
        tx.last_response = trying
        self.txs[key] = tx
        tx.a_interval = self.s.t1
        tx.a_at = now + self.s.t1
        self.timers.push(tx.a_at, "A", tx)
        tx.b_at = now + self.s.invite_timeout
        self.timers.push(tx.b_at, "B", tx)
        if initial:
            dlg = Dialog(msg.call_id, caller, src.channel, now, now + self.s.dialog_setup_timeout,
                         gateway=gateway, egress=egress, backend=tx.dest)
            dlg.from_value = header_value(scan.from_line)
            dlg.peer_contact = _contact_uri(msg)
            dlg.cseq_peer = msg.cseq
            self.dialogs.add(dlg)
            self.timers.push(dlg.expire_at, "D", dlg)
        return Forward([(src.channel, caller, trying), (egress, tx.dest, tx.out)])

    def _cancel(self: Engine, msg: Message, src: Source, now: float, vi: int, via_line: bytes,
                tx: InviteTx) -> Verdict:
        scan = self._scan(msg, vi, via_line)
        ok = build.response(200, scan.vias, scan.from_line, scan.to_line, scan.call_id_line,
                            scan.cseq_line, to_tag=self._tag(tx.key))
        sends: list[Send] = [(src.channel, (src.host, src.port), ok)]
        if tx.final or tx.cancelled or tx.cancel_pending:
            return Reply(sends)
        if tx.state is TxState.PROCEEDING:
            sends.append((tx.egress, tx.dest, self._cancel_request(tx)))  # the current attempt
            tx.cancelled = True
        else:
            tx.cancel_pending = True  # RFC 3261 §9.1: not before a provisional
        # If VOS3000 never ends the INVITE, answer 487 ourselves (§9.1: 64*T1).
        tx.b_at = now + 64 * self.s.t1
        self.timers.push(tx.b_at, "B", tx)
        return Forward(sends)

    def _register(self: Engine, msg: Message, scan: _Scan, src: Source, now: float,
                  account: Account) -> Verdict:
        assert self.registrar is not None
        result = self.registrar.register(msg, account.username, account.gateway,
                                         (int(src.channel), src.host, src.port), now)
        if result.changed:
            self.on_bindings(account.username, self.registrar.bindings(account.username))
        reply = build.response(result.status, scan.vias, scan.from_line, scan.to_line,
                               scan.call_id_line, scan.cseq_line, to_tag=self._local_tag(msg.call_id),
                               extra=result.headers)
        return Reply([(src.channel, (src.host, src.port), reply)])

    def _public_response(self: Engine, msg: Message, src: Source, now: float) -> Verdict:
        """A peer answering a request VOS3000 sent through us: back to VOS3000 only."""
        lines, branch, nxt = self._pop_our_via(msg, self._own_public[src.channel],
                                               self._marker_public[src.channel])
        if branch is None:
            return Drop("via_not_ours")
        if branch.startswith(BYE_BRANCH):
            return Drop("bye_answer")  # the answer to a BYE of our own
        if nxt is None:
            return Drop("no_next_via")
        addr = parse_via(nxt).reply_address()
        if addr[0] not in self.health.hosts:
            return Drop("response_not_to_backend")
        dlg = self.dialogs.get(msg.call_id)
        status = msg.status
        if dlg is not None and msg.cseq_method == "INVITE" and dlg.state is DialogState.EARLY:
            if 200 <= status < 300:
                dlg.to_value = msg.get("to") or b""
                dlg.peer_contact = _contact_uri(msg)
                self._confirm_dialog(dlg, now)
            elif status >= 300:
                self._drop_dialog(msg.call_id, now, f"rejected_{status}")
        elif msg.cseq_method == "BYE" and 200 <= status < 300:
            self._end_dialog(msg.call_id, now, "bye_backend")
        egress = dlg.egress if dlg is not None else PRIVATE
        return Forward([(egress, addr, serialize(msg.start, lines, msg.body, msg.has_content_length))])
