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
- several VOS3000 addresses (failover.py, health.py): a new call goes to the
  first one that is up and moves on when it refuses (503) or stays silent;
  a dialog remembers its VOS3000, and its in-dialog requests go there.

Time is passed in; deadlines live in one heap (`next_deadline`, `on_timer`).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..sip import (
    Message,
    SipParseError,
    Via,
    build,
    header_param,
    header_value,
    parse_message,
    parse_via,
    split_values,
)
from .backend import BackendSide
from .bans import BanTable
from .dialogs import Dialog, DialogState, DialogTable
from .failover import FailoverSide
from .health import HealthTable
from .limits import CallPolicy
from .public import BYE_BRANCH, TAG_PREFIX, PublicSide
from .ratelimit import TokenBucket
from .routing import OwnAddresses, derive_branch, stamp_via
from .scan import Scan, scan_request
from .settings import ProxySettings
from .timers import TimerHeap
from .transactions import InviteTx, TxState
from .verdict import (
    PRIVATE,
    PUBLIC_TCP,
    PUBLIC_TLS,
    PUBLIC_UDP,
    Addr,
    Drop,
    Reply,
    Send,
    Source,
    Verdict,
)

if TYPE_CHECKING:
    from .auth import DigestAuth
    from .gateways import GatewayInfo, GatewayTable
    from .registrar import Binding, Registrar

EventSink = Callable[..., None]
BindingSink = Callable[[str, "list[Binding]"], None]
DialogSink = Callable[[str, Dialog], None]

_Scan = Scan


def _no_events(event: str, **fields: Any) -> None:
    return None


def _no_bindings(aor: str, bindings: list[Binding]) -> None:
    return None


def _no_dialogs(event: str, dlg: Dialog) -> None:
    return None


