"""The servers a benchmark can measure: sbc, or Kamailio with the reference
front-end config, both on the same loopback addresses.

A target starts one server for a run (`start(workdir, layout, account=...)`)
and returns a process object with `pid`, `pids()` (its processes),
`cpu_seconds()` (the run time of their threads, harness.run_seconds), `peak_rss_kib()` and `stop()`;
`totals(process)` after the stop gives the server's own packet counts where it
has them (sbc's `stopped` line), else None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from loadtest.flood.measure import SbcTotals
from loadtest.harness import (
    LOOPBACK,
    REPO,
    HarnessError,
    SbcProcess,
    free_ports,
    sbc_config,
    write_config,
)
from loadtest.kamailio import KamailioProcess

#: The digest account of the REGISTER brute-force runs (sbc and Kamailio alike).
ACCOUNT_USER = "1001"
ACCOUNT_PASSWORD = "Zq8-not-in-any-list"


class Server(Protocol):
    @property
    def pid(self) -> int: ...

    def start(self, timeout: float = 20.0) -> None: ...

    def cpu_seconds(self) -> float: ...

    def pids(self) -> list[int]: ...

    def peak_rss_kib(self) -> int: ...

    def stop(self, timeout: float = 10.0) -> int: ...


def stop_server(server: Server | None, errors: list[str]) -> int | None:
    """Stop `server` by its PID; a failure to stop is noted in `errors`.
    Returns its exit code (None when it never started)."""
    if server is None:
        return None
    try:
        return server.stop()
    except HarnessError as e:
        errors.append(str(e))
        return None


@dataclass(frozen=True)
class Layout:
    """Who is where on loopback: the server's public and private sockets, the
    VOS3000 stand-in, and the one trusted gateway (an address or a network)."""

    public_host: str
    public_port: int
    private_host: str
    private_port: int
    backend_host: str
    backend_port: int
    gateway: str = LOOPBACK

    @classmethod
    def pick(
        cls,
        public_host: str = LOOPBACK,
        private_host: str = LOOPBACK,
        backend_host: str = LOOPBACK,
        gateway: str = LOOPBACK,
    ) -> Layout:
        public, private, backend = free_ports(3)
        return cls(public_host, public, private_host, private, backend_host, backend, gateway)

    @property
    def public(self) -> tuple[str, int]:
        return self.public_host, self.public_port


def set_key(cfg: dict[str, Any], assignment: str) -> None:
    """KEY=VALUE (dotted KEY, VALUE read as YAML) into a config dict."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"--set {assignment!r}: give KEY=VALUE, e.g. screen.rate_per_ip.rate=100")
    node: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TypeError(f"--set {assignment!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text)


class SbcTarget:
    """sbc with its operator defaults. `python`: run it with that interpreter
    (a venv holding the compiled wheel, `make compiled`), under `name`; its
    `started` line must then say which core, `core`, it loaded."""

    def __init__(self, log_level: str = "info", sets: Sequence[str] = (), *,
                 name: str = "sbc", python: str | None = None, core: str | None = None) -> None:
        self.log_level = log_level
        self.sets = list(sets)
        self.name = name
        self.python = python
        self.core = core

    def config(self, layout: Layout, account: bool = False) -> dict[str, Any]:
        gateways: list[dict[str, Any]] = [{"name": "gw", "ip": [layout.gateway]}]
        if account:
            gateways.append(
                {
                    "name": "phones",
                    "digest": [{"username": ACCOUNT_USER, "password": ACCOUNT_PASSWORD}],
                }
            )
        cfg = sbc_config(
            layout.public_port,
            layout.private_port,
            layout.backend_port,
            {
                "public": {"host": layout.public_host},
                "private": {"host": layout.private_host},
                "backend": {"host": layout.backend_host},
                "logging": {"level": self.log_level},
                "gateways": gateways,
            },
        )
        for assignment in self.sets:
            set_key(cfg, assignment)
        return cfg

    def start(self, workdir: Path, layout: Layout, *, account: bool = False) -> SbcProcess:
        sbc = SbcProcess(write_config(workdir / "sbc.yaml", self.config(layout, account)), workdir,
                         python=self.python, code=REPO if self.python is None else None)
        sbc.start()
        if self.core is not None:
            started = sbc.named("started")
            core = started[-1].get("core") if started else None
            if core != self.core:
                sbc.stop()
                raise HarnessError(f"{self.name}: sbc started with core {core!r}, not {self.core!r}")
        return sbc

    def totals(self, server: Server) -> SbcTotals | None:
        assert isinstance(server, SbcProcess)
        return SbcTotals.from_stopped(server)


class RelayTarget:
    """loadtest/relay.py in the server's place: the loop, the sockets and one
    Python callback per datagram, no SIP (the floor under sbc's figures)."""

    name = "relay"

    def start(self, workdir: Path, layout: Layout, *, account: bool = False) -> SbcProcess:
        script = Path(__file__).resolve().parent / "relay.py"
        relay = SbcProcess(script, workdir, args=[
            str(script),
            "--public", f"{layout.public_host}:{layout.public_port}",
            "--private", f"{layout.private_host}:{layout.private_port}",
            "--backend", f"{layout.backend_host}:{layout.backend_port}",
        ])
        relay.start()
        return relay

    def totals(self, server: Server) -> SbcTotals | None:
        return None


class KamailioTarget:
    """Kamailio with the reference config; `mem_manager` ("tlsf", ...) picks
    its allocator and names the target ("kamailio-tlsf")."""

    def __init__(
        self, children: int = 2, max_calls: int = 100000, mem_manager: str | None = None
    ) -> None:
        self.children = children
        self.max_calls = max_calls
        self.mem_manager = mem_manager
        self.name = f"kamailio-{mem_manager}" if mem_manager else "kamailio"

    def values(self, layout: Layout) -> dict[str, str | int]:
        return {
            "PUBLIC_IP": layout.public_host,
            "PUBLIC_PORT": layout.public_port,
            "PRIVATE_IP": layout.private_host,
            "PRIVATE_PORT": layout.private_port,
            "BACKEND_IP": layout.backend_host,
            "BACKEND_PORT": layout.backend_port,
            "GATEWAY_IP": layout.gateway,
            "GW_MAX_CALLS": self.max_calls,
            "AUTH_USER": ACCOUNT_USER,
            "AUTH_PASSWORD": ACCOUNT_PASSWORD,
            "CHILDREN": self.children,
        }

    def start(self, workdir: Path, layout: Layout, *, account: bool = False) -> KamailioProcess:
        kam = KamailioProcess(workdir, self.values(layout), mem_manager=self.mem_manager)
        kam.start()
        return kam

    def totals(self, server: Server) -> SbcTotals | None:
        return None


#: Whatever a benchmark can start in the server's place.
Target = SbcTarget | KamailioTarget | RelayTarget
