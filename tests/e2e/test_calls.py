"""Calls through a real sbc process, with SIPp as the caller and as VOS3000.

    SIPp caller ──udp/tcp──► sbc public ─ sbc private ──udp──► SIPp "VOS3000"

Each test starts its own sbc on free loopback ports, starts the VOS3000
stand-in first (its port is polled until bound), then runs the caller to
its end.  SIPp fails a call on any unexpected or missing message; its exit
code and final counters are asserted on both sides, and a failure message
carries SIPp's errors and message traces plus sbc's last log lines.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from loadtest.harness import (
    LOOPBACK,
    SbcProcess,
    Sipp,
    SippResult,
    TracedMessage,
    report,
    run_pair,
)

from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e

TRANSPORTS = {"udp": "u1", "tcp": "t1"}


def _uas(sipp: SippFactory, ports: Ports, scenario: str, calls: int = 1, **kwargs: object) -> Sipp:
    kwargs.setdefault("timeout_s", 30)
    return sipp(
        "vos3000", scenario, local_port=ports.backend, calls=calls, transport="u1", **kwargs
    )


def _uac(
    sipp: SippFactory,
    ports: Ports,
    scenario: str,
    transport: str = "udp",
    calls: int = 1,
    **kwargs: object,
) -> Sipp:
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("rate", 10)
    return sipp(
        "caller",
        scenario,
        local_port=ports.caller,
        calls=calls,
        transport=TRANSPORTS[transport],
        remote=(LOOPBACK, ports.public),
        **kwargs,
    )


def _assert_all_succeeded(calls: int, results: list[SippResult], sbc: SbcProcess) -> None:
    ok = all(r.returncode == 0 and r.successful == calls and r.failed == 0 for r in results)
    if not ok:
        summary = ", ".join(
            f"{r.name}: exit {r.returncode}, {r.successful} ok, {r.failed} failed" for r in results
        )
        pytest.fail(
            f"expected {calls} successful calls on each side; {summary}\n\n" + report(results, sbc),
            pytrace=False,
        )


def _received(result: SippResult, method: str) -> list[TracedMessage]:
    return [m for m in result.messages() if m.direction == "received" and m.method == method]


# --------------------------------------------------------------------------
# Basic calls


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_caller_hangs_up(
    transport: str, ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """INVITE/100/180/200/ACK/BYE/200; ACK and BYE follow the Record-Route set."""
    proxy = sbc()
    calls = 3
    uas, uac = run_pair(
        _uas(sipp, ports, "uas.xml", calls),
        _uac(sipp, ports, "uac.xml", transport, calls, duration_ms=200),
    )
    _assert_all_succeeded(calls, [uac, uas], proxy)

    invites = _received(uas, "INVITE")
    assert len(invites) == calls, report([uas], proxy)
    for invite in invites:
        # sbc's own Via on top, sent from its private socket (RFC 3261 §16.6 step 8).
        assert invite.headers("Via")[0].startswith(f"SIP/2.0/UDP {LOOPBACK}:{ports.private}"), (
            f"top Via is not sbc's private socket:\n{invite.text}"
        )
        assert invite.headers("Record-Route"), f"no Record-Route towards VOS3000:\n{invite.text}"
        assert invite.header("Max-Forwards") == "69", (
            f"Max-Forwards not decremented:\n{invite.text}"
        )
    oks = [
        m
        for m in uac.messages()
        if m.direction == "received" and m.status == 200 and m.cseq_method == "INVITE"
    ]
    assert oks and all(m.headers("Record-Route") for m in oks), (
        "the caller's 200 OK carries no Record-Route\n" + report([uac], proxy)
    )
    for method in ("ACK", "BYE"):
        for req in _received(uas, method):
            assert req.first_line.startswith(f"{method} sip:callee@{LOOPBACK}:{ports.backend}"), (
                f"{method} at VOS3000 is not addressed to its Contact:\n{req.text}"
            )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_callee_hangs_up(transport: str, ports: Ports, sbc: SbcFactory, sipp: SippFactory) -> None:
    """VOS3000's BYE comes back through sbc's private socket and reaches the caller."""
    proxy = sbc()
    calls = 2
    uas, uac = run_pair(
        _uas(sipp, ports, "uas_hangup.xml", calls, duration_ms=300),
        _uac(sipp, ports, "uac_wait_bye.xml", transport, calls),
    )
    _assert_all_succeeded(calls, [uac, uas], proxy)
    byes = _received(uac, "BYE")
    assert len(byes) == calls, report([uac], proxy)
    for bye in byes:
        assert bye.transport == transport.upper(), (
            f"BYE reached the {transport} caller over {bye.transport}"
        )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_cancel_before_answer(
    transport: str, ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """CANCEL while ringing: 200 for the CANCEL, 487 for the INVITE, ACK; same branch at VOS3000."""
    proxy = sbc()
    calls = 2
    uas, uac = run_pair(
        _uas(sipp, ports, "uas_ring.xml", calls),
        _uac(sipp, ports, "uac_cancel.xml", transport, calls),
    )
    _assert_all_succeeded(calls, [uac, uas], proxy)


# --------------------------------------------------------------------------
# Backend that never answers


@contextmanager
def _silent_backend(port: int) -> Iterator[list[bytes]]:
    """A UDP socket on the backend port that records what it gets and never answers."""
    got: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, port))
    sock.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and len(got) < 1000:
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            got.append(data)

    thread = threading.Thread(target=loop, name="silent-backend", daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(2.0)
        sock.close()


INVITE_TIMEOUT_S = 3


def _call_silent_backend(
    transport: str,
    ports: Ports,
    sbc: SbcFactory,
    sipp: SippFactory,
) -> tuple[SippResult, list[bytes], float, SbcProcess]:
    proxy = sbc({"sip": {"invite_timeout_s": INVITE_TIMEOUT_S}})
    with _silent_backend(ports.backend) as got:
        uac = _uac(sipp, ports, "uac_408.xml", transport, 1, timeout_s=INVITE_TIMEOUT_S + 20)
        started = time.monotonic()
        try:
            result = uac.start().wait()
        finally:
            uac.stop()
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # let a stray late datagram (e.g. a forwarded ACK) arrive
        return result, list(got), elapsed, proxy


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_silent_backend_gives_408(
    transport: str, ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """No answer from VOS3000: 100 at once, 408 after sip.invite_timeout_s, ACK absorbed."""
    uac, got, elapsed, proxy = _call_silent_backend(transport, ports, sbc, sipp)
    _assert_all_succeeded(1, [uac], proxy)
    assert elapsed >= INVITE_TIMEOUT_S - 0.5, f"408 after {elapsed:.1f}s, before the timeout"
    assert got, "the INVITE never reached the backend socket"


def test_silent_backend_sees_only_invite_copies(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """Towards a silent UDP backend: INVITE retransmitted (timer A), same branch; no CANCEL
    (nothing provisional came back, RFC 3261 §9.1) and the caller's ACK for the 408 absorbed."""
    uac, got, _, proxy = _call_silent_backend("udp", ports, sbc, sipp)
    _assert_all_succeeded(1, [uac], proxy)
    first_lines = [d.split(b"\r\n", 1)[0].decode("utf-8", "replace") for d in got]
    methods = {line.split(" ", 1)[0] for line in first_lines}
    assert methods == {"INVITE"}, f"the silent backend got {first_lines}"
    top_vias = {_top_via(d) for d in got}
    assert len(top_vias) == 1, f"INVITE copies carry different top Vias: {top_vias}"
    assert len(got) >= 2, (
        f"INVITE sent {len(got)} time(s) in {INVITE_TIMEOUT_S}s with "
        "T1=500ms: no retransmission over UDP (RFC 3261 §17.1.1.2)"
    )


