"""The fresh-source flood in memory: CPU per datagram of sbc's UDP receive path.

Every datagram goes to the public UDP socket's `datagram_received` (the
`UdpProtocol` the loop calls, built on sbc's own `Pipeline` and engine from
`build_components`), so it passes exactly what a real one passes: the
pipeline's counters and clock, the ban check, the screen (rate buckets,
scanner signatures, untrusted OPTIONS, unknown sources) and the engine's
tally. Only the socket read itself is left out.

The configuration is the flood benchmark's (loadtest/flood/bench_flood.py):
one gateway, 127.0.0.1, no digest account, everything else sbc's defaults
(`screen:` and `bans:` included). The flood is the many-sources one: each
datagram from another address of 127.1.0.0 + i (`--sources`, 1,000,000),
cycling, at `--rate` packets per second of simulated time (the loop's clock
is the bench's: time is passed in). The host strings are made afresh for
every run, as the loop makes one per datagram (a string caches its hash, so
reused ones would flatter any table lookup). The housekeeping sweep (bans,
offenses, rate buckets) runs every 5 simulated seconds, as in the server.

CPU time of the process (`time.process_time`) over the datagrams only;
the machine may be shared, so wall time says nothing. Each run uses a fresh
sbc; the table shows the median and the spread (min-max) of `--repeat` runs
per kind. The collector is off and start-up frozen, as sbc runs
(sbc.io.gcpolicy).

    .venv/bin/python loadtest/bench_screen.py [--kinds invite,options] [--packets 1000000]
        [--sources 1000000] [--rate 300000] [--repeat 5] [--code DIR] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _code_dir(argv: list[str]) -> Path:
    """Where `sbc` is imported from: --code DIR (another checkout, e.g. a
    `git worktree` of the revision to compare with), else this repository."""
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--code="):
            return Path(arg.split("=", 1)[1]).resolve()
    return REPO


CODE = _code_dir(sys.argv[1:])
sys.path.insert(0, str(CODE))
sys.path.insert(1, str(REPO))  # the flood's payloads (loadtest.flood.generator)

import sbc  # noqa: E402
from sbc.app import build_components  # noqa: E402
from sbc.config.load import parse_config  # noqa: E402
from sbc.core.verdict import PUBLIC_UDP  # noqa: E402
from sbc.io.logsetup import configure_logging  # noqa: E402
from sbc.io.pipeline import Pipeline  # noqa: E402
from sbc.io.udp import UdpProtocol  # noqa: E402

from loadtest.flood.generator import invite_unknown, scanner_options  # noqa: E402

SBC = ("127.0.0.10", 5060)
SWEEP_INTERVAL = 5.0  # sbc.io.server's housekeeping interval

CONFIG = """
public: {{host: {host}, port: {port}, transports: [udp, tcp]}}
private: {{host: 127.0.0.11, port: 5080}}
backend: {{host: 127.0.0.20, port: 5070}}
sip: {{t1_ms: 500, invite_timeout_s: 32}}
logging: {{format: json, level: info}}
gateways:
- name: gw
  ip: [127.0.0.1]
admin: {{enabled: false}}
state: {{path: {state}}}
"""

PAYLOADS = {"invite": invite_unknown, "options": scanner_options}
POOL = 1024  # distinct payloads per kind (their packet numbers differ)


class _Loop:
    """The loop as the pipeline uses it: its clock (simulated), and a timer
    that is never due (dropped datagrams arm none)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> Any:
        class _Handle:
            def cancel(self) -> None:
                pass

        return _Handle()


def payloads(kind: str) -> list[bytes]:
    template = PAYLOADS[kind](SBC, "127.1.0.0")
    return [template.replace(b"{{N}}", b"%010d" % n) for n in range(POOL)]


