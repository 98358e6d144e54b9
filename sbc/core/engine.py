"""The proxy engine: one entry point, `receive(data, source, now)`, that turns
a packet into a verdict (Forward, Reply, Drop) carrying what to send.

The engine is composed, not mixed in: it owns one Context (settings,
collaborators and the call state: dialogs, transactions, timers, see
context.py and callstate.py) and hands it to a part per direction:
- public.py, public → backend: every request goes to VOS3000 and nowhere
  else, once it is matched to the state it claims. INVITE is
  transaction-stateful (100 Trying at once, retransmissions absorbed, our own
  retransmission over UDP, 408 when VOS3000 is silent, CANCEL, hop-by-hop
  ACK for non-2xx). Other requests, ACK for 2xx included, are forwarded
  statelessly with a branch derived from theirs (RFC 3261 §16.11).
- backend.py, backend → public: responses follow the Via stack; requests
  (BYE, re-INVITE, ...) go only to the peer of the dialog they name. sbc is
  never an open relay.
- failover.py, several VOS3000 addresses: a new call goes to the first one
  that is up and moves on when it refuses (503) or stays silent; a dialog
  remembers its VOS3000, and its in-dialog requests go there.

Screening is the first step of `receive`: on the raw bytes of a public
message, before any parse (screen/screen.py: bans, rates, scanner
signatures), exactly as cheap as when the transports did it; a TCP or TLS
connection is admitted by `connection_opened` (ban, rate, caps).

Everything is counted in one table, `engine.tally` (tally.py), under the
names of reasons.py; the banned fast path adds to a plain integer there.

Time is passed in; deadlines live in one heap (`next_deadline`, `on_timer`),
dispatched by kind through a table, and the health pings to VOS3000 are one
more deadline, so the I/O shell runs a single loop timer for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ..sip import SipParseError, header_param, parse_message
from ..sip.validate import refusal
from .proxy.outbound import BackendSide
from .screen.bans import BanTable
from .screen.conns import ConnLimits, SourceCounts, cert_matches
from .reasons import (
    CONNECTION_OFFENSES,
    SCREEN_REASONS,
    DropReason,
    Offense,
    ParseReason,
    Refusal,
    TransportEvent,
)
from .tally import Tally
from .proxy.context import BindingSink, Context, DialogSink, EventSink
from .proxy.dialogs import Dialog, DialogState, DialogTable
from .proxy.failover import Failover
from .proxy.health import HealthTable
from .policy.limits import CallPolicy
from .proxy.inbound import PublicSide
from .settings import ProxySettings
from .proxy.timers import TimerHeap, TimerKind
from .proxy.transactions import InviteTx, TxState
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
    from .identify.auth import DigestAuth
    from .identify.gateways import GatewayInfo, GatewayTable
    from .screen.ratelimit import TokenBucket
    from .screen.screen import Screen
    from .identify.registrar import Registrar
    from .proxy.routing import OwnAddresses

T = TypeVar("T")

# The screen's verdicts carry nothing to send: one object per reason.
_SCREENED = {r: Drop(r) for r in SCREEN_REASONS}
_BANNED = _SCREENED[DropReason.BANNED]
_new = tuple.__new__  # Source(...) at half the cost, once per datagram
_CLOSE_BANNED = Drop(DropReason.BANNED, close=True)


class _Shared(Generic[T]):
    """An attribute of the engine that lives in its context (reload sets them)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Engine, owner: type | None = None) -> T:
        return cast(T, getattr(obj.ctx, self.name))

    def __set__(self, obj: Engine, value: T) -> None:
        setattr(obj.ctx, self.name, value)
        if isinstance(value, ProxySettings):  # a reload: the call state reads them too
            obj.ctx.calls.s = value
        elif isinstance(value, BanTable):  # its offenses are counted in the engine's table
            value.tally = obj.tally


@dataclass(slots=True)
class Setup:
    """Everything the engine takes from the configuration, built outside the
    core (sbc.app) and handed over whole by `Engine.reconfigure`."""

    settings: ProxySettings
    gateways: GatewayTable | None
    gateway_info: dict[str, GatewayInfo]
    auth: DigestAuth | None
    policy: CallPolicy
    screen: Screen | None
    ban_rules: BanTable  # limits, ban times and exemptions for the live ban table
    conn_limits: ConnLimits
    client_certs: dict[str, str | None]


