"""Per-gateway call limits and destination controls through a real sbc process.

    SIPp callers ──udp──► sbc public ─ sbc private ──udp──► VOS3000 stand-in

VOS3000 is SIPp running uas_limits.xml (by the called number it answers and
holds the call, rings until cancelled, or answers 486), except in the CPS
test, where a small asyncio-dgram stand-in notes when each INVITE arrives.

In the concurrency, duration and restart tests every call is its own SIPp
caller (-m 1) with a Call-ID the test chose (-cid_str), so the test can
follow the call in sbc's log and end it when it wants: an answered call is
held until the test sends its caller, or VOS3000, an INFO straight over
loopback (not through sbc); that party then hangs up with a BYE through
sbc.  A ringing call is cancelled on the same cue.  Every wait has a
deadline: SIPp exits, sbc log lines, lines of a SIPp message trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncio_dgram
import pytest

from loadtest.harness import (
    LOOPBACK,
    SbcProcess,
    Sipp,
    SippResult,
    TracedMessage,
    free_ports,
    parse_trace,
    report,
)

from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e

GW = "loopback"
# Bound on any one SIPp of these tests (its -timeout) and on any recv in it.
SIPP_BOUND_S = 90
# Bound on waiting for something sbc or SIPp does in reaction to a step.
STEP_S = 10.0

T = TypeVar("T")


def _limited(**limits: Any) -> dict[str, Any]:
    """Config overrides: the harness's loopback gateway, with these limits."""
    return {"gateways": [{"name": GW, "ip": ["127.0.0.0/8"], "limits": limits}]}


# --------------------------------------------------------------------------
# Waiting


