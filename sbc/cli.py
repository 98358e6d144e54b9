"""Command line: `sbc run`, `sbc check-config`, `sbc firewall render`,
`sbc ban` / `unban` / `bans`. (The demo with a VOS3000 stand-in beside sbc
is `python -m tools.demo`: the stand-in is a test peer, not part of sbc.)"""

from __future__ import annotations

import argparse
import asyncio
import sys

from collections.abc import Awaitable, Callable

import uvloop

from . import fraud_cli
from .build_info import core
from .config import Config, ConfigError, load_config, summary
from .io.gcpolicy import FREEZE_INTERVAL, FullCollection, GcPolicy
from .io.logsetup import configure_logging, flush_logs, get_logger

log = get_logger("sbc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbc", description="SIP front-end for VOS3000")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run sbc")
    p.add_argument("--config", required=True, help="YAML config file")
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file")
    p = sub.add_parser("firewall", help="the kernel layer (nftables / iptables) for a config")
    fw = p.add_subparsers(dest="firewall_command", required=True)
    p = fw.add_parser("render", help="print the ruleset for a config file")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--format", choices=("nftables", "iptables", "ip6tables"), default="nftables")
    p = sub.add_parser("ban", help="ban a source by hand (a running sbc picks it up within seconds)")
    p.add_argument("--config", required=True, help="YAML config file (for its state file)")
    p.add_argument("host", help="IP address")
    p.add_argument("--seconds", type=float, default=86400.0)
    p.add_argument("--reason", default="manual")
    p = sub.add_parser("unban", help="lift a ban by hand")
    p.add_argument("--config", required=True, help="YAML config file (for its state file)")
    p.add_argument("host", help="IP address")
    p = sub.add_parser("bans", help="list bans, with why")
    p.add_argument("--config", required=True, help="YAML config file (for its state file)")
    fraud_cli.add_parser(sub)  # sbc fraud clear / show
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config if args.command != "check-config" else args.file)
    except ConfigError as e:
        print(f"sbc: invalid config: {e}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("config ok: " + ", ".join(f"{k}={v}" for k, v in summary(cfg).items()))
        return 0
    if args.command == "firewall":
        from .firewall import render

        sys.stdout.write(render(cfg, args.format))
        return 0
    if args.command in ("ban", "unban", "bans"):
        return _bans_command(cfg, args)
    if args.command == "fraud":
        return fraud_cli.command(cfg, args)
    configure_logging(cfg.logging.format, cfg.logging.level)
    return uvloop.run(serve(cfg, config_path=args.config))


# Something to run beside sbc until it stops (the demo's VOS3000 stand-in).
Beside = Callable[[asyncio.Event], Awaitable[object]]


async def serve(cfg: Config, config_path: str | None = None, beside: Beside | None = None) -> int:
    """Run sbc until SIGTERM/SIGINT; 1 when a socket cannot be bound."""
    from .io import sdnotify
    from .io.server import Server

    server = Server(cfg, config_path=config_path)
    stop = asyncio.Event()
    standin = None
    if beside is not None:
        standin = asyncio.ensure_future(beside(stop))
    try:
        await server.start()
    except OSError as e:
        log.error("bind_failed", error=str(e))
        flush_logs()
        stop.set()
        return 1
    server.install_signal_handlers()
    collector = GcPolicy(server.loop.time(), on_full=_log_full_collection)
    collector.start()
    server.pipeline.every(FREEZE_INTERVAL, collector.tick)
    log.info("started", **summary(cfg), core=core())
    flush_logs()
    sdnotify.notify("READY=1", "STATUS=serving")  # every socket and the admin are bound
    watchdog = sdnotify.Watchdog(server.loop)
    watchdog.start()
    await server.wait_stopped()
    sdnotify.notify("STOPPING=1")
    watchdog.stop()
    log.info("stopping")
    stop.set()
    await server.stop()
    if standin is not None:
        await standin
    log.info("stopped", **server.stats(), gc_full_collections=collector.fulls,
             gc_cycles_freed=collector.freed)
    flush_logs()
    collector.stop()
    return 0


def _log_full_collection(done: FullCollection) -> None:
    log.info("gc_full", collected=done.collected, pause_ms=round(done.pause_s * 1000, 1),
             tracked=done.tracked)


def _bans_command(cfg: Config, args: argparse.Namespace) -> int:
    import ipaddress
    import json
    import time

    from .state.bans import manual_ban, manual_unban
    from .state.store import Store, StoreError

    try:
        store = Store(cfg.state.path)
    except StoreError as e:
        print(f"sbc: {e}", file=sys.stderr)
        return 1
    with store:
        if args.command == "bans":
            wall = time.time()
            for row in store.load_bans():
                if not row.lifted and row.expires_wall > wall:
                    print(json.dumps({"host": row.host, "reason": row.reason,
                                      "offenses": row.counts, "level": row.level,
                                      "manual": row.manual,
                                      **({"node": row.node} if row.node else {}),
                                      "expires_in_s": round(row.expires_wall - wall)}))
            return 0
        try:
            host = str(ipaddress.ip_address(args.host))
        except ValueError:
            print(f"sbc: not an IP address: {args.host!r}", file=sys.stderr)
            return 2
        if args.command == "ban":
            row = manual_ban(store, host, args.seconds, args.reason)
            print(f"banned {host} for {args.seconds:g} s (level {row.level})")
            return 0
        if manual_unban(store, host):
            print(f"unbanned {host}")
            return 0
        print(f"sbc: {host} is not banned", file=sys.stderr)
        return 1
