"""Fixtures for the container tests: a Docker engine, the image, its run.

- `engine`: the `docker` CLI talking to a running engine.  When none answers
  and this is root with `dockerd` installed, one is started (its log in a temp
  file) and stopped at the end by its PID; anything else skips every test here
  with the reason.
- `image`: docker/Dockerfile built from a local Debian base made with
  docker/debian-base.sh (BASE_IMAGE), kept between runs; pip in the build
  installs from a loopback wheel directory that this machine's own pip
  (with its configured index) filled.  Build time and size are reported.

Every test in this folder is marked `docker`.  The numbers (build time,
image size, time to healthy, compose or `docker run`) are printed in the
terminal summary.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BASE_SCRIPT = ROOT / "docker" / "debian-base.sh"
BASE_IMAGE = "sbc-base:bookworm"
IMAGE = "sbc:test"

REPORT: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.docker)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("container image")
        for line in REPORT:
            terminalreporter.write_line(line)


def note(line: str) -> None:
    """A line for the terminal summary, and for -s runs at once."""
    REPORT.append(line)
    print(line)


@dataclass
class Engine:
    docker: str

    def run(self, *args: str, timeout: float = 60, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([self.docker, *args], capture_output=True, text=True,
                             timeout=timeout, env=env)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {res.returncode}\n"
                                 f"{res.stdout[-4000:]}{res.stderr[-4000:]}")
        return res

    def answers(self) -> bool:
        try:
            return self.run("info", "--format", "{{.ServerVersion}}", timeout=20,
                            check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def inspect(self, what: str) -> dict[str, object]:
        data: list[dict[str, object]] = json.loads(self.run("inspect", what).stdout)
        return data[0]


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI (Debian: apt-get install docker.io)")
    eng = Engine(docker)
    if eng.answers():
        yield eng
        return
    dockerd = shutil.which("dockerd", path=_sbin_path())
    if dockerd is None:
        pytest.skip("no Docker engine answers and dockerd is not installed")
    if os.geteuid() != 0:
        pytest.skip("no Docker engine answers, and only root can start dockerd")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not eng.answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
            tail = log_path.read_text("utf-8", "replace")[-2000:]
            pytest.skip(f"dockerd could not be started (exit {proc.returncode}):\n{tail}")
        time.sleep(0.2)
    note(f"docker: started dockerd (pid {proc.pid}) for these tests")
    try:
        yield eng
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def base_image(engine: Engine) -> str:
    """The offline base, made once and then kept (docker/debian-base.sh)."""
    if engine.run("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    assert shutil.which("debootstrap", path=_sbin_path()), (
        "debootstrap is needed for the local base image (apt-get install debootstrap)")
    started = time.monotonic()
    env = {**os.environ, "PATH": _sbin_path()}
    res = subprocess.run(["sh", str(BASE_SCRIPT), BASE_IMAGE], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    note(f"docker: made the base {BASE_IMAGE} with debootstrap in "
         f"{time.monotonic() - started:.0f} s")
    return BASE_IMAGE


def _build_requirements() -> list[str]:
    """What pip installs in the image's build stage: the build tools and the
    package's dependencies (pyproject.toml)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ["setuptools>=68", "wheel>=0.41", "mypy>=1.10", *project["dependencies"]]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture(scope="session")
def wheel_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A directory of wheels served on loopback: the build's pip index.

    This machine's pip downloads them with its own configuration (index,
    mirror, certificates); the build then needs no index of its own."""
    wheels = tmp_path_factory.mktemp("wheels")
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                          "--dest", str(wheels), *_build_requirements()],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    handler = functools.partial(_Quiet, directory=str(wheels))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheel-index", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="session")
def image(engine: Engine, base_image: str, wheel_index: str) -> str:
    """docker/Dockerfile built offline: BASE_IMAGE is the local base, apt in the
    build stage uses the base's Debian mirror, pip the loopback wheels."""
    old = engine.run("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    started = time.monotonic()
    res = engine.run("build", "--network", "host",
                     "--build-arg", f"BASE_IMAGE={base_image}",
                     "--build-arg", f"PIP_FIND_LINKS={wheel_index}",
                     "--build-arg", "PIP_NO_INDEX=1",
                     "-f", str(DOCKERFILE), "-t", IMAGE, str(ROOT),
                     timeout=1800, check=False)
    took = time.monotonic() - started
    assert res.returncode == 0, f"docker build failed:\n{res.stdout[-6000:]}{res.stderr[-3000:]}"
    new = engine.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if old and old != new:  # the previous build of this tag, now untagged
        engine.run("image", "rm", old, check=False)
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    cached = res.stdout.count("Using cache")
    note(f"docker: built {IMAGE} from {base_image} in {took:.0f} s"
         f"{f' ({cached} steps from the cache)' if cached else ''}; "
         f"image size {size / 1e6:.0f} MB")
    return IMAGE
