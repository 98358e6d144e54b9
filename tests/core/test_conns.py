"""Connection rules without sockets: caps, deadlines, certificate names."""

from __future__ import annotations

import pytest

from sbc.core.reasons import CONNECTION_OFFENSES as OFFENSES
from sbc.core.reasons import TransportEvent
from sbc.core.screen.conns import (
    ConnClock,
    ConnLimits,
    SourceCounts,
    cert_matches,
    cert_names,
    overdue,
)

PER_SOURCE_CAP = TransportEvent.TCP_PER_SOURCE_CAP
GLOBAL_CAP = TransportEvent.TCP_CONNECTION_CAP
MESSAGE_DEADLINE = TransportEvent.TCP_MESSAGE_DEADLINE
NO_MESSAGE = TransportEvent.TCP_NO_MESSAGE
HANDSHAKE_TIMEOUT = TransportEvent.TLS_HANDSHAKE_TIMEOUT
IDLE = TransportEvent.TCP_IDLE_CLOSED
LIMITS = ConnLimits(max_total=4, max_per_source=2, idle=60.0, message_deadline=0.3,
                    handshake_deadline=0.5)


def test_per_source_and_global_caps() -> None:
    counts = SourceCounts()
    assert counts.admit("192.0.2.1", LIMITS) is None
    assert counts.admit("192.0.2.1", LIMITS) is None
    assert counts.admit("192.0.2.1", LIMITS) == PER_SOURCE_CAP
    assert counts.admit("192.0.2.2", LIMITS) is None
    assert counts.admit("192.0.2.3", LIMITS) is None
    assert counts.admit("192.0.2.4", LIMITS) == GLOBAL_CAP
    assert counts.total == 4 and counts.get("192.0.2.1") == 2
    counts.release("192.0.2.1")
    assert counts.admit("192.0.2.4", LIMITS) is None


def test_per_source_table_holds_only_live_sources() -> None:
    counts = SourceCounts()
    for i in range(1000):
        host = f"10.0.{i // 250}.{i % 250}"
        assert counts.admit(host, ConnLimits(max_total=10, max_per_source=1)) is None
        counts.release(host)
    assert len(counts) == 0 and counts.total == 0
    counts.release("10.9.9.9")  # never admitted: nothing to release, nothing goes negative
    assert counts.total == 0


def test_slow_message_misses_its_deadline_counted_from_its_first_byte() -> None:
    clock = ConnClock(0.0)
    clock.fed(0.1, frames=0, buffered=10)  # first bytes of a message
    clock.fed(0.3, frames=0, buffered=11)  # a byte more: the deadline does not move
    assert overdue(clock, LIMITS, 0.39) is None
    assert overdue(clock, LIMITS, 0.41) == MESSAGE_DEADLINE


def test_each_message_gets_its_own_deadline() -> None:
    clock = ConnClock(0.0)
    clock.fed(0.1, frames=0, buffered=10)
    clock.fed(0.35, frames=1, buffered=5)  # message done; the next one began in this read
    assert overdue(clock, LIMITS, 0.6) is None
    assert overdue(clock, LIMITS, 0.7) == MESSAGE_DEADLINE
    clock.fed(0.5, frames=1, buffered=0)  # and done too: nothing pending
    assert overdue(clock, LIMITS, 5.0) is None


def test_silent_connection_misses_the_first_message_deadline() -> None:
    clock = ConnClock(0.0)
    assert overdue(clock, LIMITS, 0.29) is None
    assert overdue(clock, LIMITS, 0.31) == NO_MESSAGE


def test_tls_deadline_runs_until_the_handshake_then_the_first_message() -> None:
    clock = ConnClock(0.0, ready=False)
    assert overdue(clock, LIMITS, 0.45) is None
    assert overdue(clock, LIMITS, 0.55) == HANDSHAKE_TIMEOUT
    clock.ready(0.4)
    assert overdue(clock, LIMITS, 0.55) is None
    assert overdue(clock, LIMITS, 0.75) == NO_MESSAGE


def test_idle_connection_after_messages() -> None:
    clock = ConnClock(0.0)
    clock.fed(0.1, frames=1, buffered=0)
    assert overdue(clock, LIMITS, 60.0) is None
    assert overdue(clock, LIMITS, 60.2) == IDLE


def test_which_reasons_are_offenses() -> None:
    assert {PER_SOURCE_CAP, MESSAGE_DEADLINE, NO_MESSAGE, HANDSHAKE_TIMEOUT} <= OFFENSES.keys()
    assert IDLE not in OFFENSES and GLOBAL_CAP not in OFFENSES
    assert all(event.value == offense.value for event, offense in OFFENSES.items())


@pytest.mark.parametrize(("limits", "interval"), [
    (ConnLimits(), 1.0),
    (ConnLimits(idle=60.0, message_deadline=0.3, handshake_deadline=0.3), 0.075),
    (ConnLimits(idle=0.01, message_deadline=0.01, handshake_deadline=0.01), 0.05),
])
def test_sweep_interval_follows_the_shortest_deadline(limits: ConnLimits, interval: float) -> None:
    assert limits.sweep_interval == pytest.approx(interval)


CERT = {
    "subject": ((("countryName", "GB"),), (("commonName", "Acme.Test"),)),
    "subjectAltName": (("DNS", "sip.acme.test"), ("IP Address", "192.0.2.7"),
                       ("email", "ops@acme.test")),
}


def test_certificate_names_are_common_name_and_alt_names() -> None:
    assert cert_names(CERT) == ["Acme.Test", "sip.acme.test", "192.0.2.7"]
    assert cert_names({}) == []


@pytest.mark.parametrize(("subject", "ok"), [
    ("acme.test", True), ("SIP.ACME.TEST", True), ("192.0.2.7", True),
    ("ops@acme.test", False), ("*.acme.test", False), ("acme", False), ("GB", False),
])
def test_certificate_subject_match(subject: str, ok: bool) -> None:
    assert cert_matches(CERT, subject) is ok
