"""The proxy engine: one entry point, `receive(data, source, now)`, that turns
a packet into a verdict (Forward, Reply, Drop) carrying what to send.

Directions (DESIGN.md):
- public → backend: every request goes to VOS3000 and nowhere else. INVITE is
  transaction-stateful (100 Trying at once, retransmissions absorbed, our own
  retransmission over UDP, 408 when VOS3000 is silent, CANCEL, hop-by-hop ACK
  for non-2xx). Other requests, ACK for 2xx included, are forwarded
  statelessly with a branch derived from theirs (RFC 3261 §16.11).
- backend → public: responses follow the Via stack; requests (BYE, re-INVITE,
  ...) go only to the peer of a dialog we record-routed. sbc is never an open
  relay.

Time is passed in; deadlines live in one heap (`next_deadline`, `on_timer`).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Callable

from ..sip import (
    Message,
    SipParseError,
    Via,
    header_param,
    header_value,
    parse_message,
    parse_via,
    serialize,
    split_values,
)
from ..sip import build
from .dialogs import Dialog, DialogState
from .routing import OwnAddresses, derive_branch, stamp_via, strip_own_routes
from .settings import ProxySettings
from .timers import TimerHeap
from .transactions import InviteTx, TxState
from .verdict import PRIVATE, PUBLIC_TCP, PUBLIC_UDP, Addr, Channel, Drop, Forward, Reply, Send, Source, Verdict

TAG_PREFIX = b"sbc-"
EventSink = Callable[..., None]


def _no_events(event: str, **fields: Any) -> None:
    return None


class _Scan:
    """What one pass over a request's headers found, with the lines to send."""

    __slots__ = ("lines", "vias", "from_line", "to_line", "call_id_line", "cseq_line", "route_idx",
                 "mf_zero", "loop")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.vias: list[bytes] = []
        self.from_line = b""
        self.to_line = b""
        self.call_id_line = b""
        self.cseq_line = b""
        self.route_idx: list[int] = []
        self.mf_zero = False
        self.loop = False


