"""The I/O shell's lifecycle: binds the sockets (each transport feeds the one
pipeline, sbc.io.pipeline), starts and stops, reloads, and answers the
admin app. The pipeline runs the one loop timer; the shell's periodic work
(connection deadlines, persistence, housekeeping, the summary line) is
registered on it. With `lanes.trusted_port` the public UDP side is two
sockets read in lane order (sbc.io.lanes); the start-up line `lanes` says
which mode runs."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

from . import sdnotify
from ..admin import PacketTimer, ban_counts, ban_rows, dialog_rows
from ..core.screen.screen import Screen
from ..admin.timing import HistogramSnapshot
from ..config import Config, ConfigError, lanes_mode, load_config, summary
from ..core.screen.lanes import LaneMode
from ..config.tls import server_context
from ..app import Components, build_components, reconfigure, restart_needed
from ..core.engine import Engine
from ..core.screen.conns import overdue
from ..core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP
from .fraud import FraudService
from .logsetup import configure_logging, flush_logs, get_logger, info_writer
from .lanes import LaneSockets
from .pipeline import Pipeline
from .tcp import TcpConnection
from .tls import TlsConnection
from .trace import TraceService
from .udp import UdpProtocol

log = get_logger("sbc.io.server")
_info = info_writer("sbc.io.server")

SWEEP_INTERVAL = 5.0
SUMMARY_INTERVAL = 60.0


class Server:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop | None = None,
                 config_path: str | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.loop = loop or asyncio.get_running_loop()
        self.parts: Components = build_components(cfg, self.loop)
        self.engine: Engine = self.parts.engine
        self.engine.on_event = self._event
        self.fraud = FraudService(cfg, self.engine, self.parts.store, self.loop.time)  # toll fraud
        self.pipeline = Pipeline(self.engine, self.loop,
                                 public_v6=_family(cfg.public.host) == socket.AF_INET6)
        self.conns = self.pipeline.conns
        self.trace = TraceService(cfg, self.pipeline, self._gateway_of)  # per-call trace, HEP
        self.tcp_conns = self.conns[PUBLIC_TCP]
        self.tls_conns = self.conns[PUBLIC_TLS]
        self.tls_context: ssl.SSLContext | None = None
        self._public_udp: asyncio.DatagramTransport | None = None
        self._egress: list[asyncio.DatagramTransport] = []
        self._public_proto: UdpProtocol | None = None
        self._lanes: LaneSockets | None = None
        self._lane_stats: dict[str, int] = {}
        self._tcp_server: asyncio.base_events.Server | None = None
        self._tls_server: asyncio.base_events.Server | None = None
        self._stopped = asyncio.Event()
        self.persist_interval = float(cfg.calls.persist_interval_s)
        self._persisting = False  # a slice of the dialog batch is due on the next loop turn
        self._admin: Any = None
        self._last_summary: dict[str, dict[str, int]] = {}
        self.summary_interval = float(cfg.logging.summary_interval_s)
        self._next_summary = self.loop.time() + self.summary_interval

    @property
    def screen(self) -> Screen:
        screen = self.engine.screen
        assert screen is not None  # the app always builds one
        return screen

    @property
    def timer(self) -> PacketTimer:
        return self.pipeline.timer

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.cfg
        loop = self.loop
        try:
            for i, (host, port) in enumerate(self.engine.egresses):
                transport, _ = await loop.create_datagram_endpoint(
                    _udp(self.pipeline, PRIVATE + i), local_addr=(host, port), family=_family(host),
                )
                self._egress.append(transport)
            self.pipeline.egress = list(self._egress)
            mode, lanes = lanes_mode(cfg), cfg.lanes
            if mode is not LaneMode.OFF and lanes.trusted_port is not None:
                self._lanes = LaneSockets(
                    loop, cfg.public.host, cfg.public.port, lanes.trusted_port, mode,
                    self.pipeline.datagram_handler(PUBLIC_UDP), self.parts.trusted.trusted,
                    budget=lanes.untrusted_budget, check_every=lanes.trusted_check_every,
                    backlog_max=lanes.stranger_backlog, reuse_port=cfg.public.reuse_port)
                self.pipeline.public_udp = self._lanes.sender
            elif "udp" in cfg.public.transports:
                self._public_udp, self._public_proto = await loop.create_datagram_endpoint(
                    _udp(self.pipeline, PUBLIC_UDP),
                    local_addr=(cfg.public.host, cfg.public.port),
                    family=_family(cfg.public.host), reuse_port=cfg.public.reuse_port,
                )
                self.pipeline.public_udp = self._public_udp
            if "tcp" in cfg.public.transports:
                self._tcp_server = await loop.create_server(
                    lambda: TcpConnection(self.pipeline, *self._stream_sizes()),
                    cfg.public.host, cfg.public.port,
                    reuse_address=True, family=_family(cfg.public.host), backlog=1024,
                    reuse_port=cfg.public.reuse_port,
                )
            if cfg.public.tls:
                # Accepted as plain TCP: the connection drives its own handshake.
                try:
                    self.tls_context = server_context(cfg.tls)
                except (OSError, ValueError) as e:  # the files changed since the check
                    raise OSError(f"tls: {e}") from None
                self._tls_server = await loop.create_server(
                    lambda: TlsConnection(self.pipeline, *self._stream_sizes(), self._tls_context()),
                    cfg.public.host,
                    cfg.public.tls_port, reuse_address=True, family=_family(cfg.public.host),
                    backlog=1024, reuse_port=cfg.public.reuse_port,
                )
        except OSError:
            self._close_sockets()
            raise
        pipeline = self.pipeline
        pipeline.every(SWEEP_INTERVAL, self._sweep)
        pipeline.every(self.engine.conn_limits.sweep_interval, self._sweep_conns)
        pipeline.every(self.persist_interval, self._persist)
        self.fraud.start(pipeline.every, pipeline.send_all)
        self.trace.start()
        await self.parts.start()
        self._log_lanes()
        if cfg.admin.enabled:
            try:
                from ..admin.app import start_admin  # aiohttp only with the admin on
                self._admin = await start_admin(self, cfg.admin)
            except OSError:
                self._close_sockets()
                raise
        if cfg.admin.enabled or len(self.engine.health) > 1:
            # for /readyz, and to choose among several VOS3000s: the first
            # round goes out now, before sbc says it is serving
            self.engine.start_pings(loop.time())
            pipeline.tick()

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
        self._close_lanes()
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
        await self.fraud.stop()
        self.trace.stop()
        await self.parts.stop()
        self._close_sockets()

    def _log_lanes(self) -> None:
        """Which lane mode runs: off, two ports, or kernel steering (which
        falls back to two ports when the ruleset could not be loaded)."""
        cfg = self.cfg
        mode = lanes_mode(cfg)
        fields: dict[str, Any] = {"mode": mode.value}
        if mode is not LaneMode.OFF:
            fields.update(public_port=cfg.public.port, trusted_port=cfg.lanes.trusted_port,
                          untrusted_budget=cfg.lanes.untrusted_budget)
        if mode is LaneMode.KERNEL and not self.parts.kernel_ok:
            fields.update(mode=LaneMode.TWO_PORTS.value, steering="nftables ruleset not loaded")
        log.info("lanes", **fields)

    def _close_lanes(self) -> None:
        if self._lanes is not None:
            self._lane_stats = self._lanes.stats()  # for the closing line
            self._lanes.close()
            self._lanes = None

    def _close_sockets(self) -> None:
        self.pipeline.stop()
        self._close_lanes()
        for t in (*self._egress, self._public_udp):
            if t is not None:
                t.close()
        self._egress = []
        self._public_udp = None
        self.pipeline.egress = []
        self.pipeline.public_udp = None
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
        reconfigure(self.parts, new)
        self.fraud.configure(new)
        self.trace.configure(new)
        self.cfg = new
        self.tls_context = tls_context
        self.pipeline.rearm()
        configure_logging(new.logging.format, new.logging.level)
        log.info("reloaded", **summary(new))
        return True, "reloaded"

    # ------------------------------------------------------------------ periodic work

    def _stream_sizes(self) -> tuple[int, int]:
        lim = self.cfg.limits
        return lim.max_tcp_message, lim.tcp_buffer

    def _persist(self, now: float) -> None:
        """Take the batch of dialog changes and write it a slice per loop
        turn (sbc.state.dialogs: no transaction long enough to hold up calls)."""
        self.parts.dialogs.take()
        if not self._persisting:
            self._persisting = True
            self._persist_step()
        flush_logs()

    def _persist_step(self) -> None:
        try:
            more = self.parts.dialogs.step()
        except Exception as e:  # a full disk must not stop the calls
            log.error("persist_failed", error=str(e))
            more = self.parts.dialogs.backlogged
        if more:
            self.loop.call_soon(self._persist_step)
        else:
            self._persisting = False

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls_context is not None
        return self.tls_context

    def _sweep_conns(self, now: float) -> None:
        """Close the connections that missed a deadline (handshake, message,
        first message, idle): run often enough for the shortest deadline."""
        limits = self.engine.conn_limits
        late = [(conn, reason) for conns in self.conns.values() for conn in conns.values()
                if (reason := overdue(conn.clock, limits, now)) is not None]
        for conn, reason in late:
            conn.abort(reason)

    def _sweep(self, now: float) -> None:
        """Housekeeping and the periodic summary."""
        try:
            self.parts.housekeeping(now)
        except Exception as e:  # the store failing must not stop the housekeeping timer
            log.error("housekeeping_failed", error=str(e))
        if now >= self._next_summary:
            self._next_summary = now + self.summary_interval
            self._log_summary()

    # ------------------------------------------------------------------ logs

    def _gateway_of(self, host: str, port: int) -> str | None:
        gateways = self.engine.gateways
        return gateways.by_source(host, port) if gateways is not None else None

    def _event(self, event: str, **fields: Any) -> None:
        if self.pipeline.trace is not None:
            self.trace.event(event, fields)
        if event == "internal_error":
            log.error(event, **fields)
        else:
            _info(event, fields)  # call_setup / call_end: two lines per call

    def _log_summary(self) -> None:
        """One aggregated line for what happened since the last one, if
        anything: every table of the engine's tally, as deltas."""
        e = self.engine
        now = e.tally.snapshot()
        delta = {k: {n: c - self._last_summary.get(k, {}).get(n, 0) for n, c in v.items()
                     if c != self._last_summary.get(k, {}).get(n, 0)} for k, v in now.items()}
        self._last_summary = now
        top = e.tally.take_top(10)
        if any(delta.values()):
            log.info("summary", interval_s=self.summary_interval, transactions=len(e.txs),
                     dialogs=len(e.dialogs), tcp_connections=len(self.tcp_conns),
                     tls_connections=len(self.tls_conns),
                     bans=len(e.bans), top_dropped_sources=top,
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
        ok, details = self.engine.health.state(self.loop.time())
        if self.parts.cluster is not None:  # degraded without Redis, still serving: still ready
            details = {**details, "cluster": self.parts.cluster.readiness()}
            if self.parts.limits is not None:  # shared, or each limit ÷ live nodes
                details["cluster"]["limits"] = self.parts.limits.readiness()
            if self.parts.registrations is not None:  # shared, or each node's own phones
                details["cluster"]["registrations"] = self.parts.registrations.readiness()
            fraud = self.fraud.readiness()
            if fraud is not None:  # the watch's figures shared, or each node counting alone
                details["cluster"]["fraud"] = fraud
        return ok, details

    def registrations(self, limit: int) -> list[dict[str, Any]]:
        """This node's bindings, then the other nodes' (each row names its node)."""
        now = self.loop.time()
        registrar = self.engine.registrar
        node = self.cfg.cluster.node if self.cfg.cluster.enabled else None
        rows: list[dict[str, Any]] = []
        for aor in registrar.aors() if registrar is not None else []:
            for b in registrar.lookup(aor, now) if registrar is not None else []:
                if len(rows) >= limit:
                    return rows
                rows.append({"aor": aor, "node": node, "gateway": b.gateway,
                             "contact": b.contact.decode("utf-8", "replace"),
                             "source": f"{b.source[1]}:{b.source[2]}",
                             "expires_s": round(b.expires_at - now)})
        if self.parts.registrations is not None:
            rows.extend(self.parts.registrations.rows(limit - len(rows)))
        return rows

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

    def stats(self) -> dict[str, Any]:
        """The engine's tally (Tally.snapshot: "verdicts", "screen_drops",
        "drops", "absorbed", "parse_errors", "refusals", "offenses",
        "offenses_spared", "transport", "failovers"), the top dropped sources,
        and the gauges."""
        e = self.engine
        return {
            **e.tally.snapshot(),
            "top_dropped_sources": e.tally.top(10),
            "bans": len(e.bans),
            "udp_public_received": self.pipeline.received(PUBLIC_UDP),
            "lanes": {**(self._lanes.stats() if self._lanes is not None else self._lane_stats),
                      **self.parts.trusted.stats()},
            "transactions": len(e.txs),
            "dialogs": len(e.dialogs),
            "gateways": self.gateway_figures(),
            "tcp_connections": len(self.tcp_conns),
            "tls_connections": len(self.tls_conns),
            **({"cluster": self.parts.cluster.stats()} if self.parts.cluster is not None else {}),
            **({"cluster_limits": self.parts.limits.stats()} if self.parts.limits is not None else {}),
            **({"cluster_registrations": self.parts.registrations.stats()}
               if self.parts.registrations is not None else {}),
        }


def _udp(pipeline: Pipeline, channel: int) -> Callable[[], UdpProtocol]:
    return lambda: UdpProtocol(pipeline, channel)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
