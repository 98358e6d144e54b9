"""The engine alone, in memory: CPU per call of the pure core, no sockets.

Calls shaped like SIPp's (loadtest/scenarios/uac.xml as the caller,
tools.standin as VOS3000: INVITE with SDP, 100, 180, 200 with SDP, ACK and
BYE along the Record-Route set, 200) go through `Engine.receive` the way
the transport hands them over, with sbc's own start-up (`build_components`
from a configuration like the call benchmarks', call records written as
JSON lines to /dev/null, dialogs kept in SQLite and flushed once a second
of simulated time). Each call holds `--hold-calls` calls long (1,000 = 1 s
at 1,000 CPS), so the tables are as full as under the real load.

Only the CPU time inside sbc's code is counted (thread CPU time around each call
into the engine: one thread, no waiting), not the caller's or VOS3000's.
What it measures is the part of the per-call CPU that is Python: parsing,
matching, deciding, serialising, logging and persistence. The socket and
loop costs (about half of the total under SIPp) are left out, so a change
to the core shows here with a per cent or two of noise instead of ten.
The figure to quote for an issue is still the one with real peers
(bench_memory.py, compare.py); this one is for choosing among changes.

    python loadtest/bench_engine.py [--calls 20000] [--repeat 5] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import sys
import tempfile
from time import thread_time as perf_counter  # CPU time of this thread: waiting on a busy machine is not counted
from collections import deque
from pathlib import Path

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


sys.path.insert(0, str(_code_dir(sys.argv[1:])))

from sbc.app import build_components  # noqa: E402
from sbc.config.load import parse_config  # noqa: E402
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source  # noqa: E402
from sbc.io.logsetup import configure_logging, info_writer  # noqa: E402
from sbc.sip import parse_message  # noqa: E402
from tools.standin import answer  # noqa: E402

CALLER = ("127.0.0.10", 5061)
SBC_PORT = 5060
VOS = ("127.0.0.1", 5070)

CONFIG = """
public: {{host: 127.0.0.1, port: {sbc_port}, transports: [udp]}}
private: {{host: 127.0.0.1, port: 5062}}
backend: {{host: {vos_host}, port: {vos_port}}}
sip: {{t1_ms: 500, invite_timeout_s: 32}}
logging: {{format: json, level: info}}
gateways:
- name: gw
  ip: [127.0.0.0/8]
