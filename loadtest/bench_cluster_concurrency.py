#!/usr/bin/env python3
"""Concurrency across nodes: never above the limit, counted where VOS3000 is.

    python3 loadtest/bench_cluster_concurrency.py --calls 10000 --nodes 2 \\
        --limit 50 --rate 200 --hold-ms 2000 --sources 8 [--json out.json]

Two (--nodes) sbc nodes share one public port (`public.reuse_port`) and one
gateway's `max_concurrent` through the group's own redis-server
(loadtest/nodes.py). --sources SIPp callers (uac_limit.xml: each call is
answered and hung up after --hold-ms, or refused with 503), each from its
own loopback address, offer --calls calls in all at --rate per second, so
that rate x hold is far above the limit and the limit binds. The VOS3000
stand-in here is a small UDP user agent server that counts the calls in
progress at it: from a call's first INVITE to its BYE, whichever node
carried it. Reported: the most calls ever in progress at once against the
limit, the mean while calls were offered, admitted (answered at the
stand-in) and refused (the nodes' `rejected_gateway_concurrent`), and each
node's share.

Exit status 1 when the most in progress exceeded the limit (or a process
failed). Everything stays on 127.0.0.0/8, SIPp runs are bounded by -m and
-timeout, every process is ended by PID.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.bench_nodes import MAX_SOURCES, caller_source, split_calls
from loadtest.harness import LOOPBACK, REPO, Sipp, free_ports
from loadtest.nodes import GW, NodeGroup

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id"}


class CountingVos:
    """VOS3000 as a UDP UAS in a thread of its own: INVITE -> 100, 200 (SDP,
    Record-Route copied); BYE, CANCEL, OPTIONS -> 200; ACK and responses
    nothing. Counts the calls in progress (first INVITE to BYE) as they
    change, and keeps the most at once and the time-weighted sum."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))
        self.sock.settimeout(0.1)
        self.port = port
        self.open: set[str] = set()
        self.seen: set[str] = set()
        self.most = 0
        self.first = self.last = 0.0  # first INVITE, last change
        self.area = 0.0  # calls in progress x seconds, since the first INVITE
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="vos-counter", daemon=True)

    def start(self) -> CountingVos:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.sock.close()

    def mean(self, until: float) -> float:
        return self.area / (until - self.first) if until > self.first else 0.0

    def _step(self, now: float) -> None:
        if self.first:
            self.area += len(self.open) * (now - self.last)
        else:
            self.first = now
        self.last = now

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            for out in self._answer(data, time.monotonic()):
                self.sock.sendto(out, addr)

    def _answer(self, data: bytes, now: float) -> list[bytes]:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        start, *lines = head.split("\r\n")
        method = start.split(" ", 1)[0]
        if method.startswith("SIP/") or method == "ACK":
            return []
        fields: dict[str, list[str]] = {}
        for line in lines:
            name, sep, _ = line.partition(":")
            if sep:
                key = name.strip().lower()
                fields.setdefault(_COMPACT.get(key, key), []).append(line)
        call = fields["call-id"][0].partition(":")[2].strip()
        to = fields["to"][0]
        if ";tag=" not in to:
            to += f";tag=vos{abs(hash(call)) % 10**8}"
        common = [*fields["via"], fields["from"][0], to, fields["call-id"][0], fields["cseq"][0]]
        if method == "BYE" and call in self.open:
            self._step(now)
            self.open.discard(call)
        if method != "INVITE":
            return [_response("200 OK", common)]
        if call not in self.seen:
            self._step(now)
            self.seen.add(call)
            self.open.add(call)
            self.most = max(self.most, len(self.open))
        sdp = (f"v=0\r\no=vos 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
               "m=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        contact = f"Contact: <sip:vos@{LOOPBACK}:{self.port}>"
        rr = fields.get("record-route", [])
        return [_response("100 Trying", common),
                _response("200 OK", [*common, *rr, contact, "Content-Type: application/sdp"], sdp)]


def _response(status: str, lines: list[str], body: str = "") -> bytes:
    text = "\r\n".join([f"SIP/2.0 {status}", *lines, f"Content-Length: {len(body)}", "", body])
    return text.encode()


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    (backend,) = free_ports(1)
    shares = [n for n in split_calls(args.calls, args.sources) if n]
    budget = args.calls / args.rate + args.hold_ms / 1000 + 30
    group = NodeGroup(root, nodes=args.nodes, backend_port=backend, log_level=args.log_level,
                      limits={"max_concurrent": args.limit})
    callers = []
    for i, n in enumerate(shares):
        source = caller_source(i)
        (port,) = free_ports(1, source)
        per_rate = args.rate * n / args.calls
        callers.append(Sipp(
            f"caller{i}", "uac_limit.xml", root / f"uac{i}", local_ip=source, local_port=port,
            calls=n, timeout_s=budget, remote=group.public, rate=per_rate,
            limit=int(per_rate * (args.hold_ms / 1000 + 1) * 3) + 20,
            duration_ms=args.hold_ms, trace_msg=False))
    vos = CountingVos(backend)
    row: dict[str, Any] = {"calls": args.calls, "nodes": args.nodes, "limit": args.limit,
                           "rate": args.rate, "hold_ms": args.hold_ms, "errors": []}
    results = []
    try:
        vos.start()
        group.start()
        started = time.monotonic()
        for c in callers:
            c.start()
        results = [c.wait() for c in callers]
        row["wall_s"] = round(time.monotonic() - started, 1)
    finally:
        for c in callers:
            c.stop()
        row["errors"] += group.stop()
        vos.close()
    figures = [s.get("gateways", {}).get(GW, {}) for s in group.stopped()]
    row.update(
        most_in_progress=vos.most, held=vos.most <= args.limit,
        mean_in_progress=round(vos.mean(vos.last), 1),
        admitted=len(vos.seen),
        refused=sum(int(f.get("rejected_gateway_concurrent", 0)) for f in figures),
        sipp_ok=sum(r.successful for r in results), sipp_failed=sum(r.failed for r in results),
        admitted_by_node="/".join(str(f.get("admitted", 0)) for f in figures))
    row["errors"] += [r.describe(2000) for r in results if r.returncode not in (0, 1)]
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=10_000,
                   help="calls offered in all (default 10000)")
    p.add_argument("--nodes", type=int, default=2, help="nodes on the shared port (default 2)")
    p.add_argument("--limit", type=int, default=50,
                   help="the gateway's max_concurrent (default 50)")
    p.add_argument("--rate", type=float, default=200.0, help="calls per second offered in all")
    p.add_argument("--hold-ms", type=int, default=2000,
                   help="an answered call's hold (default 2000)")
    p.add_argument("--sources", type=int, default=8, help="caller addresses (default 8)")
    p.add_argument("--log-level", default="info", choices=("info", "debug"),
                   help="sbc log level (its start and stop lines are info)")
    p.add_argument("--json", type=Path, help="write the result to this file")
    args = p.parse_args(argv)
    for message, bad in [
        ("--calls: 1 to 100,000", not 1 <= args.calls <= 100_000),
        ("--nodes: 1 to 8", not 1 <= args.nodes <= 8),
        ("--limit: 1 to 10,000", not 1 <= args.limit <= 10_000),
        ("--rate: up to 2000 cps", not 0 < args.rate <= 2000),
        ("--hold-ms: 0 to 60000", not 0 <= args.hold_ms <= 60_000),
        (f"--sources: 1 to {MAX_SOURCES}", not 1 <= args.sources <= MAX_SOURCES),
    ]:
        if bad:
            p.error(message)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = REPO / "loadtest" / "results" / f"cluster-concurrency-{time.strftime('%Y%m%d-%H%M%S')}"
    row = run(args, root)
    print(json.dumps(row))
    print(f"\n{row['calls']} calls offered to {row['nodes']} nodes at {row['rate']:g} cps, "
          f"{row['hold_ms']} ms hold, max_concurrent {row['limit']}: at most "
          f"{row['most_in_progress']} in progress at VOS3000 (mean {row['mean_in_progress']}), "
          f"{row['admitted']} admitted (by node {row['admitted_by_node']}), "
          f"{row['refused']} refused; SIPp {row['sipp_ok']} ok, {row['sipp_failed']} failed")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1), encoding="utf-8")
    for e in row["errors"]:
        print("error:", e, file=sys.stderr)
    print(f"logs: {root}")
    return 0 if row["held"] and not row["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
