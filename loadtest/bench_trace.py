"""What the call trace and HEP cost per call, in memory (bench_engine's calls).

Each run is one `bench_engine.Bench` (a fresh sbc, 1,000 CPS simulated) in a
mode: `off` (no capture), `ring` (the ring of sbc.io.trace, 32 MiB) or `hep`
(the ring and the real HEP sender: its queue, its batches and the encoder,
with a transport that drops the packets instead of a socket, and the loop
turn run after each message, the most pessimistic batching). The modes
alternate within a repeat (off, ring, hep, off, ring, hep, ...), so a busy
moment of the machine falls on all of them; the figure is the median, with
the spread (lowest to highest) beside it.

The time counted is CPU time of the process's one thread inside sbc's code
(bench_engine's count: the engine, its logging and persistence, and here
the capture and the HEP batch), not wall time: on a shared machine waiting
is not counted. The automatic garbage collector is off, as `sbc run` has it
(sbc.io.gcpolicy).

`--capture-only` times the capture alone: one run's messages are recorded
as the pipeline hands them over, then replayed into a fresh capture per
mode, so the engine's own variation (and its interplay with the ring's
memory) is left out; a figure with a spread of a few per cent, for choosing
among changes to sbc.io.trace, sbc.io.hep and sbc.trace.

`--against DIR` measures another checkout (`git worktree add DIR REV`)
beside this one, one process per tree and repeat, alternated, and prints
both side by side:

    python loadtest/bench_trace.py [--modes off,ring,hep] [--repeat 5]
    python loadtest/bench_trace.py --against /tmp/base --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from time import thread_time
from typing import Any

import bench_engine
from bench_engine import Bench

MODES = ("off", "ring", "hep")


class _Loop:
    """The event loop, as far as the HEP sender uses it, on the bench's
    simulated clock: callbacks wait for the next loop turn (after each
    message), timers for theirs."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.timers: list[tuple[float, Callable[..., Any], tuple[Any, ...]]] = []

    def call_soon(self, cb: Callable[..., Any], *args: Any) -> None:
        self.ready.append((cb, args))

    def call_later(self, delay: float, cb: Callable[..., Any], *args: Any) -> None:
        at = self.clock.now + delay
        self.timers.append((at, cb, args))
        self.next_at = min(self.next_at, at)

    next_at = float("inf")

    def turn(self) -> None:
        now = self.clock.now
        if self.next_at <= now:
            due = [t for t in self.timers if t[0] <= now]
            self.timers = [t for t in self.timers if t[0] > now]
            self.next_at = min((t[0] for t in self.timers), default=float("inf"))
            self.ready += [(cb, args) for _at, cb, args in due]
        while self.ready:
            ready, self.ready = self.ready, []
            for cb, args in ready:
                cb(*args)

    def drain(self) -> None:
        """The end of a run: whatever still waits."""
        self.clock.now += 3600
        self.turn()


class _Drain:
    """A connected transport that takes every packet and sends none."""

    packets = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.packets += 1

    def write(self, data: bytes) -> None:
        self.packets += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _arm(bench: Bench, mode: str) -> Any:
    """Give `bench` the capture of `mode` (none for "off"); (loop, HEP sender) or None."""
    if mode == "off":
        return None
    from sbc.config.trace import HepConfig
    from sbc.io.hep import HepSender
    from sbc.io.trace import Capture
    from sbc.trace.ring import TraceRing

    cap = Capture(bench.clock.time, lambda ch: ("127.0.0.1", 5060))
    cap.ring = TraceRing(32 << 20, 20_000, 256 << 10, 0.1)
    bench.capture = cap
    if mode != "hep":
        return None
    loop = _Loop(bench.clock)
    sender = HepSender(HepConfig(enabled=True, capture_id=1, queue=100_000), loop)  # type: ignore[arg-type]
    sender._transport = _Drain()  # as if connected: the bench keeps sockets out
    cap.hep = sender
    bench.loop_turn = loop.turn
    return loop, sender


def _run(mode: str, calls: int, hold: int) -> float:
    """µs of CPU per call of one run in `mode`."""
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        hep = _arm(bench, mode)
        cpu = bench.run(calls, hold, 1000.0)
        if bench.failed:
            raise SystemExit(f"{bench.failed} calls failed in mode {mode}: not comparable")
        if hep is not None:
            loop, sender = hep
            started = thread_time()
            loop.drain()
            cpu += thread_time() - started
        if hep is not None and (sender.lost or sender.queue):
            raise SystemExit(f"HEP lost {sender.lost}, left {len(sender.queue)}: not comparable")
    return cpu / calls * 1e6


