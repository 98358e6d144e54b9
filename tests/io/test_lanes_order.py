"""The order of service of the two lanes, in memory and without timing: the
sockets are queues, and `handle` records what was served in which order.

A flood fills the untrusted queue; trusted datagrams arrive while it is
being served (pushed in from `handle`, as the kernel would queue them), and
each is served after at most `check_every` untrusted ones. Strangers on the
trusted port wait in a bounded backlog served from the untrusted budget."""

from __future__ import annotations

from collections import deque
from typing import Any

from sbc.io.lanes import LaneSchedule, LaneSender
from sbc.core.screen.lanes import LaneMode

GATEWAY = ("198.51.100.10", 5060)


class Lanes:
    def __init__(self, budget: int = 64, check_every: int = 8, backlog_max: int = 1024) -> None:
        self.trusted_q: deque[tuple[bytes, tuple[Any, ...]]] = deque()
        self.untrusted_q: deque[tuple[bytes, tuple[Any, ...]]] = deque()
        self.served: list[bytes] = []
        self.wakes = 0
        # While the flood is served, a gateway's datagram arrives every
    # `arrive_every` of them.
        self.arrive_every = 0
        self.arrived = 0
        self.floods = 0
        self.arrived_at: dict[bytes, int] = {}
        self.waits: list[int] = []  # per trusted datagram: flood datagrams served before it
        self.schedule = LaneSchedule(
            lambda: self.trusted_q.popleft() if self.trusted_q else None,
            lambda: self.untrusted_q.popleft() if self.untrusted_q else None,
            self.handle, lambda host, port: host == GATEWAY[0],
            budget=budget, check_every=check_every, backlog_max=backlog_max, wake=self.wake)

    def wake(self) -> None:
        self.wakes += 1

    def handle(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.served.append(data)
        if data.startswith(b"call"):
            self.waits.append(self.floods - self.arrived_at.pop(data, self.floods))
            return
        self.floods += 1
        if self.arrive_every and self.floods % self.arrive_every == 0:
            self.arrived += 1
            call = b"call %d" % self.arrived
            self.arrived_at[call] = self.floods  # floods served when it arrived
            self.trusted_q.append((call, GATEWAY))


def flood(lanes: Lanes, n: int) -> None:
    for i in range(n):
        lanes.untrusted_q.append((b"flood %d" % i, ("203.0.113.%d" % (i % 250), 40000)))


def test_trusted_lane_is_served_first_and_the_untrusted_one_in_portions() -> None:
    lanes = Lanes(budget=64, check_every=8)
    flood(lanes, 1000)
    lanes.trusted_q.extend([(b"call a", GATEWAY), (b"call b", GATEWAY)])
    served = lanes.schedule.serve_untrusted()
    assert served == 64  # one portion, then back to the loop
    assert lanes.served[:2] == [b"call a", b"call b"]
    assert len(lanes.untrusted_q) == 1000 - 64
    assert lanes.schedule.counters["trusted"] == 2 and lanes.schedule.counters["untrusted"] == 64


def test_a_trusted_datagram_waits_behind_at_most_check_every_untrusted_ones() -> None:
    lanes = Lanes(budget=64, check_every=8)
    lanes.arrive_every = 20
    flood(lanes, 5000)
    turns = 0
    while lanes.untrusted_q:
        lanes.schedule.serve_untrusted()
        turns += 1
    assert turns == -(-5000 // 64)
    assert lanes.arrived == 5000 // 20 and len(lanes.waits) == lanes.arrived
    assert max(lanes.waits) <= 8, max(lanes.waits)
    assert lanes.schedule.counters["trusted"] == lanes.arrived


def test_the_trusted_socket_alone_is_emptied_at_once() -> None:
    lanes = Lanes()
    lanes.trusted_q.extend((b"call %d" % i, GATEWAY) for i in range(100))
    assert lanes.schedule.serve_trusted() == 100
    assert lanes.served == [b"call %d" % i for i in range(100)]


def test_strangers_on_the_trusted_port_gain_nothing() -> None:
    lanes = Lanes(budget=10, check_every=5, backlog_max=4)
    flood(lanes, 30)
    stranger = ("203.0.113.77", 5555)
    lanes.trusted_q.extend([(b"forged 1", stranger), (b"call 1", GATEWAY), (b"forged 2", stranger)])
    lanes.schedule.serve_trusted()
    # The gateway's datagram is served now; the strangers' wait, and the
    # loop is asked for an untrusted turn.
    assert lanes.served == [b"call 1"]
    assert list(d for d, _ in lanes.schedule.backlog) == [b"forged 1", b"forged 2"]
    assert lanes.wakes == 1
    # Served from the untrusted budget, within it.
    assert lanes.schedule.serve_untrusted() == 10
    assert lanes.served[1:3] == [b"forged 1", b"forged 2"]
    assert lanes.served[3:] == [b"flood %d" % i for i in range(8)]
    # The backlog is bounded: beyond it, dropped and counted.
    lanes.trusted_q.extend((b"forged x", stranger) for _ in range(10))
    lanes.schedule.serve_trusted()
    assert len(lanes.schedule.backlog) == 4
    assert lanes.schedule.counters["stranger_backlog_dropped"] == 6
    assert lanes.schedule.counters["strangers_on_trusted_port"] == 12


def test_a_backlog_is_served_even_when_the_public_socket_is_quiet() -> None:
    lanes = Lanes(budget=3, backlog_max=100)
    stranger = ("203.0.113.77", 5555)
    lanes.trusted_q.extend((b"s%d" % i, stranger) for i in range(5))
    lanes.schedule.serve_trusted()
    assert lanes.wakes == 1
    assert lanes.schedule.serve_untrusted() == 3
    assert lanes.wakes == 2  # more left: another turn asked for
    assert lanes.schedule.serve_untrusted() == 2
    assert lanes.wakes == 2 and lanes.served == [b"s%d" % i for i in range(5)]


class FakeSock:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.sent: list[tuple[bytes, Any]] = []
        self.fail = fail

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.fail:
            raise BlockingIOError
        self.sent.append((data, addr))
        return len(data)


def test_two_ports_replies_leave_from_the_port_the_peer_last_sent_to() -> None:
    public, trusted = FakeSock("public"), FakeSock("trusted")
    sender = LaneSender(public, trusted, LaneMode.TWO_PORTS)  # type: ignore[arg-type]
    sender.came_in_trusted_port(GATEWAY, True)
    sender.sendto(b"200", GATEWAY)
    sender.sendto(b"x", ("192.0.2.1", 5060))
    assert trusted.sent == [(b"200", GATEWAY)] and public.sent == [(b"x", ("192.0.2.1", 5060))]
    sender.came_in_public_port(GATEWAY)
    sender.sendto(b"200 again", GATEWAY)
    assert public.sent[-1] == (b"200 again", GATEWAY)


def test_with_kernel_steering_everything_leaves_from_the_public_port() -> None:
    public, trusted = FakeSock("public"), FakeSock("trusted")
    sender = LaneSender(public, trusted, LaneMode.KERNEL)  # type: ignore[arg-type]
    sender.came_in_trusted_port(GATEWAY, True)
    sender.sendto(b"200", GATEWAY)
    assert public.sent == [(b"200", GATEWAY)] and trusted.sent == []


def test_origin_tables_are_bounded_and_strangers_cannot_push_out_gateways() -> None:
    public, trusted = FakeSock("public"), FakeSock("trusted")
    sender = LaneSender(public, trusted, LaneMode.TWO_PORTS)  # type: ignore[arg-type]
    sender.came_in_trusted_port(GATEWAY, True)
    from sbc.io import lanes as lanes_mod
    for i in range(lanes_mod.ORIGINS_STRANGERS + 500):
        sender.came_in_trusted_port(("10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255), 1), False)
    assert len(sender.strangers) == lanes_mod.ORIGINS_STRANGERS
    assert GATEWAY in sender.trusted
    for i in range(lanes_mod.ORIGINS_TRUSTED + 10):
        sender.came_in_trusted_port(("172.16.%d.%d" % (i >> 8 & 255, i & 255), i), True)
    assert len(sender.trusted) == lanes_mod.ORIGINS_TRUSTED


def test_a_failed_send_is_counted_not_raised() -> None:
    sender = LaneSender(FakeSock("p", fail=True), FakeSock("t"), LaneMode.KERNEL)  # type: ignore[arg-type]
    sender.sendto(b"x", GATEWAY)
    assert sender.errors == 1
