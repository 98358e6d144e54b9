#!/usr/bin/env python3
"""Build and run the UDP flood generator (gen.c), and the payloads it sends.

    python3 loadtest/flood/generator.py --kind options --dst 127.0.0.1:5060 \\
        --count 100000 --seconds 5 [--rate 20000] [--src 127.0.0.66] [--sources N]
    python3 loadtest/flood/generator.py --check [--sources 100000]

gen.c is compiled on first use (gcc -O2) into loadtest/results/.flood-bin/
(or a temporary directory when that is not writable) and rebuilt whenever
the source is newer than the binary.  Every run is bounded by a packet count
AND a number of seconds, both required; the generator stops by itself at
whichever comes first, and `Flood.stop` ends it by PID.  Destinations and
sources outside 127.0.0.0/8 are refused here and again by the binary.

`--check` sends to a Python receiver on a free loopback port instead of sbc
and prints what was sent next to what arrived (and the kernel's UDP receive
buffer drops), to validate the generator on this machine.

Payload kinds (each a template with a per-packet counter in Call-ID, tags and
branch, so no two packets are equal):
- options:  OPTIONS with `User-Agent: friendly-scanner` (SIPVicious svmap);
- register: REGISTER brute force: digest Authorization for a real account
            with a random (wrong) response per packet, on a nonce sbc issued;
- invite:   INVITE with SDP from a source that is no gateway (toll fraud probe).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loadtest.harness import LOOPBACK, REPO, HarnessError, end_process, free_ports

GEN_SOURCE = Path(__file__).resolve().with_name("gen.c")
CACHE_DIR = REPO / "loadtest" / "results" / ".flood-bin"

#: Call-IDs of every flood packet start with this, so a trace can be searched for it.
FLOOD_MARK = "sbcflood"
#: The one scanner address of the single-source floods.
SCANNER_SOURCE = "127.0.0.66"
#: First address of the many-source floods (127.1.0.0, 127.1.0.1, ...): clear
#: of 127.0.0.0/24, where sbc, SIPp and the gateways live.
MANY_SOURCES_BASE = "127.1.0.0"
#: Most distinct sources one run may cycle over (the binary allows all of 127/8).
MAX_SOURCES = 4_000_000

_LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")


class FloodError(HarnessError):
    """The generator could not be built, was refused its arguments, or did not end."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host) in _LOOPBACK_NET
    except ValueError:
        return False


def _require_loopback(host: str, what: str) -> None:
    if not is_loopback(host):
        raise FloodError(f"{what} {host!r} refused: floods stay inside 127.0.0.0/8")


# --------------------------------------------------------------------------
# Building


