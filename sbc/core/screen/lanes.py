"""The two lanes' rules, without sockets: which lane mode sbc runs in, and
which sources have proved they are at their address and so ride the
trusted lane.

A source proves itself by a live registration or a confirmed dialog (the
shell reports both, with the time they hold until). The table keeps each
such address until then; when that time comes the shell asks the engine
whether the address still proves itself (another registration, another
call, an open connection) and the proof is renewed, or it lapses.

Proving takes a password or a call through VOS3000, so an attacker cannot
fill the table from forged addresses; it still has a hard cap, and when it
is full a new proof is refused (counted), never let in by pushing an older
one out: a full table fails closed, and the refused source is still served,
on the untrusted lane.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class LaneMode(StrEnum):
    OFF = "off"  # one public socket for everyone
    TWO_PORTS = "two_ports"  # gateways are told to send to the trusted port
    KERNEL = "kernel"  # nftables steers trusted sources to the trusted port


def lane_mode(trusted_port: int | None, udp: bool, nftables: bool) -> LaneMode:
    """The mode a configuration asks for: no trusted port (or no UDP) is off."""
    if trusted_port is None or not udp:
        return LaneMode.OFF
    return LaneMode.KERNEL if nftables else LaneMode.TWO_PORTS


class TrustedSources:
    """Proved source addresses, each with the time its proof holds until."""

    __slots__ = ("_until", "max_entries", "refused")

    def __init__(self, max_entries: int = 65_536) -> None:
        self.max_entries = max_entries
        self.refused = 0  # proofs not taken because the table was full
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, host: object) -> bool:
        return host in self._until

    def hosts(self) -> list[str]:
        return list(self._until)

    def until(self, host: str) -> float | None:
        return self._until.get(host)

    def prove(self, host: str, until: float) -> bool:
        """`host` proved itself until `until`; True when that is news (a new
        address, or a later end): the kernel's set must learn it."""
        table = self._until
        old = table.get(host)
        if old is None:
            if len(table) >= self.max_entries:
                self.refused += 1
                return False
            table[host] = until
            return True
        if until <= old:
            return False
        table[host] = until
        return True

    def lapse(self, host: str) -> bool:
        return self._until.pop(host, None) is not None

    def expire(self, now: float, still: Callable[[str, float], bool],
               renew_s: float) -> tuple[list[tuple[str, float]], list[str]]:
        """Proofs whose time has come: those `still(host, now)` holds for are
        renewed for `renew_s` more, the others lapse. Returns (renewed with
        their new end, lapsed)."""
        renewed: list[tuple[str, float]] = []
        lapsed: list[str] = []
        table = self._until
        for host, until in list(table.items()):
            if until > now:
                continue
            if still(host, now):
                table[host] = now + renew_s
                renewed.append((host, now + renew_s))
            else:
                del table[host]
                lapsed.append(host)
        return renewed, lapsed
