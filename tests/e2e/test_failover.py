"""Two VOS3000 addresses: calls through a real sbc process, SIPp as the caller
and as each VOS3000 stand-in, all on loopback.

    SIPp caller ──► sbc ──► VOS3000 "first"  (backend.host/port)
                        └─► VOS3000 "second" (backend.standby[0])
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from loadtest.harness import LOOPBACK, Sipp, SippResult, free_ports, report

from .conftest import Ports, SbcFactory, SippFactory
from .test_calls import _assert_all_succeeded, _received, _silent_backend, _uac

pytestmark = pytest.mark.e2e


def _vos(sipp: SippFactory, name: str, port: int, scenario: str, calls: int, **kw: Any) -> Sipp:
    kw.setdefault("timeout_s", 40)
    return sipp(name, scenario, local_port=port, calls=calls, transport="u1", **kw)


def _overrides(second: int, **backend: Any) -> dict[str, Any]:
    # One ping round at start (before any stand-in runs), then none for the
    # test's length, and it does not time out within it either: the stand-ins
    # see only calls, and only calls judge the targets' health.
    return {"backend": {"standby": [{"host": LOOPBACK, "port": second}], **backend},
            "admin": {"enabled": False, "ping_interval_s": 600, "ping_timeout_s": 300}}


def _run(uac: Sipp, *stand_ins: Sipp) -> tuple[SippResult, list[SippResult]]:
    try:
        for s in stand_ins:
            s.start().wait_bound()
        caller = uac.start().wait()
        return caller, [s.wait() for s in stand_ins]
    finally:
        uac.stop()
        for s in stand_ins:
            s.stop()


def test_503_from_the_first_completes_on_the_second(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """The first VOS3000 refuses with 503: sbc ACKs it and the call completes on
    the second; the caller's ACK and BYE go to the second only."""
    (second_port,) = free_ports(1)
    proxy = sbc(_overrides(second_port))
    calls = 2
    caller, (first, second) = _run(
        _uac(sipp, ports, "uac.xml", "udp", calls, duration_ms=200),
        _vos(sipp, "vos-first", ports.backend, "uas_503.xml", calls),
        _vos(sipp, "vos-second", second_port, "uas.xml", calls),
    )
    _assert_all_succeeded(calls, [caller, first, second], proxy)
    assert not [m for m in caller.messages() if m.direction == "received" and m.status == 503], (
        "the caller saw the first VOS3000's 503\n" + report([caller], proxy))
    for method in ("INVITE", "ACK"):
        assert len(_received(first, method)) == calls, report([first], proxy)
    assert _received(first, "BYE") == [], report([first], proxy)
    for method in ("INVITE", "ACK", "BYE"):
        assert len(_received(second, method)) == calls, report([second], proxy)
    branches = {m.headers("Via")[0] for m in _received(first, "INVITE")}
    assert branches.isdisjoint(m.headers("Via")[0] for m in _received(second, "INVITE")), (
        "the retry reused the first attempt's branch")