class _Recorder:
    """Stands in for the capture during a run: keeps what it is handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, tuple[Any, ...]]] = []

    def message(self, *args: Any) -> None:
        self.calls.append((True, args))

    def sent(self, *args: Any) -> None:
        self.calls.append((False, args))


def _replay(mode: str, calls: list[tuple[bool, tuple[Any, ...]]], n_calls: int) -> float:
    """µs of CPU per call of the capture alone in `mode`, over recorded input."""
    bench = types.SimpleNamespace(clock=types.SimpleNamespace(now=1000.0, time=lambda: 1000.0),
                                  capture=None, loop_turn=None)
    hep = _arm(bench, mode)  # type: ignore[arg-type]
    cap, turn = bench.capture, bench.loop_turn
    if cap is None:
        return 0.0
    message, sent = cap.message, cap.sent
    started = thread_time()
    for i, (is_message, args) in enumerate(calls):
        if is_message:
            message(*args)
        else:
            sent(*args)
        if turn is not None:
            bench.clock.now = 1000.0 + i * 0.001 / 8  # some 8 messages a call, 1,000 CPS
            turn()
    if hep is not None:
        hep[0].drain()
    return (thread_time() - started) / n_calls * 1e6


def _capture_only(args: argparse.Namespace) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        bench.capture = recorder = _Recorder()  # type: ignore[assignment]
        bench.run(args.calls, args.hold_calls, 1000.0)
    got: dict[str, list[float]] = {m: [] for m in args.modes if m != "off"}
    for _ in range(args.repeat):
        for mode in got:
            got[mode].append(_replay(mode, recorder.calls, args.calls))
    return got


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.1f} ({min(xs):.0f}-{max(xs):.0f})"


def _report(got: dict[str, list[float]], label: str = "") -> None:
    """Medians and spreads; beside each mode, what it adds to "off": the
    median of the differences within a repeat (the runs that ran side by
    side), as µs and as a share of the median "off"."""
    offs = got.get("off") or []
    off = statistics.median(offs) if offs else None
    for mode, xs in got.items():
        extra = ""
        if off and mode != "off":
            deltas = [on - o for on, o in zip(xs, offs)]
            d = statistics.median(deltas)
            extra = (f"  adds {d:+.1f} us ({min(deltas):+.0f} to {max(deltas):+.0f}), "
                     f"{d / off * 100:+.1f} %")
        print(f"{label}{mode:>5}: {_spread(xs)} us/call{extra}", flush=True)


def _against(args: argparse.Namespace) -> int:
    """One process per tree and repeat, alternated; medians side by side."""
    trees = {"old": str(Path(args.against).resolve()),
             "new": str(Path(args.code).resolve() if args.code else bench_engine.REPO)}
    modes = [m for m in args.modes if m != "off" or not args.capture_only]
    got: dict[str, dict[str, list[float]]] = {t: {m: [] for m in modes} for t in trees}
    for i in range(args.repeat):
        for tree, code in trees.items():
            out = subprocess.run(
                [sys.executable, __file__, "--code", code, "--repeat", "1", "--json",
                 *(["--capture-only"] if args.capture_only else []),
                 "--calls", str(args.calls), "--hold-calls", str(args.hold_calls),
                 "--modes", ",".join(args.modes)],
                check=True, capture_output=True, text=True).stdout
            runs = json.loads(out.strip().splitlines()[-1])
            for mode, xs in runs.items():
                got[tree][mode] += xs
            print(f"repeat {i + 1} {tree}: " + ", ".join(
                f"{m} {xs[0]:.1f}" for m, xs in runs.items()), flush=True)
    print(f"median (lowest-highest) of {args.repeat}, {args.calls} calls a run, "
          f"us of CPU per call in {'the capture alone' if args.capture_only else 'sbc code'}:")
    for tree, code in trees.items():
        print(f"{tree} ({code})")
        _report(got[tree], "  ")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000, help="calls per run (default 20000)")
    ap.add_argument("--hold-calls", type=int, default=1000,
                    help="calls placed while one is held (default 1000: 1 s at 1,000 CPS)")
    ap.add_argument("--repeat", type=int, default=5, help="repeats; medians shown (default 5)")
    ap.add_argument("--modes", default="off,ring,hep",
                    type=lambda s: [m for m in s.split(",") if m],
                    help="modes, alternated in each repeat (default off,ring,hep)")
    ap.add_argument("--code", help="import sbc from this checkout instead of this repository")
    ap.add_argument("--against", help="another checkout to measure beside this one")
    ap.add_argument("--capture-only", action="store_true",
                    help="time the capture alone over one run's recorded messages")
    ap.add_argument("--json", action="store_true", help="print the runs as JSON (for --against)")
    args = ap.parse_args(argv)
    if any(m not in MODES for m in args.modes):
        ap.error(f"modes are {', '.join(MODES)}")
    if args.against:
        return _against(args)
    gc.disable()
    if args.capture_only:
        got = _capture_only(args)
        if args.json:
            print(json.dumps(got))
        else:
            print(f"capture alone, median (lowest-highest) of {args.repeat}, {args.calls} calls:")
            _report(got)
        return 0
    got = {m: [] for m in args.modes}
    for i in range(args.repeat):
        for mode in args.modes:
            got[mode].append(_run(mode, args.calls, args.hold_calls))
            if not args.json:
                print(f"run {i + 1} {mode}: {got[mode][-1]:.1f} us/call", flush=True)
    if args.json:
        print(json.dumps(got))
        return 0
    import sbc
    print(f"sbc from {Path(sbc.__file__).parent}; median (lowest-highest) of {args.repeat}, "
          f"{args.calls} calls a run, us of CPU per call in sbc's code:")
    _report(got)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
