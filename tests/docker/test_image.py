"""The container image, built and run for real.

    SIPp gateway ──udp──► sbc in the container ──udp──► SIPp "VOS3000"
                 (host networking: every socket on 127.0.0.1, free ports)

The image is built from a local Debian base (conftest.py) and started with
docker/compose.yaml's settings: by `docker compose` (or `docker-compose`)
with the repository's compose file and an override for the test's config,
port and volume, when either is installed; otherwise by `docker run` with the
same settings read from the compose file.  The tests run in order against one
deployment: the image's contents, health and hardening, a call, SIGHUP
reloads (a broken file keeps the old config), a ban kept across a new
container on the same state volume, and `docker stop`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtest.harness import LOOPBACK, Sipp, SippResult, free_ports, report, sipp_binary

from .conftest import ROOT, Engine, note

COMPOSE = ROOT / "docker" / "compose.yaml"
CONTAINER_CONFIG = ROOT / "configs" / "sbc.container.yaml"
CONFIG_IN_CONTAINER = "/etc/sbc/sbc.yaml"
STATE_DIR = "/var/lib/sbc"
HEALTHY_WITHIN_S = 90.0

pytestmark = pytest.mark.docker


def compose_service() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]["sbc"]
    return service


def grace_seconds() -> int:
    value = str(compose_service()["stop_grace_period"])
    assert value.endswith("s") and value[:-1].isdigit(), value
    return int(value[:-1])


def compose_command(engine: Engine) -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose`, if either works."""
    res = subprocess.run([engine.docker, "compose", "version"], capture_output=True, text=True,
                         timeout=30)
    if res.returncode == 0:
        return [engine.docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        res = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=30)
        if res.returncode == 0:
            return [standalone]
    return None


