"""sbc with a VOS3000 stand-in on the config's backend address, in one
process: what `make run` starts (`python -m tools.demo --config FILE`).
"""

from __future__ import annotations

import argparse
import sys

import uvloop

from sbc.cli import serve
from sbc.config import ConfigError, load_config
from sbc.io.logsetup import configure_logging

from .standin import serve as standin


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo", description=__doc__)
    p.add_argument("--config", default="configs/local.yaml")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"demo: invalid config: {e}", file=sys.stderr)
        return 2
    configure_logging(cfg.logging.format, cfg.logging.level)
    host, port = cfg.backend.host, cfg.backend.port
    return uvloop.run(serve(cfg, config_path=args.config,
                            beside=lambda stop: standin(host, port, stop)))


if __name__ == "__main__":
    raise SystemExit(main())
