"""The rules for public TCP and TLS connections, without sockets.

A connection is admitted under a global cap and a cap per source address;
afterwards the sweep asks `overdue` whether it has broken a deadline: the TLS
handshake not done in time, a message not complete in time after its first
byte (slowloris), nothing said in time after the connection came up, or idle
too long. The transport keeps one `ConnClock` per connection, tells it what
happened (`ready`, `fed`) with the time, and closes what this module names.

Every reason here is a `TransportEvent` (sbc.core.reasons), counted under
its name; those in `CONNECTION_OFFENSES` are also an offense of the source
(the idle timeout and the global cap are not the source's fault). The per-source table holds only addresses with a live connection, so
it is bounded by the global cap.

The last `reserved` slots under the global cap are kept for gateways and
proved sources (`SourceCounts.trusted` tells them): a flood of connections
from strangers fills the cap only up to the reserve, and a gateway can
still connect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..reasons import TransportEvent


@dataclass(frozen=True, slots=True)
class ConnLimits:
    max_total: int = 10_000
    max_per_source: int = 64
    idle: float = 600.0
    message_deadline: float = 10.0
    handshake_deadline: float = 5.0
    reserved: int = 0  # slots under max_total only gateways and proved sources may take

    @property
    def sweep_interval(self) -> float:
        """How often to look: a quarter of the shortest deadline, within [50 ms, 1 s]."""
        shortest = min(self.idle, self.message_deadline, self.handshake_deadline)
        return min(max(shortest / 4, 0.05), 1.0)


class ConnClock:
    """What the deadlines of one connection are measured from."""

    __slots__ = ("last_active", "messages", "opened", "partial_since", "ready_at")

    def __init__(self, now: float, ready: bool = True) -> None:
        self.opened = now
        self.ready_at: float | None = now if ready else None  # TLS: when the handshake ended
        self.last_active = now
        self.partial_since: float | None = None  # first byte of the message in progress
        self.messages = 0

    def ready(self, now: float) -> None:
        self.ready_at = self.last_active = now

    def fed(self, now: float, frames: int, buffered: int) -> None:
        """Bytes arrived; `frames` messages (or keepalives) were completed by
        them, and `buffered` bytes of the next one are waiting."""
        self.last_active = now
        self.messages += frames
        if buffered == 0:
            self.partial_since = None
        elif frames or self.partial_since is None:
            # The bytes left over began to arrive with this read.
            self.partial_since = now


def overdue(clock: ConnClock, limits: ConnLimits, now: float) -> TransportEvent | None:
    """The deadline this connection has missed, if any."""
    if clock.ready_at is None:
        late = now - clock.opened > limits.handshake_deadline
        return TransportEvent.TLS_HANDSHAKE_TIMEOUT if late else None
    if clock.partial_since is not None:
        # A message under way has its own deadline, the first one included.
        if now - clock.partial_since > limits.message_deadline:
            return TransportEvent.TCP_MESSAGE_DEADLINE
    elif clock.messages == 0 and now - clock.ready_at > limits.message_deadline:
        return TransportEvent.TCP_NO_MESSAGE
    if now - clock.last_active > limits.idle:
        return TransportEvent.TCP_IDLE_CLOSED
    return None


class SourceCounts:
    """Open connections per source address, for the per-source cap."""

    __slots__ = ("_counts", "total", "trusted")

    def __init__(self, trusted: Callable[[str], bool] = lambda host: False) -> None:
        self._counts: dict[str, int] = {}
        self.total = 0
        # A gateway or proved source, which may take the reserved slots.
        self.trusted = trusted

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, host: str) -> int:
        return self._counts.get(host, 0)

    def admit(self, host: str, limits: ConnLimits) -> TransportEvent | None:
        """Take a slot for a new connection from `host`, or say why not."""
        if self.total >= limits.max_total:
            return TransportEvent.TCP_CONNECTION_CAP
        if self.total >= limits.max_total - limits.reserved and not self.trusted(host):
            return TransportEvent.TCP_CONNECTION_CAP
        n = self._counts.get(host, 0)
        if n >= limits.max_per_source:
            return TransportEvent.TCP_PER_SOURCE_CAP
        self._counts[host] = n + 1
        self.total += 1
        return None

    def release(self, host: str) -> None:
        n = self._counts.get(host, 0)
        if n <= 0:
            return
        self.total -= 1
        if n == 1:
            del self._counts[host]
        else:
            self._counts[host] = n - 1


def cert_names(cert: Mapping[str, Any]) -> list[str]:
    """The names a verified peer certificate (as `SSLSocket.getpeercert()`
    gives it) carries: its subject common names and subjectAltName entries."""
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "URI", "IP Address"):
            names.append(str(value))
    return names


def cert_matches(cert: Mapping[str, Any], subject: str) -> bool:
    """Whether the certificate names `subject` (compared without case; no wildcards)."""
    wanted = subject.lower()
    return any(name.lower() == wanted for name in cert_names(cert))
