"""What an optional feature costs a whole call, with sockets: sbc with the
feature off against sbc with it on, alternated in one run.

    .venv/bin/python loadtest/bench_features.py --features fraud --rates 500 --duration 10 --repeat 3
    .venv/bin/python loadtest/bench_features.py --features trace,hep --rates 1000 --duration 10 --repeat 3

Features (each compared with the same sbc without it):
  fraud  ten toll-fraud rules every call matches (no prefix, no window,
         thresholds no call reaches): the dearest case, each call counted
         under every rule for every figure
  trace  the call trace ring (`trace.enabled`, its default sizes)
  hep    the ring and HEP v3 export over UDP to a sink socket this benchmark
         opens on loopback and drains (it counts what arrived)
  hep-tcp  the same over TCP to a listening sink (one write per batch)

Each run is `bench_calls.one_run` (SIPp caller -> sbc -> SIPp VOS3000, 1 s
calls, sbc's CPU from /proc per completed call); the configs differ only in
the feature's section.  A measurement, not a test: traffic stays on
loopback, every SIPp run is bounded, every process is ended by PID.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest import bench_calls  # noqa: E402
from loadtest.targets import SbcTarget  # noqa: E402

HIGH = 1_000_000  # a threshold no benchmark call reaches
FEATURES = ("fraud", "trace", "hep", "hep-tcp")


def ten_rules() -> list[dict[str, Any]]:
    """Ten rules every call matches, none of which ever trips."""
    figure = {"warning": HIGH, "critical": HIGH}
    return [{"name": f"r{i}", "thresholds": {
        "calls_per_minute": figure, "concurrent": figure, "calls_per_day": figure,
        "minutes_per_day": figure, "sequential": figure}} for i in range(10)]


class Sink:
    """A UDP socket on loopback that reads and counts datagrams until closed."""

    KIND = socket.SOCK_DGRAM

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, self.KIND)
        self.sock.bind(("127.0.0.1", 0))
        if self.KIND == socket.SOCK_STREAM:
            self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65536)
                self.count += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class TcpSink(Sink):
    """A listening TCP socket on loopback that reads HEP3 streams and counts
    the packets (by their length fields) until closed."""

    KIND = socket.SOCK_STREAM

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = bytearray()
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                at = 0
                while len(buf) - at >= 6:
                    size = int.from_bytes(buf[at + 4:at + 6], "big")
                    if size < 6 or len(buf) - at < size:
                        break
                    at += size
                    self.count += 1
                del buf[:at]


def feature_sets(feature: str, sinks: dict[str, Any]) -> list[str]:
    if feature == "fraud":
        return [f"fraud.rules={ten_rules()!r}"]
    sets = ["trace.enabled=true"]
    if feature in sinks:
        sets += ["hep.enabled=true", "hep.host=127.0.0.1", f"hep.port={sinks[feature].port}"]
        if feature == "hep-tcp":
            sets.append("hep.transport=tcp")
    return sets


def parse(argv: list[str] | None) -> tuple[list[str], argparse.Namespace]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--features", default="fraud")
    known, rest = pre.parse_known_args(argv)
    features = [f.strip() for f in known.features.split(",") if f.strip()]
    bad = [f for f in features if f not in FEATURES]
    if bad or not features:
        raise SystemExit(f"--features: choose from {', '.join(FEATURES)}")
    return features, bench_calls.parse_args(rest)


def main(argv: list[str] | None = None) -> int:
    features, args = parse(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = args.workdir or bench_calls.REPO / "loadtest" / "results" / f"features-{stamp}"
    sinks: dict[str, Any] = {}
    if "hep" in features:
        sinks["hep"] = Sink()
    if "hep-tcp" in features:
        sinks["hep-tcp"] = TcpSink()
    variants = {"off": SbcTarget(args.log_level)}
    for f in features:
        variants[f] = SbcTarget(args.log_level, feature_sets(f, sinks))
    per: dict[str, dict[int, list[float]]] = {v: {r: [] for r in args.rate_list} for v in variants}
    try:
        for rate in args.rate_list:
            for repeat in range(1, args.repeat + 1):
                for name, target in variants.items():
                    run = bench_calls.one_run(rate, repeat, args, root / name, target=target)
                    if run.errors or run.cpu_us_per_call is None:
                        print(f"bench_features: {name} at {rate} cps: {run.errors}",
                              file=sys.stderr)
                        return 1
                    per[name][rate].append(run.cpu_us_per_call)
                    print(f"  {rate:>5} cps {name:>6} run {repeat}: {run.succeeded}/"
                          f"{run.attempted} ok, {run.cpu_us_per_call} us/call", flush=True)
    finally:
        for sink in sinks.values():
            sink.close()
    print("\nsbc CPU per call (median of runs, lowest-highest; against off)")
    for rate in args.rate_list:
        base = statistics.median(per["off"][rate])
        for name in variants:
            vals = per[name][rate]
            med = statistics.median(vals)
            print(f"{rate:>5} cps  {name:>6}: {med:7.1f} us ({min(vals):.1f}-{max(vals):.1f})"
                  f"  {100 * (med - base) / base:+.1f} %")
    for name, sink in sinks.items():
        print(f"HEP packets received by the {name} sink: {sink.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