def _until(
    what: str, check: Callable[[], T | None], context: Callable[[], str], timeout: float = STEP_S
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not seen within {timeout:.0f}s\n\n{context()}", pytrace=False)
        time.sleep(0.02)


def _logged(proxy: SbcProcess, event: str, call_id: str) -> dict[str, Any]:
    """Wait for sbc's log line `event` about `call_id`."""

    def find() -> dict[str, Any] | None:
        return next((e for e in proxy.named(event) if e.get("call_id") == call_id), None)

    return _until(f"sbc log line {event!r} for {call_id}", find, proxy.output_tail)


def _stopped_figures(proxy: SbcProcess) -> dict[str, dict[str, int]]:
    """Stop sbc by PID (SIGTERM); its `stopped` line's per-gateway figures."""
    rc = proxy.stop()
    assert rc == 0, f"sbc exited {rc} on SIGTERM\n{proxy.output_tail()}"
    lines = proxy.named("stopped")
    assert lines, f"no 'stopped' line\n{proxy.output_tail()}"
    figures: dict[str, dict[str, int]] = lines[-1]["gateways"]
    return figures


def _trace_so_far(proc: Sipp) -> list[TracedMessage]:
    """What a SIPp has traced so far; it may still be running (it writes each message as it goes)."""
    found = sorted(proc.workdir.glob(f"{proc.scenario}_*_messages.log"))
    return parse_trace(found[-1].read_text("utf-8", "replace")) if found else []


def _trace_time(msg: TracedMessage) -> float:
    """A -trace_msg timestamp as seconds (SIPp writes local wall-clock time)."""
    return datetime.strptime(msg.when, "%Y-%m-%d %H:%M:%S.%f").timestamp()


# --------------------------------------------------------------------------
# SIPp participants


class Callers:
    """One SIPp caller process per call, each on a port of its own.

    The Call-ID of a caller's call is `<name>-1@<its address>` (-cid_str), so
    the test can find the call in sbc's log and send the caller its cue.
    """

    def __init__(self, sipp: SippFactory, ports: Ports, proxy: SbcProcess) -> None:
        self._sipp = sipp
        self._ports = ports
        self.proxy = proxy  # the sbc the calls go through (replaced after a restart)
        self._taken = {ports.public, ports.private, ports.backend, ports.caller}
        self._cue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._cue.bind((LOOPBACK, 0))
        self._cues = 0

    def close(self) -> None:
        self._cue.close()

    def _port(self) -> int:
        for _ in range(20):
            (port,) = free_ports(1)
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise AssertionError("no free loopback port")

    def start(
        self, name: str, scenario: str, service: str, *, local_ip: str = LOOPBACK, **kwargs: Any
    ) -> Sipp:
        proc = self._sipp(
            name,
            scenario,
            local_port=self._port(),
            local_ip=local_ip,
            calls=1,
            transport="u1",
            remote=(LOOPBACK, self._ports.public),
            timeout_s=SIPP_BOUND_S,
            recv_timeout_ms=SIPP_BOUND_S * 1000,
            extra=["-s", service, "-cid_str", f"{name}-%u@%s"],
            **kwargs,
        )
        return proc.start()

    def hold(self, name: str, service: str = "hold") -> Sipp:
        """A call that is answered and held until a cue or a BYE ends it."""
        return self.start(name, "uac_hold.xml", service)

    def up(self, *callers: Sipp) -> None:
        """Wait until sbc has logged each caller's call as set up (answered and forwarded)."""
        for caller in callers:
            _logged(self.proxy, "call_setup", call_id(caller))

    def cue(self, port: int, call: str) -> None:
        """Send the party on `port` the cue to end call `call`: an INFO with its Call-ID."""
        self._cues += 1
        info = (
            f"INFO sip:cue@{LOOPBACK}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self._cue.getsockname()[1]};"
            f"branch=z9hG4bK-cue-{self._cues}\r\n"
            f"From: <sip:test@{LOOPBACK}>;tag=cue{self._cues}\r\n"
            f"To: <sip:cue@{LOOPBACK}>\r\n"
            f"Call-ID: {call}\r\n"
            "CSeq: 1 INFO\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self._cue.sendto(info.encode(), (LOOPBACK, port))

    def hang_up(self, caller: Sipp) -> SippResult:
        """The caller hangs up (BYE through sbc); returns once its SIPp has ended."""
        self.cue(caller.local_port, call_id(caller))
        return self.finish(caller)

    def callee_hangs_up(self, caller: Sipp) -> SippResult:
        """VOS3000 hangs up the caller's call (BYE through sbc); returns once the caller ended."""
        self.cue(self._ports.backend, call_id(caller))
        return self.finish(caller)

    def finish(self, caller: Sipp) -> SippResult:
        """Wait for a caller's SIPp to end; it must have completed its one call."""
        result = caller.wait(STEP_S + 5)
        if not (result.returncode == 0 and result.successful == 1 and result.failed == 0):
            pytest.fail(
                f"caller {caller.name}: exit {result.returncode}, {result.successful} ok, "
                f"{result.failed} failed\n\n" + report([result], self.proxy),
                pytrace=False,
            )
        return result

    def refused(
        self, name: str, service: str = "over", *, local_ip: str = LOOPBACK
    ) -> TracedMessage:
        """Place a call that must be refused; its final answer (403, 486 or 503)."""
        result = self.finish(self.start(name, "uac_refused.xml", service, local_ip=local_ip))
        finals = [
            m
            for m in result.messages()
            if m.direction == "received" and m.status is not None and m.status >= 300
        ]
        assert len(finals) == 1, report([result], self.proxy)
        return finals[0]

    def refused_by_limit(self, name: str, reason: str, retry_after: int) -> None:
        """Place a call that sbc must refuse with 503 `reason` and a Retry-After."""
        answer = self.refused(name)
        assert answer.first_line == f"SIP/2.0 503 {reason}", answer.text
        assert answer.header("Retry-After") == str(retry_after), answer.text


def call_id(caller: Sipp) -> str:
    return f"{caller.name}-1@{caller.local_ip}"


@pytest.fixture
def vos3000(sipp: SippFactory, ports: Ports) -> Callable[[int], Sipp]:
    """start(calls) -> SIPp as VOS3000 (uas_limits.xml), bound, expecting `calls` calls."""

    def start(calls: int) -> Sipp:
        uas = sipp(
            "vos3000",
            "uas_limits.xml",
            local_port=ports.backend,
            calls=calls,
            transport="u1",
            timeout_s=SIPP_BOUND_S,
            recv_timeout_ms=SIPP_BOUND_S * 1000,
        )
        return uas.start().wait_bound()

    return start


def _vos_done(uas: Sipp, calls: int, proxy: SbcProcess) -> SippResult:
    result = uas.wait(STEP_S + 5)
    if not (result.returncode == 0 and result.successful == calls and result.failed == 0):
        pytest.fail(
            f"VOS3000: exit {result.returncode}, {result.successful} ok, {result.failed} failed; "
            f"expected {calls} calls\n\n" + report([result], proxy),
            pytrace=False,
        )
    return result


def _invites_at(result: SippResult) -> list[TracedMessage]:
    return [m for m in result.messages() if m.direction == "received" and m.method == "INVITE"]


@pytest.fixture
def callers(sipp: SippFactory, ports: Ports) -> Iterator[Callable[[SbcProcess], Callers]]:
    """new(proxy) -> a Callers placing calls through `proxy`; its cue socket closed at teardown."""
    made: list[Callers] = []

    def new(proxy: SbcProcess) -> Callers:
        group = Callers(sipp, ports, proxy)
        made.append(group)
        return group

    yield new
    for group in made:
        group.close()


# --------------------------------------------------------------------------
# 1. CPS


class VosStandIn:
    """VOS3000 as a Python UDP user agent server (asyncio-dgram, in a thread of its own).

    Notes the arrival time (time.monotonic) of the first INVITE of every
    Call-ID, and answers: INVITE with 100, 180 and 200 (SDP, Record-Route
    copied, RFC 3261 12.1.1), BYE and CANCEL with 200; ACK and responses get
    nothing.
    """

    def __init__(self, port: int, max_datagrams: int = 50000) -> None:
        self.port = port
        self.max_datagrams = max_datagrams
        self.first_invite: dict[str, float] = {}  # Call-ID -> arrival time
        self.invite_datagrams = 0
        self.call_ids: set[str] = set()  # of every request that arrived
        self.datagrams = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vos-standin", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(STEP_S):
            self._stop.set()
            raise AssertionError(f"stand-in did not bind {LOOPBACK}:{self.port}")
        if self._error is not None:
            raise AssertionError(f"stand-in failed: {self._error!r}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(STEP_S)
        if self._error is not None and kind is None:
            raise AssertionError(f"stand-in failed: {self._error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        stream = await asyncio_dgram.bind((LOOPBACK, self.port))
        self._ready.set()
        try:
            while not self._stop.is_set() and self.datagrams < self.max_datagrams:
                try:
                    data, addr = await asyncio.wait_for(stream.recv(), 0.1)
                except TimeoutError:
                    continue
                arrived = time.monotonic()
                self.datagrams += 1
                for out in self._answer(data, arrived):
                    await stream.send(out, addr)
        finally:
            stream.close()

    def _answer(self, data: bytes, arrived: float) -> list[bytes]:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        start, *lines = head.split("\r\n")
        method = start.split(" ", 1)[0]
        if method.startswith("SIP/") or method == "ACK":
            return []
        compact = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
        fields: dict[str, list[str]] = {}
        for line in lines:
            name, sep, _ = line.partition(":")
            if sep:
                key = name.strip().lower()
                fields.setdefault(compact.get(key, key), []).append(line)
        call = fields["call-id"][0].partition(":")[2].strip()
        self.call_ids.add(call)
        to = fields["to"][0]
        if ";tag=" not in to:
            to += ";tag=vos" + hashlib.md5(call.encode(), usedforsecurity=False).hexdigest()[:8]
        common = [*fields["via"], fields["from"][0], to, fields["call-id"][0], fields["cseq"][0]]
        if method != "INVITE":
            return [_response("200 OK", common)]
        self.invite_datagrams += 1
        self.first_invite.setdefault(call, arrived)
        contact = f"Contact: <sip:vos@{LOOPBACK}:{self.port}>"
        rr = fields.get("record-route", [])
        sdp = (
            f"v=0\r\no=vos 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
            "m=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        trying = [*fields["via"], fields["from"][0], fields["to"][0], *common[-2:]]
        return [
            _response("100 Trying", trying),
            _response("180 Ringing", [*common, *rr, contact]),
            _response("200 OK", [*common, *rr, contact, "Content-Type: application/sdp"], sdp),
        ]


def _response(status: str, lines: list[str], body: str = "") -> bytes:
    head = "\r\n".join([f"SIP/2.0 {status}", *lines, f"Content-Length: {len(body)}"])
    return (head + "\r\n\r\n" + body).encode()


CPS = 10
OFFERED_CPS = 20
CPS_CALLS = 260  # 13 s at 20 calls a second


def test_gateway_cps_limit(ports: Ports, sbc: SbcFactory, sipp: SippFactory) -> None:
    """Gateway cps 10 (burst: the default, one second's worth = 10), offered 20 CPS for 13 s.

    INVITEs reaching VOS3000 are counted per second from the first one's
    arrival.  The first second may hold the burst on top of the rate (at most
    cps + burst = 20); every later full second must be within 10 % of 10.
    Every call that did not reach VOS3000 got 503 "Gateway CPS Limit" with
    Retry-After.
    """
    proxy = sbc(_limited(cps=CPS))
    with VosStandIn(ports.backend) as vos:
        uac = sipp(
            "caller",
            "uac_limit.xml",
            local_port=ports.caller,
            calls=CPS_CALLS,
            transport="u1",
            remote=(LOOPBACK, ports.public),
            rate=OFFERED_CPS,
            limit=200,
            duration_ms=100,
            timeout_s=CPS_CALLS / OFFERED_CPS + 30,
        )
        try:
            result = uac.start().wait()
        finally:
            uac.stop()
        arrivals = sorted(vos.first_invite.values())
        admitted = set(vos.first_invite)
        seen = set(vos.call_ids)
        invite_datagrams = vos.invite_datagrams
    figures = _stopped_figures(proxy)[GW]
    context = report([result], proxy)

    assert result.returncode == 0 and result.successful == CPS_CALLS, context
    sent = [m for m in result.messages() if m.direction == "sent" and m.method == "INVITE"]
    offered_for = _trace_time(sent[-1]) - _trace_time(sent[0])
    assert offered_for >= 10.0, f"calls offered over {offered_for:.1f}s only\n{context}"

    refusals = {
        m.header("Call-ID"): m
        for m in result.messages()
        if m.direction == "received" and m.status == 503
    }
    for answer in refusals.values():
        assert answer.first_line == "SIP/2.0 503 Gateway CPS Limit", answer.text
        assert answer.header("Retry-After") == "5", answer.text
    called = {m.header("Call-ID") for m in sent}
    assert not admitted & set(refusals), "calls both answered by VOS3000 and refused"
    assert admitted | set(refusals) == called, (
        f"{len(called - admitted - set(refusals))} calls neither reached VOS3000 nor got 503"
    )
    assert invite_datagrams == len(admitted), "an INVITE reached VOS3000 twice"
    assert seen == admitted, "a refused call reached VOS3000 (its ACK for the 503?)"

    t0 = arrivals[0]
    full = int(arrivals[-1] - t0)  # seconds [t0+k, t0+k+1) that ended before the last arrival
    per_second = [sum(1 for t in arrivals if k <= t - t0 < k + 1) for k in range(full)]
    print(
        f"\nINVITEs at VOS3000 per second (first includes the burst): {per_second}; "
        f"503s: {len(refusals)}; offered over {offered_for:.2f}s"
    )
    assert full >= 11, f"only {full} full seconds of admitted calls: {per_second}"
    burst = CPS  # cps_burst left out: one second's worth
    assert CPS <= per_second[0] <= CPS + burst, f"first second: {per_second}"
    off = [(k, n) for k, n in enumerate(per_second) if k > 0 and abs(n - CPS) > CPS * 0.1]
    assert not off, f"seconds off 10 ± 10 %: {off}; all: {per_second}"

    assert figures["admitted"] == len(admitted), figures
    assert figures["rejected_gateway_cps"] == len(refusals), figures
    assert figures["concurrent"] == 0, figures


# --------------------------------------------------------------------------
# 2. Concurrency


def test_gateway_concurrent_call_limit(
    ports: Ports,
    sbc: SbcFactory,
    vos3000: Callable[[int], Sipp],
    callers: Callable[[SbcProcess], Callers],
) -> None:
    """max_concurrent 3: answered calls hold their slot until a BYE from either side;
    a ringing call holds one until its CANCEL, a call VOS3000 refuses (486) until then."""
    limit = "Gateway Concurrent Call Limit"
    proxy = sbc({"calls": {"retry_after_s": 7}, **_limited(max_concurrent=3)})
    vos = vos3000(9)
    c = callers(proxy)

    a, b, cc = c.hold("a"), c.hold("b"), c.hold("c")
    c.up(a, b, cc)
    c.refused_by_limit("d", limit, 7)

    # A BYE from the caller frees exactly one slot.
    c.hang_up(a)
    assert _logged(proxy, "call_end", call_id(a))["reason"] == "bye_caller"
    e = c.hold("e")
    c.up(e)
    c.refused_by_limit("f", limit, 7)

    # A BYE from VOS3000 frees one too.
    c.callee_hangs_up(b)
    assert _logged(proxy, "call_end", call_id(b))["reason"] == "bye_backend"
    g = c.hold("g")
    c.up(g)
    c.refused_by_limit("h", limit, 7)

    # A ringing call holds a slot; its CANCEL frees it.
    c.hang_up(cc)
    ring = c.start("r", "uac_ring_cancel.xml", "ring-r")

    def ringing() -> bool:
        return any(m.direction == "received" and m.status == 180 for m in _trace_so_far(ring))

    _until("180 Ringing at the ringing caller", ringing, proxy.output_tail)
    c.refused_by_limit("i", limit, 7)
    c.cue(ring.local_port, call_id(ring))
    c.finish(ring)
    _logged(proxy, "call_end", call_id(ring))
    j = c.hold("j")
    c.up(j)
    c.refused_by_limit("k", limit, 7)

    # A call VOS3000 refuses frees its slot with the refusal.
    c.hang_up(j)
    busy = c.refused("l", "busy-l")
    assert busy.first_line == "SIP/2.0 486 Busy Here", busy.text
    _logged(proxy, "call_end", "l-1@127.0.0.1")
    m = c.hold("m")
    c.up(m)
    c.refused_by_limit("n", limit, 7)

    for caller in (e, g, m):
        c.hang_up(caller)
    at_vos = _vos_done(vos, 9, proxy)
    # Refused calls left no trace at VOS3000: no INVITE, and no ACK for the 503.
    reached = {
        msg.header("Call-ID") or "" for msg in at_vos.messages() if msg.direction == "received"
    }
    expected = {f"{name}-1@{LOOPBACK}" for name in "abcegrjlm"}
    assert reached == expected, f"calls seen at VOS3000: {sorted(reached)}"
    figures = _stopped_figures(proxy)[GW]
    assert figures["concurrent"] == 0, figures
    assert figures["admitted"] == 9, figures
    assert figures["rejected_gateway_concurrent"] == 6, figures


# --------------------------------------------------------------------------
# 3. Duration


def test_gateway_max_duration(
    ports: Ports,
    sbc: SbcFactory,
    vos3000: Callable[[int], Sipp],
    callers: Callable[[SbcProcess], Callers],
) -> None:
    """max_duration_s 3: sbc sends BYE to the caller and to VOS3000 3 s (± 1 s) after the 200."""
    limit_s = 3
    proxy = sbc(_limited(max_duration_s=limit_s))
    vos = vos3000(2)
    c = callers(proxy)
    held = [c.hold("a"), c.hold("b")]
    results = {call_id(s): c.finish(s) for s in held}  # both end on sbc's BYE alone
    at_vos = _vos_done(vos, 2, proxy).messages()

    timings = []
    for call, result in results.items():
        msgs = result.messages()
        answered = next(
            m
            for m in msgs
            if m.direction == "received" and m.status == 200 and m.cseq_method == "INVITE"
        )
        bye = next(m for m in msgs if m.direction == "received" and m.method == "BYE")
        ours = [m for m in at_vos if m.header("Call-ID") == call]
        sent_200 = next(
            m
            for m in ours
            if m.direction == "sent" and m.status == 200 and m.cseq_method == "INVITE"
        )
        vos_bye = next(m for m in ours if m.direction == "received" and m.method == "BYE")
        at_caller = _trace_time(bye) - _trace_time(answered)
        at_backend = _trace_time(vos_bye) - _trace_time(sent_200)
        timings.append((call, round(at_caller, 3), round(at_backend, 3)))
        end = _logged(proxy, "call_end", call)
        assert end["reason"] == "max_duration", end
        assert abs(at_caller - limit_s) <= 1.0, (
            f"{call}: BYE at the caller {at_caller:.3f}s after the 200"
        )
        assert abs(at_backend - limit_s) <= 1.0, (
            f"{call}: BYE at VOS3000 {at_backend:.3f}s after its 200"
        )
    print(f"\nBYE after the 200 (call, at caller s, at VOS3000 s): {timings}")
    figures = _stopped_figures(proxy)[GW]
    assert figures["concurrent"] == 0, figures


# --------------------------------------------------------------------------
# 4. Restart in the middle of calls


def test_restart_keeps_call_slots(
    ports: Ports,
    sbc: SbcFactory,
    vos3000: Callable[[int], Sipp],
    callers: Callable[[SbcProcess], Callers],
) -> None:
    """max_concurrent 5, 3 calls up, sbc restarted: the 3 still count, and their BYEs
    through the new sbc free exactly their slots."""
    limit = "Gateway Concurrent Call Limit"
    first = sbc(_limited(max_concurrent=5))
    vos = vos3000(8)
    c = callers(first)
    old = [c.hold("a"), c.hold("b"), c.hold("c")]
    c.up(*old)

    before = _stopped_figures(first)[GW]
    assert before["concurrent"] == 3, before
    proxy = sbc(config_path=first.config_path)
    c.proxy = proxy
    restored = proxy.named("dialogs_restored")
    assert restored, f"no dialogs_restored line\n{proxy.output_tail()}"
    assert restored[-1]["calls"] == 3 and restored[-1]["by_gateway"] == {GW: 3}, restored[-1]

    new = [c.hold("d"), c.hold("e")]
    c.up(*new)
    c.refused_by_limit("f", limit, 5)

    # The old calls end through the restarted sbc: two BYEs from callers, one from VOS3000.
    c.hang_up(old[0])
    c.hang_up(old[1])
    c.callee_hangs_up(old[2])
    reasons = [_logged(proxy, "call_end", call_id(s))["reason"] for s in old]
    assert reasons == ["bye_caller", "bye_caller", "bye_backend"], reasons

    more = [c.hold("g"), c.hold("h"), c.hold("i")]
    c.up(*more)
    c.refused_by_limit("j", limit, 5)

    for caller in (*new, *more):
        c.hang_up(caller)
    _vos_done(vos, 8, proxy)
    figures = _stopped_figures(proxy)[GW]
    assert figures["concurrent"] == 0, figures
    assert figures["admitted"] == 5 and figures["rejected_gateway_concurrent"] == 2, figures


# --------------------------------------------------------------------------
# 5. Destinations


def test_destination_controls(
    ports: Ports,
    sbc: SbcFactory,
    vos3000: Callable[[int], Sipp],
    callers: Callable[[SbcProcess], Callers],
) -> None:
    """Global blocked prefix 900 with the gateway's tech prefix 9999#: blocked however
    written; a gateway with allowed_prefixes 86 refuses 44 and admits 0086.  VOS3000
    receives admitted numbers as dialled."""
    cn_ip = "127.0.0.2"
    proxy = sbc(
        {
            "calls": {"blocked_prefixes": ["900"]},
            "gateways": [
                {"name": GW, "ip": ["127.0.0.0/8"], "tech_prefixes": ["9999#"]},
                {"name": "cn", "ip": [cn_ip], "allowed_prefixes": ["86"]},
            ],
        }
    )
    vos = vos3000(2)
    c = callers(proxy)

    blocked = ["900123", "+900123", "00900123", "9999#900123"]
    for i, number in enumerate(blocked):
        answer = c.refused(f"blocked{i}", number)
        assert answer.first_line == "SIP/2.0 403 Destination Blocked", f"{number}:\n{answer.text}"
    not_allowed = c.refused("cn44", "442071838750", local_ip=cn_ip)
    assert not_allowed.first_line == "SIP/2.0 403 Destination Not Allowed", not_allowed.text

    open_call = c.start("open", "uac.xml", "800123", duration_ms=100)
    cn_call = c.start("cn86", "uac.xml", "008613800138000", local_ip=cn_ip, duration_ms=100)
    c.finish(open_call)
    c.finish(cn_call)
    at_vos = _invites_at(_vos_done(vos, 2, proxy))
    uris = sorted(m.first_line.split(" ")[1].split("@")[0] for m in at_vos)
    assert uris == ["sip:008613800138000", "sip:800123"], uris

    figures = _stopped_figures(proxy)
    assert figures[GW]["rejected_blocked_destination"] == len(blocked), figures
    assert figures[GW]["admitted"] == 1, figures
    assert figures["cn"]["rejected_not_allowed_destination"] == 1, figures
    assert figures["cn"]["admitted"] == 1, figures


@pytest.mark.parametrize("number", ["9999%23900123", "%39%30%30123"])
def test_escaped_blocked_destination(
    number: str,
    ports: Ports,
    sbc: SbcFactory,
    vos3000: Callable[[int], Sipp],
    callers: Callable[[SbcProcess], Callers],
) -> None:
    """A blocked destination is refused however its characters are escaped.

    '#' may not stand as such in the user part of a SIP URI (RFC 3261 19.1.2:
    user = 1*( unreserved / escaped / user-unreserved )), so a conforming
    caller sends the tech prefix 9999# as "9999%23"; and any character may be
    escaped, URIs comparing after unescaping (19.1.4).  A VOS3000 that
    unescapes would route "%39%30%30123" to 900123.
    """
    proxy = sbc(
        {
            "calls": {"blocked_prefixes": ["900"]},
            "gateways": [{"name": GW, "ip": ["127.0.0.0/8"], "tech_prefixes": ["9999#"]}],
        }
    )
    vos = vos3000(1)  # answers the call if sbc lets it through
    c = callers(proxy)
    caller = c.start("escaped", "uac_refused.xml", number)
    result = caller.wait(STEP_S + 5)
    reached = [m for m in _trace_so_far(vos) if m.direction == "received" and m.method == "INVITE"]
    assert not reached, (
        f"sbc let the blocked destination {number!r} through to VOS3000:\n{reached[0].text}"
        f"\n\n{report([result], proxy)}"
    )
    answer = c.refused("escaped-again", number)
    assert answer.first_line == "SIP/2.0 403 Destination Blocked", f"{number}:\n{answer.text}"
