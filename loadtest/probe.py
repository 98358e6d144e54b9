#!/usr/bin/env python3
"""A low-rate latency probe: a small SIP caller placed beside SIPp's load.

    python3 loadtest/probe.py --target 127.0.0.10:5060 --local 127.0.0.1:0 \\
        --rate 20 --calls 200 --hold-ms 1000 --seconds 30 [--out probe.json]

It places `--calls` calls at `--rate` per second, each the same call as
SIPp's uac.xml: INVITE (with SDP), [100] [180] 200, ACK, `--hold-ms` of
hold, BYE, 200.  The 200's Record-Route set is honoured (RFC 3261 §12.1.2:
the UAC's route set is the Record-Route list reversed; ACK and BYE carry it
as Route headers and go to the 200's Contact as Request-URI), so ACK and BYE
cross the server as SIPp's do.  Every datagram goes to `--target`.

Per call it measures INVITE sent -> first 100 received and INVITE sent ->
200 received with `time.perf_counter_ns`, stamped when the datagram is taken
off the socket: microsecond resolution, unlike SIPp's -trace_rtt (whole
milliseconds).  A call counts as completed when its BYE got its 200.

Bounds: at most `--calls` calls (≤ 100,000), and the probe stops by itself
`--seconds` after its start whatever is still open (those calls count as
failed).  INVITE and BYE are retransmitted as RFC 3261 timers A and E
(T1 = 500 ms, doubling; for BYE capped at T2 = 4 s).  Target and local
addresses must be in 127.0.0.0/8.

The result is one JSON object (stdout, or `--out`): `placed`, `answered`,
`completed`, `failed`, `invite_100_us` and `invite_200_us` (one value per
call that got one, in order of answer).  `ProbeProcess` runs it as a child
process, so its timing shares no interpreter with the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

T1_NS = 500_000_000
T2_NS = 4_000_000_000
MAX_CALLS = 100_000

SDP = (
    "v=0\r\n"
    "o=probe 1 1 IN IP4 {ip}\r\n"
    "s=-\r\n"
    "c=IN IP4 {ip}\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


def hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r}: give HOST:PORT")
    return host, int(port)


@dataclass
class Response:
    """What the probe reads from a response."""

    status: int
    call_id: str
    cseq_method: str
    to: str
    record_route: list[str]
    contact: str | None


def parse_response(data: bytes) -> Response | None:
    """Status, Call-ID, CSeq method, To, Record-Route entries (in order) and
    the Contact URI of a SIP response; None for anything else."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2 or first[0] != "SIP/2.0" or not first[1].isdigit():
        return None
    values: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            key = {"i": "call-id", "t": "to", "m": "contact"}.get(key, key)
            values.setdefault(key, []).append(value.strip())
    cseq = (values.get("cseq") or [""])[0].split()
    rr = [part.strip() for v in values.get("record-route", []) for part in split_commas(v)]
    contacts = values.get("contact")
    contact = contacts[0] if contacts else None
    if contact is not None and "<" in contact:
        contact = contact[contact.index("<") + 1 : contact.index(">")]
    elif contact is not None:
        contact = contact.split(";", 1)[0]
    return Response(
        int(first[1]),
        (values.get("call-id") or [""])[0],
        cseq[-1] if cseq else "",
        (values.get("to") or [""])[0],
        rr,
        contact,
    )


