"""What every part of the engine shares: the settings and collaborators
(gateway table, digest, registrar, bans, limits, health), the call state,
the bytes sbc writes itself (its Via and Record-Route entries per channel),
the engine's counter table (tally.py), and the message helpers more than one direction uses (our
branch for a request, a stateless reply, a refusal within the reply budget,
a BYE that sbc sends itself).

The engine builds one Context and hands it to each of its parts
(public.py, backend.py, failover.py); the parts import this module, never
each other's, and never the engine.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...sip import (
    Message,
    ParseReason,
    SipParseError,
    Via,
    build,
    header_param,
    header_value,
    name_addr_uri,
    parse_via,
    split_values,
)
from ..screen.bans import BanTable
from .state import CallState
from .health import Health, HealthTable
from ..policy.limits import CallPolicy
from ..reasons import DropReason, Refusal
from ..screen.proofs import Proofs
from ..screen.ratelimit import SourceBudget, TokenBucket
from .routing import OwnAddresses, derive_branch, stamp_via
from .scan import Scan, scan_request
from ..settings import ProxySettings
from ..tally import Tally
from ..verdict import (
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
    from ..fraud.watch import FraudWatch
    from ..identify.auth import DigestAuth
    from .dialogs import Dialog
    from .relay import Nodes
    from ..identify.gateways import GatewayInfo, GatewayTable
    from ..identify.registrar import Binding, Registrar

TAG_PREFIX = b"sbc-"
BYE_BRANCH = b"z9hG4bKsbcbye"  # branches of the BYEs sbc sends itself (duration limit)
PING_BRANCH = b"z9hG4bKsbcping"  # branches of sbc's OPTIONS pings to VOS3000

EventSink = Callable[..., None]
BindingSink = Callable[[str, "list[Binding]"], None]
DialogSink = Callable[[str, "Dialog"], None]


def _no_events(event: str, **fields: Any) -> None:
    return None


def _no_bindings(aor: str, bindings: list[Binding]) -> None:
    return None


def _no_dialogs(event: str, dlg: Dialog) -> None:
    return None


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def contact_uri(msg: Message) -> bytes:
    contact = msg.get("contact")
    if not contact:
        return b""
    try:
        return name_addr_uri(split_values(contact)[0])
    except SipParseError:
        return b""


def tag_of(msg: Message, name: str) -> bytes | None:
    """The tag parameter of From or To (None: no tag)."""
    return header_param(msg.get(name) or b"", b"tag")


def top_via(msg: Message) -> tuple[int, bytes, list[bytes]]:
    i = msg.where.get("via")
    if i is None:
        raise SipParseError(ParseReason.MISSING_MANDATORY_HEADER)
    value = header_value(msg.headers[i][1])
    if b"," in value:
        values = split_values(value)
        return i, values[0], values[1:]
    return i, value, []


class Context:
    def __init__(self, settings: ProxySettings, *, secret: bytes,
                 on_event: EventSink | None, gateways: GatewayTable | None,
                 gateway_info: dict[str, GatewayInfo] | None, auth: DigestAuth | None,
                 registrar: Registrar | None, bans: BanTable | None, policy: CallPolicy | None,
                 on_bindings: BindingSink | None, on_dialog: DialogSink | None,
                 tally: Tally) -> None:
        s = self.s = settings
        self.tally = tally
        self.secret = secret
        self.on_event: EventSink = on_event or _no_events
        self.on_bindings: BindingSink = on_bindings or _no_bindings
        self.on_dialog: DialogSink = on_dialog or _no_dialogs  # "confirmed" / "ended": what must survive a restart
        self.policy = policy if policy is not None else CallPolicy()
        self.gateways = gateways
        self.gateway_info = gateway_info or {}
        self.auth = auth
        self.registrar = registrar
        self.bans = bans if bans is not None else BanTable()
        self.reply_budget = TokenBucket(s.reply_budget_rate, s.reply_budget_burst)
        self.reply_budget_proved = TokenBucket(s.reply_budget_rate, s.reply_budget_burst)
        self.reply_per_source = SourceBudget(s.reply_budget_per_source, s.reply_budget_per_net)
        self.backend: Addr = s.backend  # the primary VOS3000
        self.health = HealthTable(s.targets, down_after=s.down_after, up_after=s.up_after,
                                  interval=s.ping_interval, timeout=s.ping_timeout)
        self.calls = CallState(s, self)
        self.fraud: FraudWatch | None = None  # the toll-fraud watch; None: no rules
        self.nodes: Nodes | None = None  # the cluster's other nodes (relay.py); None: alone
        self.proofs = Proofs()
        # The screen's scanner signatures, checked again on the parsed message.
        self.signatures: re.Pattern[bytes] | None = None
        self.signatures_on_gateways = False
        self.egresses: list[tuple[str, int]] = [(s.private_host, s.private_port), *s.egresses]
        tls_own = [(s.public_host, s.tls_port)] if s.tls_port is not None else []
        self.own = OwnAddresses([(s.public_host, s.public_port), *tls_own, *self.egresses])
        self._wire()

    def _wire(self) -> None:
        s = self.s
        pub = s.public_hostport().encode()
        tls = s.tls_hostport().encode()  # TLS has its own port (5061, RFC 3261 §19.1.2)
        # What our Via looks like on each public channel: (host, port), and
        # the bytes "host:port;branch=" recognised in a response without a parse.
        own_public = (s.public_host, s.public_port)
        self.own_public: dict[int, Addr] = {PUBLIC_UDP: own_public, PUBLIC_TCP: own_public,
                                            PUBLIC_TLS: (s.public_host, s.tls_port or 5061)}
        self.marker_public: dict[int, bytes] = {PUBLIC_UDP: pub + b";branch=",
                                                PUBLIC_TCP: pub + b";branch=",
                                                PUBLIC_TLS: tls + b";branch="}
        self.via_public: dict[int, bytes] = {
            PUBLIC_UDP: b"Via: SIP/2.0/UDP " + pub + b";branch=",
            PUBLIC_TCP: b"Via: SIP/2.0/TCP " + pub + b";branch=",
            PUBLIC_TLS: b"Via: SIP/2.0/TLS " + tls + b";branch=",
        }
        rr_public: dict[int, bytes] = {
            PUBLIC_UDP: b"Record-Route: <sip:" + pub + b";lr;r2=on>",
            PUBLIC_TCP: b"Record-Route: <sip:" + pub + b";transport=tcp;lr;r2=on>",
            PUBLIC_TLS: b"Record-Route: <sip:" + tls + b";transport=tls;lr;r2=on>",
        }
        self.via_egress: list[bytes] = []
        self.marker_egress: list[bytes] = []
        # Double record-routing (RFC 3261 §16.6 step 4) with the egress of the
        # gateway: the entry facing the next hop comes first, so VOS3000 sends
        # its in-dialog requests to the socket that knows the gateway.
        self.rr_outbound: dict[tuple[int, int], list[bytes]] = {}
        self.rr_inbound: dict[tuple[int, int], list[bytes]] = {}
        for i, (host, port) in enumerate(self.egresses):
            hp = hostport(host, port).encode()
            self.via_egress.append(b"Via: SIP/2.0/UDP " + hp + b";branch=")
            self.marker_egress.append(hp + b";branch=")
            rr_egress = b"Record-Route: <sip:" + hp + b";lr;r2=on>"
            for ch in (PUBLIC_UDP, PUBLIC_TCP, PUBLIC_TLS):
                self.rr_outbound[(ch, PRIVATE + i)] = [rr_egress, rr_public[ch]]
                self.rr_inbound[(ch, PRIVATE + i)] = [rr_public[ch], rr_egress]
            self.own.exact.add(rr_egress[rr_egress.index(b"<") + 1 : -1])
        for rr in rr_public.values():
            self.own.exact.add(rr[rr.index(b"<") + 1 : -1])

    def proved(self, host: str, now: float) -> bool:
        """Whether `host` answered what sbc sent it: a live registration, a
        confirmed dialog, or a request authenticated with a nonce bound to it."""
        return (self.calls.dialogs.confirmed_peer(host) or self.proofs.has(host, now)
                or (self.registrar is not None and self.registrar.has_host(host, now)))

    # ------------------------------------------------------------------ requests

    def received_via(self, msg: Message, src: Source) -> tuple[int, Via, bytes]:
        """A request's top Via: where it is, parsed, and its line with received
        and rport set to the packet's source (RFC 3261 §18.2.1, RFC 3581)."""
        vi, top, rest = top_via(msg)
        stamped = stamp_via(top, src.host, src.port)
        return vi, parse_via(top), b"Via: " + (b", ".join([stamped, *rest]) if rest else stamped)

    def scan(self, msg: Message, vi: int, via_line: bytes) -> Scan:
        return scan_request(msg, vi, via_line, self.own)

    def key(self, msg: Message, via: Via, side: bytes = b"p") -> bytes:
        """Our branch for this request: same for retransmissions, CANCEL and non-2xx ACK."""
        return derive_branch(self.secret, self.key_material(msg, via, side))

    @staticmethod
    def key_material(msg: Message, via: Via, side: bytes) -> bytes:
        branch = via.branch
        if branch and branch.startswith(b"z9hG4bK"):
            return b"|".join((side, branch, via.host.encode(), msg.call_id))
        # RFC 2543 peer: the transaction is identified by these (§17.2.3)
        to_tag = tag_of(msg, "to") or b""
        from_tag = tag_of(msg, "from") or b""
        return b"|".join((side, msg.call_id, from_tag, to_tag, b"%d" % msg.cseq, msg.uri,
                          via.host.encode(), b"%d" % (via.port or 5060)))

    def tag(self, key: bytes) -> bytes:
        return TAG_PREFIX + key[7:17]

    def local_tag(self, seed: bytes) -> bytes:
        return TAG_PREFIX + hashlib.md5(self.secret + seed, usedforsecurity=False).hexdigest()[:10].encode()

    def pop_our_via(self, msg: Message, ours: tuple[str, int], marker: bytes
                    ) -> tuple[list[bytes], bytes | None, bytes | None]:
        """The response's lines without our top Via, our branch (None when the
        top Via is not ours), and the next Via value (None when there is none)."""
        lines = [raw for _, raw in msg.headers]
        vi, top, rest = top_via(msg)
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

    # ------------------------------------------------------------------ replies

    def reply_stateless(self, status: int, sc: Scan, src: Source,
                        extra: tuple[bytes, ...] = (), reason: bytes | None = None) -> Reply:
        resp = build.response(status, sc.vias, sc.from_line, sc.to_line, sc.call_id_line,
                              sc.cseq_line, to_tag=TAG_PREFIX + b"0", extra=extra, reason=reason)
        return Reply([(src.channel, (src.host, src.port), resp)])

    def refuse(self, status: int, scan: Scan, src: Source, now: float, reason: Refusal,
               extra: tuple[bytes, ...] = (), phrase: bytes | None = None) -> Verdict:
        """A reply to a source that is not authenticated: to its address only,
        within the budget (else a silent drop), counted under `reason`."""
        if not self.reply_per_source.take(src.host, now) and not self.proved(src.host, now):
            return Drop(DropReason.REPLY_BUDGET_SOURCE)
        # A flood from fresh addresses empties the strangers' budget; a source
        # that proved itself (a registration, a call, an answered challenge at
        # this address) has one of its own, as large, so its next call's 407
        # still goes out. Forged in its name, the replies it gets stay capped
        # by that budget.
        if not self.reply_budget.take(now) and not (
                self.proved(src.host, now) and self.reply_budget_proved.take(now)):
            return Drop(DropReason.REPLY_BUDGET)
        reply = self.reply_stateless(status, scan, src, extra=extra, reason=phrase)
        self.tally.refusals[reason] += 1
        return reply

    def refuse_gateway(self, status: int, scan: Scan, src: Source, reason: Refusal,
                       phrase: bytes | None = None) -> Reply:
        """A refusal to an identified gateway, counted under `reason`."""
        self.tally.refusals[reason] += 1
        return self.reply_stateless(status, scan, src, reason=phrase)

    def unknown(self, scan: Scan, src: Source, now: float) -> Verdict:
        if self.s.reject_unknown:
            return self.refuse(403, scan, src, now, Refusal.UNKNOWN_SOURCE)
        return Drop(DropReason.UNKNOWN_SOURCE)

    # ------------------------------------------------------------------ calls sbc ends itself

    def byes(self, dlg: Dialog) -> list[Send]:
        """BYE to both sides (RFC 3261 §15.1.1), built from what the dialog kept."""
        initiator_from, answerer_to = dlg.from_value, dlg.to_value
        call_id = b"Call-ID: " + dlg.call_id
        tag = hashlib.md5(self.secret + dlg.call_id + dlg.tag,
                          usedforsecurity=False).hexdigest()[:16].encode()
        # Towards the public-side peer: from the party it talks to.
        if dlg.inbound:  # the peer answered: it is the To of the INVITE
            peer_from, peer_to = initiator_from, answerer_to
        else:
            peer_from, peer_to = answerer_to, initiator_from
        to_peer = build.request(
            b"BYE", dlg.peer_contact, self.via_public[dlg.peer_channel] + BYE_BRANCH + tag + b"p",
            [], b"From: " + peer_from, b"To: " + peer_to, call_id, dlg.cseq_backend + 1)
        to_backend = build.request(
            b"BYE", dlg.backend_contact, self.via_egress[dlg.egress - PRIVATE] + BYE_BRANCH + tag + b"b",
            [], b"From: " + peer_to, b"To: " + peer_from, call_id, dlg.cseq_peer + 1)
        return [(dlg.peer_channel, dlg.peer, to_peer), (dlg.egress, dlg.backend, to_backend)]

    # ------------------------------------------------------------------ health

    def health_ok(self, index: int, now: float) -> None:
        if self.health.success(index, now):
            self.report_health()

    def health_failed(self, index: int, now: float, reason: str) -> None:
        if self.health.failure(index, now, reason):
            self.report_health()

    def report_health(self) -> None:
        """Log a target going down and coming back (not the first answer of one
        never known to be down: that is how every start begins)."""
        changes, self.health.changes = self.health.changes, []
        for target, old, new in changes:
            if new is Health.DOWN:
                self.on_event("backend_down", target=target.hostport, priority=target.index,
                              reason=target.reason)
            elif old is Health.DOWN:
                self.on_event("backend_up", target=target.hostport, priority=target.index)