admin: {{enabled: false}}
state: {{path: {state}}}
"""

SDP = (b"v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.10\r\ns=-\r\n"
       b"c=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
       b"a=rtpmap:0 PCMU/8000\r\n")


class _Clock:
    """The loop's `time()` for build_components: simulated seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def _invite(n: int) -> bytes:
    host, port = CALLER
    return (
        f"INVITE sip:5551234@127.0.0.1:{SBC_PORT} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-4242-{n}-0;rport\r\n"
        f"From: <sip:caller@{host}:{port}>;tag=4242SIPpTag00{n}\r\n"
        f"To: <sip:5551234@127.0.0.1:{SBC_PORT}>\r\n"
        f"Call-ID: {n}-4242@{host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{host}:{port};transport=UDP>\r\n"
        "Max-Forwards: 70\r\nUser-Agent: sbc-loadtest\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def _in_dialog(method: str, n: int, cseq: int, ok: bytes) -> bytes:
    """ACK or BYE as SIPp's uac.xml sends it after `ok` (rrs="true"): to the
    callee's Contact, along the reversed Record-Route set."""
    msg = parse_message(ok, strict=False)
    routes = [raw.split(b":", 1)[1].strip() for name, raw in msg.headers if name == "record-route"]
    contact = msg.get("contact") or b""
    uri = contact[contact.find(b"<") + 1: contact.find(b">")]
    to = msg.get("to") or b""
    host, port = CALLER
    route = b"".join(b"Route: " + r + b"\r\n" for r in reversed(routes))
    return (
        f"{method} ".encode() + uri + b" SIP/2.0\r\n"
        + f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-4242-{n}-{cseq}{method};rport\r\n".encode()
        + route
        + f"From: <sip:caller@{host}:{port}>;tag=4242SIPpTag00{n}\r\n".encode()
        + b"To: " + to + b"\r\n"
        + f"Call-ID: {n}-4242@{host}\r\nCSeq: {cseq} {method}\r\n".encode()
        + f"Contact: <sip:caller@{host}:{port};transport=UDP>\r\nMax-Forwards: 70\r\n"
          "Content-Length: 0\r\n\r\n".encode()
    )


class Bench:
    def __init__(self, workdir: Path) -> None:
        cfg = parse_config(CONFIG.format(sbc_port=SBC_PORT, vos_host=VOS[0], vos_port=VOS[1],
                                         state=workdir / "state.sqlite"))
        configure_logging("json", "info", stream=open("/dev/null", "w"))  # noqa: SIM115
        self.clock = _Clock()
        self.parts = build_components(cfg, self.clock)  # type: ignore[arg-type]
        self.engine = self.parts.engine
        write = info_writer("sbc")
        self.engine.on_event = lambda event, **fields: write(event, fields)
        self.caller = Source(PUBLIC_UDP, *CALLER)
        self.vos = Source(PRIVATE, *VOS)
        self.messages = 0
        self.failed = 0
        self.spent = 0.0  # seconds inside the engine (and its logging and persistence)

    def _deliver(self, sends: list, now: float) -> list[bytes]:
        """Plays VOS3000 for what sbc sent it; returns what reached the caller."""
        to_caller = []
        queue = deque(sends)
        while queue:
            channel, addr, data = queue.popleft()
            if channel >= PRIVATE:
                for reply in answer(data, VOS[0], VOS[1]):
                    self.messages += 1
                    queue.extend(self._engine(reply, self.vos, now))
            else:
                to_caller.append(data)
        return to_caller

    capture = None  # --trace: sbc.io.trace's capture, as the pipeline calls it
    loop_turn = None  # --trace: what the event loop would run next (the HEP sender's batch)

    def _engine(self, data: bytes, src: Source, now: float) -> list:
        started = perf_counter()
        verdict = self.engine.receive(data, src, now)
        if self.capture is not None:
            self.capture.message(src.channel, data, src.host, src.port, now, verdict)
            if self.loop_turn is not None:
                self.loop_turn()
        self.spent += perf_counter() - started
        return verdict.sends

    def _send(self, data: bytes, now: float) -> list[bytes]:
        self.messages += 1
        return self._deliver(self._engine(data, self.caller, now), now)

    def run(self, calls: int, hold: int, cps: float) -> float:
        """Seconds spent in sbc's code for `calls` calls at `cps` simulated:
        the engine's receive and timers, call records, dialog persistence
        (the caller's and VOS3000's parts are not counted)."""
        pending: deque[tuple[int, bytes]] = deque()
        step = 1.0 / cps
        last_flush = self.clock.now
        for n in range(calls + hold):
            now = self.clock.now = self.clock.now + step
            if n < calls:
                got = self._send(_invite(n), now)
                oks = [d for d in got if d.startswith(b"SIP/2.0 200")]
                if not oks:
                    self.failed += 1
                else:
                    self._send(_in_dialog("ACK", n, 1, oks[-1]), now)
                    pending.append((n, oks[-1]))
            if len(pending) > hold or (n >= calls and pending):
                m, ok = pending.popleft()
                got = self._send(_in_dialog("BYE", m, 2, ok), now)
                if not any(d.startswith(b"SIP/2.0 200") for d in got):
                    self.failed += 1
            started = perf_counter()
            sends = self.engine.on_timer(now)
            if self.capture is not None:
                self.capture.sent(sends, now)
                if self.loop_turn is not None:
                    self.loop_turn()
            if now - last_flush >= 1.0:
                self.parts.dialogs.flush()
                last_flush = now
            self.spent += perf_counter() - started
            self._deliver(sends, now)
        return self.spent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000, help="calls per run (default 20000)")
    ap.add_argument("--hold-calls", type=int, default=1000,
                    help="calls placed while one is held (default 1000: 1 s at 1,000 CPS)")
    ap.add_argument("--repeat", type=int, default=5, help="runs; the median is shown (default 5)")
    ap.add_argument("--code", help="import sbc from this checkout instead of this repository")
    ap.add_argument("--profile", help="write a cProfile of one extra run to this file")
    ap.add_argument("--trace", choices=("ring", "hep"),
                    help="alternate runs without and with the call trace (ring; hep: ring and "
                         "HEP) and compare; loadtest/bench_trace.py has more (old vs new code)")
    args = ap.parse_args(argv)
    if args.trace:
        from bench_trace import main as trace_main
        return trace_main(["--calls", str(args.calls), "--hold-calls", str(args.hold_calls),
                           "--repeat", str(args.repeat), "--modes", f"off,{args.trace}",
                           *(["--code", args.code] if args.code else [])])
    results = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(Path(tmp))
            cpu = bench.run(args.calls, args.hold_calls, 1000.0)
            per_call = cpu / args.calls * 1e6
            results.append(per_call)
            print(f"run {i + 1}: {args.calls} calls, {bench.messages} messages in, "
                  f"{bench.failed} failed, {per_call:.1f} us/call, "
                  f"{cpu / bench.messages * 1e6:.2f} us/message", flush=True)
            if bench.failed:
                print("calls failed: the figures are not comparable", file=sys.stderr)
                return 1
    import sbc
    print(f"sbc from {Path(sbc.__file__).parent}")
    print(f"median of {len(results)}: {statistics.median(results):.1f} us/call (engine only)")
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(Path(tmp))
            prof = cProfile.Profile()
            prof.enable()
            bench.run(args.calls, args.hold_calls, 1000.0)
            prof.disable()
            prof.dump_stats(args.profile)
            print(f"profile written to {args.profile}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
