"""The configuration schema: every section of `Config`, its defaults and limits.

The listeners, the backend, the SIP timers, the transport limits and logging
are defined here; the gateway, auth, registrar and state sections come from
`sbc.config.gateways`, the call limits from `sbc.config.calls`, the screening,
ban and firewall sections from `sbc.config.defense`, the admin endpoint from
`sbc.config.admin`.  `Config` adds the rules that span sections.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .admin import AdminConfig, check_admin
from .base import IPAddress, OptionalIPAddress
from .calls import CallsConfig, check_calls
from .cluster import ClusterConfig, cluster_summary
from .defense import BansConfig, FirewallConfig, ScreenConfig
from .fraud import FraudConfig, check_fraud
from .lanes import LanesConfig, check_lanes
from .shared_port import check_shared_port
from .trace import HepConfig, TraceConfig
from .gateways import (
    AuthConfig,
    Count,
    DigestAccount,
    Distinct,
    Endpoint,
    GatewayConfig,
    Loc,
    Port,
    RegistrarConfig,
    Seconds,
    Section,
    StateConfig,
    hostport,
    kind,
    lower,
    problem,
)
from .tls import TlsConfig
from ..core.screen.lanes import LaneMode, lane_mode

# --------------------------------------------------------------------------
# Field types


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"  # on public.tls_port, with the tls section's certificate


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"




def _is_unspecified(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


# --------------------------------------------------------------------------
# Sections


class _Endpoint(Endpoint):
    host: IPAddress = "127.0.0.1"
    port: Port = 5060


class _Listener(_Endpoint):
    """A socket of the sbc itself, optionally known to peers by another address."""

    advertise_host: OptionalIPAddress = None

    @field_validator("advertise_host")
    @classmethod
    def _concrete_advertise_host(cls, value: str | None) -> str | None:
        if value is not None and _is_unspecified(value):
            raise problem(f"{value} cannot be advertised; give the address peers reach")
        return value

    @model_validator(mode="after")
    def _advertise_needed(self) -> Self:
        # A Via or Record-Route naming 0.0.0.0 would send responses and in-dialog
        # requests nowhere (RFC 3261 §18.2.2, §16.6 step 4).
        if self.advertise_host is None and _is_unspecified(self.host):
            raise problem(
                f"required when host is {self.host} (listening on all interfaces): "
                "the address written into Via and Record-Route",
                at=("advertise_host",),
                also=("host",),
            )
        return self

    @property
    def advertised(self) -> str:
        """The address written into Via and Record-Route."""
        return self.advertise_host or self.host

    @property
    def advertised_hostport(self) -> str:
        return hostport(self.advertised, self.port)


class PublicConfig(_Listener):
    """The public SIP side: callers and carriers."""

    host: IPAddress = "127.0.0.1"
    port: Port = 5060
    transports: Annotated[
        tuple[Annotated[Transport, BeforeValidator(lower)], ...], Field(min_length=1)
    ] = (Transport.UDP, Transport.TCP)
    tls_port: Port = 5061  # the TLS listener (RFC 3261 §26.2), when transports has tls
    # SO_REUSEPORT: several nodes on one host share these ports (sbc.config.shared_port)
    reuse_port: Annotated[bool, Field(strict=True)] = False

    @field_validator("transports")
    @classmethod
    def _no_duplicates(cls, value: tuple[Transport, ...]) -> tuple[Transport, ...]:
        seen: set[Transport] = set()
        for index, transport in enumerate(value):
            if transport in seen:
                raise problem(f"{transport.value!r} is listed twice", at=(index,))
            seen.add(transport)
        return value

    @property
    def udp(self) -> bool:
        return Transport.UDP in self.transports

    @property
    def tcp(self) -> bool:
        return Transport.TCP in self.transports

    @property
    def tls(self) -> bool:
        return Transport.TLS in self.transports

    @property
    def tls_hostport(self) -> str:
        return hostport(self.host, self.tls_port)

    @model_validator(mode="after")
    def _tls_own_port(self) -> Self:
        if self.tls and self.tcp and self.tls_port == self.port:
            raise problem(
                f"TLS and TCP cannot share port {self.port}; TLS usually listens on 5061",
                at=("tls_port",), also=("port",),
            )
        return self


class PrivateConfig(_Listener):
    """The private side towards VOS3000: one UDP socket."""

    host: IPAddress = "127.0.0.1"
    port: Port = 5080


class BackendTarget(_Endpoint):
    """One VOS3000 address."""

    host: IPAddress = "127.0.0.1"
    port: Port = 5070

    @field_validator("host")
    @classmethod
    def _concrete_host(cls, value: str) -> str:
        if _is_unspecified(value):
            raise problem(f"{value} is not an address a request can be sent to")
        return value


# Final statuses that may send a call to the next VOS3000: server-side trouble
# and timeouts. Never an authentication challenge (the caller must answer
# it), a 487 (the caller cancelled) or a 6xx (a global answer, §16.7 step 5).
_FAILOVER_STATUSES = frozenset((408, *range(500, 600)))


def _status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"should be a SIP status code (a number), not {kind(value)}")
    if value not in _FAILOVER_STATUSES:
        raise problem(f"{value} cannot trigger failover; only 408 and 500-599 can")
    return value


class BackendConfig(BackendTarget):
    """The VOS3000 softswitch every accepted request is relayed to: the
    primary address, then standbys in priority order."""

    standby: tuple[BackendTarget, ...] = ()
    failover_timeout_s: Seconds = 2.0
    failover_on: Annotated[tuple[Annotated[int, BeforeValidator(_status)], ...], Distinct] = (
        500, 503)
    down_after: Count = 3
    up_after: Count = 2


    @model_validator(mode="after")
    def _distinct_targets(self) -> Self:
        seen = {self.address: "backend"}
        v6 = ":" in self.host
        for i, target in enumerate(self.standby):
            if target.address in seen:
                raise problem(f"{target.hostport} is already listed ({seen[target.address]})",
                              at=("standby", i))
            seen[target.address] = f"standby[{i}]"
            if (":" in target.host) != v6:
                raise problem(
                    f"{target.host} and {self.host} are of different IP versions; the "
                    "private sockets could not reach both", at=("standby", i, "host"))
        return self

    @property
    def targets(self) -> tuple[tuple[str, int], ...]:
        """Every VOS3000 address, primary first."""
        return (self.address, *(t.address for t in self.standby))

    @property
    def labelled(self) -> list[tuple[tuple[str | int, ...], str, int]]:
        """(location in the section, host, port) of every target."""
        return [((), self.host, self.port),
                *((("standby", i), t.host, t.port) for i, t in enumerate(self.standby))]


class SipConfig(Section):
    """Protocol timers (RFC 3261 §17) and table caps."""

    t1_ms: Annotated[int, Field(strict=True, ge=50, le=5000)] = 500
    t2_ms: Annotated[int, Field(strict=True, ge=50)] = 4000
    invite_timeout_s: Seconds = 32.0
    proxy_timeout_s: Seconds = 180.0
    transaction_linger_s: Seconds = 32.0
    max_transactions: Count = 100_000
    max_dialogs: Count = 200_000
    dialog_setup_timeout_s: Seconds = 300.0
    dialog_max_age_s: Seconds = 86_400.0

    @model_validator(mode="after")
    def _t2_not_below_t1(self) -> Self:
        # T2 caps the doubling retransmit interval that starts at T1 (§17.1.2.2).
        if self.t2_ms < self.t1_ms:
            raise problem(
                f"must be at least sip.t1_ms ({self.t1_ms})", at=("t2_ms",), also=("t1_ms",)
            )
        return self

    @property
    def t1(self) -> float:
        """T1 in seconds."""
        return self.t1_ms / 1000

    @property
    def t2(self) -> float:
        """T2 in seconds."""
        return self.t2_ms / 1000


class LimitsConfig(Section):
    """Size and count caps on what the transports accept."""

    max_datagram: Annotated[int, Field(strict=True, ge=512, le=65507)] = 16_384
    max_tcp_message: Annotated[int, Field(strict=True, ge=1024)] = 65_536
    tcp_buffer: Count = 131_072
    max_tcp_connections: Count = 10_000  # TCP and TLS together
    max_tcp_connections_per_source: Count = 64  # from one IP address
    tcp_idle_timeout_s: Seconds = 600.0
    # A message must be complete this long after its first byte (and the
    # first message this long after the connection is up): slow senders.
    tcp_message_deadline_s: Seconds = 10.0
    tls_handshake_timeout_s: Seconds = 5.0

    @model_validator(mode="after")
    def _per_source_within_total(self) -> Self:
        if self.max_tcp_connections_per_source > self.max_tcp_connections:
            raise problem(
                f"must be at most limits.max_tcp_connections ({self.max_tcp_connections})",
                at=("max_tcp_connections_per_source",),
                also=("max_tcp_connections",),
            )
        return self

    @model_validator(mode="after")
    def _buffer_holds_a_message(self) -> Self:
        if self.tcp_buffer < self.max_tcp_message:
            raise problem(
                f"must be at least limits.max_tcp_message ({self.max_tcp_message})",
                at=("tcp_buffer",),
                also=("max_tcp_message",),
            )
        return self


class LoggingConfig(Section):
    format: Annotated[LogFormat, BeforeValidator(lower)] = LogFormat.JSON
    level: Annotated[LogLevel, BeforeValidator(lower)] = LogLevel.INFO
    # The periodic line that aggregates drops, bans and rate limiting, in
    # place of a line per dropped packet.
    summary_interval_s: Seconds = 60.0


_SECTIONS = ("public", "private", "backend", "sip", "limits", "logging", "auth", "registrar",
             "state", "calls", "screen", "bans", "firewall", "admin", "tls", "lanes", "cluster",
             "fraud", "trace", "hep")


class Config(Section):
    """The whole configuration; every section is optional."""

    public: PublicConfig = Field(default_factory=PublicConfig)
    private: PrivateConfig = Field(default_factory=PrivateConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    sip: SipConfig = Field(default_factory=SipConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    gateways: tuple[GatewayConfig, ...] = ()
    auth: AuthConfig = Field(default_factory=AuthConfig)
    registrar: RegistrarConfig = Field(default_factory=RegistrarConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    calls: CallsConfig = Field(default_factory=CallsConfig)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    bans: BansConfig = Field(default_factory=BansConfig)
    firewall: FirewallConfig = Field(default_factory=FirewallConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    lanes: LanesConfig = Field(default_factory=LanesConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    fraud: FraudConfig = Field(default_factory=FraudConfig)  # toll-fraud watch (sbc.config.fraud)
    trace: TraceConfig = Field(default_factory=TraceConfig)  # per-call SIP trace (sbc.config.trace)
    hep: HepConfig = Field(default_factory=HepConfig)  # HEP v3 export (sbc.config.trace)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `sip:` with every option below it commented out reads as null.
        if isinstance(data, dict):
            out = {k: ({} if v is None and k in _SECTIONS else v) for k, v in data.items()}
            if out.get("gateways", ()) is None:
                out["gateways"] = ()
            return out
        return data

    def realm_for(self, account: DigestAccount) -> str:
        """The realm `account` authenticates in: its own, else auth.realm."""
        return account.realm if account.realm is not None else self.auth.realm

    @model_validator(mode="after")
    def _no_overlap_or_loop(self) -> Self:
        public, private, backend = self.public, self.private, self.backend
        if private.port == public.port and (
            private.host == public.host
            or _is_unspecified(private.host)
            or _is_unspecified(public.host)
        ):
            raise problem(
                f"private {private.hostport} overlaps public {public.hostport}; "
                "the two sides need their own sockets (change private.port)",
                at=("private", "port"),
                also=("public", "port"),
            )
        own: list[tuple[tuple[str, ...], str, int]] = [
            (("public",), public.host, public.port),
            (("private",), private.host, private.port),
        ]
        if public.advertise_host is not None:
            own.append((("public", "advertise_host"), public.advertise_host, public.port))
        if private.advertise_host is not None:
            own.append((("private", "advertise_host"), private.advertise_host, private.port))
        for at, target_host, target_port in backend.labelled:
            for field, host, port in own:
                if target_port != port:
                    continue
                if target_host == host or (_is_unspecified(host) and _is_loopback(target_host)):
                    raise problem(
                        f"{hostport(target_host, target_port)} is the sbc's own address "
                        f"{hostport(host, port)} ({'.'.join(field)}); requests to VOS3000 "
                        "would loop back into the sbc",
                        at=("backend", *at),
                        also=field,
                    )
        return self

    @model_validator(mode="after")
    def _failover_before_timer_b(self) -> Self:
        if self.backend.failover_timeout_s >= self.sip.invite_timeout_s:
            raise problem(
                f"must be below sip.invite_timeout_s ({self.sip.invite_timeout_s:.15g}): "
                "the next VOS3000 is tried before the call times out",
                at=("backend", "failover_timeout_s"),
                also=("sip", "invite_timeout_s"),
            )
        return self

    @model_validator(mode="after")
    def _gateways_consistent(self) -> Self:
        check_gateways(self.gateways, self.auth, self.public, self.private, self.backend)
        check_calls(self.gateways, self.calls, self.sip.dialog_max_age_s)
        check_fraud(self.fraud, self.gateways)
        return self

    @model_validator(mode="after")
    def _admin_own_socket(self) -> Self:
        check_admin(self.admin, self.public.host, self.public.port, self.public.tcp)
        if self.public.tls:
            check_admin(self.admin, self.public.host, self.public.tls_port, True)
        return self

    @model_validator(mode="after")
    def _lanes_own_port(self) -> Self:
        check_lanes(self.lanes, self.public, self.private, self.gateways)
        return self

    @model_validator(mode="after")
    def _tls_ready(self) -> Self:
        check_tls(self)
        return self

    @model_validator(mode="after")
    def _port_shared_by_nodes(self) -> Self:
        check_shared_port(self)
        return self


def check_tls(cfg: Config) -> None:
    """The TLS listener needs a certificate; a gateway that requires client
    certificates needs the listener and a CA to verify them against."""
    public, tls = cfg.public, cfg.tls
    if public.tls and tls.cert_file is None:
        raise problem("the TLS listener needs a certificate: set tls.cert_file and tls.key_file",
                      at=("tls", "cert_file"), also=("public", "transports"))
    if public.tls and public.tls_port == cfg.private.port and (
        public.host == cfg.private.host or _is_unspecified(public.host)
        or _is_unspecified(cfg.private.host)
    ):
        raise problem(f"{public.tls_hostport} is also the private socket; change public.tls_port",
                      at=("public", "tls_port"), also=("private", "port"))
    for g, gw in enumerate(cfg.gateways):
        if not gw.tls.require_client_cert:
            continue
        at: Loc = ("gateways", g, "tls", "require_client_cert")
        if not public.tls:
            raise problem(f"gateway {gw.name!r} requires a client certificate, but tls is not "
                          "in public.transports", at=at)
        if tls.ca_file is None:
            raise problem(f"gateway {gw.name!r} requires a client certificate: set tls.ca_file "
                          "to the CA that signs them", at=at)


def check_gateways(
    gateways: tuple[GatewayConfig, ...],
    auth: AuthConfig,
    public: PublicConfig,
    private: PrivateConfig,
    backend: BackendConfig,
) -> None:
    """Raise `problem` (located from the `Config` root) for the first conflict
    between gateways, or between a gateway and another section."""
    own = [("public", public.host, public.port), ("private", private.host, private.port)]
    for label, side in (("public", public), ("private", private)):
        if side.advertise_host is not None:
            own.append((f"{label}.advertise_host", side.advertise_host, side.port))
    for loc, host, port in backend.labelled:
        own.append(("backend" + (f".standby[{loc[1]}]" if loc else ""), host, port))
    names: dict[str, int] = {}
    networks: dict[str, tuple[int, str]] = {}
    pairs: dict[tuple[str, int], tuple[int, str]] = {}
    users: dict[str, tuple[int, str]] = {}
    egresses: dict[tuple[str, int], tuple[int, str]] = {}
    offered = set(auth.algorithms)
    backend_v6 = ":" in backend.host
    for g, gw in enumerate(gateways):
        at: Loc = ("gateways", g)
        if gw.name in names:
            raise problem(
                f"gateway name {gw.name!r} is already used by gateways[{names[gw.name]}]",
                at=(*at, "name"),
            )
        names[gw.name] = g
        for i, net in enumerate(gw.ip):
            if net in networks:
                raise problem(
                    f"{net} is already listed for gateway {networks[net][1]!r}; "
                    "an address or network belongs to one gateway",
                    at=(*at, "ip", i),
                )
            networks[net] = (g, gw.name)
        for i, pair in enumerate(gw.ip_port):
            if pair in pairs:
                raise problem(
                    f"{hostport(*pair)} is already listed for gateway {pairs[pair][1]!r}",
                    at=(*at, "ip_port", i),
                )
            pairs[pair] = (g, gw.name)
        for i, account in enumerate(gw.digest):
            if account.username in users:
                owner = users[account.username][1]
                where = "this gateway" if owner == gw.name else f"gateway {owner!r}"
                raise problem(
                    f"user name {account.username!r} is already an account of {where}; "
                    "user names are unique across all gateways",
                    at=(*at, "digest", i, "username"),
                )
            users[account.username] = (g, gw.name)
            if not account.algorithms & offered:
                have = "ha1_md5" if account.ha1_md5 is not None else "ha1_sha256"
                raise problem(
                    f"account {account.username!r} has only {have}, which none of "
                    f"auth.algorithms ({', '.join(auth.algorithms)}) "
                    "can use: it could never authenticate",
                    at=(*at, "digest", i),
                )
        if gw.egress is None:
            continue
        egress, at_egress = gw.egress, (*at, "egress")
        for label, host, port in own:
            if port == egress.port and (host == egress.host or _is_unspecified(host)):
                raise problem(
                    f"{egress.hostport} is already used by {label} ({hostport(host, port)}); "
                    "each gateway's egress needs its own address:port",
                    at=at_egress,
                )
        if egress.address in egresses:
            raise problem(
                f"{egress.hostport} is already the egress of gateway "
                f"{egresses[egress.address][1]!r}; VOS3000 could not tell the two apart",
                at=at_egress,
            )
        egresses[egress.address] = (g, gw.name)
        if (":" in egress.host) != backend_v6:
            raise problem(
                f"{egress.host} and the backend {backend.host} are of different IP "
                "versions; requests from this egress could not reach VOS3000",
                at=(*at_egress, "host"),
            )


def summary(cfg: Config) -> dict[str, str]:
    """A small flat dict for the start-up log line."""
    out = {
        "public": cfg.public.hostport,
        "transports": ",".join(t.value for t in cfg.public.transports),
        "private": cfg.private.hostport,
        "backend": ",".join(hostport(*t) for t in cfg.backend.targets),
        "gateways": str(len(cfg.gateways)),
    }
    if cfg.public.tls:
        out["tls"] = cfg.public.tls_hostport
    if cfg.public.reuse_port:
        out["reuse_port"] = "on"
    if cfg.public.advertise_host is not None:
        out["public_advertised"] = cfg.public.advertised_hostport
    if cfg.private.advertise_host is not None:
        out["private_advertised"] = cfg.private.advertised_hostport
    if lanes_mode(cfg) is not LaneMode.OFF:
        out["lanes"] = lanes_mode(cfg).value
        out["trusted_port"] = str(cfg.lanes.trusted_port)
    out.update(cluster_summary(cfg.cluster))
    return out


def lanes_mode(cfg: Config) -> LaneMode:
    """off, two_ports or kernel (see sbc.core.screen.lanes)."""
    return lane_mode(cfg.lanes.trusted_port, cfg.public.udp, cfg.firewall.enabled)

