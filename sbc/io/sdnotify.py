"""systemd's service notification protocol (sd_notify(3)), written out by hand.

Under a `Type=notify` unit systemd passes the path of a datagram socket in
`$NOTIFY_SOCKET`; the service sends it newline-separated `KEY=value` lines:
`READY=1` once it serves (systemd holds back units ordered after it, and
`systemctl start` returns, only then), `RELOADING=1` … `READY=1` around a
configuration reload, `STOPPING=1` when it begins to shut down, and, when the
unit sets `WatchdogSec=`, `WATCHDOG=1` at least every `$WATCHDOG_USEC`
microseconds or systemd kills and restarts it.

Why not a library: python-systemd is a C extension that needs libsystemd's
headers and a compiler to install, which a slim container image and a plain
`pip install` into a venv do not have; the protocol itself is one `sendto` on
an AF_UNIX datagram socket.  A name starting with `@` is in Linux's abstract
namespace (a leading NUL byte instead of the `@`).

Without `$NOTIFY_SOCKET` (a terminal, a container, a test) every call is a
no-op.  Nothing here raises: a notification that cannot be delivered must not
stop the SIP service, so failures are returned as False.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable

__all__ = ["Watchdog", "notify", "notify_reload"]


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    return None  # unset, or a transport we do not speak (vsock:)


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=serving") as one datagram.
    True when it was delivered, False when there is no socket or sending failed."""
    addr = _address()
    if addr is None or not states:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(states).encode())
    except OSError:
        return False
    return True


async def notify_reload(reload: Callable[[], Awaitable[tuple[bool, str]]]) -> tuple[bool, str]:
    """Run `reload` between RELOADING=1 and READY=1.  A failed reload keeps the
    old config running, so READY=1 follows either way, with the outcome in STATUS."""
    # MONOTONIC_USEC lets systemd tell this reload from an older one (sd_notify(3)).
    notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    ok, why = await reload()
    notify("READY=1", "STATUS=" + ("serving" if ok else f"reload failed, old config kept: {why}"))
    return ok, why


class Watchdog:
    """Sends WATCHDOG=1 from the event loop at half of `$WATCHDOG_USEC`: when the
    loop stalls the pings stop, and systemd restarts the service."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.interval = _watchdog_interval()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.interval is not None:
            self._ping()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ping(self) -> None:
        notify("WATCHDOG=1")
        assert self.interval is not None
        self._handle = self.loop.call_later(self.interval, self._ping)


def _watchdog_interval() -> float | None:
    """Seconds between pings, or None when systemd asked for none (or asked
    another process: `$WATCHDOG_PID`)."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0 or _address() is None:
        return None
    return usec / 2e6
