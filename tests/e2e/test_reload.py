"""SIGHUP reloads the config file of a running sbc; a bad file leaves it be."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import Ports, SbcFactory

pytestmark = pytest.mark.e2e


def _wait(proxy, event: str, count: int, timeout: float = 10.0) -> list[dict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = proxy.named(event)
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} line #{count}: {proxy.output_tail()}")


def test_sighup_reloads_and_a_bad_file_is_refused(ports: Ports, sbc: SbcFactory) -> None:
    proxy = sbc()
    path = proxy.config_path
    good = path.read_text()
    path.write_text(good.replace("loopback", "carriers"))
    os.kill(proxy.pid, signal.SIGHUP)
    (reloaded,) = _wait(proxy, "reloaded", 1)
    assert reloaded["gateways"] == "1"

    path.write_text(good + "\nnot_a_section: 1\n")
    os.kill(proxy.pid, signal.SIGHUP)
    (failed,) = _wait(proxy, "reload_failed", 1)
    assert "not_a_section" in failed["error"]
    assert proxy.proc is not None and proxy.proc.poll() is None  # still running, old config
