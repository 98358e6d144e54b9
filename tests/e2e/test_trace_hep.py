"""HEP v3 to a real consumer: sngrep listens for HEP (`-L udp:...`) and
writes what it reads to a pcap (`-O`); a SIPp call goes through sbc to a
SIPp VOS3000, and the pcap sngrep wrote holds every message of both legs,
each with its addresses, in the order sbc handled them.

    SIPp caller ──► sbc ──► SIPp "VOS3000"      sbc ──HEP3/udp──► sngrep -N -L ... -O out.pcap
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from loadtest.harness import LOOPBACK, free_ports, report, run_pair
from tests.trace.pcapread import read

from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e

DEADLINE_S = 15.0


def _bound(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((LOOPBACK, port))
    except OSError as e:
        return e.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False


def _key(text: str) -> tuple[str, str]:
    """A message by its first line and CSeq (SIPp's trace and the wire agree on both)."""
    lines = text.replace("\r\n", "\n").split("\n")
    cseq = next((ln.split(":", 1)[1].strip() for ln in lines[1:]
                 if ln.lower().startswith("cseq:")), "")
    return lines[0].strip(), " ".join(cseq.split())


def test_sngrep_receives_both_legs_of_a_sipp_call_over_hep(
        tmp_path: Path, ports: Ports, sbc: SbcFactory, sipp: SippFactory) -> None:
    binary = shutil.which("sngrep")
    if binary is None:
        pytest.fail("sngrep is not installed (apt-get install sngrep, or run `make test`)")
    (hep_port,) = free_ports(1)
    out = tmp_path / "sngrep.pcap"
    errors = tmp_path / "sngrep.err"
    with errors.open("wb") as err:
        sngrep = subprocess.Popen([binary, "-N", "-q", "-L", f"udp:{LOOPBACK}:{hep_port}",
                                   "-O", str(out)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not _bound(hep_port):
            assert sngrep.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, "sngrep never bound its HEP port"
            time.sleep(0.02)
        proxy = sbc({"trace": {"enabled": True},
                     "hep": {"enabled": True, "host": LOOPBACK, "port": hep_port,
                             "capture_id": 4242}})
        uas, uac = run_pair(
            sipp("vos3000", "uas.xml", local_port=ports.backend, calls=1, transport="u1",
                 timeout_s=30),
            sipp("caller", "uac.xml", local_port=ports.caller, calls=1, transport="u1",
                 remote=(LOOPBACK, ports.public), timeout_s=30, rate=10, duration_ms=100))
        assert uac.returncode == 0 and uac.successful == 1, report([uac, uas], proxy)
        assert uas.returncode == 0 and uas.successful == 1, report([uac, uas], proxy)

        public = [(m.direction, _key(m.text)) for m in uac.messages()]
        private = [(m.direction, _key(m.text)) for m in uas.messages()]
        assert len(public) == 7 and len(private) == 7, (public, private)
        want = len(public) + len(private)

        packets = []
        while len(packets) < want:  # sngrep writes each packet as it reads it
            assert time.monotonic() < deadline, f"sngrep wrote {len(packets)} of {want}"
            time.sleep(0.05)
            data = out.read_bytes() if out.exists() else b""
            packets = read(data) if len(data) > 24 else []
    finally:
        sngrep.terminate()
        try:
            sngrep.wait(5)
        except subprocess.TimeoutExpired:
            sngrep.kill()
            sngrep.wait(5)

    assert len(packets) == want
    caller, vos = (LOOPBACK, ports.caller), (LOOPBACK, ports.backend)
    sbc_public, sbc_private = (LOOPBACK, ports.public), (LOOPBACK, ports.private)
    seen_public, seen_private = [], []
    for p in packets:
        ends = {p.src, p.dst}
        if ends == {caller, sbc_public}:
            seen_public.append(("sent" if p.src == caller else "received",
                                _key(p.payload.decode())))
        elif ends == {vos, sbc_private}:
            seen_private.append(("sent" if p.src == vos else "received",
                                 _key(p.payload.decode())))
        else:
            pytest.fail(f"a packet between {p.src} and {p.dst}")
    # Every message of both legs, with its direction, in SIPp's order on each leg.
    assert seen_public == public
    assert seen_private == private
    assert Counter(_key(p.payload.decode())[0].split(" ")[0] for p in packets)["INVITE"] == 2
    assert all(p.ts_us > 1_600_000_000_000_000 for p in packets)
    assert [p.ts_us for p in packets] == sorted(p.ts_us for p in packets)
