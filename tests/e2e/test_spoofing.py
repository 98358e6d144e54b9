"""Forged datagrams never ban a source that has proved its address (issue:
bans that spoofing cannot trigger). A registered phone's address is forged
by a socket bound to that very loopback address (another port): scanner
signatures and a burst over the per-IP rate, far past max_offenses. The
phone is not banned and its next call reaches VOS3000; a real scanner on
another address, sending the same datagrams, is banned."""

from __future__ import annotations

import os

import pytest

from loadtest.harness import LOOPBACK

from .conftest import Ports, SbcFactory
from .test_auth import (
    PHONE_IP,
    PHONES,
    Phone,
    UdpPeer,
    _authorization,
    _challenges,
    _final,
    _invite,
    vos3000_answer,
)
from .test_bans import BANS, _wait

pytestmark = pytest.mark.e2e

SCANNER_IP = "127.0.0.8"  # a real scanner, at its own address


def _scan(n: int, source: tuple[str, int], server: tuple[str, int]) -> bytes:
    """What SIPVicious sends: an OPTIONS (here an INVITE, to pass the
    untrusted-OPTIONS rule and reach the signature check) with its User-Agent."""
    host, port = source
    return (f"INVITE sip:100@{server[0]}:{server[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-scan-{n}\r\n"
            f"From: \"sipvicious\" <sip:100@1.1.1.1>;tag=s{n}\r\nTo: <sip:100@1.1.1.1>\r\n"
            f"Call-ID: scan-{os.getpid()}-{n}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            "User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n").encode()


def test_forged_datagrams_in_a_registered_phones_name_ban_only_the_real_scanner(
    ports: Ports, sbc: SbcFactory
) -> None:
    proxy = sbc({"gateways": [PHONES], "bans": BANS,
                 "screen": {"rate_per_ip": {"rate": 20, "burst": 40}}})
    server = (LOOPBACK, ports.public)
    with UdpPeer(PHONE_IP) as peer:
        phone = Phone(peer, server)
        challenge = phone.exchange(phone.register())
        assert challenge.status == 401, challenge.text
        md5 = _challenges(challenge, "WWW-Authenticate")[0]
        ok = phone.exchange(phone.register(_authorization(md5, "REGISTER", phone.uri, 1, "5b00f001")))
        assert ok.status == 200, ok.text  # registered: proof that PHONE_IP is really there

        with UdpPeer(PHONE_IP) as forger, UdpPeer(SCANNER_IP) as scanner:
            assert forger.address[0] == PHONE_IP and forger.address != peer.address
            for n in range(200):  # signatures, and a burst far over the per-IP rate
                forger.send(_scan(n, forger.address, server), server)
                scanner.send(_scan(n, scanner.address, server), server)
            assert _wait(lambda: any(b["host"] == SCANNER_IP for b in proxy.named("ban")), 5.0), (
                proxy.output_tail())
        # sbc reads its one public socket in order: the answer to a request
        # sent after every forged datagram says each of them has been judged.
        barrier = phone.exchange(phone.register())
        assert barrier.status == 401, barrier.text
        assert not [b for b in proxy.named("ban") if b["host"] == PHONE_IP], proxy.output_tail()

        # The phone's next call goes through, authenticated, to VOS3000.
        wanted = f"sip:5551234@{LOOPBACK}:{ports.public}"
        call_id = f"after-forgery-{os.getpid()}@{PHONE_IP}"
        with UdpPeer(LOOPBACK, ports.backend, vos3000_answer((LOOPBACK, ports.backend))) as vos3000:
            first = _final(peer, _invite(peer, wanted, 1, call_id), server)
            assert first.status == 407, first.text
            (c,) = [c for c in _challenges(first, "Proxy-Authenticate") if c["algorithm"] == "MD5"]
            answered = _final(peer, _invite(peer, wanted, 2, call_id,
                                            _authorization(c, "INVITE", wanted, 1, "5b00f002")),
                              server)
            assert answered.status in (180, 200), answered.text
            assert vos3000.wait_for(lambda d: d.msg.method == "INVITE", 2.0)
