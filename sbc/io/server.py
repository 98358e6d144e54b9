"""The I/O shell: binds the sockets, feeds the engine, sends what it returns,
and runs one loop timer for the engine's earliest deadline."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections import Counter
from typing import Any

from . import sdnotify
from ..admin import PacketTimer, ban_counts, ban_rows, dialog_rows, start_admin
from ..admin.timing import HistogramSnapshot
from ..config import Config, ConfigError, load_config, summary
from ..config.tls import GatewayTls, server_context
from ..core.screen.conns import ConnLimits, SourceCounts, overdue
from ..core.engine import Engine
from ..core.verdict import MAPPED, PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP, Addr, Channel, Send
from .logsetup import configure_logging, flush_logs, get_logger
from .tcp import TcpConnection
from .tls import TlsConnection
from .udp import UdpProtocol
from ..app import Components, build_components, reconfigure, restart_needed

log = get_logger("sbc.io.server")

SWEEP_INTERVAL = 5.0
SUMMARY_INTERVAL = 60.0
TOP_SOURCES_CAP = 10_000  # distinct sources counted per summary interval


class Server:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop | None = None,
                 config_path: str | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.loop = loop or asyncio.get_running_loop()
        self.parts: Components = build_components(cfg, self.loop)
        self.engine: Engine = self.parts.engine
        self.engine.on_event = self._event
        self.screen = self.parts.screen
        self.banned = self.engine.bans.bans  # the live ban dict, read per datagram
        self.banned_drops = 0
        self.screen_drops: Counter[str] = Counter()
        self.top_sources: Counter[str] = Counter()  # per summary interval, capped
        # Open connections by public channel, each keyed by the caller's flow.
        self.conns: dict[Channel, dict[Addr, TcpConnection]] = {PUBLIC_TCP: {}, PUBLIC_TLS: {}}
        self.tcp_conns = self.conns[PUBLIC_TCP]
        self.tls_conns = self.conns[PUBLIC_TLS]
        self.conn_counts = SourceCounts()  # TCP and TLS, per source address
        # Proof of return routability, for offenses a forged datagram can cause.
        self.engine.bans.proved = self.proved
        self.conn_limits = conn_limits(cfg)
        self.tls_context: ssl.SSLContext | None = None
        self.tls_clients: dict[str, GatewayTls] = tls_clients(cfg)
        self.counters: Counter[str] = Counter()
        self._public_udp: asyncio.DatagramTransport | None = None
        # A dual-stack IPv6 socket reaches IPv4 peers by their mapped address;
        # the core knows them unmapped (verdict.unmapped).
        self._public_v6 = _family(cfg.public.host) == socket.AF_INET6
        self._egress: list[asyncio.DatagramTransport] = []
        self._public_proto: Any = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._tls_server: asyncio.base_events.Server | None = None
        self._conn_sweeper: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self.persist_interval = float(cfg.calls.persist_interval_s)
        self.timer = PacketTimer()  # engine time per message, for the admin's histogram
        self._admin: Any = None
        self._pinger: asyncio.TimerHandle | None = None
        self._persister: asyncio.TimerHandle | None = None
        self._last_summary: dict[str, dict[str, int]] = {}
        self.summary_interval = float(cfg.logging.summary_interval_s)
        self._next_summary = self.loop.time() + self.summary_interval

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.cfg
        loop = self.loop
        try:
            for i, (host, port) in enumerate(self.engine.egresses):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda i=i: UdpProtocol(self, PRIVATE + i),  # type: ignore[misc]
                    local_addr=(host, port), family=_family(host),
                )
                self._egress.append(transport)
            if "udp" in cfg.public.transports:
                self._public_udp, self._public_proto = await loop.create_datagram_endpoint(
                    lambda: UdpProtocol(self, PUBLIC_UDP),
                    local_addr=(cfg.public.host, cfg.public.port),
                    family=_family(cfg.public.host),
                )
            if "tcp" in cfg.public.transports:
                self._tcp_server = await loop.create_server(
                    lambda: TcpConnection(self), cfg.public.host, cfg.public.port,
                    reuse_address=True, family=_family(cfg.public.host), backlog=1024,
                )
            if cfg.public.tls:
                # Accepted as plain TCP: the connection drives its own handshake.
                try:
                    self.tls_context = server_context(cfg.tls)
                except (OSError, ValueError) as e:  # the files changed since the check
                    raise OSError(f"tls: {e}") from None
                self._tls_server = await loop.create_server(
                    lambda: TlsConnection(self, self._tls_context()), cfg.public.host,
                    cfg.public.tls_port, reuse_address=True, family=_family(cfg.public.host),
                    backlog=1024,
                )
        except OSError:
            self._close_sockets()
            raise
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        self._conn_sweeper = loop.call_later(self.conn_limits.sweep_interval, self._sweep_conns)
        self._persister = loop.call_later(self.persist_interval, self._persist)
        await self.parts.start()
        if cfg.admin.enabled:
            try:
                self._admin = await start_admin(self, cfg.admin)
            except OSError:
                self._close_sockets()
                raise
        if cfg.admin.enabled or len(self.engine.health) > 1:
            self._ping()  # for /readyz, and to choose among several VOS3000s

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, let queued writes drain, close everything."""
        listeners = [srv for srv in (self._tcp_server, self._tls_server) if srv is not None]
        for srv in listeners:
            srv.close()
        if self._public_udp is not None:
            self._public_udp.close()
            self._public_udp = None
        for conns in self.conns.values():
            for conn in list(conns.values()):
                conn.close()  # asyncio flushes what is buffered before closing
        for srv in listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2.0)
            except TimeoutError:
                pass
        if self._admin is not None:
            await self._admin.cleanup()
        await self.parts.stop()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for handle in (self._timer, self._sweeper, self._conn_sweeper, self._persister,
                       self._pinger):
            if handle is not None:
                handle.cancel()
        for t in (*self._egress, self._public_udp):
            if t is not None:
                t.close()
        self._egress = []
        self._public_udp = None
        self.parts.close()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)
        self.loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(sdnotify.notify_reload(self.reload)))

    async def reload(self) -> tuple[bool, str]:
        """Validate the config file, then swap it in; on any error the old one stays."""
        if self.config_path is None:
            return False, "no config file to reload"
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("reload_failed", error=str(e))
            return False, str(e)
        problem = restart_needed(self.cfg, new)
        if problem is not None:
            log.error("reload_failed", error=problem)
            return False, problem
        tls_context = self.tls_context
        if new.public.tls:
            try:
                # Read again even when the paths are the same: a renewed
                # certificate is usually written over the old file.
                tls_context = server_context(new.tls)  # for new connections
            except (ssl.SSLError, OSError, ValueError) as e:
                log.error("reload_failed", error=f"tls: {e}")
                return False, f"tls: {e}"
        self.screen = reconfigure(self.parts, new)
        self.cfg = new
        self.tls_context = tls_context
        self.conn_limits = conn_limits(new)
        self.tls_clients = tls_clients(new)
        configure_logging(new.logging.format, new.logging.level)
        log.info("reloaded", **summary(new))
        return True, "reloaded"

    # ------------------------------------------------------------------ sending

    def send_all(self, sends: list[Send]) -> None:
        for channel, addr, data in sends:
            self.send(channel, addr, data)
        at = self.engine.next_deadline()
        if at is not None and at < self._timer_at:
            self._arm(at)

    def send(self, channel: int, addr: Addr, data: bytes) -> None:
        if channel >= PRIVATE:
            if self._egress:
                self._egress[channel - PRIVATE].sendto(data, addr)
        elif channel == PUBLIC_UDP:
            if self._public_udp is not None:
                if self._public_v6 and ":" not in addr[0]:
                    addr = (MAPPED + addr[0], addr[1])
                self._public_udp.sendto(data, addr)
        else:
            conn = self.conns[channel].get(addr)  # type: ignore[index]
            if conn is None:
                self.count("tls_flow_gone" if channel == PUBLIC_TLS else "tcp_flow_gone")
            else:
                conn.write(data)

    def count(self, what: str) -> None:
        self.counters[what] += 1

    def screen_drop_counts(self) -> dict[str, int]:
        counts = dict(self.screen_drops)
        if self.banned_drops:
            counts["banned"] = counts.get("banned", 0) + self.banned_drops
        return counts

    def screen_drop(self, reason: str, host: str) -> None:
        self.screen_drops[reason] += 1
        top = self.top_sources
        if host in top or len(top) < TOP_SOURCES_CAP:
            top[host] += 1

    # ------------------------------------------------------------------ timers

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        sends = self.engine.on_timer(self.loop.time())
        self.send_all(sends)
        at = self.engine.next_deadline()
        if at is not None and at < self._timer_at:
            self._arm(at)

    def _ping(self) -> None:
        """OPTIONS to each VOS3000 address every admin.ping_interval_s; the
        engine times each one out on its own deadline."""
        self._pinger = self.loop.call_later(self.engine.health.interval, self._ping)
        self.send_all(self.engine.pings(self.loop.time()))

    def _persist(self) -> None:
        """Write the batch of dialog changes (one transaction)."""
        try:
            self.parts.dialogs.flush()
        except Exception as e:  # a full disk must not stop the calls
            log.error("persist_failed", error=str(e))
        flush_logs()
        self._persister = self.loop.call_later(self.persist_interval, self._persist)

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls_context is not None
        return self.tls_context

    def _sweep_conns(self) -> None:
        """Close the connections that missed a deadline (handshake, message,
        first message, idle): one timer for all of them, run often enough
        for the shortest deadline."""
        limits = self.conn_limits
        self._conn_sweeper = self.loop.call_later(limits.sweep_interval, self._sweep_conns)
        now = self.loop.time()
        late = [(conn, reason) for conns in self.conns.values() for conn in conns.values()
                if (reason := overdue(conn.clock, limits, now)) is not None]
        for conn, reason in late:
            conn.abort(reason)

    def _sweep(self) -> None:
        """Housekeeping and the periodic summary (one periodic timer for all of it)."""
        now = self.loop.time()
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        try:
            self.parts.housekeeping(now)
        except Exception as e:  # the store failing must not stop the housekeeping timer
            log.error("housekeeping_failed", error=str(e))
        if now >= self._next_summary:
            self._next_summary = now + self.summary_interval
            self._log_summary()

    # ------------------------------------------------------------------ logs

    def _event(self, event: str, **fields: Any) -> None:
        if event == "internal_error":
            log.error(event, **fields)
        else:
            log.info(event, **fields)

    def _log_summary(self) -> None:
        """One aggregated line for what happened since the last one, if anything."""
        e = self.engine
        now = {"verdicts": dict(e.verdicts), "drops": dict(e.drops),
               "screen_drops": self.screen_drop_counts(),
               "parse_errors": dict(e.parse_errors), "transport": dict(self.counters)}
        delta = {k: {n: c - self._last_summary.get(k, {}).get(n, 0) for n, c in v.items()
                     if c != self._last_summary.get(k, {}).get(n, 0)} for k, v in now.items()}
        self._last_summary = now
        top = self.top_sources.most_common(10)
        self.top_sources = Counter()
        if any(delta.values()):
            log.info("summary", interval_s=self.summary_interval, transactions=len(e.txs),
                     dialogs=len(e.dialogs), tcp_connections=len(self.tcp_conns),
                     tls_connections=len(self.tls_conns),
                     bans=len(e.bans), top_dropped_sources=dict(top),
                     ban_lines_not_logged=self.parts.bans.unlogged,
                     **{k: v for k, v in delta.items() if v})

    # ------------------------------------------------------------------ admin backend

    def dialogs(self, limit: int) -> list[dict[str, Any]]:
        return dialog_rows(self.engine.dialogs, self.loop.time(), limit)

    def bans(self, limit: int) -> list[dict[str, Any]]:
        return ban_rows(self.engine.bans, self.loop.time(), limit)

    def ban_counts(self) -> dict[str, int]:
        return ban_counts(self.engine.bans, self.loop.time())

    def ban(self, host: str, seconds: float, reason: str) -> dict[str, Any]:
        now = self.loop.time()
        return self.engine.bans.ban(host, now, reason=reason, duration=seconds, manual=True).explain(now)

    def unban(self, host: str) -> bool:
        return self.parts.bans.lift(host)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self.engine.health.state(self.loop.time())

    def processing_time(self) -> HistogramSnapshot | None:
        return self.timer.snapshot()

    def gateway_figures(self) -> dict[str, dict[str, int]]:
        """Live figures per gateway: calls in progress, CPS of the last second, rejects by limit."""
        e = self.engine
        now = self.loop.time()
        names = {gw.name for gw in self.cfg.gateways}
        return {name: {"concurrent": e.dialogs.active(name),
                       "cps": e.policy.current_cps(name, now),
                       **e.policy.figures.get(name, {})} for name in sorted(names)}

    def proved(self, host: str, now: float) -> bool:
        """A source at its address: the engine's proofs, or an open TCP/TLS connection."""
        return self.conn_counts.get(host) > 0 or self.engine.proved(host, now)

    def stats(self) -> dict[str, Any]:
        e = self.engine
        return {
            "offenses_spared": dict(e.bans.spared),
            "verdicts": dict(e.verdicts),
            "drops": dict(e.drops),
            "screen_drops": self.screen_drop_counts(),
            "bans": len(e.bans),
            "parse_errors": dict(e.parse_errors),
            "transport": dict(self.counters),
            "top_dropped_sources": dict(self.top_sources.most_common(10)),
            "udp_public_received": self._public_proto.received if self._public_proto else 0,
            "transactions": len(e.txs),
            "dialogs": len(e.dialogs),
            "gateways": self.gateway_figures(),
            "tcp_connections": len(self.tcp_conns),
            "failovers": dict(e.failovers),
            "tls_connections": len(self.tls_conns),
        }


def conn_limits(cfg: Config) -> ConnLimits:
    lim = cfg.limits
    return ConnLimits(max_total=lim.max_tcp_connections,
                      max_per_source=lim.max_tcp_connections_per_source,
                      idle=lim.tcp_idle_timeout_s, message_deadline=lim.tcp_message_deadline_s,
                      handshake_deadline=lim.tls_handshake_timeout_s)


def tls_clients(cfg: Config) -> dict[str, GatewayTls]:
    """The gateways that require a client certificate, by name."""
    return {gw.name: gw.tls for gw in cfg.gateways if gw.tls.require_client_cert}


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