class Engine(PublicSide, BackendSide, FailoverSide):
    """The whole proxy core. Collaborators are injected so tests can build
    exactly the engine they need: with `gateways=None` every public source is
    admitted (no identification), which only in-memory tests use."""

    def __init__(self, settings: ProxySettings, *, secret: bytes | None = None,
                 on_event: EventSink | None = None,
                 gateways: GatewayTable | None = None,
                 gateway_info: dict[str, GatewayInfo] | None = None,
                 auth: DigestAuth | None = None,
                 registrar: Registrar | None = None,
                 bans: BanTable | None = None,
                 policy: CallPolicy | None = None,
                 on_bindings: BindingSink | None = None,
                 on_dialog: DialogSink | None = None) -> None:
        s = self.s = settings
        self.secret = secret if secret is not None else os.urandom(16)
        self.on_event = on_event or _no_events
        self.on_bindings = on_bindings or _no_bindings
        self.on_dialog = on_dialog or _no_dialogs  # "confirmed" / "ended": what must survive a restart
        self.policy = policy if policy is not None else CallPolicy()
        self.gateways = gateways
        self.gateway_info = gateway_info or {}
        self.auth = auth
        self.registrar = registrar
        self.bans = bans if bans is not None else BanTable()
        self.reply_budget = TokenBucket(s.reply_budget_rate, s.reply_budget_burst)
        self.backend: Addr = s.backend  # the primary VOS3000
        self.health = HealthTable(s.targets, down_after=s.down_after, up_after=s.up_after,
                                  interval=s.ping_interval, timeout=s.ping_timeout)
        self.failovers: Counter[str] = Counter()  # calls sent on to the next VOS3000, by why
        self.egresses: list[tuple[str, int]] = [(s.private_host, s.private_port), *s.egresses]
        tls_own = [(s.public_host, s.tls_port)] if s.tls_port is not None else []
        self.own = OwnAddresses([(s.public_host, s.public_port), *tls_own, *self.egresses])
        self.txs: dict[bytes, InviteTx] = {}
        self.dialogs = DialogTable()
        self.timers = TimerHeap()
        self.verdicts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.parse_errors: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self._ping_seq = 0

        pub = s.public_hostport().encode()
        tls = s.tls_hostport().encode()  # TLS has its own port (5061, RFC 3261 §19.1.2)
        # What our Via looks like on each public channel: (host, port), and
        # the bytes "host:port;branch=" recognised in a response without a parse.
        self._own_public: dict[int, Addr] = {PUBLIC_UDP: self.own_public, PUBLIC_TCP: self.own_public,
                            PUBLIC_TLS: (s.public_host, s.tls_port or 5061)}
        self._marker_public: dict[int, bytes] = {PUBLIC_UDP: pub + b";branch=", PUBLIC_TCP: pub + b";branch=",
                               PUBLIC_TLS: tls + b";branch="}
        self._via_public: dict[int, bytes] = {
            PUBLIC_UDP: b"Via: SIP/2.0/UDP " + pub + b";branch=",
            PUBLIC_TCP: b"Via: SIP/2.0/TCP " + pub + b";branch=",
            PUBLIC_TLS: b"Via: SIP/2.0/TLS " + tls + b";branch=",
        }
        rr_public: dict[int, bytes] = {
            PUBLIC_UDP: b"Record-Route: <sip:" + pub + b";lr;r2=on>",
            PUBLIC_TCP: b"Record-Route: <sip:" + pub + b";transport=tcp;lr;r2=on>",
            PUBLIC_TLS: b"Record-Route: <sip:" + tls + b";transport=tls;lr;r2=on>",
        }
        self._via_egress: list[bytes] = []
        self._marker_egress: list[bytes] = []
        # Double record-routing (RFC 3261 §16.6 step 4) with the egress of the
        # gateway: the entry facing the next hop comes first, so VOS3000 sends
        # its in-dialog requests to the socket that knows the gateway.
        self._rr_outbound: dict[tuple[int, int], list[bytes]] = {}
        self._rr_inbound: dict[tuple[int, int], list[bytes]] = {}
        for i, (host, port) in enumerate(self.egresses):
            hp = _hostport(host, port).encode()
            self._via_egress.append(b"Via: SIP/2.0/UDP " + hp + b";branch=")
            self._marker_egress.append(hp + b";branch=")
            rr_egress = b"Record-Route: <sip:" + hp + b";lr;r2=on>"
            for ch in (PUBLIC_UDP, PUBLIC_TCP, PUBLIC_TLS):
                self._rr_outbound[(ch, PRIVATE + i)] = [rr_egress, rr_public[ch]]
                self._rr_inbound[(ch, PRIVATE + i)] = [rr_public[ch], rr_egress]
            self.own.exact.add(rr_egress[rr_egress.index(b"<") + 1 : -1])
        for rr in rr_public.values():
            self.own.exact.add(rr[rr.index(b"<") + 1 : -1])

    # ------------------------------------------------------------------ entry points

    def receive(self, data: bytes, src: Source, now: float) -> Verdict:
        stream = src.channel == PUBLIC_TCP or src.channel == PUBLIC_TLS
        try:
            msg = parse_message(data, self.s.max_tcp_message if stream else self.s.max_datagram,
                                stream=stream)
            if src.channel >= PRIVATE:
                verdict = self._from_backend(msg, src, now)
            else:
                verdict = self._from_public(msg, src, now)
        except SipParseError as e:
            self.parse_errors[e.reason] += 1
            if src.channel < PRIVATE:
                self.bans.offense(src.host, "malformed", now)
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
                    sends.append((tx.egress, tx.dest, tx.out))
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
            elif kind == "F":
                tx = obj
                if tx.fo_at == deadline and tx.state is TxState.CALLING:
                    self._failover_due(tx, now, sends)
            elif kind == "P":
                self._ping_timeout(obj[0], obj[1], now)
            elif kind == "X":
                tx = obj
                if tx.expire_at == deadline and self.txs.get(tx.key) is tx:
                    del self.txs[tx.key]
                    if tx.branch != tx.key:
                        self._forget_attempts(tx)
            elif kind == "D":
                dlg: Dialog = obj
                if dlg.expire_at == deadline and self.dialogs.get(dlg.call_id) is dlg:
                    self.dialogs.remove(dlg.call_id)
                    if dlg.state is not DialogState.ENDED:
                        self._event_end(dlg, now, "expired")
                        self.on_dialog("ended", dlg)
            elif kind == "L":
                dlg = obj
                if dlg.bye_at == deadline and dlg.state is DialogState.CONFIRMED \
                        and self.dialogs.get(dlg.call_id) is dlg:
                    sends.extend(self._byes(dlg))
                    self._end_dialog(dlg.call_id, now, "max_duration")
        return sends

    # ------------------------------------------------------------------ helpers

    @property
    def own_public(self) -> tuple[str, int]:
        return (self.s.public_host, self.s.public_port)

    def _received_via(self, msg: Message, src: Source) -> tuple[int, Via, bytes]:
        """A request's top Via: where it is, parsed, and its line with received
        and rport set to the packet's source (RFC 3261 §18.2.1, RFC 3581)."""
        vi, top, rest = self._top_via(msg)
        stamped = stamp_via(top, src.host, src.port)
        return vi, parse_via(top), b"Via: " + (b", ".join([stamped, *rest]) if rest else stamped)

    def _scan(self, msg: Message, vi: int, via_line: bytes) -> Scan:
        return scan_request(msg, vi, via_line, self.own)

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

    def _local_tag(self, seed: bytes) -> bytes:
        return TAG_PREFIX + hashlib.md5(self.secret + seed, usedforsecurity=False).hexdigest()[:10].encode()

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
                         extra: tuple[bytes, ...] = (), reason: bytes | None = None) -> Reply:
        resp = build.response(status, sc.vias, sc.from_line, sc.to_line, sc.call_id_line,
                              sc.cseq_line, to_tag=TAG_PREFIX + b"0", extra=extra, reason=reason)
        return Reply([(src.channel, (src.host, src.port), resp)])

    def _reject(self, key: bytes, status: int, sc: Scan, src: Source, now: float,
                reason: bytes | None = None, extra: tuple[bytes, ...] = ()) -> Reply:
        """A final answer of ours to an INVITE, kept as a completed transaction:
        retransmissions get the same answer (and are not judged again), the
        ACK is absorbed, and a UDP caller gets it again until it ACKs."""
        response = build.response(status, sc.vias, sc.from_line, sc.to_line, sc.call_id_line,
                                  sc.cseq_line, to_tag=self._tag(key), reason=reason, extra=extra)
        if len(self.txs) < self.s.max_transactions:
            tx = InviteTx(key, (src.host, src.port), src.channel, now)
            tx.step("final")
            tx.last_response = response
            self.txs[key] = tx
            self._complete(tx, now)
        return Reply([(src.channel, (src.host, src.port), response)])

    def _complete(self, tx: InviteTx, now: float) -> None:
        """Entered COMPLETED: Timer G towards a UDP caller, then expiry."""
        if tx.caller_channel == PUBLIC_UDP:
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
        if tx.state is TxState.CALLING and tx.target >= 0:
            self._health_failed(tx.target, now, "INVITE unanswered until Timer B")
        if tx.state is TxState.PROCEEDING and not tx.cancelled:
            sends.append((tx.egress, tx.dest, self._cancel_request(tx)))
            tx.cancelled = True
        tx.step("timeout")
        tx.last_response = build.response(status, tx.vias, tx.from_line, tx.to_line,
                                          tx.call_id_line, tx.cseq_line, to_tag=self._tag(tx.key))
        sends.append((tx.caller_channel, tx.caller, tx.last_response))
        self._complete(tx, now)
        if tx.initial:
            self._drop_dialog(tx.call_id, now, "timeout" if status == 408 else "cancelled")

    def restore_dialog(self, dlg: Dialog, now: float) -> None:
        """A confirmed dialog kept across a restart: back in the table, with its
        deadlines. One whose VOS3000 is no longer configured (or unknown: an
        older file) goes to the primary."""
        if self.health.by_addr(dlg.backend) is None:
            dlg.backend = self.backend
        self.dialogs.add(dlg)
        self.timers.push(dlg.expire_at, "D", dlg)
        if dlg.bye_at:
            self.timers.push(max(dlg.bye_at, now), "L", dlg)
            dlg.bye_at = max(dlg.bye_at, now)

    def _byes(self, dlg: Dialog) -> list[Send]:
        """BYE to both sides (RFC 3261 §15.1.1), built from what the dialog kept."""
        initiator_from, answerer_to = dlg.from_value, dlg.to_value
        call_id = b"Call-ID: " + dlg.call_id
        tag = hashlib.md5(self.secret + dlg.call_id, usedforsecurity=False).hexdigest()[:16].encode()
        # Towards the public-side peer: from the party it talks to.
        if dlg.inbound:  # the peer answered: it is the To of the INVITE
            peer_from, peer_to = initiator_from, answerer_to
        else:
            peer_from, peer_to = answerer_to, initiator_from
        to_peer = build.request(
            b"BYE", dlg.peer_contact, self._via_public[dlg.peer_channel] + BYE_BRANCH + tag + b"p",
            [], b"From: " + peer_from, b"To: " + peer_to, call_id, dlg.cseq_backend + 1)
        to_backend = build.request(
            b"BYE", dlg.backend_contact, self._via_egress[dlg.egress - PRIVATE] + BYE_BRANCH + tag + b"b",
            [], b"From: " + peer_to, b"To: " + peer_from, call_id, dlg.cseq_peer + 1)
        return [(dlg.peer_channel, dlg.peer, to_peer), (dlg.egress, dlg.backend, to_backend)]

    def _confirm_dialog(self, dlg: Dialog, now: float) -> None:
        dlg.state = DialogState.CONFIRMED
        dlg.confirmed_at = now
        dlg.expire_at = now + self.s.dialog_max_age
        self.timers.push(dlg.expire_at, "D", dlg)
        p = self.policy.policy(dlg.gateway)
        if p is not None and p.max_duration > 0:
            dlg.bye_at = now + p.max_duration
            self.timers.push(dlg.bye_at, "L", dlg)
        self.on_dialog("confirmed", dlg)
        self.on_event("call_setup", call_id=dlg.call_id.decode("ascii", "replace"),
                      gateway=dlg.gateway, peer=f"{dlg.peer[0]}:{dlg.peer[1]}",
                      direction="inbound" if dlg.inbound else "outbound",
                      setup_ms=round((now - dlg.created) * 1000, 1))

    def _drop_dialog(self, call_id: bytes, now: float, reason: str) -> None:
        dlg = self.dialogs.remove(call_id)
        if dlg is not None and dlg.state is DialogState.EARLY:
            self._event_end(dlg, now, reason)

    def _end_dialog(self, call_id: bytes, now: float, reason: str) -> None:
        dlg = self.dialogs.get(call_id)
        if dlg is None or dlg.state is DialogState.ENDED:
            return
        self._event_end(dlg, now, reason)
        self.dialogs.end(dlg)
        self.on_dialog("ended", dlg)
        dlg.expire_at = now + self.s.linger  # route late retransmissions, then forget
        self.timers.push(dlg.expire_at, "D", dlg)

    def _event_end(self, dlg: Dialog, now: float, reason: str) -> None:
        duration = round(now - dlg.confirmed_at, 3) if dlg.confirmed_at else 0.0
        self.on_event("call_end", call_id=dlg.call_id.decode("ascii", "replace"),
                      gateway=dlg.gateway, reason=reason, duration_s=duration)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
