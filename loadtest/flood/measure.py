"""Readings around a flood: sbc's own counters (its `stopped` log line), the
kernel's UDP drop counters, and sbc's CPU time once it has caught up.

Shared by bench_flood.py and tests/e2e/test_flood.py.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from loadtest.harness import LOOPBACK, HarnessError, SbcProcess


def udp_socket_drops(port: int, host: str = LOOPBACK, proc_net: str = "/proc/net") -> int | None:
    """The `drops` column of /proc/net/udp for the socket bound to host:port:
    datagrams the kernel discarded because that socket's receive buffer was
    full.  None when no such socket exists.  `proc_net`: another network
    namespace's view (`/proc/PID/net` of a process inside it)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open(f"{proc_net}/udp", encoding="ascii") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == want:
                return int(parts[-1])
    return None


class _HasCpu(Protocol):
    def cpu_seconds(self) -> float: ...


def wait_cpu_settled(sbc: _HasCpu, quiet: float = 0.2, timeout: float = 5.0) -> float:
    """The server's CPU seconds (sbc, or anything with `cpu_seconds`) once
    they stop rising (it has worked off what was queued in its socket), or
    after `timeout`."""
    deadline = time.monotonic() + timeout
    last = sbc.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = sbc.cpu_seconds()
        if now - last < 0.011:  # under 11 ms of CPU in `quiet` seconds: idle
            return now
        last = now
    return last


@dataclass
class SbcTotals:
    """What sbc counted over its life, from the `stopped` line (server.stats()):
    the screen's drops (`screen_drops`) apart from what the engine decided
    after the parse (`verdicts`: forward, reply, drop, absorbed; `drops` and
    `absorbed` by reason), so `handled` counts each packet once; `received`
    is `udp_public_received` (datagrams taken off the public UDP socket, a
    cross-check)."""

    screen_drops: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    absorbed: dict[str, int] = field(default_factory=dict)
    parse_errors: dict[str, int] = field(default_factory=dict)
    bans: int = 0
    received: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stopped(cls, sbc: SbcProcess) -> SbcTotals:
        lines = sbc.named("stopped")
        if not lines:
            raise HarnessError(f"sbc printed no 'stopped' line\n{sbc.output_tail()}")
        return cls.from_stats(lines[-1])

    @classmethod
    def from_stats(cls, doc: dict[str, Any]) -> SbcTotals:
        def counts(key: str) -> dict[str, int]:
            value = doc.get(key)
            return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}

        screen, verdicts, drops = counts("screen_drops"), counts("verdicts"), counts("drops")
        bans = doc.get("bans")
        received = doc.get("udp_public_received")
        return cls(
            screen_drops=screen,
            verdicts=verdicts,
            drops=drops,
            absorbed=counts("absorbed"),
            parse_errors=counts("parse_errors"),
            bans=bans if isinstance(bans, int) else 0,
            received=received if isinstance(received, int) else None,
            raw=doc,
        )

    @property
    def screened(self) -> int:
        """Packets the screen dropped before any parse."""
        return sum(self.screen_drops.values())

    @property
    def engine(self) -> int:
        """Packets that passed the screen and reached the engine (each gets one verdict)."""
        return sum(self.verdicts.values())

    @property
    def handled(self) -> int:
        """Every packet sbc took off its sockets and judged."""
        return self.screened + self.engine

    def reasons(self) -> dict[str, int]:
        """Every drop by reason: `screen:<reason>` and `engine:<reason>`, with
        what the engine absorbed (`absorbed:<reason>`, no drops), replied and
        forwarded beside them."""
        out = {f"screen:{k}": v for k, v in self.screen_drops.items()}
        out.update({f"engine:{k}": v for k, v in self.drops.items()})
        out.update({f"absorbed:{k}": v for k, v in self.absorbed.items()})
        for kind in ("reply", "forward"):
            if self.verdicts.get(kind):
                out[kind] = self.verdicts[kind]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))
