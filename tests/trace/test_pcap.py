"""The pcap writer (sbc.trace.pcap): a file that reads back frame by frame
with the right addresses, ports, times, payloads and valid checksums, over
IPv4 and IPv6, UDP and TCP; and one that sngrep itself reads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sbc.trace.pcap import pcap
from sbc.trace.ring import Message

from .pcapread import read


def sip(method: str, call_id: str = "pcap-1") -> bytes:
    return (f"{method} sip:100@198.51.100.9 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
            "From: <sip:200@192.0.2.1>;tag=a\r\nTo: <sip:100@198.51.100.9>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


MESSAGES = [
    Message(1_700_000_000_000_001, "public", "in", "udp", ("192.0.2.1", 5062),
            ("198.51.100.9", 5060), sip("INVITE")),
    Message(1_700_000_000_000_250, "private", "out", "udp", ("10.0.0.2", 5080),
            ("10.0.0.9", 5060), sip("INVITE")),
    Message(1_700_000_000_100_000, "public", "in", "tcp", ("2001:db8::1", 40000),
            ("2001:db8::2", 5060), sip("BYE")),
    Message(1_700_000_000_100_100, "public", "in", "tcp", ("2001:db8::1", 40000),
            ("2001:db8::2", 5060), sip("BYE") + b"x"),
    Message(1_700_000_000_200_000, "public", "out", "udp", ("2001:db8::2", 5060),
            ("192.0.2.1", 5062), sip("ACK")),
]


def test_reads_back_frame_by_frame() -> None:
    packets = read(pcap(MESSAGES))
    assert len(packets) == len(MESSAGES)
    for p, m in zip(packets, MESSAGES):
        assert p.payload == m.data
        assert p.ts_us == m.ts_us
        assert p.proto == ("udp" if m.transport == "udp" else "tcp")
        assert p.checksum_ok, p
        if m.src[0] != "2001:db8::2" or m.dst[0] != "192.0.2.1":
            assert (p.src, p.dst) == (m.src, m.dst)
    # A mixed pair (an IPv4 peer on a dual-stack socket) is written as IPv6, mapped.
    assert packets[4].dst == ("::ffff:c000:201", 5062)


def test_tcp_sequence_numbers_continue_per_flow() -> None:
    import struct
    data = pcap(MESSAGES)
    # The two TCP segments of one flow: the second starts where the first ended.
    seqs = []
    at = 24
    while at < len(data):
        incl = struct.unpack_from("<I", data, at + 8)[0]
        frame = data[at + 16: at + 16 + incl]
        if frame[12:14] == b"\x86\xdd" and frame[14 + 6] == 6:
            seqs.append((struct.unpack_from("!I", frame, 14 + 40 + 4)[0], incl - 14 - 40 - 20))
        at += 16 + incl
    assert len(seqs) == 2 and seqs[1][0] == seqs[0][0] + seqs[0][1]


def test_empty_and_odd_input_never_raise() -> None:
    assert len(pcap([])) == 24
    odd = Message(0, "public", "in", "udp", ("not-an-ip", 1), ("::1", 2), b"")
    assert read(pcap([odd]))[0].src == ("::ffff:0:0", 1)
    big = Message(5, "public", "in", "udp", ("192.0.2.1", 1), ("192.0.2.2", 2), b"a" * 70000)
    (p,) = read(pcap([big]))
    assert 60000 < len(p.payload) < 65536 and p.checksum_ok


def test_sngrep_reads_it(tmp_path: Path) -> None:
    binary = shutil.which("sngrep")
    if binary is None:
        pytest.fail("sngrep is not installed (apt-get install sngrep, or run `make test`)")
    src, out = tmp_path / "call.pcap", tmp_path / "out.pcap"
    src.write_bytes(pcap(MESSAGES))
    run = subprocess.run([binary, "-N", "-q", "-I", str(src), "-O", str(out)],
                         capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    again = read(out.read_bytes())
    assert sorted(p.payload for p in again) == sorted(m.data for m in MESSAGES)
