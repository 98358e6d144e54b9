"""The two lanes' rules without sockets: the mode a config asks for, the
table of proved sources (its cap, its expiry, renewal), and the connection
slots reserved for gateways and proved sources."""

from __future__ import annotations

from sbc.core.reasons import TransportEvent
from sbc.core.screen.conns import ConnLimits, SourceCounts
from sbc.core.screen.lanes import LaneMode, TrustedSources, lane_mode


def test_lane_mode_follows_the_trusted_port_udp_and_nftables() -> None:
    assert lane_mode(None, True, True) is LaneMode.OFF
    assert lane_mode(5062, False, True) is LaneMode.OFF  # no UDP: nothing to steer
    assert lane_mode(5062, True, False) is LaneMode.TWO_PORTS
    assert lane_mode(5062, True, True) is LaneMode.KERNEL


def test_a_proof_is_news_once_and_again_only_when_it_lasts_longer() -> None:
    t = TrustedSources(max_entries=10)
    assert t.prove("192.0.2.1", 100.0) is True
    assert t.prove("192.0.2.1", 90.0) is False  # an earlier end changes nothing
    assert t.until("192.0.2.1") == 100.0
    assert t.prove("192.0.2.1", 200.0) is True
    assert "192.0.2.1" in t and len(t) == 1


def test_the_table_is_capped_and_a_full_table_refuses_new_proofs() -> None:
    t = TrustedSources(max_entries=3)
    for i in range(3):
        assert t.prove(f"192.0.2.{i}", 100.0)
    assert t.prove("192.0.2.99", 100.0) is False  # fails closed: not let in
    assert "192.0.2.99" not in t
    assert t.refused == 1 and len(t) == 3
    # Nobody was pushed out to make room, and a known source still renews.
    assert all(f"192.0.2.{i}" in t for i in range(3))
    assert t.prove("192.0.2.0", 150.0) is True
    # Once one lapses, there is room again.
    assert t.lapse("192.0.2.1") and not t.lapse("192.0.2.1")
    assert t.prove("192.0.2.99", 100.0) is True


def test_expiry_renews_what_still_holds_and_lets_the_rest_lapse() -> None:
    t = TrustedSources()
    t.prove("192.0.2.1", 10.0)  # still registered at 10: renewed
    t.prove("192.0.2.2", 10.0)  # its call ended: lapses
    t.prove("192.0.2.3", 50.0)  # not due yet
    asked: list[str] = []

    def still(host: str, now: float) -> bool:
        asked.append(host)
        return host == "192.0.2.1"

    renewed, lapsed = t.expire(10.0, still, 300.0)
    assert renewed == [("192.0.2.1", 310.0)] and lapsed == ["192.0.2.2"]
    assert sorted(asked) == ["192.0.2.1", "192.0.2.2"]  # the one not due was not asked
    assert t.until("192.0.2.1") == 310.0 and "192.0.2.2" not in t and "192.0.2.3" in t
    assert t.expire(11.0, still, 300.0) == ([], [])


def test_reserved_connection_slots_are_kept_for_trusted_sources() -> None:
    gateways = {"198.51.100.10"}
    counts = SourceCounts(trusted=lambda host: host in gateways)
    limits = ConnLimits(max_total=10, max_per_source=10, reserved=3)
    for _ in range(7):
        assert counts.admit("203.0.113.5", limits) is None
    # At the reserve: a stranger is refused, a gateway still gets in.
    assert counts.admit("203.0.113.6", limits) is TransportEvent.TCP_CONNECTION_CAP
    for _ in range(3):
        assert counts.admit("198.51.100.10", limits) is None
    # The cap itself holds for everyone.
    assert counts.admit("198.51.100.10", limits) is TransportEvent.TCP_CONNECTION_CAP
    assert counts.total == 10
    counts.release("203.0.113.5")
    assert counts.admit("203.0.113.6", limits) is TransportEvent.TCP_CONNECTION_CAP
    for _ in range(3):
        counts.release("198.51.100.10")
    assert counts.total == 6
    assert counts.admit("203.0.113.6", limits) is None  # below the reserve again


def test_no_reserve_by_default() -> None:
    counts = SourceCounts()
    limits = ConnLimits(max_total=2, max_per_source=2)
    assert counts.admit("203.0.113.5", limits) is None
    assert counts.admit("203.0.113.6", limits) is None
    assert counts.admit("203.0.113.7", limits) is TransportEvent.TCP_CONNECTION_CAP