class Engine:
    """The whole proxy core. Collaborators are injected so tests can build
    exactly the engine they need: with `gateways=None` every public source is
    admitted (no identification), which only in-memory tests use."""

    s: _Shared[ProxySettings] = _Shared()
    secret: _Shared[bytes] = _Shared()
    on_event: _Shared[EventSink] = _Shared()
    on_bindings: _Shared[BindingSink] = _Shared()
    on_dialog: _Shared[DialogSink] = _Shared()
    policy: _Shared[CallPolicy] = _Shared()
    gateways: _Shared[GatewayTable | None] = _Shared()
    gateway_info: _Shared[dict[str, GatewayInfo]] = _Shared()
    auth: _Shared[DigestAuth | None] = _Shared()
    registrar: _Shared[Registrar | None] = _Shared()
    bans: _Shared[BanTable] = _Shared()
    reply_budget: _Shared[TokenBucket] = _Shared()
    health: _Shared[HealthTable] = _Shared()
    backend: _Shared[Addr] = _Shared()
    egresses: _Shared[list[tuple[str, int]]] = _Shared()
    own: _Shared[OwnAddresses] = _Shared()

    def __init__(self, settings: ProxySettings, *, secret: bytes,
                 on_event: EventSink | None = None,
                 gateways: GatewayTable | None = None,
                 gateway_info: dict[str, GatewayInfo] | None = None,
                 auth: DigestAuth | None = None,
                 registrar: Registrar | None = None,
                 bans: BanTable | None = None,
                 policy: CallPolicy | None = None,
                 on_bindings: BindingSink | None = None,
                 on_dialog: DialogSink | None = None) -> None:
        self.tally = Tally()  # every counter of the engine, by the names of reasons.py
        self.ctx = Context(settings, secret=secret,
                           on_event=on_event, gateways=gateways, gateway_info=gateway_info,
                           auth=auth, registrar=registrar, bans=bans, policy=policy,
                           on_bindings=on_bindings, on_dialog=on_dialog, tally=self.tally)
        self.ctx.bans.tally = self.tally
        self.failover = Failover(self.ctx)
        self.public = PublicSide(self.ctx, self.failover)
        self.private = BackendSide(self.ctx, self.failover)
        # The screen (None: every message is parsed; in-memory tests) and the
        # TCP/TLS connections per source (a connection is proof of address).
        self.screen: Screen | None = None
        self.conn_limits = ConnLimits()
        self.conn_counts = SourceCounts()
        # Gateways that require a TLS client certificate: name -> the name it
        # must carry (None: any certificate the CA verifies).
        self.client_certs: dict[str, str | None] = {}
        self._next_ping = float("inf")
        self._receivers: dict[int, Callable[[bytes, str, int, float], Verdict]] = {}
        self.ctx.bans.proved = self.proved
        self._on_timer: dict[TimerKind, Callable[[float, Any, list[Send]], None]] = {
            TimerKind.RETRANSMIT: self._retransmit,
            TimerKind.TIMEOUT: self._timeout,
            TimerKind.RESPONSE: self._resend_final,
            TimerKind.FAILOVER: self._failover_due,
            TimerKind.PING: self._ping_timeout,
            TimerKind.TX_EXPIRE: self._tx_expired,
            TimerKind.DIALOG_EXPIRE: self._dialog_expired,
            TimerKind.DURATION: self._duration_reached,
        }

    def reconfigure(self, setup: Setup) -> None:
        """A new configuration, from the next message on: calls in progress,
        bans, registrations, nonces and rate buckets' state stay."""
        ctx = self.ctx
        ctx.bans.take_rules(setup.ban_rules)
        self.s = setup.settings
        ctx.gateways = setup.gateways
        ctx.gateway_info = setup.gateway_info
        ctx.auth = setup.auth
        ctx.policy = setup.policy
        for budget in (ctx.reply_budget, ctx.reply_budget_proved):
            budget.rate = setup.settings.reply_budget_rate
            budget.burst = setup.settings.reply_budget_burst
        self.screen = setup.screen
        # The screen's signatures are checked again on the parsed message.
        ctx.signatures = setup.screen.signatures if setup.screen is not None else None
        ctx.signatures_on_gateways = setup.screen.apply_to_gateways if setup.screen else False
        self.conn_limits = setup.conn_limits
        self.client_certs = setup.client_certs

    # ------------------------------------------------------------------ the call state

    @property
    def txs(self) -> dict[bytes, InviteTx]:
        return self.ctx.calls.txs

    @property
    def dialogs(self) -> DialogTable:
        return self.ctx.calls.dialogs

    @property
    def timers(self) -> TimerHeap:
        return self.ctx.calls.timers

    # ------------------------------------------------------------------ entry points

    def receive(self, data: bytes, src: Source, now: float) -> Verdict:
        """The one entry point: a message from `src` at `now`, screened first
        (public channels), then parsed, matched and decided."""
        return self.receiver(src[0])(data, src[1], src[2], now)

    def receiver(self, channel: int) -> Callable[[bytes, str, int, float], Verdict]:
        """`receive` for the messages of one channel, taking the source as
        host and port: a public message is screened (its source's ban first,
        in one lookup: the bulk of a flood ends there) before a Source is
        made. The UDP transport calls it once per datagram, so every name it
        needs is bound here once; the ban table and the screen are read per
        message (a reload or a test may replace them)."""
        got = self._receivers.get(channel)
        if got is None:
            got = self._receivers[channel] = self._make_receiver(channel)
        return got

    def _make_receiver(self, channel: int) -> Callable[[bytes, str, int, float], Verdict]:
        receive = self._receive
        if channel >= PRIVATE:
            return lambda data, host, port, now: receive(data, _new(Source, (channel, host, port)), now)
        engine = self
        ctx = self.ctx
        banned = self.tally.banned
        screened = self.tally.screened
        stream = channel != PUBLIC_UDP
        banned_verdict = _CLOSE_BANNED if stream else _BANNED

        def receive_public(data: bytes, host: str, port: int, now: float) -> Verdict:
            screen = engine.screen
            if screen is not None:
                ban = ctx.bans.bans.get(host)
                if ban is not None and now < ban.expires_at:
                    banned[0] += 1
                    return banned_verdict
                reason = screen.check_unbanned(data, host, port, now, stream)
                if reason is not None:
                    screened(reason, host)
                    return _SCREENED[reason]
            return receive(data, _new(Source, (channel, host, port)), now)

        return receive_public

    def _receive(self, data: bytes, src: Source, now: float) -> Verdict:
        """A message past the screen: parsed, matched and decided."""
        ctx = self.ctx
        channel = src[0]
        stream = channel == PUBLIC_TCP or channel == PUBLIC_TLS
        try:
            msg = parse_message(data, ctx.s.max_tcp_message if stream else ctx.s.max_datagram,
                                stream=stream, strict=src.channel < PRIVATE)
            if src.channel >= PRIVATE:
                verdict = self.private.receive(msg, src, now)
            else:
                verdict = self.public.receive(msg, src, now)
        except SipParseError as e:
            verdict = self._malformed(data, src, e, now)
        except Exception as e:  # a bug of ours must cost one packet, not the process
            verdict = Drop(DropReason.INTERNAL_ERROR)
            if self.tally.dropped[DropReason.INTERNAL_ERROR] % 1000 == 0:
                ctx.on_event("internal_error", error=repr(e)[:200])
        tally = self.tally
        tally.verdicts[verdict.kind] += 1
        if verdict.kind == "drop":
            tally.dropped[verdict.reason] += 1  # type: ignore[union-attr]
        return verdict

    # ------------------------------------------------------------------ connections

    def connection_opened(self, src: Source, now: float) -> DropReason | TransportEvent | None:
        """A new TCP/TLS connection from `src`: None when it may stay, else why
        it must be closed (counted here): a banned source, one opening
        connections over its rate (screen drops), or over the connection caps
        (transport events)."""
        host = src.host
        if self.ctx.bans.is_banned(host, now):
            self.tally.banned[0] += 1
            return DropReason.BANNED
        if self.screen is not None:
            over = self.screen.connection(host, src.port, now)
            if over is not None:
                self.tally.screened(over, host)
                return over
        refused = self.conn_counts.admit(host, self.conn_limits)
        if refused is not None:
            self.connection_failed(src, refused, now)
        return refused

    def connection_closed(self, src: Source) -> None:
        """An admitted connection is gone (the slot of its source frees)."""
        self.conn_counts.release(src.host)

    def connection_failed(self, src: Source, reason: TransportEvent, now: float,
                          framing: ParseReason | None = None) -> None:
        """A connection broke a limit (a deadline, the framing, the handshake,
        the client certificate): counted, with the parse reason of a framing
        fault, and an offense when it is one."""
        tally = self.tally
        tally.transport[reason] += 1
        if framing is not None:
            tally.parse_errors[framing] += 1
        offense = CONNECTION_OFFENSES.get(reason)
        if offense is not None:
            self.ctx.bans.offense(src.host, offense, now)

    def transport_event(self, event: TransportEvent) -> None:
        """Something a transport reports that is no limit broken (an ICMP
        error, a TLS record that fails, a flow gone): counted."""
        self.tally.transport[event] += 1

    def certificate_refused(self, src: Source,
                            cert: Mapping[str, Any] | None) -> TransportEvent | None:
        """Why the gateway of `src` (by address) refuses the client certificate
        a TLS connection showed, or None: a gateway that requires one gets
        one, carrying the configured name when one is set."""
        gateways = self.ctx.gateways
        gateway = gateways.by_source(src.host, src.port) if gateways is not None else None
        if gateway is None or gateway not in self.client_certs:
            return None
        if not cert:
            return TransportEvent.TLS_CLIENT_CERT_MISSING
        subject = self.client_certs[gateway]
        if subject is not None and not cert_matches(cert, subject):
            return TransportEvent.TLS_CLIENT_CERT_SUBJECT
        return None

    def proved(self, host: str, now: float) -> bool:
        """A source at its address: an open TCP/TLS connection, a live
        registration, a confirmed dialog, a request authenticated with a
        nonce bound to it."""
        return self.conn_counts.get(host) > 0 or self.ctx.proved(host, now)

    # ------------------------------------------------------------------ deadlines

    def start_pings(self, now: float) -> None:
        """Ping every VOS3000 address from now on (admin readiness, failover)."""
        self._next_ping = now

    def refuse_unframed(self, data: bytes, src: Source, err: SipParseError, now: float) -> list[Send]:
        """What to send before closing a stream whose framing failed (`err`
        from the StreamFramer, `data` what it held): the refusal to an
        address-identified gateway, else nothing. The transport counts the
        framing error and the offense, and closes the connection: after a
        Content-Length it cannot read, nothing more on it can be framed
        (RFC 3261 §18.3, RFC 4475 §3.1.2.3)."""
        reply = self._refusal(data, src, err)
        return [] if reply is None else [(src.channel, (src.host, src.port), reply)]

    def next_deadline(self) -> float | None:
        at = self.ctx.calls.next_deadline()
        if at is None or self._next_ping < at:
            return self._next_ping if self._next_ping != float("inf") else at
        return at

    def on_timer(self, now: float) -> list[Send]:
        sends: list[Send] = []
        if now >= self._next_ping:
            self._next_ping = now + self.ctx.health.interval
            sends.extend(self.failover.pings(now))
        calls = self.ctx.calls
        for _deadline, kind, obj in calls.timers.pop_due(now):
            self._on_timer[kind](now, obj, sends)
        calls.expire_accepted(now)
        return sends

    def restore_dialog(self, dlg: Dialog, now: float) -> None:
        """A confirmed dialog kept across a restart: back in the table, with its
        deadlines, under its RFC 3261 identity (the tags its From and To kept).
        One whose VOS3000 is no longer configured (or unknown: an older file)
        goes to the primary."""
        ctx = self.ctx
        if ctx.health.by_addr(dlg.backend) is None:
            dlg.backend = ctx.backend
        initiator = header_param(dlg.from_value, b"tag") or b""
        dlg.tag = initiator
        dlg.add_answer_tag(header_param(dlg.to_value, b"tag"))
        ctx.calls.restore(dlg, now)

    # ------------------------------------------------------------------ malformed input

    def _malformed(self, data: bytes, src: Source, err: SipParseError, now: float) -> Verdict:
        """A message sbc refuses to read (sbc.sip.validate: RFC 3261 §16.3 and
        the RFC 4475 torture tests). It is never forwarded, and nothing of it
        is kept, so nothing is ever retransmitted. From the public side it is
        an offense of its source (spared for a proved source over UDP, where
        the address may be forged); an address-identified gateway gets a
        stateless reply naming the fault (400, 416, 420, 505, 513), anyone
        else a silent drop: a scanner learns nothing from silence."""
        ctx = self.ctx
        self.tally.parse_errors[err.reason] += 1
        if src.channel >= PRIVATE:
            return Drop(DropReason.MALFORMED)
        ctx.bans.offense(src.host, Offense.MALFORMED, now, spoofable=src.channel == PUBLIC_UDP)
        reply = self._refusal(data, src, err)
        if reply is None:
            return Drop(DropReason.MALFORMED)
        return Reply([(src.channel, (src.host, src.port), reply)])

    def _refusal(self, data: bytes, src: Source, err: SipParseError) -> bytes | None:
        """The reply for `err` when `src` is a gateway by its address (a
        digest account is not known before its request is read), or None: a
        stranger, a response, an ACK (RFC 3261 §17.1.1.3: never answered), a
        request whose Via cannot be read back."""
        ctx = self.ctx
        gateways = ctx.gateways
        if src.channel >= PRIVATE or (
                gateways is not None and gateways.by_source(src.host, src.port) is None):
            return None  # (no gateway table: every source is admitted, in-memory tests only)
        # The To-tag depends on the bytes only, so a retransmission gets the
        # same answer (§8.2.6.2), and its ACK is absorbed as ours (TAG_PREFIX).
        reply = refusal(data, err, ctx.local_tag(data))
        if reply is not None:
            self.tally.refusals[Refusal.MALFORMED] += 1
        return reply

    # ------------------------------------------------------------------ timers, by kind

    def _retransmit(self, now: float, tx: InviteTx, sends: list[Send]) -> None:
        if tx.state is not TxState.CALLING:
            return
        sends.append((tx.egress, tx.dest, tx.out))
        tx.a_interval *= 2  # RFC 3261 §17.1.1.2: INVITE doubles without cap
        tx.a_timer = self.ctx.calls.arm(None, now + tx.a_interval, TimerKind.RETRANSMIT, tx)

    def _timeout(self, now: float, tx: InviteTx, sends: list[Send]) -> None:
        self.public.give_up(tx, now, sends)

    def _resend_final(self, now: float, tx: InviteTx, sends: list[Send]) -> None:
        tx.g_timer = None
        if tx.state is not TxState.COMPLETED or tx.acked:
            return
        sends.append((tx.caller_channel, tx.caller, tx.last_response))
        tx.g_interval = min(tx.g_interval * 2, self.ctx.s.t2)
        if now + tx.g_interval < tx.h_at:
            tx.g_timer = self.ctx.calls.arm(None, now + tx.g_interval, TimerKind.RESPONSE, tx)

    def _failover_due(self, now: float, tx: InviteTx, sends: list[Send]) -> None:
        self.failover.failover_due(tx, now, sends)

    def _ping_timeout(self, now: float, ping: tuple[int, int], sends: list[Send]) -> None:
        self.failover.ping_timeout(ping, now)

    def _tx_expired(self, now: float, tx: InviteTx, sends: list[Send]) -> None:
        tx.x_timer = None
        if self.ctx.calls.txs.get(tx.key) is tx:
            self.ctx.calls.forget_tx(tx)

    def _dialog_expired(self, now: float, dlg: Dialog, sends: list[Send]) -> None:
        dlg.expire_timer = None
        if self.ctx.calls.dialogs.get(dlg.call_id, dlg.tag) is dlg:
            self.ctx.calls.expire(dlg, now)

    def _duration_reached(self, now: float, dlg: Dialog, sends: list[Send]) -> None:
        dlg.bye_timer = None
        if dlg.state is DialogState.CONFIRMED and self.ctx.calls.dialogs.get(dlg.call_id, dlg.tag) is dlg:
            sends.extend(self.ctx.byes(dlg))
            self.ctx.calls.end(dlg, now, "max_duration")

    # ------------------------------------------------------------------ toll-fraud watch

    def fraud_tick(self, now: float) -> list[Send]:
        """The toll-fraud watch's second (sbc.core.fraud): running minutes
        judged, and the calls a block with cut_calls ends, with BYE to both
        sides as at the duration limit. A call not answered yet is ended once
        it is (its key waits in the watch)."""
        fraud = self.ctx.fraud
        if fraud is None:
            return []
        sends: list[Send] = []
        calls = self.ctx.calls
        for key in fraud.tick(now):
            dlg = calls.dialogs.get(*key)
            if dlg is None or dlg.state is DialogState.ENDED:
                continue
            if dlg.state is DialogState.EARLY:
                fraud.to_cut.append(key)
                continue
            sends.extend(self.ctx.byes(dlg))
            calls.end(dlg, now, "fraud_cut")
            fraud.figures["cut"] += 1
        return sends
