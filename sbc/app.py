"""From a validated Config to the engine and its collaborators: gateway table,
digest verifier, registrar, the SQLite store that keeps registrations
across restarts, and the proved sources of the trusted lane (kept in step
with the engine and the kernel). The server owns the result; nothing here
touches sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .state.bans import BanKeeper
from .config import Config
from .core.identify.auth import (
    DIGEST_OFFENSES,
    Account,
    DigestAuth,
    account_from_ha1,
    account_from_password,
)
from .core.screen.bans import BanTable
from .core.reasons import CONNECTION_OFFENSES, Offense
from .core.screen.conns import ConnLimits
from .core.proxy.dialogs import DialogTable
from .core.engine import Engine, Setup
from .core.identify.gateways import GatewayInfo, GatewayTable
from .core.policy.limits import CallPolicy, GatewayPolicy, PrefixSet
from .core.identify.registrar import Binding, Registrar
from .core.screen.lanes import TrustedSources
from .core.screen.screen import Screen
from .core.settings import ProxySettings
from .state.dialogs import DialogKeeper
from .firewall.nftset import NftBanSet
from .io.addresses import FAST
from .io.trusted import TrustedKeeper
from .io.logsetup import get_logger
from .state.store import Store, from_rows, to_rows

if TYPE_CHECKING:  # the cluster's links pull in redis: imported only with the cluster on
    from .cluster.limits_link import LimitsLink
    from .cluster.redis_link import RedisLink
    from .cluster.registrations_link import RegistrationsLink

log = get_logger("sbc.app")


@dataclass
class Components:
    engine: Engine
    store: Store
    bans: BanKeeper
    dialogs: DialogKeeper
    loop: asyncio.AbstractEventLoop
    secret: bytes
    trusted: TrustedKeeper
    kernel: NftBanSet | None = None
    kernel_ok: bool = False  # the ruleset was loaded
    cluster: RedisLink | None = None  # bans shared with other nodes (cluster.enabled)
    limits: LimitsLink | None = None  # call limits shared with them (cluster.share_limits)
    # registrations known to them, calls relayed to them (cluster.share_registrations)
    registrations: RegistrationsLink | None = None

    async def start(self) -> None:
        """Load the kernel ruleset (nftables mode) and put the active bans and
        proved sources into it."""
        if self.kernel is not None:
            self.kernel_ok = await self.kernel.setup()
            if not self.kernel_ok:
                log.error("firewall_setup_failed", **self.kernel.stats())
            self.bans.kernel_restore(self.loop.time())
        self.trusted.restore(self.loop.time())
        if self.cluster is not None:
            self.cluster.start()
        if self.limits is not None:
            self.limits.start()
        if self.registrations is not None:
            self.registrations.start()

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
        if self.limits is not None:
            await self.limits.stop()
        if self.registrations is not None:
            await self.registrations.stop()
        if self.kernel is not None:
            await self.kernel.close()

    def save_bindings(self, aor: str, bindings: list[Binding]) -> None:
        self.store.save_bindings(aor, to_rows(bindings, self.loop.time(), time.time()))
        if self.registrations is not None:
            self.registrations.local(aor, bindings)

    def housekeeping(self, now: float) -> None:
        """Periodic: expire registrations (and persist), bans (and persist,
        and pick up an operator's changes), offenses and idle rate buckets."""
        engine = self.engine
        if engine.registrar is not None:
            for aor in engine.registrar.expire(now):
                self.save_bindings(aor, engine.registrar.bindings(aor))
        self.bans.poll(now)
        engine.bans.offenses.expire(now)
        if engine.screen is not None:
            engine.screen.expire(now)
        self.trusted.sweep(now)

    def close(self) -> None:
        self.bans.flush()
        self.dialogs.flush()
        self.store.close()


def accounts(cfg: Config) -> list[Account]:
    out = []
    for gw in cfg.gateways:
        for acc in gw.digest:
            realm = cfg.realm_for(acc)
            cidrs = tuple(ipaddress.ip_network(c) for c in acc.from_cidrs)
            if acc.password is not None:
                out.append(account_from_password(acc.username, realm, gw.name,
                                                 acc.password.get_secret_value(), cidrs,
                                                 from_must_match=acc.from_must_match))
            else:
                out.append(account_from_ha1(
                    acc.username, realm, gw.name,
                    acc.ha1_md5.get_secret_value() if acc.ha1_md5 else None,
                    acc.ha1_sha256.get_secret_value() if acc.ha1_sha256 else None, cidrs,
                    from_must_match=acc.from_must_match))
    return out


def make_auth(cfg: Config, secret: bytes) -> DigestAuth:
    return DigestAuth(accounts(cfg), secret=secret, realm=cfg.auth.realm,
                      nonce_ttl=cfg.auth.nonce_ttl_s, algorithms=[a.value for a in cfg.auth.algorithms])


def make_screen(cfg: Config, bans: BanTable, table: GatewayTable, dialogs: DialogTable) -> Screen:
    """The screen; with no digest accounts and unknown sources dropped, a
    request from an address that is no gateway and has no dialog is dropped
    here, before it is parsed."""
    sc = cfg.screen
    closed = not accounts(cfg) and cfg.auth.unknown_source == "drop"
    return Screen(bans, table, signatures=sc.scanner_signatures,
                  apply_to_gateways=sc.signatures_apply_to_gateways,
                  rate_per_ip=(sc.rate_per_ip.rate, sc.rate_per_ip.burst),
                  rate_per_net=(sc.rate_per_net.rate, sc.rate_per_net.burst),
                  rate_per_gateway=(sc.rate_per_gateway.rate, sc.rate_per_gateway.burst),
                  max_sources=sc.max_sources, closed=closed, has_peer=dialogs.has_peer)


def gateway_table(cfg: Config) -> GatewayTable:
    return GatewayTable(((gw.name, gw.ip, gw.ip_port) for gw in cfg.gateways), FAST)


def restart_needed(old: Config, new: Config) -> str | None:
    """What a reload cannot change in place (sockets, the state file), or None."""
    for what in ("public", "private", "backend", "state", "firewall", "lanes", "cluster"):
        if getattr(old, what) != getattr(new, what):
            return f"{what}: changing it needs a restart"
    if gateway_infos(old)[1] != gateway_infos(new)[1]:
        return "gateways[].egress: changing egress sockets needs a restart"
    return None


def reconfigure(parts: Components, cfg: Config) -> None:
    """Swap in a new, validated config: calls in progress, bans, registrations
    and nonces stay; gateways, accounts, limits and screening change from the
    next packet."""
    parts.engine.reconfigure(engine_setup(cfg, parts.engine, parts.secret))
    if parts.limits is not None:
        parts.limits.attach()  # the new limits, shared
    parts.trusted.pair_hosts = pair_hosts(cfg)


def pair_hosts(cfg: Config) -> frozenset[str]:
    """The addresses of `ip_port` gateways (a connection comes from any port)."""
    return frozenset(host for gw in cfg.gateways for host, _ in gw.ip_port)


def engine_setup(cfg: Config, engine: Engine, secret: bytes) -> Setup:
    """What the engine takes from `cfg` (its call state and bans stay its own)."""
    infos, egresses = gateway_infos(cfg)
    table = gateway_table(cfg)
    return Setup(
        settings=proxy_settings(cfg, egresses=tuple(egresses[1:])),
        gateways=table, gateway_info={i.name: i for i in infos},
        auth=make_auth(cfg, secret), policy=call_policy(cfg),
        screen=make_screen(cfg, engine.bans, table, engine.dialogs),
        ban_rules=ban_table(cfg, table), conn_limits=conn_limits(cfg),
        client_certs={gw.name: gw.tls.subject for gw in cfg.gateways if gw.tls.require_client_cert},
    )


def build_components(cfg: Config, loop: asyncio.AbstractEventLoop) -> Components:
    infos, egresses = gateway_infos(cfg)
    settings = proxy_settings(cfg, egresses=tuple(egresses[1:]))
    table = gateway_table(cfg)
    secret = os.urandom(32)  # signs nonces and branches; kept across reloads
    r = cfg.registrar
    registrar = Registrar(min_expires=r.min_expires_s, max_expires=r.max_expires_s,
                          default_expires=r.default_expires_s, max_contacts=r.max_contacts)
    store = Store(cfg.state.path)
    mono, wall = loop.time(), time.time()
    registrar.load(from_rows(store.load_bindings(wall), mono, wall), mono)
    bans = ban_table(cfg, table)
    engine = Engine(settings, secret=secret, registrar=registrar, bans=bans)
    engine.reconfigure(engine_setup(cfg, engine, secret))
    kernel = kernel_set(cfg)
    keeper = BanKeeper(bans, store, loop.time, kernel=kernel)
    trusted = TrustedKeeper(engine, TrustedSources(cfg.lanes.max_proved), loop.time,
                            proof_timeout_s=cfg.lanes.proof_timeout_s, kernel=kernel)
    trusted.pair_hosts = pair_hosts(cfg)
    engine.conn_counts.trusted = trusted.trusted_host  # the reserved connection slots
    if kernel is not None:
        def kernel_reset() -> None:
            keeper.kernel_restore(loop.time())
            trusted.kernel_restore(loop.time())

        kernel.on_reset = kernel_reset
    dialogs = DialogKeeper(engine, store, loop.time)
    dialogs.restore()
    cluster = limits = registrations = None
    if cfg.cluster.enabled:
        from .cluster.limits_link import make_limits
        from .cluster.redis_link import make_cluster
        from .cluster.registrations_link import make_registrations
        cluster = make_cluster(cfg.cluster, keeper, loop)
        limits = make_limits(cfg.cluster, engine, loop)
        registrations = make_registrations(
            cfg.cluster, engine, (settings.private_host, settings.private_port),
            frozenset([*engine.egresses, (settings.public_host, settings.public_port)]), loop)
    parts = Components(engine, store, keeper, dialogs, loop, secret, trusted, kernel,
                       cluster=cluster, limits=limits, registrations=registrations)
    engine.on_bindings = parts.save_bindings
    trusted.attach()  # beside the store's sinks: confirmed dialogs, registrations
    log.info("state_loaded", path=cfg.state.path, bindings=len(registrar),
             gateways=len(table), accounts=len(accounts(cfg)))
    return parts


def conn_limits(cfg: Config) -> ConnLimits:
    lim = cfg.limits
    return ConnLimits(max_total=lim.max_tcp_connections,
                      max_per_source=lim.max_tcp_connections_per_source,
                      idle=lim.tcp_idle_timeout_s, message_deadline=lim.tcp_message_deadline_s,
                      handshake_deadline=lim.tls_handshake_timeout_s,
                      reserved=cfg.lanes.reserve_of(lim.max_tcp_connections))


def ban_table(cfg: Config, gateways: GatewayTable) -> BanTable:
    b = cfg.bans
    # No exempt networks (the default): no lookup per offense for them.
    exempt_nets = GatewayTable([("exempt", b.exempt, [])], FAST) if b.exempt else None
    pair_hosts = {host for gw in cfg.gateways for host, _ in gw.ip_port}

    def exempt(host: str) -> bool:
        # Gateway sources are never banned automatically, whatever their port.
        return (host in pair_hosts or gateways.by_source(host, 1) is not None
                or (exempt_nets is not None and exempt_nets.by_source(host, 1) is not None))

    # Each switch of `bans.offenses` is named after the offense it counts,
    # but for `connection`: one switch for every way a connection breaks a limit.
    switches = b.offenses.model_dump()
    counted = frozenset(Offense(kind) for kind, on in switches.items()
                        if on and kind != "connection")
    if b.offenses.connection:
        counted |= frozenset(CONNECTION_OFFENSES.values())
    if b.offenses.digest_failure:  # and one for every way a digest answer is refused
        counted |= DIGEST_OFFENSES
    return BanTable(max_offenses=b.max_offenses, findtime=b.findtime_s, bantime=b.bantime_s,
                    increment=b.increment, max_bantime=b.max_bantime_s,
                    max_entries=b.max_entries, exempt=exempt, counted=counted)


def kernel_set(cfg: Config) -> NftBanSet | None:
    """The kernel's ban set (nftables mode): the whole rendered ruleset, ban sets in step."""
    if cfg.firewall.mode != "nftables":
        return None
    return NftBanSet.from_config(cfg)


def call_policy(cfg: Config) -> CallPolicy:
    gateways = {}
    for gw in cfg.gateways:
        lim = gw.limits
        gateways[gw.name] = GatewayPolicy(
            cps=float(lim.cps), burst=float(lim.burst), max_concurrent=lim.max_concurrent,
            max_duration=float(lim.max_duration_s), allowed=PrefixSet(gw.allowed_prefixes),
            blocked=PrefixSet(gw.blocked_prefixes), tech=tuple(gw.tech_prefixes))
    c = cfg.calls
    return CallPolicy(gateways, max_cps=float(c.max_cps), max_cps_burst=float(c.burst),
                      max_concurrent=c.max_concurrent, blocked=c.blocked_prefixes,
                      tech=c.tech_prefixes, retry_after=c.retry_after_s)


def proxy_settings(cfg: Config, egresses: tuple[tuple[str, int], ...] = ()) -> ProxySettings:
    """The core's settings, read from the config (the core never reads it)."""
    return ProxySettings(
        egresses=egresses,
        reject_unknown=cfg.auth.unknown_source == "reject",
        reply_budget_rate=float(cfg.auth.reply_budget_per_s),
        reply_budget_burst=float(cfg.auth.reply_budget_burst),
        public_host=cfg.public.advertise_host or cfg.public.host,
        public_port=cfg.public.port,
        tls_port=cfg.public.tls_port if cfg.public.tls else None,
        private_host=cfg.private.advertise_host or cfg.private.host,
        private_port=cfg.private.port,
        backend_host=cfg.backend.host,
        backend_port=cfg.backend.port,
        standby=tuple(t.address for t in cfg.backend.standby),
        failover_timeout=cfg.backend.failover_timeout_s,
        failover_on=frozenset(cfg.backend.failover_on),
        down_after=cfg.backend.down_after,
        up_after=cfg.backend.up_after,
        ping_interval=cfg.admin.ping_interval_s,
        ping_timeout=cfg.admin.ping_timeout_s,
        t1=cfg.sip.t1_ms / 1000.0,
        t2=cfg.sip.t2_ms / 1000.0,
        invite_timeout=cfg.sip.invite_timeout_s,
        proxy_timeout=cfg.sip.proxy_timeout_s,
        linger=cfg.sip.transaction_linger_s,
        max_transactions=cfg.sip.max_transactions,
        max_dialogs=cfg.sip.max_dialogs,
        dialog_setup_timeout=cfg.sip.dialog_setup_timeout_s,
        dialog_max_age=cfg.sip.dialog_max_age_s,
        max_datagram=cfg.limits.max_datagram,
        max_tcp_message=cfg.limits.max_tcp_message,
        cert_gateways=frozenset(g.name for g in cfg.gateways if g.tls.require_client_cert),
    )


def gateway_infos(cfg: Config) -> tuple[list[GatewayInfo], list[tuple[str, int]]]:
    """GatewayInfo per gateway in configuration order, and the egress sockets.

    The egress list starts with the `private` socket (index 0, shared by every
    gateway without an egress of its own), then each gateway's own egress in
    configuration order.
    """
    infos: list[GatewayInfo] = []
    egresses: list[tuple[str, int]] = [cfg.private.address]
    for gateway in cfg.gateways:
        index = 0
        if gateway.egress is not None:
            index = len(egresses)
            egresses.append(gateway.egress.address)
        infos.append(GatewayInfo(gateway.name, index, gateway.options.value))
    return infos, egresses