class Deployment:
    """sbc's container, made from compose.yaml's settings, with a loopback config.

    `up` starts a container, `down` removes it (the state volume stays),
    `remove` removes both."""

    def __init__(self, engine: Engine, image: str, workdir: Path) -> None:
        self.engine = engine
        self.image = image
        self.workdir = workdir
        self.ports = dict(zip(("public", "private", "backend", "admin", "caller"),
                              free_ports(5), strict=True))
        self.project = "sbctest" + uuid.uuid4().hex[:10]
        self.config = workdir / "sbc.yaml"
        self.write_config(self.config_dict())
        self.compose = compose_command(engine)
        self.container: str | None = None
        self.volume: str | None = None

    # ------------------------------------------------------------------ config

    def config_dict(self) -> dict[str, Any]:
        """configs/sbc.container.yaml on loopback ports; state on the volume."""
        cfg: dict[str, Any] = yaml.safe_load(CONTAINER_CONFIG.read_text())
        for name in ("public", "private", "backend"):
            cfg[name].update(host=LOOPBACK, port=self.ports[name])
        cfg["public"].pop("advertise_host")
        cfg["gateways"] = [{"name": "loopback", "ip": ["127.0.0.0/8"]}]
        cfg["admin"]["port"] = self.ports["admin"]
        assert cfg["state"]["path"].startswith(STATE_DIR + "/")
        return cfg

    def write_config(self, cfg: dict[str, Any] | str) -> None:
        # In place: the container has the file's inode bind-mounted, and a
        # new file renamed over it would never be seen there.
        text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False)
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(text)
        self.config.chmod(0o644)  # read by the container's user, 10001

    # ------------------------------------------------------------------ lifecycle

    def up(self) -> float:
        """Start a container; returns the seconds it took to become healthy."""
        started = time.monotonic()
        if self.compose is not None:
            override = self.workdir / "compose.override.yaml"
            override.write_text(yaml.safe_dump({"services": {"sbc": {
                "image": self.image,
                "environment": {"SBC_ADMIN_PORT": str(self.ports["admin"])},
                "volumes": [f"{self.config}:{CONFIG_IN_CONTAINER}:ro"],
            }}}))
            self._compose("up", "-d", "--no-build")
            self.container = self._compose("ps", "-q", "sbc").stdout.strip()
            self.volume = f"{self.project}_sbc-state"
        else:
            self.container = self.engine.run(*self.run_args()).stdout.strip()
        assert self.container, "no container started"
        return self.wait_healthy(started)

    def _compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.compose is not None
        cmd = [*self.compose, "-p", self.project, "-f", str(COMPOSE),
               "-f", str(self.workdir / "compose.override.yaml"), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.returncode == 0, f"{' '.join(cmd)}: exit {res.returncode}\n{res.stdout}{res.stderr}"
        return res

    def run_args(self) -> list[str]:
        """`docker run` with compose.yaml's settings (network, hardening, tmpfs,
        grace period, logging), the test's config file and a volume of its own."""
        svc = compose_service()
        if self.volume is None:
            self.volume = self.engine.run("volume", "create", self.project + "_sbc-state"
                                          ).stdout.strip()
        args = ["run", "-d", "--network", svc["network_mode"],
                "--stop-timeout", str(grace_seconds()),
                "-e", f"SBC_ADMIN_PORT={self.ports['admin']}",
                "-v", f"{self.config}:{CONFIG_IN_CONTAINER}:ro",
                "-v", f"{self.volume}:{STATE_DIR}"]
        if svc.get("read_only"):
            args.append("--read-only")
        args += [f"--tmpfs={path}" for path in svc.get("tmpfs", [])]
        args += [f"--cap-drop={cap}" for cap in svc.get("cap_drop", [])]
        args += [f"--security-opt={opt}" for opt in svc.get("security_opt", [])]
        logging = svc.get("logging", {})
        if logging:
            args += ["--log-driver", logging["driver"]]
            args += [f"--log-opt={k}={v}" for k, v in logging.get("options", {}).items()]
        return [*args, self.image]

    def down(self) -> None:
        """Stop (SIGTERM: sbc writes its state) and remove the container, as
        `docker compose down` does; the state volume stays."""
        if self.container is None:
            return
        if self.compose is not None:
            self._compose("down")
        else:
            grace = grace_seconds()
            self.engine.run("stop", "-t", str(grace), self.container, timeout=grace + 30)
            self.engine.run("rm", self.container)
        self.container = None

    def remove(self) -> None:
        if self.compose is not None and self.container is not None:
            self._compose("down", "-v")
            self.container = None
            return
        if self.container is not None:
            self.engine.run("rm", "-f", self.container, check=False)
            self.container = None
        if self.volume is not None:
            self.engine.run("volume", "rm", self.volume, check=False)

    # ------------------------------------------------------------------ looking

    def state(self) -> dict[str, Any]:
        assert self.container is not None
        state: dict[str, Any] = self.engine.inspect(self.container)["State"]  # type: ignore[assignment]
        return state

    def wait_healthy(self, started: float) -> float:
        deadline = started + HEALTHY_WITHIN_S
        while True:
            state = self.state()
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return time.monotonic() - started
            assert state["Status"] == "running", f"container {state['Status']}: {state}\n" \
                + self.logs_tail()
            assert time.monotonic() < deadline, (
                f"not healthy within {HEALTHY_WITHIN_S:.0f} s: {state.get('Health')}\n"
                + self.logs_tail())
            time.sleep(0.5)

    def logs(self) -> list[dict[str, Any]]:
        assert self.container is not None
        res = self.engine.run("logs", self.container)
        out = []
        for line in (res.stdout + res.stderr).splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def logs_tail(self, lines: int = 30) -> str:
        if self.container is None:
            return ""
        res = self.engine.run("logs", "--tail", str(lines), self.container, check=False)
        return "--- container log ---\n" + res.stdout + res.stderr

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def wait_events(self, name: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count:
            assert time.monotonic() < deadline, (
                f"{count} {name!r} log line(s) expected within {timeout:g} s, "
                f"{len(found)} seen\n{self.logs_tail()}")
            time.sleep(0.2)
        return found

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.container is not None
        return self.engine.run("exec", self.container, *args, check=False)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        url = f"http://{LOOPBACK}:{self.ports['admin']}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def deployment(engine: Engine, image: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(engine, image, tmp_path_factory.mktemp("deployment"))
    if dep.compose is not None:
        note(f"docker: ran {COMPOSE.relative_to(ROOT)} with {' '.join(dep.compose)} "
             "(and an override for the test's config, port and image)")
    else:
        note(f"docker: no `docker compose` or `docker-compose`: the settings of "
             f"{COMPOSE.relative_to(ROOT)} applied with `docker run` instead")
    try:
        took = dep.up()
        note(f"docker: healthy {took:.1f} s after start")
        yield dep
    finally:
        dep.remove()


@pytest.fixture(scope="module")
def vos3000(deployment: Deployment,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sipp]:
    """The VOS3000 stand-in on the backend port, answering calls and sbc's
    OPTIONS pings for the whole module; ended by its PID."""
    if sipp_binary() is None:
        pytest.fail("sipp not installed (apt-get install sip-tester, or run `make test`)")
    uas = Sipp("vos3000", "uas_pinged.xml", tmp_path_factory.mktemp("sipp-vos3000"),
               local_port=deployment.ports["backend"], calls=100_000, timeout_s=1200,
               recv_timeout_ms=None)
    uas.start().wait_bound()
    try:
        yield uas
    finally:
        uas.stop()


CALLS: list[int] = []  # calls placed through the container, for the stand-in's count


def place_calls(deployment: Deployment, vos3000: Sipp, workdir: Path, calls: int = 2) -> SippResult:
    assert vos3000.running, "the VOS3000 stand-in has exited"
    uac = Sipp("gateway", "uac.xml", workdir, local_port=deployment.ports["caller"], calls=calls,
               timeout_s=30, rate=10, duration_ms=100,
               remote=(LOOPBACK, deployment.ports["public"]))
    try:
        result = uac.start().wait()
    finally:
        uac.stop()
    CALLS.append(calls)
    ok = result.returncode == 0 and result.successful == calls and result.failed == 0
    assert ok, (f"gateway: exit {result.returncode}, {result.successful} ok, "
                f"{result.failed} failed of {calls}\n{report([result])}\n{deployment.logs_tail()}")
    return result


# ---------------------------------------------------------------------- the tests, in order


def test_image_has_no_compiler_no_sources_and_runs_the_compiled_core(
        engine: Engine, image: str) -> None:
    script = ("id -u; for t in gcc cc mypy pip; do command -v $t; done; "
              "ls -d /src /wheels /opt/build /usr/include/python3* 2>/dev/null; "
              "python -c 'from sbc import build_info as b; print(b.core())'")
    res = engine.run("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script)
    lines = res.stdout.split()
    assert lines == ["10001", "mypyc"], res.stdout + res.stderr
    config = engine.inspect(image)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]


def test_container_is_healthy_with_the_compose_settings(deployment: Deployment) -> None:
    assert deployment.state()["Health"]["Status"] == "healthy"
    assert deployment.container is not None
    info = deployment.engine.inspect(deployment.container)
    host, config = info["HostConfig"], info["Config"]
    assert isinstance(host, dict) and isinstance(config, dict)
    assert host["NetworkMode"] == "host"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] or host["CapDrop"] == ["all"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert config["StopTimeout"] == grace_seconds()
    mounts = {m["Destination"]: m for m in info["Mounts"]}  # type: ignore[attr-defined]
    assert mounts[CONFIG_IN_CONTAINER]["RW"] is False
    assert mounts[STATE_DIR]["Type"] == "volume" and mounts[STATE_DIR]["RW"] is True
    assert mounts[STATE_DIR]["Name"] == deployment.volume
    # Inside: the unprivileged user, no capability, a root that refuses writes.
    assert deployment.exec("id", "-u").stdout.strip() == "10001"
    status = deployment.exec("cat", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status, status
    assert deployment.exec("touch", "/opt/sbc/x").returncode != 0
    assert deployment.exec("touch", f"{STATE_DIR}/x").returncode == 0
    (started,) = deployment.events("started")
    assert started.get("core") == "mypyc", started
    status_code, body = deployment.admin("/healthz")
    assert status_code == 200, body


def test_call_from_a_gateway_through_the_container(
        deployment: Deployment, vos3000: Sipp, tmp_path: Path) -> None:
    result = place_calls(deployment, vos3000, tmp_path)
    assert result.successful == 2


def test_sighup_reloads_and_a_broken_config_keeps_the_old_one(
        deployment: Deployment, vos3000: Sipp, tmp_path: Path) -> None:
    assert deployment.container is not None
    cfg = deployment.config_dict()
    cfg["gateways"].append({"name": "added-by-reload", "ip": ["192.0.2.44/32"]})
    deployment.write_config(cfg)
    deployment.engine.run("kill", "-s", "HUP", deployment.container)
    (reloaded,) = deployment.wait_events("reloaded", 1)
    assert reloaded["gateways"] == "2", reloaded

    deployment.write_config("public: [this is not, a mapping\n")
    deployment.engine.run("kill", "-s", "HUP", deployment.container)
    (failed,) = deployment.wait_events("reload_failed", 1)
    assert failed.get("error"), failed
    assert deployment.state()["Status"] == "running"
    assert len(deployment.events("reloaded")) == 1
    place_calls(deployment, vos3000, tmp_path)  # still serving, on the config it had
    deployment.write_config(cfg)


def test_a_ban_survives_a_new_container_on_the_state_volume(
        deployment: Deployment, vos3000: Sipp, tmp_path: Path) -> None:
    host = "192.0.2.77"
    status, body = deployment.admin("/api/bans", {"host": host, "seconds": 3600,
                                                  "reason": "container_test"})
    assert status == 201, body
    old = deployment.container
    deployment.down()
    took = deployment.up()
    assert deployment.container != old
    note(f"docker: a new container on the same state volume healthy in {took:.1f} s")
    status, body = deployment.admin("/api/bans")
    assert status == 200, body
    assert host in [b["host"] for b in body["bans"]], body
    res = deployment.exec("sbc", "bans", "--config", CONFIG_IN_CONTAINER)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["reason"] for r in rows if r["host"] == host] == ["container_test"], rows
    place_calls(deployment, vos3000, tmp_path)  # the gateway itself is not affected


def test_docker_stop_exits_0_within_the_grace_period(
        deployment: Deployment, vos3000: Sipp) -> None:
    assert deployment.container is not None
    grace = grace_seconds()
    started = time.monotonic()
    deployment.engine.run("stop", "-t", str(grace), deployment.container, timeout=grace + 30)
    took = time.monotonic() - started
    state = deployment.state()
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, deployment.logs_tail())
    assert took < grace, f"docker stop took {took:.1f} s of its {grace} s"
    note(f"docker: `docker stop` ended sbc with exit 0 in {took:.1f} s")
    # The stand-in saw every call placed through the container.
    vos3000.stop()
    assert vos3000.proc is not None
    result = vos3000.result(vos3000.proc.returncode)
    invites = [m for m in result.messages() if m.direction == "received" and m.method == "INVITE"]
    assert len(invites) == sum(CALLS), report([result])
