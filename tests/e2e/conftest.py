"""Fixtures for end-to-end tests: sbc as a subprocess, real SIPp on both sides.

The machinery lives in loadtest/harness.py (shared with the benchmark).  Here:
- `ports`: loopback ports free for UDP and TCP;
- `sbc`: a factory that writes a config to tmp_path, starts
  `python -m sbc run --config FILE`, waits for the "started" log line (whose
  `core` must be SBC_EXPECT_CORE: `mypyc` under `make test-compiled`, `python`
  otherwise), and at teardown sends SIGTERM to that PID and asserts exit code 0;
- `sipp`: a factory for SIPp processes with bounded calls and timeouts.

Every test in this folder is marked `e2e`.  Without a `sipp` binary they fail
(`make test` installs it).
"""

from __future__ import annotations

import os

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness import (
    SbcProcess,
    Sipp,
    free_ports,
    sbc_config,
    sipp_binary,
    write_config,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _require_sipp() -> None:
    # A missing SIPp is a failure, never a skip: `make test` installs it.
    if sipp_binary() is None:
        pytest.fail("sipp not installed (apt-get install sip-tester, or run `make test`)")


class Ports:
    """Named loopback ports for one test, all free for UDP and TCP."""

    def __init__(self) -> None:
        self.public, self.private, self.backend, self.caller = free_ports(4)


@pytest.fixture
def ports() -> Ports:
    return Ports()


SbcFactory = Callable[..., SbcProcess]


@pytest.fixture
def sbc(tmp_path: Path, ports: Ports) -> Iterator[SbcFactory]:
    """start(overrides) -> a running sbc on `ports`; stopped with SIGTERM at teardown.

    start(config_path=PATH) runs another sbc on a config file an earlier one
    was started with (a restart: same sockets, same state file).
    """
    started: list[SbcProcess] = []
    expected_core = os.environ.get("SBC_EXPECT_CORE", "python")

    def start(
        overrides: dict[str, Any] | None = None, *, config_path: Path | None = None
    ) -> SbcProcess:
        workdir = tmp_path / f"sbc{len(started)}"
        workdir.mkdir()
        if config_path is None:
            cfg = sbc_config(ports.public, ports.private, ports.backend, overrides)
            path = write_config(workdir / "sbc.yaml", cfg)
        else:
            path = config_path
        proc = SbcProcess(path, workdir)
        started.append(proc)
        proc.start()
        (line,) = proc.named("started")
        core = line.get("core")
        assert core == expected_core, f"sbc runs core={core}, expected {expected_core}"
        return proc

    yield start

    failures = []
    for proc in started:
        if proc.proc is None:
            continue
        try:
            rc = proc.stop()
        except Exception as e:  # noqa: BLE001 - reported below, after every process is stopped
            failures.append(f"sbc pid {proc.proc.pid}: {e}")
            continue
        if rc != 0:
            failures.append(f"sbc pid {proc.pid} exited {rc} on SIGTERM\n{proc.output_tail()}")
    if failures:
        pytest.fail("\n\n".join(failures))


SippFactory = Callable[..., Sipp]


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippFactory]:
    """new(name, scenario, **kwargs) -> a Sipp (not started) with its own workdir."""
    made: list[Sipp] = []

    def new(name: str, scenario: str, **kwargs: Any) -> Sipp:
        proc = Sipp(name, scenario, tmp_path / f"sipp-{name}", **kwargs)
        made.append(proc)
        return proc

    yield new

    for proc in made:
        proc.stop()
