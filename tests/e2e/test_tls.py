"""SIP over TLS through a real sbc process, with real TLS clients from Debian.

    sipsak / baresip ──tls──► sbc public TLS ─ sbc private ──udp──► SIPp "VOS3000"

sipsak (GnuTLS) sends an OPTIONS that VOS3000 answers; baresip places a
whole call that VOS3000 answers and then hangs up, so the BYE must come back
over the caller's TLS connection. Certificates are made for each test: a CA,
the sbc's certificate for 127.0.0.1, and a client certificate for the
gateway that requires one. sipsak verifies the sbc's certificate against the
CA; its own client certificate option does nothing with GnuTLS, so it stands
for the client without one.
"""

from __future__ import annotations

import subprocess
import threading
import wave
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness import (
    LOOPBACK,
    SbcProcess,
    end_process,
    free_ports,
    report,
    sipsak_binary,
)

from ..tlscerts import Certs, make_certs
from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_port(ports: Ports) -> int:
    taken = {ports.public, ports.private, ports.backend, ports.caller}
    return next(p for p in free_ports(6) if p not in taken)


def tls_overrides(certs: Certs, tls_port: int, gateway_tls: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    gateway: dict[str, Any] = {"name": "loopback", "ip": ["127.0.0.0/8"], "options": "pass"}
    if gateway_tls is not None:
        gateway["tls"] = gateway_tls
    return {
        "public": {"transports": ["udp", "tls"], "tls_port": tls_port},
        "tls": {"cert_file": str(certs.server.cert), "key_file": str(certs.server.key),
                "ca_file": str(certs.ca)},
        "gateways": [gateway],
    }


def sipsak_options(certs: Certs, tls_port: int, cwd: Path) -> tuple[int, str]:
    binary = sipsak_binary()
    if binary is None:
        pytest.fail("sipsak not installed (apt-get install sipsak, or run `make test`)")
    # The target has no port and the sbc is the outbound proxy (-p): sipsak
    # then checks the certificate against the host 127.0.0.1 (with a port in
    # the URI it compares "host:port" and always fails).
    cmd = [binary, "-k", LOOPBACK, "-vvv", "--transport=tls", f"--tls-ca-cert={certs.ca}",
           "-s", f"sip:1000@{LOOPBACK}", "-p", f"{LOOPBACK}:{tls_port}"]
    done = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=30, check=False)
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    return done.returncode, f"$ {' '.join(cmd)}\n(exit {done.returncode})\n{out}"


def test_sipsak_options_over_tls_reach_udp_vos3000_and_back(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory, certs: Certs, tls_port: int, tmp_path: Path
) -> None:
    proxy = sbc(tls_overrides(certs, tls_port))
    vos3000 = sipp("vos3000", "uas_options.xml", local_port=ports.backend, calls=1,
                   timeout_s=20, transport="u1").start().wait_bound()
    rc, out = sipsak_options(certs, tls_port, tmp_path)
    uas = vos3000.wait()
    assert rc == 0, out + proxy.output_tail()
    assert "Protocol: TLS1.3" in out or "Protocol: TLS1.2" in out, out
    assert "does not match" not in out and "not trustworthy" not in out, out
    # Answered by the VOS3000 stand-in (its tag), over the TLS connection.
    assert "SIP/2.0 200 OK" in out and "SIPpTag" in out, out
    assert uas.returncode == 0 and uas.successful == 1, report([uas], proxy)
    (options,) = [m for m in uas.messages() if m.direction == "received" and m.method == "OPTIONS"]
    vias = options.headers("Via")
    assert vias[0].startswith(f"SIP/2.0/UDP {LOOPBACK}:{ports.private}"), options.text
    assert vias[1].startswith("SIP/2.0/TLS ") and f";received={LOOPBACK};rport=" in vias[1], (
        options.text)


def test_client_without_certificate_refused_when_its_gateway_requires_one(
    ports: Ports, sbc: SbcFactory, certs: Certs, tls_port: int, tmp_path: Path
) -> None:
    proxy = sbc(tls_overrides(certs, tls_port, {"require_client_cert": True,
                                                "subject": "acme.test"}))
    rc, out = sipsak_options(certs, tls_port, tmp_path)
    assert rc != 0, out + proxy.output_tail()
    assert "Protocol: TLS" in out, out  # the handshake itself succeeded
    assert "SIP/2.0" not in out.split("send to:", 1)[-1], out  # and nothing came back


# --------------------------------------------------------------------------
# A whole call with baresip


