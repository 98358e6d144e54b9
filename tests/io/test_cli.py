"""The command line as an operator meets it: exit codes and what gets bound."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.io.test_transport import free_port


def run_sbc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sbc", *args], capture_output=True, text=True,
                          timeout=30)


def test_bad_config_exits_non_zero_and_binds_nothing(tmp_path: Path) -> None:
    port = free_port()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"public:\n  host: 127.0.0.1\n  port: {port}\nprivate:\n  port: 70000\n")
    res = run_sbc("run", "--config", str(bad))
    assert res.returncode == 2
    assert f"{bad}:5: private.port" in res.stderr
    # Nothing was bound: the public port is still free.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))


def test_check_config_accepts_the_shipped_examples() -> None:
    for name in ("configs/sbc.example.yaml", "configs/local.yaml"):
        res = run_sbc("check-config", name)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("config ok")


def test_port_in_use_is_an_error_line_not_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", port))
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"state: {{path: {tmp_path / 's.sqlite'}}}\nadmin: {{enabled: false}}\n"
                       f"public: {{host: 127.0.0.1, port: {port}, transports: [udp]}}\n"
                       f"private: {{host: 127.0.0.1, port: {free_port()}}}\n"
                       f"backend: {{host: 127.0.0.1, port: {free_port()}}}\n")
        res = run_sbc("run", "--config", str(cfg))
    assert res.returncode == 1
    assert "bind_failed" in res.stdout and "Traceback" not in res.stdout + res.stderr