class Engine:
    def __init__(self, settings: ProxySettings, *, secret: bytes | None = None,
                 on_event: EventSink | None = None) -> None:
        s = self.s = settings
        self.secret = secret if secret is not None else os.urandom(16)
        self.on_event = on_event or _no_events
        self.own = OwnAddresses([(s.public_host, s.public_port), (s.private_host, s.private_port)])
        self.backend: Addr = s.backend
        self.txs: dict[bytes, InviteTx] = {}
        self.dialogs: dict[bytes, Dialog] = {}
        self.timers = TimerHeap()
        self.verdicts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.parse_errors: Counter[str] = Counter()
        pub = s.public_hostport().encode()
        priv = s.private_hostport().encode()
        self._via_private = b"Via: SIP/2.0/UDP " + priv + b";branch="
        self._marker_private = priv + b";branch="
        self._marker_public = pub + b";branch="
        self._via_public = {
            PUBLIC_UDP: b"Via: SIP/2.0/UDP " + pub + b";branch=",
            PUBLIC_TCP: b"Via: SIP/2.0/TCP " + pub + b";branch=",
        }
        # Double record-routing (RFC 3261 §16.6 step 4): the entry VOS3000
        # sees first is our private address, the caller's is our public one.
        rr_private = b"Record-Route: <sip:" + priv + b";lr;r2=on>"
        self._rr = {
            PUBLIC_UDP: [rr_private, b"Record-Route: <sip:" + pub + b";lr;r2=on>"],
            PUBLIC_TCP: [rr_private, b"Record-Route: <sip:" + pub + b";transport=tcp;lr;r2=on>"],
        }
        for rr in (*self._rr[PUBLIC_UDP], *self._rr[PUBLIC_TCP]):
            self.own.exact.add(rr[rr.index(b"<") + 1 : rr.index(b">")])

    # ------------------------------------------------------------------ entry points

    def receive(self, data: bytes, src: Source, now: float) -> Verdict:
        stream = src.channel is PUBLIC_TCP
        try:
            msg = parse_message(data, self.s.max_tcp_message if stream else self.s.max_datagram,
                                stream=stream)
            if src.channel is PRIVATE:
                verdict = self._from_backend(msg, src, now)
            else:
                verdict = self._from_public(msg, src, now)
        except SipParseError as e:
            self.parse_errors[e.reason] += 1
            verdict = Drop("malformed")
        except Exception as e:  # a bug of ours must cost one packet, not the process
            verdict = Drop("internal_error")
            if self.drops["internal_error"] % 1000 == 0:
                self.on_event("internal_error", error=repr(e)[:200])
        self.verdicts[verdict.kind] += 1
        if verdict.kind == "drop":
            self.drops[verdict.reason] += 1  # type: ignore[union-attr]
        return verdict

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def on_timer(self, now: float) -> list[Send]:
        sends: list[Send] = []
        for deadline, kind, obj in self.timers.pop_due(now):
            if kind == "A":
                tx: InviteTx = obj
                if tx.a_at == deadline and tx.state is TxState.CALLING:
                    sends.append((PRIVATE, self.backend, tx.out))
                    tx.a_interval *= 2  # RFC 3261 §17.1.1.2: INVITE doubles without cap
                    tx.a_at = now + tx.a_interval
                    self.timers.push(tx.a_at, "A", tx)
            elif kind == "B":
                tx = obj
                if tx.b_at == deadline and not tx.final:
                    self._give_up(tx, now, sends)
            elif kind == "G":
                tx = obj
                if tx.g_at == deadline and tx.state is TxState.COMPLETED and not tx.acked:
                    sends.append((tx.caller_channel, tx.caller, tx.last_response))
                    tx.g_interval = min(tx.g_interval * 2, self.s.t2)
                    if now + tx.g_interval < tx.h_at:
                        tx.g_at = now + tx.g_interval
                        self.timers.push(tx.g_at, "G", tx)
            elif kind == "X":
                tx = obj
                if tx.expire_at == deadline and self.txs.get(tx.key) is tx:
                    del self.txs[tx.key]
            elif kind == "D":
                dlg: Dialog = obj
                if dlg.expire_at == deadline and self.dialogs.get(dlg.call_id) is dlg:
                    del self.dialogs[dlg.call_id]
                    if dlg.state is not DialogState.ENDED:
                        self._event_end(dlg, now, "expired")
        return sends

    # ------------------------------------------------------------------ public side

    def _from_public(self, msg: Message, src: Source, now: float) -> Verdict:
        if msg.method is None:
            return self._public_response(msg, src, now)
        vi, top, rest = self._top_via(msg)
        via = parse_via(top)
        stamped = stamp_via(top, src.host, src.port)
        via_line = b"Via: " + (b", ".join([stamped, *rest]) if rest else stamped)
        method = msg.method
        if method == "INVITE":
            return self._invite(msg, src, now, vi, via, via_line)
        if method == "CANCEL":
            return self._cancel(msg, src, now, vi, via, via_line)
        if method == "ACK":
            tx = self.txs.get(self._key(msg, via))
            if tx is not None and tx.state is TxState.COMPLETED:
                tx.acked = True
                return Drop("ack_absorbed")
            to_tag = header_param(msg.get("to") or b"", b"tag")
            if tx is None and to_tag is not None and to_tag.startswith(TAG_PREFIX):
                return Drop("ack_absorbed")  # ACK for a final answer we sent statelessly
        scan = self._scan(msg, vi, via_line, PRIVATE)
        if scan.loop:
            return self._reply_stateless(482, scan, src)
        if scan.mf_zero:
            return self._reply_stateless(483, scan, src)
        key = self._key(msg, via)
        scan.lines[0] = self._via_private + key
        return Forward([(PRIVATE, self.backend, serialize(msg.start, scan.lines, msg.body,
                                                         msg.has_content_length))])

    def _invite(self, msg: Message, src: Source, now: float, vi: int, via: Via,
                via_line: bytes) -> Verdict:
        key = self._key(msg, via)
        tx = self.txs.get(key)
        if tx is not None:  # a retransmission: absorbed, answered with what we said last
            if tx.state is TxState.ACCEPTED or not tx.last_response:
                return Drop("retransmission")
            return Reply([(tx.caller_channel, tx.caller, tx.last_response)])
        scan = self._scan(msg, vi, via_line, PRIVATE)
        initial = header_param(header_value(scan.to_line), b"tag") is None
        caller = (src.host, src.port)
        if scan.loop:
            return self._reject(key, 482, scan, src, now)
        if scan.mf_zero:
            return self._reject(key, 483, scan, src, now)
        if len(self.txs) >= self.s.max_transactions or (
            initial and len(self.dialogs) >= self.s.max_dialogs and msg.call_id not in self.dialogs
        ):
            return self._reply_stateless(503, scan, src, extra=(b"Retry-After: 5",))

        tx = InviteTx(key, caller, src.channel, now)
        tx.initial = initial
        tx.call_id = msg.call_id
        tx.vias = scan.vias
        tx.from_line = scan.from_line
        tx.to_line = scan.to_line
        tx.call_id_line = scan.call_id_line
        tx.cseq_line = scan.cseq_line
        tx.cseq = msg.cseq
        tx.uri = msg.uri
        lines = scan.lines
        tx.our_via = lines[0] = self._via_private + key
        if initial:
            lines[1:1] = self._rr[src.channel]
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
            dlg = Dialog(msg.call_id, caller, src.channel, now, now + self.s.dialog_setup_timeout)
            self.dialogs[msg.call_id] = dlg
            self.timers.push(dlg.expire_at, "D", dlg)
        return Forward([(src.channel, caller, trying), (PRIVATE, self.backend, tx.out)])

    def _cancel(self, msg: Message, src: Source, now: float, vi: int, via: Via,
                via_line: bytes) -> Verdict:
        scan = self._scan(msg, vi, via_line, PRIVATE)
        tx = self.txs.get(self._key(msg, via))
        if tx is None:
            return self._reply_stateless(481, scan, src)
        ok = build.response(200, scan.vias, scan.from_line, scan.to_line, scan.call_id_line,
                            scan.cseq_line, to_tag=self._tag(tx.key))
        sends: list[Send] = [(src.channel, (src.host, src.port), ok)]
        if tx.final or tx.cancelled or tx.cancel_pending:
            return Reply(sends)
        if tx.state is TxState.PROCEEDING:
            sends.append((PRIVATE, self.backend, self._cancel_request(tx)))
            tx.cancelled = True
        else:
            tx.cancel_pending = True  # RFC 3261 §9.1: not before a provisional
        # If VOS3000 never ends the INVITE, answer 487 ourselves (§9.1: 64*T1).
        tx.b_at = now + 64 * self.s.t1
        self.timers.push(tx.b_at, "B", tx)
        return Forward(sends)

    def _public_response(self, msg: Message, src: Source, now: float) -> Verdict:
        """A caller answering a request VOS3000 sent through us: back to VOS3000 only."""
        lines, branch, nxt = self._pop_our_via(msg, self.own_public, self._marker_public)
        if branch is None:
            return Drop("via_not_ours")
        if nxt is None:
            return Drop("no_next_via")
        addr = parse_via(nxt).reply_address()
        if addr[0] != self.backend[0]:
            return Drop("response_not_to_backend")
        if msg.cseq_method == "BYE" and 200 <= msg.status < 300:
            self._end_dialog(msg.call_id, now, "bye_backend")
        return Forward([(PRIVATE, addr, serialize(msg.start, lines, msg.body, msg.has_content_length))])

    # ------------------------------------------------------------------ backend side

    def _from_backend(self, msg: Message, src: Source, now: float) -> Verdict:
        if src.host != self.backend[0]:
            return Drop("not_backend")
        if msg.method is None:
            return self._backend_response(msg, src, now)
        dlg = self.dialogs.get(msg.call_id)
        vi, top, rest = self._top_via(msg)
        via = parse_via(top)
        stamped = stamp_via(top, src.host, src.port)
        via_line = b"Via: " + (b", ".join([stamped, *rest]) if rest else stamped)
        scan = self._scan(msg, vi, via_line, dlg.caller_channel if dlg else PUBLIC_UDP)
        if dlg is None:
            if msg.method == "ACK":
                return Drop("no_dialog")
            return self._reply_stateless(481, scan, src)
        if scan.mf_zero:
            return self._reply_stateless(483, scan, src)
        scan.lines[0] = self._via_public[dlg.caller_channel] + self._key(msg, via, b"b")
        out = serialize(msg.start, scan.lines, msg.body, msg.has_content_length)
        return Forward([(dlg.caller_channel, dlg.caller, out)])

    def _backend_response(self, msg: Message, src: Source, now: float) -> Verdict:
        lines, branch, nxt = self._pop_our_via(msg, self.own_private, self._marker_private)
        if branch is None:
            return Drop("via_not_ours")
        tx = self.txs.get(branch) if msg.cseq_method in ("INVITE", "CANCEL") else None
        if tx is not None and msg.cseq_method == "CANCEL":
            return Drop("cancel_answer")  # the 200 for our own CANCEL
        if nxt is None:
            return Drop("no_next_via")  # RFC 3261 §16.7 step 3: nowhere to send it
        if tx is not None:
            return self._invite_response(tx, msg, lines, now)
        via = parse_via(nxt)
        channel = PUBLIC_TCP if via.transport == "TCP" else PUBLIC_UDP
        if msg.cseq_method == "BYE" and 200 <= msg.status < 300:
            self._end_dialog(msg.call_id, now, "bye_caller")
        out = serialize(msg.start, lines, msg.body, msg.has_content_length)
        return Forward([(channel, via.reply_address(), out)])

    def _invite_response(self, tx: InviteTx, msg: Message, lines: list[bytes], now: float) -> Verdict:
        status = msg.status
        sends: list[Send] = []
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
                    sends.append((PRIVATE, self.backend, self._cancel_request(tx)))
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
                    dlg.state = DialogState.CONFIRMED
                    dlg.confirmed_at = now
                    dlg.expire_at = now + self.s.dialog_max_age
                    self.timers.push(dlg.expire_at, "D", dlg)
                    self.on_event("call_setup", call_id=tx.call_id.decode("ascii", "replace"),
                                  caller=f"{tx.caller[0]}:{tx.caller[1]}",
                                  setup_ms=round((now - tx.started) * 1000, 1))
            return Forward([(tx.caller_channel, tx.caller, out)])
        # A non-2xx final answer: ACK it ourselves (hop by hop, §17.1.1.3), pass it on once.
        to_line = next((raw for name, raw in msg.headers if name == "to"), tx.to_line)
        ack = build.request(b"ACK", tx.uri, tx.our_via, tx.routes, tx.from_line, to_line,
                            tx.call_id_line, tx.cseq)
        sends.append((PRIVATE, self.backend, ack))
        if not tx.step("final"):
            return Reply(sends)  # a retransmitted final answer: re-ACK only
        tx.last_response = out
        sends.append((tx.caller_channel, tx.caller, out))
        self._complete(tx, now)
        if tx.initial:
            self._drop_dialog(tx.call_id, now, f"rejected_{status}")
        return Forward(sends)

    # ------------------------------------------------------------------ helpers

    @property
    def own_public(self) -> tuple[str, int]:
        return (self.s.public_host, self.s.public_port)

    @property
    def own_private(self) -> tuple[str, int]:
        return (self.s.private_host, self.s.private_port)

    def _key(self, msg: Message, via: Via, side: bytes = b"p") -> bytes:
        """Our branch for this request: same for retransmissions, CANCEL and non-2xx ACK."""
        branch = via.branch
        if branch and branch.startswith(b"z9hG4bK"):
            material = b"|".join((side, branch, via.host.encode(), msg.call_id))
        else:  # RFC 2543 peer: the transaction is identified by these (§17.2.3)
            to_tag = header_param(msg.get("to") or b"", b"tag") or b""
            from_tag = header_param(msg.get("from") or b"", b"tag") or b""
            material = b"|".join((side, msg.call_id, from_tag, to_tag, b"%d" % msg.cseq, msg.uri,
                                  via.host.encode(), b"%d" % (via.port or 5060)))
        return derive_branch(self.secret, material)

    def _tag(self, key: bytes) -> bytes:
        return TAG_PREFIX + key[7:17]

    @staticmethod
    def _top_via(msg: Message) -> tuple[int, bytes, list[bytes]]:
        for i, (name, raw) in enumerate(msg.headers):
            if name == "via":
                value = header_value(raw)
                if b"," in value:
                    values = split_values(value)
                    return i, values[0], values[1:]
                return i, value, []
        raise SipParseError("missing_mandatory_header")

    def _scan(self, msg: Message, vi: int, via_line: bytes, dest: Channel) -> _Scan:
        """One pass over the headers: the lines to send on (slot 0 kept for our
        Via), Max-Forwards decremented (RFC 3261 §16.6 step 3), the raw lines
        a locally built response needs, and a loop check (§16.3 step 4)."""
        sc = _Scan()
        lines = sc.lines
        lines.append(b"")
        own = self.own
        mf_seen = False
        for i, (name, raw) in enumerate(msg.headers):
            if name == "via":
                if i == vi:
                    raw = via_line
                elif own.may_contain(raw) and self._names_us(raw):
                    sc.loop = True
                sc.vias.append(raw)
            elif name == "route":
                sc.route_idx.append(len(lines))
            elif name == "max-forwards" and not mf_seen:
                mf_seen = True
                value = header_value(raw)
                if not value.isdigit() or len(value) > 3:
                    raise SipParseError("bad_max_forwards")
                hops = int(value)
                if hops <= 0:
                    sc.mf_zero = True
                    hops = 1
                raw = b"Max-Forwards: %d" % (hops - 1)
            elif name == "from":
                sc.from_line = raw
            elif name == "to":
                sc.to_line = raw
            elif name == "call-id":
                sc.call_id_line = raw
            elif name == "cseq":
                sc.cseq_line = raw
            lines.append(raw)
        if not mf_seen:
            lines.append(b"Max-Forwards: 70")
        if vi == 0 and own.may_contain(via_line) and self._names_us(via_line):
            sc.loop = True
        if sc.route_idx and any(own.may_contain(lines[i]) for i in sc.route_idx):
            strip_own_routes(lines, sc.route_idx, own)
            sc.lines = [ln for ln in lines if ln is not None]
        return sc

    def _names_us(self, via_raw: bytes) -> bool:
        for value in split_values(header_value(via_raw)):
            v = parse_via(value)
            if self.own.is_own(v.host, v.port):
                return True
        return False

    def _pop_our_via(self, msg: Message, ours: tuple[str, int], marker: bytes
                     ) -> tuple[list[bytes], bytes | None, bytes | None]:
        """The response's lines without our top Via, our branch (None when the
        top Via is not ours), and the next Via value (None when there is none)."""
        lines = [raw for _, raw in msg.headers]
        vi, top, rest = self._top_via(msg)
        if top[12:].startswith(marker) and top.startswith(b"SIP/2.0/"):
            branch = top[len(marker) + 12 :].split(b";", 1)[0]  # exactly as we wrote it
        else:
            via = parse_via(top)  # a peer may have re-spaced or re-cased it
            if via.host != ours[0] or (via.port or 5060) != ours[1]:
                return lines, None, None
            branch = via.branch or b""
        if rest:
            lines[vi] = b"Via: " + b", ".join(rest)
            return lines, branch, rest[0]
        del lines[vi]
        for name, raw in msg.headers[vi + 1 :]:
            if name == "via":
                return lines, branch, split_values(header_value(raw))[0]
        return lines, branch, None

    def _reply_stateless(self, status: int, sc: _Scan, src: Source,
                         extra: tuple[bytes, ...] = ()) -> Reply:
        resp = build.response(status, sc.vias, sc.from_line, sc.to_line, sc.call_id_line,
                              sc.cseq_line, to_tag=TAG_PREFIX + b"0", extra=extra)
        return Reply([(src.channel, (src.host, src.port), resp)])

    def _reject(self, key: bytes, status: int, sc: _Scan, src: Source, now: float) -> Reply:
        """A final answer of ours to an INVITE, kept as a transaction so the ACK
        is absorbed and retransmissions get the same answer."""
        tx = InviteTx(key, (src.host, src.port), src.channel, now)
        tx.step("final")
        tx.last_response = build.response(status, sc.vias, sc.from_line, sc.to_line,
                                          sc.call_id_line, sc.cseq_line, to_tag=self._tag(key))
        self.txs[key] = tx
        self._complete(tx, now)
        return Reply([(src.channel, (src.host, src.port), tx.last_response)])

    def _complete(self, tx: InviteTx, now: float) -> None:
        """Entered COMPLETED: Timer G towards a UDP caller, then expiry."""
        if tx.caller_channel is PUBLIC_UDP:
            tx.g_interval = self.s.t1
            tx.g_at = now + self.s.t1
            tx.h_at = now + 64 * self.s.t1
            self.timers.push(tx.g_at, "G", tx)
        self._expire_tx(tx, now)

    def _expire_tx(self, tx: InviteTx, now: float) -> None:
        tx.expire_at = now + self.s.linger
        self.timers.push(tx.expire_at, "X", tx)

    def _cancel_request(self, tx: InviteTx) -> bytes:
        return build.request(b"CANCEL", tx.uri, tx.our_via, tx.routes, tx.from_line, tx.to_line,
                             tx.call_id_line, tx.cseq)

    def _give_up(self, tx: InviteTx, now: float, sends: list[Send]) -> None:
        """Timer B or C ran out, or a CANCEL was never answered."""
        status = 487 if (tx.cancelled or tx.cancel_pending) else 408
        if tx.state is TxState.PROCEEDING and not tx.cancelled:
            sends.append((PRIVATE, self.backend, self._cancel_request(tx)))
            tx.cancelled = True
        tx.step("timeout")
        tx.last_response = build.response(status, tx.vias, tx.from_line, tx.to_line,
                                          tx.call_id_line, tx.cseq_line, to_tag=self._tag(tx.key))
        sends.append((tx.caller_channel, tx.caller, tx.last_response))
        self._complete(tx, now)
        if tx.initial:
            self._drop_dialog(tx.call_id, now, "timeout" if status == 408 else "cancelled")

    def _drop_dialog(self, call_id: bytes, now: float, reason: str) -> None:
        dlg = self.dialogs.pop(call_id, None)
        if dlg is not None and dlg.state is DialogState.EARLY:
            self._event_end(dlg, now, reason)

    def _end_dialog(self, call_id: bytes, now: float, reason: str) -> None:
        dlg = self.dialogs.get(call_id)
        if dlg is None or dlg.state is DialogState.ENDED:
            return
        self._event_end(dlg, now, reason)
        dlg.state = DialogState.ENDED
        dlg.expire_at = now + self.s.linger  # route late retransmissions, then forget
        self.timers.push(dlg.expire_at, "D", dlg)

    def _event_end(self, dlg: Dialog, now: float, reason: str) -> None:
        duration = round(now - dlg.confirmed_at, 3) if dlg.confirmed_at else 0.0
        self.on_event("call_end", call_id=dlg.call_id.decode("ascii", "replace"), reason=reason,
                      duration_s=duration)