def split_commas(value: str) -> list[str]:
    """Comma-separated header values, commas inside <...> left alone."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(value):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return [v for v in (s.strip() for s in out) if v]


@dataclass
class Call:
    n: int
    call_id: str
    tag: str
    branch: str
    invite: bytes = b""
    sent_ns: int = 0
    trying_us: float | None = None
    answer_us: float | None = None
    to: str = ""
    target_uri: str = ""
    routes: list[str] = field(default_factory=list)
    ack: bytes = b""
    bye: bytes = b""
    state: str = "calling"  # calling, held, bye, done, failed
    retrans_ns: int = T1_NS
    handle: asyncio.TimerHandle | None = None


class Probe(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int], hold_ms: int, wanted: int) -> None:
        self.target = target
        self.wanted = wanted
        self.hold_s = hold_ms / 1000
        self.transport: asyncio.DatagramTransport | None = None
        self.local = ("127.0.0.1", 0)
        self.calls: dict[str, Call] = {}
        self.answers: list[float] = []
        self.tryings: list[float] = []
        self.placed = self.answered = self.completed = self.failed = 0
        self.open = 0
        self.all_done = asyncio.Event()
        self.stamp = f"{os.getpid()}-{random.getrandbits(32):08x}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    # -- requests

    def headers(self, call: Call, method: str, cseq: int, branch: str, to: str) -> str:
        ip, port = self.local
        return (
            f"Via: SIP/2.0/UDP {ip}:{port};branch={branch};rport\r\n"
            f"From: <sip:probe@{ip}:{port}>;tag={call.tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:probe@{ip}:{port};transport=udp>\r\n"
            "Max-Forwards: 70\r\n"
        )

    def place(self, n: int) -> None:
        ip, _ = self.local
        host, port = self.target
        call = Call(n, f"probe-{self.stamp}-{n}", f"p{n}", f"z9hG4bK-p-{self.stamp}-{n}")
        to = f"<sip:probe{n}@{host}:{port}>"
        body = SDP.format(ip=ip)
        call.invite = (
            f"INVITE sip:probe{n}@{host}:{port} SIP/2.0\r\n"
            + self.headers(call, "INVITE", 1, call.branch, to)
            + "User-Agent: sbc-loadtest-probe\r\n"
            + "Content-Type: application/sdp\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n"
            + body
        ).encode()
        call.to = to
        self.calls[call.call_id] = call
        self.placed += 1
        self.open += 1
        call.sent_ns = time.perf_counter_ns()
        self.send(call.invite)
        self.arm(call, self.retransmit_invite)

    def in_dialog(self, call: Call, method: str, cseq: int, branch: str) -> bytes:
        routes = "".join(f"Route: {r}\r\n" for r in call.routes)
        return (
            f"{method} {call.target_uri} SIP/2.0\r\n"
            + self.headers(call, method, cseq, branch, call.to)
            + routes
            + "Content-Length: 0\r\n\r\n"
        ).encode()

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.target)

    # -- timers

    def arm(self, call: Call, what: Any) -> None:
        loop = asyncio.get_running_loop()
        call.handle = loop.call_later(call.retrans_ns / 1e9, what, call)

    def retransmit_invite(self, call: Call) -> None:
        if call.state != "calling" or call.trying_us is not None:
            return  # a provisional response stops timer A (RFC 3261 §17.1.1.2)
        self.send(call.invite)
        call.retrans_ns *= 2
        self.arm(call, self.retransmit_invite)

    def send_bye(self, call: Call) -> None:
        if call.state != "held":
            return
        call.state = "bye"
        call.bye = self.in_dialog(call, "BYE", 2, call.branch + "-bye")
        call.retrans_ns = T1_NS
        self.send(call.bye)
        self.arm(call, self.retransmit_bye)

    def retransmit_bye(self, call: Call) -> None:
        if call.state != "bye":
            return
        self.send(call.bye)
        call.retrans_ns = min(call.retrans_ns * 2, T2_NS)
        self.arm(call, self.retransmit_bye)

    # -- responses

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter_ns()
        resp = parse_response(data)
        if resp is None:
            return
        call = self.calls.get(resp.call_id)
        if call is None or call.state in ("done", "failed"):
            if call is not None and call.ack and resp.cseq_method == "INVITE":
                self.send(call.ack)  # a 200 retransmitted after the call ended
            return
        if resp.cseq_method == "INVITE":
            self.on_invite_response(call, resp, now)
        elif resp.cseq_method == "BYE" and call.state == "bye" and resp.status >= 200:
            self.finish(call, ok=resp.status < 300)

    def on_invite_response(self, call: Call, resp: Response, now: int) -> None:
        elapsed_us = (now - call.sent_ns) / 1000
        if resp.status < 200:
            if resp.status == 100 and call.trying_us is None:
                call.trying_us = elapsed_us
                self.tryings.append(elapsed_us)
            return
        if resp.status >= 300:
            if call.state == "calling":
                # ACK of a non-2xx final answer: the INVITE's branch and Request-URI.
                host, port = self.target
                ack = (
                    f"ACK sip:probe{call.n}@{host}:{port} SIP/2.0\r\n"
                    + self.headers(call, "ACK", 1, call.branch, resp.to)
                    + "Content-Length: 0\r\n\r\n"
                ).encode()
                self.send(ack)
                self.finish(call, ok=False)
            return
        if call.state != "calling":
            if call.ack:
                self.send(call.ack)  # the 200 again: our ACK was lost
            return
        call.answer_us = elapsed_us
        self.answers.append(elapsed_us)
        self.answered += 1
        call.to = resp.to
        call.target_uri = resp.contact or f"sip:probe{call.n}@{self.target[0]}:{self.target[1]}"
        call.routes = list(reversed(resp.record_route))
        call.ack = self.in_dialog(call, "ACK", 1, call.branch + "-ack")
        self.send(call.ack)
        call.state = "held"
        if call.handle is not None:
            call.handle.cancel()
        call.handle = asyncio.get_running_loop().call_later(self.hold_s, self.send_bye, call)

    def finish(self, call: Call, ok: bool) -> None:
        call.state = "done" if ok else "failed"
        if call.handle is not None:
            call.handle.cancel()
        if ok:
            self.completed += 1
        else:
            self.failed += 1
        self.open -= 1
        if self.open == 0 and self.placed == self.wanted:
            self.all_done.set()

    def result(self) -> dict[str, Any]:
        unfinished = sum(1 for c in self.calls.values() if c.state not in ("done", "failed"))
        return {
            "placed": self.placed,
            "answered": self.answered,
            "completed": self.completed,
            "failed": self.failed + unfinished,
            "local": f"{self.local[0]}:{self.local[1]}",
            "invite_100_us": [round(v, 1) for v in self.tryings],
            "invite_200_us": [round(v, 1) for v in self.answers],
        }


async def run(
    target: tuple[str, int],
    local: tuple[str, int],
    rate: float,
    calls: int,
    hold_ms: int,
    seconds: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(
        lambda: Probe(target, hold_ms, calls), local_addr=local
    )
    start = loop.time()
    handles = [loop.call_at(start + i / rate, probe.place, i) for i in range(calls)]
    try:
        await asyncio.wait_for(probe.all_done.wait(), timeout=seconds)
    except TimeoutError:
        pass
    finally:
        for h in handles:
            h.cancel()
        for call in probe.calls.values():
            if call.handle is not None:
                call.handle.cancel()
        transport.close()
    return probe.result()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--target", required=True, help="server's public HOST:PORT (loopback)")
    p.add_argument("--local", default="127.0.0.1:0", help="bind HOST:PORT (loopback; port 0: any)")
    p.add_argument("--rate", type=float, default=20.0, help="calls per second (default 20)")
    p.add_argument("--calls", type=int, required=True, help=f"calls to place (1..{MAX_CALLS})")
    p.add_argument("--hold-ms", type=int, default=1000, help="ACK to BYE (default 1000)")
    p.add_argument("--seconds", type=float, required=True, help="stop after this, done or not")
    p.add_argument("--out", type=Path, help="write the JSON result here (default stdout)")
    args = p.parse_args(argv)
    try:
        args.target_addr = hostport(args.target)
        args.local_addr = hostport(args.local)
    except ValueError as e:
        p.error(str(e))
    if not loopback(args.target_addr[0]) or not loopback(args.local_addr[0]):
        p.error("--target and --local must be in 127.0.0.0/8")
    if not 1 <= args.calls <= MAX_CALLS or args.rate <= 0 or not 0 < args.seconds <= 3600:
        p.error(f"--calls 1..{MAX_CALLS}, --rate > 0, --seconds 0..3600")
    if args.hold_ms < 0:
        p.error("--hold-ms >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(
        run(args.target_addr, args.local_addr, args.rate, args.calls, args.hold_ms, args.seconds)
    )
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0 if result["completed"] == args.calls else 1


class ProbeProcess:
    """probe.py as a child process, bounded by its own --seconds; `wait`
    returns its JSON result (and ends it by PID if it overstays)."""

    def __init__(
        self,
        workdir: Path,
        target: tuple[str, int],
        *,
        rate: float,
        calls: int,
        hold_ms: int,
        seconds: float,
        local: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.workdir = workdir
        self.out = workdir / "probe.json"
        self.seconds = seconds
        self.command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--target",
            f"{target[0]}:{target[1]}",
            "--local",
            f"{local[0]}:{local[1]}",
            "--rate",
            f"{rate:g}",
            "--calls",
            str(calls),
            "--hold-ms",
            str(hold_ms),
            "--seconds",
            f"{seconds:g}",
            "--out",
            str(self.out),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProbeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "probe.stderr.log", "wb") as err:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        return self

    def wait(self) -> dict[str, Any]:
        assert self.proc is not None
        try:
            self.proc.wait(self.seconds + 15)
        except subprocess.TimeoutExpired:
            self.stop()
        try:
            result: dict[str, Any] = json.loads(self.out.read_text("utf-8"))
        except (OSError, ValueError):
            result = {}
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


if __name__ == "__main__":
    sys.exit(main())
