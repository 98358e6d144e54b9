"""Two UDP lanes into the one pipeline: the trusted socket is served first,
the untrusted (public) one in bounded portions.

`LaneSchedule` is the order of service, without sockets: it is handed
functions that read one datagram (or None when the socket is empty), so the
order is tested in memory. Each time the public socket is readable it
1. empties the trusted socket,
2. serves at most `budget` untrusted datagrams, looking at the trusted
   socket again every `check_every` of them,
and returns to the loop, which comes back on its next turn while the public
socket still holds datagrams. A trusted datagram therefore waits behind at
most `check_every` untrusted ones, whatever the flood.

A datagram on the trusted socket from a source that is neither a gateway
nor proved (`trusted(host, port)` says) gains nothing by it: it goes to a
bounded backlog served from the untrusted budget, after the trusted lane,
and is screened, limited and banned by the engine like any other. When the
backlog is full it is dropped and counted, as the kernel drops what does not
fit a full socket queue.

`LaneSender` sends the public side's datagrams. With kernel steering the far
end sent to the public port, so everything leaves from the public socket.
With two ports, a peer's replies leave from the port it last sent to
(RFC 3581 §4: symmetric response), remembered in bounded tables: gateways
and proved sources in one, strangers in a smaller one of their own, so a
stranger flood can push out only strangers.

`LaneSockets` binds the two sockets and registers them with the loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from ..core.screen.lanes import LaneMode
from ..core.verdict import MAPPED, Addr, unmapped
from .udp import RCVBUF, set_receive_buffer

Datagram = tuple[bytes, tuple[Any, ...]]
Read = Callable[[], "Datagram | None"]
Handle = Callable[[bytes, tuple[Any, ...]], None]

MAX_DATAGRAM = 65_535
TRUSTED_PER_LOOK = 4096  # trusted datagrams served per look, so even this lane yields
ORIGINS_TRUSTED = 65_536
ORIGINS_STRANGERS = 4096


def _host(addr: tuple[Any, ...]) -> str:
    host: str = addr[0]
    return unmapped(host) if host[:7] == MAPPED else host


class LaneSchedule:
    """The order of service of the two lanes (see the module docstring)."""

    __slots__ = ("backlog", "backlog_max", "budget", "check_every", "counters", "handle",
                 "on_trusted_port", "read_trusted", "read_untrusted", "trusted", "untrusted_seen",
                 "wake", "_woken")

    def __init__(self, read_trusted: Read, read_untrusted: Read, handle: Handle,
                 trusted: Callable[[str, int], bool], *, budget: int = 64,
                 check_every: int = 8, backlog_max: int = 1024,
                 wake: Callable[[], None] = lambda: None,
                 on_trusted_port: Callable[[tuple[Any, ...], bool], None] | None = None,
                 untrusted_seen: Callable[[tuple[Any, ...]], None] | None = None) -> None:
        self.read_trusted = read_trusted
        self.read_untrusted = read_untrusted
        self.handle = handle
        self.trusted = trusted
        self.budget = budget
        self.check_every = max(1, check_every)
        self.backlog_max = backlog_max
        self.backlog: deque[Datagram] = deque()
        self.wake = wake  # asks for `serve_untrusted` soon: the backlog is not empty
        self._woken = False
        self.on_trusted_port = on_trusted_port
        self.untrusted_seen = untrusted_seen
        self.counters = dict.fromkeys(("trusted", "untrusted", "strangers_on_trusted_port",
                                       "stranger_backlog_dropped"), 0)

    def serve_trusted(self) -> int:
        """Empty the trusted socket (up to TRUSTED_PER_LOOK); how many were read."""
        read = self.read_trusted
        handle = self.handle
        trusted = self.trusted
        counters = self.counters
        n = 0
        while n < TRUSTED_PER_LOOK:
            got = read()
            if got is None:
                break
            n += 1
            data, addr = got
            ok = trusted(_host(addr), addr[1])
            if self.on_trusted_port is not None:
                self.on_trusted_port(addr, ok)
            if ok:
                counters["trusted"] += 1
                handle(data, addr)
                continue
            counters["strangers_on_trusted_port"] += 1
            if len(self.backlog) >= self.backlog_max:
                counters["stranger_backlog_dropped"] += 1
                continue
            self.backlog.append(got)
            if not self._woken:
                self._woken = True
                self.wake()
        return n

    def serve_untrusted(self) -> int:
        """One portion of untrusted work, the trusted lane first and in
        between; how many untrusted datagrams were served."""
        self._woken = False
        self.serve_trusted()
        handle = self.handle
        backlog = self.backlog
        read = self.read_untrusted
        seen = self.untrusted_seen
        check_every = self.check_every
        served = 0
        while served < self.budget:
            if backlog:
                data, addr = backlog.popleft()
            else:
                got = read()
                if got is None:
                    break
                data, addr = got
                if seen is not None:
                    seen(addr)
            served += 1
            handle(data, addr)
            if served % check_every == 0:
                self.serve_trusted()
        self.counters["untrusted"] += served
        if backlog and not self._woken:
            self._woken = True
            self.wake()
        return served


class LaneSender:
    """`sendto` for the public side (Pipeline.public_udp) over the two sockets."""

    __slots__ = ("errors", "mode", "public", "strangers", "trusted", "trusted_sock")

    def __init__(self, public: socket.socket, trusted_sock: socket.socket, mode: LaneMode) -> None:
        self.public = public
        self.trusted_sock = trusted_sock
        self.mode = mode
        self.trusted: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self.strangers: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self.errors = 0

    def came_in_trusted_port(self, addr: tuple[Any, ...], trusted: bool) -> None:
        table, cap = (self.trusted, ORIGINS_TRUSTED) if trusted else (self.strangers,
                                                                      ORIGINS_STRANGERS)
        key = addr[:2]
        table.pop(key, None)
        table[key] = None
        if len(table) > cap:
            table.popitem(last=False)

    def came_in_public_port(self, addr: tuple[Any, ...]) -> None:
        key = addr[:2]
        if self.trusted:
            self.trusted.pop(key, None)
        if self.strangers:
            self.strangers.pop(key, None)

    def sendto(self, data: bytes, addr: Addr) -> None:
        sock = self.public
        if self.mode is LaneMode.TWO_PORTS and (addr in self.trusted or addr in self.strangers):
            sock = self.trusted_sock
        try:
            sock.sendto(data, addr)
        except OSError:  # a full send buffer, an unreachable network: UDP may lose it
            self.errors += 1


def _reader(sock: socket.socket) -> Read:
    recvfrom = sock.recvfrom

    def read() -> Datagram | None:
        try:
            return recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # an ICMP error reported on the socket: nothing to read now
            return None

    return read


def bind_udp(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket on host:port; `reuse_port`: shared with the
    other nodes on this host (SO_REUSEPORT, sbc.config.shared_port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
        set_receive_buffer(sock, RCVBUF)
    except OSError:
        sock.close()
        raise
    return sock


class LaneSockets:
    """The public and the trusted UDP socket, read in lane order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, trusted_port: int,
                 mode: LaneMode, handle: Handle, trusted: Callable[[str, int], bool], *,
                 budget: int, check_every: int, backlog_max: int,
                 reuse_port: bool = False) -> None:
        self.loop = loop
        self.mode = mode
        self.public = bind_udp(host, port, reuse_port)
        try:
            self.trusted_sock = bind_udp(host, trusted_port, reuse_port)
        except OSError:
            self.public.close()
            raise
        self.sender = LaneSender(self.public, self.trusted_sock, mode)
        two = mode is LaneMode.TWO_PORTS

        def wake() -> None:
            loop.call_soon(self.schedule.serve_untrusted)

        self.schedule = LaneSchedule(
            _reader(self.trusted_sock), _reader(self.public), handle, trusted,
            budget=budget, check_every=check_every, backlog_max=backlog_max,
            wake=wake,
            on_trusted_port=self.sender.came_in_trusted_port if two else None,
            untrusted_seen=self.sender.came_in_public_port if two else None)
        loop.add_reader(self.trusted_sock.fileno(), self.schedule.serve_trusted)
        loop.add_reader(self.public.fileno(), self.schedule.serve_untrusted)

    def stats(self) -> dict[str, int]:
        return {**self.schedule.counters, "send_errors": self.sender.errors}

    def close(self) -> None:
        for sock in (self.trusted_sock, self.public):
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())
                sock.close()
