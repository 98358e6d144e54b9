"""Command line: `sbc run`, `sbc check-config`, `sbc standin`, `sbc demo`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from .config import Config, ConfigError, load_config, summary
from .logsetup import configure_logging, get_logger
from .sip import split_hostport

log = get_logger("sbc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbc", description="SIP front-end for VOS3000")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run sbc")
    p.add_argument("--config", required=True, help="YAML config file")
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file")
    p = sub.add_parser("standin", help="run only the VOS3000 stand-in (a UDP UAS that answers calls)")
    p.add_argument("--listen", default="127.0.0.1:5070", help="host:port (default 127.0.0.1:5070)")
    p = sub.add_parser("demo", help="run sbc and a VOS3000 stand-in on the config's backend address")
    p.add_argument("--config", default="configs/local.yaml")
    args = parser.parse_args(argv)

    if args.command == "standin":
        configure_logging("console", "info")
        host, port = split_hostport(args.listen.encode())
        return uvloop.run(_standin_only(host, port or 5070))
    try:
        cfg = load_config(args.config if args.command != "check-config" else args.file)
    except ConfigError as e:
        print(f"sbc: invalid config: {e}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("config ok: " + ", ".join(f"{k}={v}" for k, v in summary(cfg).items()))
        return 0
    configure_logging(cfg.logging.format, cfg.logging.level)
    return uvloop.run(_run(cfg, with_standin=args.command == "demo"))


async def _run(cfg: Config, with_standin: bool) -> int:
    from .server import Server
    from .standin import serve

    server = Server(cfg)
    stop = asyncio.Event()
    standin = None
    if with_standin:
        standin = asyncio.ensure_future(serve(cfg.backend.host, cfg.backend.port, stop))
    try:
        await server.start()
    except OSError as e:
        log.error("bind_failed", error=str(e))
        stop.set()
        return 1
    server.install_signal_handlers()
    log.info("started", **summary(cfg))
    await server.wait_stopped()
    log.info("stopping")
    stop.set()
    await server.stop()
    if standin is not None:
        await standin
    log.info("stopped", **server.stats())
    return 0


async def _standin_only(host: str, port: int) -> int:
    import signal

    from .standin import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(host, port, stop)
    return 0