def build(force: bool = False, cache_dir: Path | None = None) -> Path:
    """The path of the compiled generator; compiles gen.c when the binary is
    missing or older than the source (or when `force`)."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise FloodError("no C compiler (gcc) found: apt-get install gcc")
    directory = cache_dir or CACHE_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".w{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        directory = Path(tempfile.gettempdir()) / f"sbc-flood-bin-{os.getuid()}"
        directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "gen"
    if (
        not force
        and binary.exists()
        and binary.stat().st_mtime >= GEN_SOURCE.stat().st_mtime
        and os.access(binary, os.X_OK)
    ):
        return binary
    # Compile beside the target and rename, so concurrent builds never see half a file.
    tmp = directory / f"gen.{os.getpid()}.{threading.get_ident()}.tmp"
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(GEN_SOURCE)]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise FloodError(f"compiling {GEN_SOURCE} failed: {e}") from None
    if out.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise FloodError(f"compiling {GEN_SOURCE} failed:\n{' '.join(cmd)}\n{out.stderr}")
    os.replace(tmp, binary)
    return binary


# --------------------------------------------------------------------------
# Payloads

N = "{{N}}"  # 10-digit packet number
R = "{{R}}"  # 32 random hex digits


def _msg(lines: list[str], body: str = "") -> bytes:
    head = "\r\n".join([*lines, f"Content-Length: {len(body.encode())}"])
    return (head + "\r\n\r\n" + body).encode()


def scanner_options(
    dst: tuple[str, int], src: str = SCANNER_SOURCE, user_agent: str = "friendly-scanner"
) -> bytes:
    """What SIPVicious svmap sends: OPTIONS with its User-Agent.  The From and
    To display names are left out so the User-Agent alone carries the signature."""
    host, port = dst
    return _msg(
        [
            f"OPTIONS sip:100@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-{N};rport",
            "Max-Forwards: 70",
            f"To: <sip:100@{host}:{port}>",
            f"From: <sip:100@{host}:{port}>;tag={N}",
            f"User-Agent: {user_agent}",
            f"Call-ID: {FLOOD_MARK}-{N}@{src}",
            f"Contact: <sip:100@{src}:5060>",
            "CSeq: 1 OPTIONS",
            "Accept: application/sdp",
        ]
    )


def register_bruteforce(
    dst: tuple[str, int],
    src: str = SCANNER_SOURCE,
    nonce: str = "bm9uY2Utbm90LWZyb20tc2Jj",
    username: str = "1001",
    realm: str = "sbc",
) -> bytes:
    """A password guesser (SIPVicious svcrack style) on a nonce sbc issued to
    `src`: a real username and a random MD5 response per packet."""
    host, port = dst
    uri = f"sip:{host}:{port}"
    return _msg(
        [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-{N};rport",
            "Max-Forwards: 70",
            f"From: <sip:{username}@{host}>;tag={N}",
            f"To: <sip:{username}@{host}>",
            f"Call-ID: {FLOOD_MARK}-{N}@{src}",
            "CSeq: 2 REGISTER",
            f"Contact: <sip:{username}@{src}:5060>",
            "Expires: 3600",
            "User-Agent: Z 5.4.12 v2.10.19.9",
            (
                f'Authorization: Digest username="{username}",realm="{realm}",'
                f'nonce="{nonce}",uri="{uri}",response="{R}",algorithm=MD5,'
                f'cnonce="{N}",qop=auth,nc=00000001'
            ),
        ]
    )


def invite_unknown(dst: tuple[str, int], src: str = SCANNER_SOURCE) -> bytes:
    """An INVITE with SDP to an international number from a source that is no
    gateway, with an ordinary User-Agent: only identification can stop it."""
    host, port = dst
    body = "\r\n".join(
        [
            "v=0",
            f"o=- 1 1 IN IP4 {src}",
            "s=-",
            f"c=IN IP4 {src}",
            "t=0 0",
            "m=audio 10000 RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=sendrecv",
            "",
        ]
    )
    return _msg(
        [
            f"INVITE sip:00972592123456@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-{N};rport",
            "Max-Forwards: 70",
            f"From: <sip:1000@{host}>;tag={N}",
            f"To: <sip:00972592123456@{host}>",
            f"Call-ID: {FLOOD_MARK}-{N}@{src}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:1000@{src}:5060>",
            "User-Agent: Grandstream GXP1625 1.0.4.138",
            "Content-Type: application/sdp",
        ],
        body,
    )


KINDS = ("options", "register", "invite")


def payload(kind: str, dst: tuple[str, int], src: str, nonce: str | None = None) -> bytes:
    if kind == "options":
        return scanner_options(dst, src)
    if kind == "register":
        return register_bruteforce(dst, src, nonce) if nonce else register_bruteforce(dst, src)
    if kind == "invite":
        return invite_unknown(dst, src)
    raise ValueError(f"unknown payload kind {kind!r}; one of {', '.join(KINDS)}")


_NONCE = re.compile(rb'nonce="([^"]+)"', re.IGNORECASE)


def fetch_nonce(
    dst: tuple[str, int],
    src: str = SCANNER_SOURCE,
    username: str = "1001",
    attempts: int = 3,
    timeout: float = 1.0,
) -> str:
    """Ask sbc for a digest nonce as a phone would: REGISTER without
    credentials from `src`, read the nonce of the 401.  sbc binds a nonce to
    the source address, so the flood must come from `src` too."""
    _require_loopback(dst[0], "destination")
    _require_loopback(src, "source")
    host, port = dst
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        for i in range(attempts):
            msg = _msg(
                [
                    f"REGISTER sip:{host}:{port} SIP/2.0",
                    f"Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-nonce{i};rport",
                    "Max-Forwards: 70",
                    f"From: <sip:{username}@{host}>;tag=nonce{i}",
                    f"To: <sip:{username}@{host}>",
                    f"Call-ID: {FLOOD_MARK}-nonce@{src}",
                    f"CSeq: {i + 1} REGISTER",
                    f"Contact: <sip:{username}@{src}:{lport}>",
                ]
            )
            s.sendto(msg, dst)
            try:
                data, _ = s.recvfrom(65535)
            except TimeoutError:
                continue
            found = _NONCE.search(data)
            if data.startswith(b"SIP/2.0 401 ") and found:
                return found.group(1).decode()
    raise FloodError(f"no 401 with a nonce from {host}:{port} for a REGISTER from {src}")


# --------------------------------------------------------------------------
# Running


@dataclass
class FloodStats:
    """The generator's closing JSON line."""

    sent: int = 0
    errors: int = 0
    attempted: int = 0
    seconds: float = 0.0
    pps: float = 0.0
    payload_bytes: int = 0
    sources: int = 1
    mode: str = ""
    procs: int = 1
    batch: int = 0
    batches: int = 0
    rate: float = 0.0
    stopped: str = ""
    errno: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FloodStats:
        for line in reversed(text.strip().splitlines()):
            if line.startswith("{"):
                doc = json.loads(line)
                known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
                return cls(**known)
        raise FloodError(f"no statistics line in the generator's output: {text[-500:]!r}")