def test_callee_on_the_second_hangs_up(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """A call set up on the second after a 503: that VOS3000's BYE is accepted
    and reaches the caller."""
    (second_port,) = free_ports(1)
    proxy = sbc(_overrides(second_port))
    caller, (first, second) = _run(
        _uac(sipp, ports, "uac_wait_bye.xml", "udp", 1),
        _vos(sipp, "vos-first", ports.backend, "uas_503.xml", 1),
        _vos(sipp, "vos-second", second_port, "uas_hangup.xml", 1, duration_ms=300),
    )
    _assert_all_succeeded(1, [caller, first, second], proxy)
    assert len(_received(caller, "BYE")) == 1, report([caller], proxy)


def test_silent_first_the_call_moves_on_after_the_failover_timeout(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """The first VOS3000 never answers: after backend.failover_timeout_s the
    INVITE goes to the second (no CANCEL to the first: nothing was heard), the
    first is marked down (passive health), and the next call goes straight to
    the second."""
    (second_port,) = free_ports(1)
    proxy = sbc(_overrides(second_port, failover_timeout_s=1.0, down_after=1))
    with _silent_backend(ports.backend) as got:
        started = time.monotonic()
        caller, (second,) = _run(
            _uac(sipp, ports, "uac.xml", "udp", 2, duration_ms=100, rate=1,
                 rate_period_ms=2500),  # the second call after the first failed over
            _vos(sipp, "vos-second", second_port, "uas.xml", 2),
        )
        elapsed = time.monotonic() - started
        seen = list(got)
    _assert_all_succeeded(2, [caller, second], proxy)
    assert elapsed >= 1.0, f"both calls done in {elapsed:.2f}s: no failover wait"
    methods = {d.split(b" ", 1)[0] for d in seen}
    assert methods == {b"INVITE"}, f"the silent first got {methods}"
    call_ids = {line for d in seen for line in d.split(b"\r\n") if line.startswith(b"Call-ID:")}
    assert len(call_ids) == 1, (
        f"the second call was sent to the down first too: {call_ids}\n{proxy.output_tail()}")
    downs = proxy.wait_named("backend_down")
    assert [(d["target"], d["reason"]) for d in downs] == [
        (f"{LOOPBACK}:{ports.backend}", "INVITE unanswered for 1 s")], downs


def test_unanswered_pings_mark_the_first_down_and_readyz_says_so(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """The first VOS3000 is not running: its pings go unanswered, it is marked
    down, /readyz stays 200 (the second answers) and names it; new calls go to
    the second without trying the first."""
    (second_port, admin_port) = free_ports(2)
    proxy = sbc({
        "backend": {"standby": [{"host": LOOPBACK, "port": second_port}],
                    "down_after": 2, "up_after": 1},
        "admin": {"enabled": True, "port": admin_port, "ping_interval_s": 0.3,
                  "ping_timeout_s": 0.2},
    })
    second = _vos(sipp, "vos-second", second_port, "uas_pinged.xml", 100_000, timeout_s=60)
    second.start().wait_bound()
    try:
        first_hp, second_hp = f"{LOOPBACK}:{ports.backend}", f"{LOOPBACK}:{second_port}"
        deadline = time.monotonic() + 10
        while True:
            status, body = _get(f"http://{LOOPBACK}:{admin_port}/readyz")
            if status == 200 and body.get("down") == [first_hp]:
                break
            assert time.monotonic() < deadline, f"/readyz: {status} {body}\n{proxy.output_tail()}"
            time.sleep(0.1)
        states = {t["address"]: t["state"] for t in body["targets"]}
        assert states == {first_hp: "down", second_hp: "up"}, body

        calls = 2
        uac = _uac(sipp, ports, "uac.xml", "udp", calls, duration_ms=100)
        try:
            caller = uac.start().wait()
        finally:
            uac.stop()
        _assert_all_succeeded(calls, [caller], proxy)
        status, metrics = _get_text(f"http://{LOOPBACK}:{admin_port}/metrics")
        assert status == 200
        assert f'sbc_backend_target_up{{priority="0",state="down",target="{first_hp}"}} 0.0' \
            in metrics, metrics
        assert f'sbc_backend_target_up{{priority="1",state="up",target="{second_hp}"}} 1.0' \
            in metrics, metrics
        assert "sbc_backend_failovers_total{" not in metrics, "a call tried the down first"
    finally:
        second.stop()
    assert second.proc is not None
    result = second.result(second.proc.returncode)
    assert len(_received(result, "INVITE")) == calls, report([result], proxy)
    assert len(_received(result, "BYE")) == calls, report([result], proxy)
    assert _received(result, "OPTIONS"), "the second was never pinged"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    status, text = _get_text(url)
    return status, json.loads(text)


def _get_text(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
