"""`sbc fraud clear` and `sbc fraud show`: the toll-fraud watch from the command
line, through the state file (a running sbc applies a clear within seconds;
a stopped one when it starts)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from .config import Config

_NAME = re.compile(r"\*|[A-Za-z0-9_.-]{1,64}")
_BY = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fraud", help="the toll-fraud watch: show blocks, clear one by hand")
    fraud = p.add_subparsers(dest="fraud_command", required=True)
    p = fraud.add_parser("clear", help="lift a block and restart the counters of a gateway "
                                       "under a rule (a running sbc applies it within seconds)")
    p.add_argument("--config", required=True, help="YAML config file (for its state file)")
    p.add_argument("--gateway", required=True, help='gateway name, or "*" for all')
    p.add_argument("--rule", required=True, help='rule name, or "*" for all')
    p.add_argument("--by", default="cli", help="who clears it (kept in the state file)")
    p.add_argument("--note", default="", help="why (kept in the state file)")
    p = fraud.add_parser("show", help="blocks in force and recent clears, from the state file")
    p.add_argument("--config", required=True, help="YAML config file (for its state file)")


def command(cfg: Config, args: argparse.Namespace) -> int:
    from .state.store import Store, StoreError
    from .state.fraud import request_clear

    try:
        store = Store(cfg.state.path)
    except StoreError as e:
        print(f"sbc: {e}", file=sys.stderr)
        return 1
    with store:
        try:
            if args.fraud_command == "show":
                return _show(store)
            for what, value, pattern in (("gateway", args.gateway, _NAME),
                                         ("rule", args.rule, _NAME), ("by", args.by, _BY)):
                if not pattern.fullmatch(value):
                    print(f"sbc: not a {what}: {value!r}", file=sys.stderr)
                    return 2
            if len(args.note) > 500:
                print("sbc: the note is longer than 500 characters", file=sys.stderr)
                return 2
            n = request_clear(store, args.gateway, args.rule, args.by, args.note)
        except StoreError as e:
            print(f"sbc: {e}", file=sys.stderr)
            return 1
    print(f"clear #{n} of gateway {args.gateway!r} under rule {args.rule!r} by {args.by!r} "
          "written; a running sbc applies it within seconds")
    return 0


def _show(store: object) -> int:
    from .state.store import Store

    assert isinstance(store, Store)
    wall = time.time()
    for rec in store.load_fraud():
        block = rec.get("block")
        if block is None:
            continue
        until = block.get("until")
        if until is not None and until <= wall:
            continue
        print(json.dumps({"gateway": rec.get("gateway"), "rule": rec.get("rule"),
                          "metric": block.get("metric"), "figure": block.get("figure"),
                          "threshold": block.get("threshold"),
                          "calls": [c[0] for c in block.get("calls", ())],
                          "clears_in_s": None if until is None else round(until - wall)}))
    for row in store.fraud_clears(limit=20):
        print(json.dumps({"cleared": row.gateway, "rule": row.rule, "by": row.by,
                          "note": row.note, "requested_wall": row.requested_wall,
                          "applied": row.applied_wall > 0, "lifted_block": row.lifted}))
    return 0
