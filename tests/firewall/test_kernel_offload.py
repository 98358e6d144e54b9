"""nftables mode, for real: sbc runs in a network namespace of the test's own,
an operator bans a source, sbc puts it into the kernel's ban set, and a flood
from that source is dropped by the kernel: sbc's socket never sees it and its
process spends no CPU on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loadtest.flood.measure import wait_cpu_settled
from loadtest.harness import cpu_seconds
from tests.firewall.test_firewall import _in, netns  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]
FLOOD = 100_000


class NsSbc:
    """`python -m sbc run` inside the namespace; JSON lines collected by a thread."""

    def __init__(self, ns: str, config: Path) -> None:
        self.proc = subprocess.Popen(_in(ns, sys.executable, "-m", "sbc", "run", "--config",
                                         str(config)), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": "text", "text": line})

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.lines:
                if ev.get("event") == name:
                    return ev
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} line; output: {self.lines[-20:]}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        self.proc.terminate()
        rc = self.proc.wait(15)
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc


def _poll(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_banned_flood_is_dropped_by_the_kernel_not_by_sbc(netns: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "sbc.yaml"
    config.write_text(
        "public: {host: 127.0.0.1, port: 5060, transports: [udp]}\n"
        "private: {host: 127.0.0.1, port: 5080}\n"
        "backend: {host: 127.0.0.1, port: 5070}\n"
        "gateways: [{name: carrier, ip: [127.0.0.1]}]\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        "firewall: {mode: nftables, table: sbc}\n"
        "logging: {format: json, level: info}\n"
        "admin: {enabled: false}\n")
    sbc = NsSbc(netns, config)
    try:
        sbc.wait_event("started", 20)
        ban = subprocess.run(_in(netns, sys.executable, "-m", "sbc", "ban", "--config", str(config),
                                 "127.0.0.66", "--seconds", "600"),
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert ban.returncode == 0, ban.stderr

        def in_kernel_set() -> bool:
            out = subprocess.run(_in(netns, "nft", "list", "set", "inet", "sbc", "banned4"),
                                 capture_output=True, text=True).stdout
            return "127.0.0.66" in out

        assert _poll(in_kernel_set, 15), "sbc did not put the operator's ban into the kernel set"

        cpu_before = cpu_seconds(sbc.proc.pid)
        flood = subprocess.run(
            _in(netns, sys.executable, str(ROOT / "loadtest/flood/generator.py"), "--kind", "options",
                "--dst", "127.0.0.1:5060", "--src", "127.0.0.66", "--count", str(FLOOD),
                "--seconds", "10"),
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert flood.returncode == 0, flood.stderr
        sent = json.loads(flood.stdout.strip().splitlines()[-1])["sent"]
        assert sent == FLOOD
        # Whatever did get through is worked off first: CPU read once it stops rising.
        cpu_spent = wait_cpu_settled(sbc) - cpu_before

        chain = subprocess.run(_in(netns, "nft", "list", "chain", "inet", "sbc", "sip"),
                               capture_output=True, text=True).stdout
        ban_rule = next((ln for ln in chain.splitlines() if "@banned4" in ln), "")
        dropped = int(re.search(r"counter packets (\d+)", ban_rule).group(1))  # type: ignore[union-attr]
        # sbc's own CPU: a screened drop costs about 2 µs, so 100,000 packets
        # reaching it would cost about 0.2 s; in the kernel they cost it nothing.
        assert cpu_spent < 0.05, f"sbc spent {cpu_spent:.3f} s of CPU on a banned flood"
        assert dropped >= FLOOD, chain  # the kernel counted them, at the ban rule
    finally:
        assert sbc.stop() == 0
    stopped = sbc.wait_event("stopped", 5)
    assert stopped["udp_public_received"] < 100, stopped
    assert stopped.get("screen_drops", {}).get("banned", 0) < 100
