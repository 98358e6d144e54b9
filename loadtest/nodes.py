"""Several sbc nodes on one host for the benchmarks: one shared public port
(`public.reuse_port`), a private socket and a gateway egress of each node's
own, and a redis-server of the group's own on a free loopback port.

    with NodeGroup(workdir, nodes=2, backend_port=5070) as group:
        group.public          # ("127.0.0.1", port) every caller sends to
        group.cpu_seconds()   # summed over the nodes (schedstat of every thread)
        group.stop()          # SIGTERM by PID; then group.stopped() has each stopped line

One node runs as a single sbc runs today: no reuse_port, no cluster, no
Redis. Two or more share the port and the cluster (bans and limits through
the group's Redis). Every process is started here and ended here by its PID.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from loadtest.harness import (
    LOOPBACK,
    HarnessError,
    SbcProcess,
    free_ports,
    run_seconds,
    sbc_config,
    write_config,
)
from tests.redis_server import RedisServer

GW = "gw"
#: The gateway: the callers' addresses (127.0.0.0/24), clear of the flood
#: generator's fresh sources (127.1.0.0 and up).
GATEWAY_NET = "127.0.0.0/24"


class NodeGroup:
    def __init__(self, workdir: Path, *, nodes: int, backend_port: int,
                 limits: dict[str, Any] | None = None, log_level: str = "info",
                 sets: dict[str, Any] | None = None) -> None:
        if not 1 <= nodes <= 8:
            raise HarnessError("nodes: 1 to 8")
        self.workdir = workdir
        self.count = nodes
        self.backend_port = backend_port
        self.limits = limits or {}
        self.log_level = log_level
        self.sets = sets or {}
        (self.public_port,) = free_ports(1)
        self.redis: RedisServer | None = None
        self.procs: list[SbcProcess] = []
        self.egress: list[tuple[str, int]] = []

    @property
    def public(self) -> tuple[str, int]:
        return (LOOPBACK, self.public_port)

    @property
    def shared(self) -> bool:
        return self.count > 1

    def config(self, i: int, private: int, egress: int) -> dict[str, Any]:
        cfg = sbc_config(self.public_port, private, self.backend_port, {
            "public": {"transports": ["udp"], "reuse_port": self.shared},
            "logging": {"level": self.log_level},
            "gateways": [{"name": GW, "ip": [GATEWAY_NET], "limits": self.limits,
                          "egress": {"host": LOOPBACK, "port": egress}}],
        })
        if self.redis is not None:
            cfg["cluster"] = {"enabled": True, "url": self.redis.url, "node": f"node{i}"}
        for key, value in self.sets.items():
            cfg[key] = {**cfg.get(key, {}), **value}
        return cfg

    def start(self) -> Self:
        try:
            if self.shared:
                self.redis = RedisServer(self.workdir / "redis")
                self.redis.start()
            for i in range(self.count):
                private, egress = free_ports(2)
                node_dir = self.workdir / f"node{i}"
                node_dir.mkdir(parents=True, exist_ok=True)
                proc = SbcProcess(write_config(node_dir / "sbc.yaml",
                                               self.config(i, private, egress)), node_dir)
                self.procs.append(proc)
                self.egress.append((LOOPBACK, egress))
                proc.start()
            if self.shared:
                for proc in self.procs:
                    proc.wait_named("cluster_limits_shared")
                self._wait_live()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_live(self, timeout: float = 10.0) -> None:
        """Until every node's heartbeat is in Redis, so each takes its share."""
        assert self.redis is not None
        deadline = time.monotonic() + timeout
        while True:
            seen = sum(self.redis.command("EXISTS", f"sbc:node:node{i}") == b":1"
                       for i in range(self.count))
            if seen == self.count:
                return
            if time.monotonic() >= deadline:
                raise HarnessError(f"{seen} of {self.count} nodes live in Redis after {timeout:g}s")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.proc is not None]

    def cpu_seconds(self) -> float:
        """CPU time of every thread of every node (harness.run_seconds)."""
        return sum(run_seconds(pid) for pid in self.pids())

    def stop(self) -> list[str]:
        """Stop every node (SIGTERM by PID), then Redis; the failures, as text."""
        errors = []
        for proc in self.procs:
            if proc.proc is not None and proc.proc.poll() is None:
                try:
                    rc = proc.stop()
                except HarnessError as e:
                    errors.append(str(e))
                    continue
                if rc != 0:
                    errors.append(f"sbc pid {proc.pid} exited {rc} (see {proc.workdir})")
        if self.redis is not None:
            self.redis.stop()
        return errors

    def stopped(self) -> list[dict[str, Any]]:
        """Each node's `stopped` line (its counters over its life)."""
        out = []
        for proc in self.procs:
            lines = proc.named("stopped")
            if not lines:
                raise HarnessError(f"sbc printed no 'stopped' line\n{proc.output_tail()}")
            out.append(lines[-1])
        return out

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