class Flood:
    """One run of the generator, bounded by `count` packets and `seconds`."""

    def __init__(
        self,
        template: bytes,
        dst: tuple[str, int],
        workdir: Path,
        *,
        count: int,
        seconds: float,
        rate: float = 0.0,
        src: str = SCANNER_SOURCE,
        sources: int | None = None,
        src_mode: str = "auto",
        src_port: int = 0,
        batch: int = 64,
        procs: int = 1,
        name: str = "flood",
        cpus: set[int] | None = None,
    ) -> None:
        _require_loopback(dst[0], "destination")
        _require_loopback(src, "source")
        if count < 1 or not 0 < seconds <= 3600:
            raise FloodError("a flood needs count >= 1 and 0 < seconds <= 3600")
        if sources is not None:
            if not 1 <= sources <= MAX_SOURCES:
                raise FloodError(f"sources: 1..{MAX_SOURCES}")
            last = ipaddress.IPv4Address(src) + (sources - 1)
            _require_loopback(str(last), "last source")
        self.dst = dst
        self.seconds = seconds
        self.workdir = workdir
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.template_path = workdir / f"{name}.tmpl"
        self.template_path.write_bytes(template)
        cmd = [
            str(build()),
            "--dst",
            f"{dst[0]}:{dst[1]}",
            "--template",
            str(self.template_path),
            "--count",
            str(count),
            "--seconds",
            f"{seconds:g}",
            "--rate",
            f"{rate:g}",
            "--batch",
            str(batch),
            "--src",
            src,
            "--src-port",
            str(src_port),
        ]
        if sources is not None:
            cmd += ["--sources", str(sources), "--src-mode", src_mode]
        if not 1 <= procs <= 16:
            raise FloodError("procs: 1..16")
        if procs > 1:
            cmd += ["--procs", str(procs)]
        self.command = cmd
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = workdir / f"{name}.stdout"
        self._err = workdir / f"{name}.stderr"

    def start(self) -> Flood:
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        if self.cpus:
            # Pinned at once; the generator spends its first milliseconds opening sockets.
            os.sched_setaffinity(self.proc.pid, self.cpus)
        return self

    def wait(self, timeout: float | None = None) -> FloodStats:
        """Wait for the generator to end by itself (its own bounds plus a
        margin), then parse its statistics."""
        assert self.proc is not None
        limit = self.seconds + 10.0 if timeout is None else timeout
        try:
            rc = self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop()
            raise FloodError(
                f"generator pid {self.proc.pid} still running {limit:.0f}s after start; killed"
            ) from None
        out = self._out.read_text("utf-8", "replace")
        err = self._err.read_text("utf-8", "replace")
        if rc != 0:
            raise FloodError(f"generator exited {rc}: {' '.join(self.command)}\n{err}")
        return FloodStats.parse(out)

    def run(self, timeout: float | None = None) -> FloodStats:
        try:
            return self.start().wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        """End the generator by PID if it still runs: SIGTERM (it prints its
        statistics and exits), then SIGKILL."""
        if self.proc is not None:
            end_process(self.proc)


# --------------------------------------------------------------------------
# Reading the kernel's UDP counters


def udp_counters() -> dict[str, int]:
    """The `Udp:` counters of /proc/net/snmp (InDatagrams, RcvbufErrors, ...).
    They are system-wide: other traffic on the machine counts too."""
    with open("/proc/net/snmp", encoding="ascii") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    if len(rows) < 2:
        raise FloodError("/proc/net/snmp has no Udp counters")
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=True)}