def _top_via(datagram: bytes) -> bytes:
    for line in datagram.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"via", b"v"):
            return value.split(b",", 1)[0].strip()
    return b""


# --------------------------------------------------------------------------
# Retransmissions


def test_invite_retransmissions_absorbed(ports: Ports, sbc: SbcFactory, sipp: SippFactory) -> None:
    """The caller sends its INVITE three times; VOS3000 must see it once."""
    proxy = sbc()
    uas, uac = run_pair(
        _uas(sipp, ports, "uas_retrans.xml", 1, extra=["-nr"]),
        _uac(sipp, ports, "uac_retrans.xml", "udp", 1, extra=["-nr"]),
    )
    _assert_all_succeeded(1, [uac, uas], proxy)
    assert uac.count("3_INVITE_Sent") == 1 and uac.count("5_INVITE_Sent") == 1, uac.counts
    invites = _received(uas, "INVITE")
    assert len(invites) == 1, f"VOS3000 got {len(invites)} INVITEs\n" + report([uas], proxy)


# --------------------------------------------------------------------------
# Load

LOAD_CALLS = 2000
LOAD_RATE = 200


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_load_2000_calls_at_200_cps(
    transport: str, ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    proxy = sbc()
    budget = LOAD_CALLS / LOAD_RATE + 40
    uas, uac = run_pair(
        _uas(sipp, ports, "uas.xml", LOAD_CALLS, timeout_s=budget, trace_msg=False),
        _uac(
            sipp,
            ports,
            "uac.xml",
            transport,
            LOAD_CALLS,
            rate=LOAD_RATE,
            limit=1000,
            duration_ms=100,
            timeout_s=budget,
            trace_msg=False,
        ),
    )
    _assert_all_succeeded(LOAD_CALLS, [uac, uas], proxy)
