"""REGISTER brute force, end to end: banned after N failures, the ban ends,
a second round earns a longer one, a restart keeps it, an operator lifts it.

The brute forcer is a raw UDP client (`Phone` from test_auth) answering each
challenge with a wrong password; sbc answers 403 until the ban, then nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .conftest import Ports, SbcFactory
from .test_auth import PHONE_IP, PHONES, Phone, UdpPeer, _authorization, _challenges

pytestmark = pytest.mark.e2e

BANS = {"max_offenses": 3, "findtime_s": 60, "bantime_s": 3, "increment": 10.0,
        "max_bantime_s": 600}


def _silent(phone: Phone, within: float = 1.0) -> bool:
    """True when a REGISTER gets no answer at all within `within` seconds."""
    start = len(phone.peer.received)
    phone.peer.send(phone.register(), phone.server)
    return not phone.peer.wait_for(lambda d: True, within, start=start)


def _round(phone: Phone, failures: int) -> None:
    """Challenge, then `failures` wrong answers, each refused with 403."""
    for i in range(failures):
        challenge = phone.exchange(phone.register())
        assert challenge.status == 401, challenge.text
        c = _challenges(challenge, "WWW-Authenticate")[0]
        wrong = phone.register(_authorization(c, "REGISTER", phone.uri, 1, f"bf{i:06d}",
                                              password="guess"))
        refused = phone.exchange(wrong)
        assert refused.status == 403, refused.text


def _wait(predicate, timeout: float, step: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_register_brute_force_is_banned_longer_each_round(ports: Ports, sbc: SbcFactory) -> None:
    proxy = sbc({"gateways": [PHONES], "bans": BANS})
    with UdpPeer(PHONE_IP) as peer:
        phone = Phone(peer, ("127.0.0.1", ports.public))
        _round(phone, 3)
        assert _silent(phone), "still answered after three failures"
        assert _wait(lambda: bool(proxy.named("ban")), 5)
        first = proxy.named("ban")[-1]
        assert first["host"] == PHONE_IP and first["ban_level"] == 1
        assert first["reason"] == "digest_failure" and first["offenses"] == {"digest_failure": 3}
        assert 2.0 <= first["expires_in_s"] <= 3.0

        # The ban ends on time; the phone is answered (challenged) again.
        assert _wait(lambda: not _silent(phone, 0.3), 6), "the ban did not end"

        _round(phone, 3)
        assert _silent(phone)
        assert _wait(lambda: len(proxy.named("ban")) >= 2, 5)
        second = proxy.named("ban")[-1]
        assert second["ban_level"] == 2 and 29.0 <= second["expires_in_s"] <= 30.0

        # A restart keeps the ban (the level too).
        path = proxy.config_path
        assert proxy.stop() == 0
        again = sbc(config_path=path)
        assert _silent(phone), "a restart lifted the ban"

        # An operator lifts it by hand; the running sbc picks it up.
        done = subprocess.run([sys.executable, "-m", "sbc", "unban", "--config", str(path),
                               PHONE_IP], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert _wait(lambda: not _silent(phone, 0.3), 8), "the operator's unban was not applied"
        assert any(u["host"] == PHONE_IP and u["lifted_by"] == "operator"
                   for u in again.named("unban"))