# --------------------------------------------------------------------------
# A counting receiver (the generator's check, and a silent backend)


class Receiver:
    """A thread that counts datagrams arriving on a loopback UDP port.

    `mark`, when given, counts the datagrams that contain it; `keep_sources`
    keeps the set of distinct source addresses (memory grows with it).
    """

    def __init__(
        self,
        port: int = 0,
        host: str = LOOPBACK,
        mark: bytes | None = None,
        keep_sources: bool = False,
        rcvbuf: int = 32 << 20,
    ) -> None:
        _require_loopback(host, "receiver address")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.mark = mark
        self.packets = 0
        self.marked = 0
        self.sources: set[str] | None = set() if keep_sources else None
        self.first: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"recv-{self.port}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _run(self) -> None:
        recv = self.sock.recvfrom
        mark, sources = self.mark, self.sources
        while not self._stop.is_set():
            try:
                data, addr = recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets += 1
            if self.first is None:
                self.first = data
            if mark is not None and mark in data:
                self.marked += 1
            if sources is not None:
                sources.add(addr[0])

    def drain(self, quiet: float = 0.3, timeout: float = 5.0) -> None:
        """Return once no datagram arrived for `quiet` seconds (or after `timeout`)."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            if self.packets == last:
                return
            last = self.packets
            time.sleep(quiet)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flood_from_args(args: argparse.Namespace, dst: tuple[str, int], workdir: Path) -> Flood:
    """The flood the command line describes, towards `dst`."""
    src = args.src or (MANY_SOURCES_BASE if args.sources is not None else SCANNER_SOURCE)
    return Flood(
        payload(args.kind, dst, src, args.nonce),
        dst,
        workdir,
        count=args.count,
        seconds=args.seconds,
        rate=args.rate,
        src=src,
        sources=args.sources,
        src_mode=args.src_mode,
        batch=args.batch,
        procs=args.procs,
    )


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Send to our own receiver and compare: the generator's self-test."""
    workdir = Path(tempfile.mkdtemp(prefix="flood-check-"))
    (port,) = free_ports(1)
    with Receiver(port, mark=FLOOD_MARK.encode(), keep_sources=True) as rx:
        before = udp_counters()
        stats = _flood_from_args(args, (LOOPBACK, port), workdir).run()
        rx.drain()
        after = udp_counters()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "generator": stats.__dict__,
        "received": rx.packets,
        "received_with_mark": rx.marked,
        "distinct_sources": len(rx.sources or ()),
        "kernel_rcvbuf_errors": after["RcvbufErrors"] - before["RcvbufErrors"],
        "lost": stats.sent - rx.packets,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kind", choices=KINDS, default="options", help="payload (default options)")
    p.add_argument("--dst", help="127.x.y.z:PORT to send to (not with --check)")
    p.add_argument("--src", help="source address, or the first of --sources")
    p.add_argument("--sources", type=int, help="cycle over this many consecutive source addresses")
    p.add_argument("--src-mode", choices=("auto", "bind", "pktinfo", "packet"), default="auto",
                   help="packet: whole frames on lo (root, and route_localnet=1 in the namespace)")
    p.add_argument("--procs", type=int, default=1, help="senders, each with 1/P of the load")
    p.add_argument("--rate", type=float, default=0.0, help="packets per second; 0 = flat out")
    p.add_argument("--count", type=int, help="most packets to send (required)")
    p.add_argument("--seconds", type=float, help="most seconds to run (required)")
    p.add_argument("--batch", type=int, default=64, help="packets per sendmmsg (default 64)")
    p.add_argument("--nonce", help="register: the nonce to put in Authorization")
    p.add_argument("--check", action="store_true", help="send to an own receiver and compare")
    p.add_argument("--build", action="store_true", help="(re)build the binary and print its path")
    args = p.parse_args(argv)
    try:
        if args.build:
            print(build(force=True))
            return 0
        if args.count is None or args.seconds is None:
            p.error("--count and --seconds are both required: every flood is bounded")
        if args.check:
            print(json.dumps(check(args), indent=2))
            return 0
        if not args.dst:
            p.error("--dst is required (or --check)")
        host, _, port = args.dst.rpartition(":")
        dst = (host, int(port))
        workdir = Path(tempfile.mkdtemp(prefix="flood-"))
        stats = _flood_from_args(args, dst, workdir).run()
        shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(stats.__dict__))
        return 0
    except (HarnessError, ValueError) as e:
        print(f"generator: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