def addresses(first: int, count: int, sources: int) -> list[tuple[str, int]]:
    """`count` source addresses from 127.1.0.0 + first, cycling over `sources`:
    new string objects every call."""
    base = (127 << 24) | (1 << 16)
    out = []
    for i in range(first, first + count):
        a = base + i % sources
        out.append((f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}", 5060))
    return out


def one_run(kind: str, packets: int, sources: int, rate: float, workdir: Path,
            profile: cProfile.Profile | None = None) -> dict[str, Any]:
    cfg = parse_config(CONFIG.format(host=SBC[0], port=SBC[1], state=workdir / "state.sqlite"))
    loop = _Loop()
    parts = build_components(cfg, loop)  # type: ignore[arg-type]
    engine = parts.engine
    engine.on_event = lambda event, **fields: None
    pipeline = Pipeline(engine, loop)  # type: ignore[arg-type]
    proto = UdpProtocol(pipeline, PUBLIC_UDP)
    receive = proto.datagram_received
    datas = payloads(kind)
    addrs = addresses(0, packets, sources)
    step = 1.0 / rate
    start = loop.now
    next_sweep = start + SWEEP_INTERVAL
    gc.collect()
    gc.freeze()
    gc.disable()
    chunk = 1000  # datagrams between two readings of the clock
    spent = 0.0
    try:
        if profile is not None:
            profile.enable()
        for lo in range(0, packets, chunk):
            hi = min(packets, lo + chunk)
            t0 = time.process_time()
            for i in range(lo, hi):
                loop.now = start + i * step
                receive(datas[i & (POOL - 1)], addrs[i])
            if loop.now >= next_sweep:
                parts.housekeeping(loop.now)
                next_sweep += SWEEP_INTERVAL
            spent += time.process_time() - t0
        if profile is not None:
            profile.disable()
    finally:
        gc.enable()
        gc.unfreeze()
    # The loop's own cost (the clock, the index) is the bench's, not sbc's.
    overhead = _loop_overhead(min(packets, 200_000), step, datas, addrs)
    tally = engine.tally
    screen = engine.screen
    result = {
        "kind": kind,
        "packets": packets,
        "cpu_s": spent,
        "us_per_packet": (spent - overhead * packets) / packets * 1e6,
        "loop_us": overhead * 1e6,
        "screen_drops": {str(k): v for k, v in tally.screen_drops().items()},
        "verdicts": tally.verdict_counts(),
        "offenses": {str(k): v for k, v in tally.offenses.items()},
        "bans": len(engine.bans),
        "offense_records": len(engine.bans.offenses),
        "per_ip": len(screen.per_ip) if screen is not None else 0,
        "per_net": len(screen.per_net) if screen is not None else 0,
    }
    parts.close()
    return result


def _loop_overhead(n: int, step: float, datas: list[bytes], addrs: list[tuple[str, int]]) -> float:
    """Seconds per datagram of the bench's own loop (the clock, the indexing),
    without the call: the call is what the loop pays to reach sbc."""
    loop = _Loop()
    start = loop.now
    t0 = time.process_time()
    for i in range(n):
        loop.now = start + i * step
        datas[i & (POOL - 1)], addrs[i]  # noqa: B018
    return (time.process_time() - t0) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", default="invite,options",
                   help="payloads, comma-separated: invite (INVITE from an unknown source), "
                        "options (scanner OPTIONS)")
    p.add_argument("--packets", type=int, default=1_000_000, help="datagrams per run")
    p.add_argument("--sources", type=int, default=1_000_000, help="distinct source addresses")
    p.add_argument("--rate", type=float, default=300_000.0,
                   help="packets per second of simulated time")
    p.add_argument("--repeat", type=int, default=5, help="runs per kind; medians")
    p.add_argument("--code", default=None, help="import sbc from this checkout")
    p.add_argument("--profile", default=None, help="cProfile the last run of each kind into FILE.KIND")
    p.add_argument("--json", default=None, help="write every run and the medians")
    args = p.parse_args(argv)
    configure_logging("json", "info", stream=open("/dev/null", "w"))  # noqa: SIM115
    print(f"sbc from {Path(sbc.__file__).resolve().parent}"
          f" ({'compiled' if _compiled() else 'pure Python'})", flush=True)
    out: dict[str, Any] = {"code": str(CODE), "runs": {}, "median": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        for kind in args.kinds.split(","):
            runs = []
            for n in range(args.repeat):
                workdir = Path(tmp) / f"{kind}-{n}"
                workdir.mkdir()
                prof = cProfile.Profile() if args.profile and n == args.repeat - 1 else None
                run = one_run(kind, args.packets, args.sources, args.rate, workdir, prof)
                if prof is not None:
                    prof.dump_stats(f"{args.profile}.{kind}")
                runs.append(run)
                print(f"  {kind} run {n + 1}: {run['us_per_packet']:.3f} us/pkt"
                      f" (loop {run['loop_us']:.3f} us) drops={run['screen_drops']}"
                      f" offenses={run['offenses']} records={run['offense_records']}"
                      f" per_ip={run['per_ip']} per_net={run['per_net']}", flush=True)
            us = [r["us_per_packet"] for r in runs]
            med = statistics.median(us)
            out["runs"][kind] = runs
            out["median"][kind] = med
            rows.append((kind, med, min(us), max(us), 1e6 / med if med > 0 else 0.0))
    print(f"{'kind':>8} {'median us/pkt':>14} {'min':>7} {'max':>7} {'pps/core':>10}")
    for kind, med, lo, hi, pps in rows:
        print(f"{kind:>8} {med:14.3f} {lo:7.3f} {hi:7.3f} {pps:10,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


def _compiled() -> bool:
    """Whether the screen runs compiled (mypyc: an extension module)."""
    from sbc.core.screen import screen as mod

    return not str(mod.__file__).endswith(".py")


if __name__ == "__main__":
    raise SystemExit(main())