class Baresip:
    """baresip as a TLS caller, configured in `workdir`; output read by a thread.

    Audio comes from a silent 8 kHz file and goes nowhere; SIP listens on
    loopback ports of its own choosing. Stopped by PID.
    """

    def __init__(self, workdir: Path, certs: Certs, client: bool) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        silence = workdir / "silence.wav"
        with wave.open(str(silence), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 8000 * 60)  # longer than any call here
        lines = [
            "poll_method epoll", f"sip_listen {LOOPBACK}:0", f"sip_cafile {certs.ca}",
            "call_local_timeout 20", "call_max_calls 1", f"audio_source aufile,{silence}",
            "audio_player aufile,/dev/null", "audio_alert aufile,/dev/null",
            f"net_interface {LOOPBACK}", "module_path /usr/lib/baresip/modules",
            "module g711.so", "module aufile.so", "module_tmp account.so", "module_app menu.so",
        ]
        if client:
            pem = workdir / "client.pem"
            pem.write_bytes(certs.client.cert.read_bytes() + certs.client.key.read_bytes())
            lines.append(f"sip_certificate {pem}")
        (workdir / "config").write_text("\n".join(lines) + "\n")
        (workdir / "accounts").write_text(
            f"<sip:alice@{LOOPBACK};transport=tls>;regint=0;audio_codecs=PCMU\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader = threading.Thread()
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def dial(self, uri: str) -> Baresip:
        # -t: a cap on its life should the test go wrong; the test stops it first.
        self.proc = subprocess.Popen(
            ["baresip", "-f", str(self.workdir), "-e", f"/dial {uri}", "-t", "60"],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:
            for raw in self.proc.stdout:
                with self._changed:
                    self.lines.append(raw.decode("utf-8", "replace").rstrip())
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0) -> bool:
        """Wait until a line contains `text` (False: not within `timeout`, or baresip exited)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(text in line for line in self.lines)
                or (self.proc is not None and self.proc.poll() is not None), timeout
            ) and any(text in line for line in self.lines)

    def output(self) -> str:
        with self._changed:
            return "\n".join(line for line in self.lines if "audio=" not in line)

    def stop(self) -> None:
        if self.proc is None:
            return
        end_process(self.proc)
        self._reader.join(5)


@pytest.fixture
def baresip_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Baresip] = []

    def new(certs: Certs, client: bool) -> Baresip:
        b = Baresip(tmp_path / f"baresip{len(made)}", certs, client)
        made.append(b)
        return b

    yield new
    for b in made:
        b.stop()


def _call(proxy: SbcProcess, sipp: SippFactory, ports: Ports, tls_port: int,
          caller: Baresip) -> tuple[Any, Baresip]:
    """baresip calls; VOS3000 answers, waits a second and hangs up."""
    vos3000 = sipp("vos3000", "uas_hangup.xml", local_port=ports.backend, calls=1,
                   timeout_s=30, transport="u1", duration_ms=1000)
    vos3000.start().wait_bound()
    caller.dial(f"sip:1000@{LOOPBACK}:{tls_port};transport=tls")
    return vos3000.wait(), caller


@pytest.mark.parametrize("require_cert", [False, True])
def test_baresip_call_over_tls_hung_up_by_vos3000(
    require_cert: bool, ports: Ports, sbc: SbcFactory, sipp: SippFactory, certs: Certs,
    tls_port: int, baresip_factory: Any,
) -> None:
    gateway_tls = {"require_client_cert": True, "subject": "acme.test"} if require_cert else None
    proxy = sbc(tls_overrides(certs, tls_port, gateway_tls))
    uas, caller = _call(proxy, sipp, ports, tls_port, baresip_factory(certs, require_cert))
    assert uas.returncode == 0 and uas.successful == 1, (
        report([uas], proxy) + "\n\nbaresip:\n" + caller.output())
    assert caller.wait_for("Call established"), caller.output()
    # VOS3000's BYE reached baresip over its TLS connection, and its 200 came back.
    assert caller.wait_for("terminated"), caller.output()

    (invite,) = [m for m in uas.messages() if m.direction == "received" and m.method == "INVITE"]
    assert invite.headers("Via")[1].startswith("SIP/2.0/TLS "), invite.text
    assert f";received={LOOPBACK};rport=" in invite.headers("Via")[1], invite.text
    record_route = ", ".join(invite.headers("Record-Route"))
    assert f"<sip:{LOOPBACK}:{tls_port};transport=tls;lr;r2=on>" in record_route, invite.text
    bye_oks = [m for m in uas.messages()
               if m.direction == "received" and m.status == 200 and m.cseq_method == "BYE"]
    assert len(bye_oks) == 1, report([uas], proxy)
    (end,) = proxy.wait_named("call_end")
    assert end["reason"] == "bye_backend", proxy.output_tail()

