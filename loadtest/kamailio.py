"""Kamailio with the reference front-end config (loadtest/reference/kamailio.cfg)
as a child process, with the same surface as harness.SbcProcess: start,
stop, cpu_seconds, peak_rss_kib.

Kamailio forks its workers from the main process.  It runs in the
foreground (`-DD`, logging to stderr with `-E`) with its own pid file; CPU
time is summed over the main process and every descendant, and `stop` ends
the main process by PID (SIGTERM; it ends its workers) and then any worker
still alive, each by its own PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from loadtest.harness import (
    REPO,
    HarnessError,
    end_process,
    process_tree,
    pss_kib,
    tree_cpu_seconds,
    wait_port_bound,
)

CONFIG = REPO / "loadtest" / "reference" / "kamailio.cfg"


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/sbin/kamailio") if os.access(p, os.X_OK)), None
    )


def defines(values: dict[str, str | int]) -> list[str]:
    """`-A NAME=VALUE` arguments; strings are quoted as the config expects."""
    out: list[str] = []
    for name, value in values.items():
        text = str(value) if isinstance(value, int) else f'"{value}"'
        out += ["-A", f"{name}={text}"]
    return out


def check_config(values: dict[str, str | int] | None = None, config: Path = CONFIG) -> str:
    """`kamailio -c` on the config; returns its output, raises when it is refused."""
    binary = kamailio_binary()
    if binary is None:
        raise HarnessError("kamailio is not installed (apt-get install kamailio)")
    out = subprocess.run(
        [binary, "-c", "-f", str(config), *defines(values or {})],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if out.returncode != 0:
        raise HarnessError(f"kamailio -c refused {config}:\n{out.stdout}{out.stderr}")
    return out.stdout + out.stderr


class KamailioProcess:
    """`kamailio -DD -E -f kamailio.cfg -P pidfile -A ...` as a child process;
    `mem_manager` ("tlsf", "fm", "qm") picks its allocator (-x and -X)."""

    def __init__(
        self,
        workdir: Path,
        values: dict[str, str | int],
        *,
        shm_mib: int = 512,
        pkg_mib: int = 16,
        config: Path = CONFIG,
        mem_manager: str | None = None,
        prefix: Sequence[str] = (),
        proc_net: str = "/proc/net",
    ) -> None:
        binary = kamailio_binary()
        if binary is None:
            raise HarnessError("kamailio is not installed (apt-get install kamailio)")
        self.workdir = workdir
        self.rundir = workdir / "kamailio-run"
        self.pidfile = workdir / "kamailio.pid"
        # A unix socket path must stay under 108 bytes: not in the (deep) workdir.
        self.ctl = Path(tempfile.gettempdir()) / f"sbc-kamailio-{os.getpid()}-{id(self):x}.ctl"
        values = {**values, "CTL_SOCKET": f"unix:{self.ctl}"}
        self.values = values
        self.proc_net = proc_net
        self.command = [
            *prefix,
            binary,
            "-DD",
            "-E",
            "-f",
            str(config),
            "-P",
            str(self.pidfile),
            "-Y",
            str(self.rundir),
            "-w",
            str(workdir),
            "-m",
            str(shm_mib),
            "-M",
            str(pkg_mib),
            # Kamailio's memory allocator for shared and private memory
            # (-x, -X: "qm" by default, "fm", "tlsf").
            *(["-x", mem_manager, "-X", mem_manager] if mem_manager else []),
            *defines(values),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = workdir / "kamailio.stderr.log"
        self._workers: list[int] = []
        self._peak_kib = 0
        self.returncode: int | None = None
        # The script's drop counters by reason, read just before stopping.
        self.drops: dict[str, int] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        with open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        for host, port in (
            (self.values["PUBLIC_IP"], self.values["PUBLIC_PORT"]),
            (self.values["PRIVATE_IP"], self.values["PRIVATE_PORT"]),
        ):
            try:
                wait_port_bound(int(port), "udp", str(host), timeout, alive=self.proc,
                                proc_net=self.proc_net)
            except HarnessError as e:
                self.stop()
                raise HarnessError(f"kamailio: {e}\n{self.output_tail()}") from None
        # Workers are forked before the sockets are served; give them a moment.
        deadline = time.monotonic() + timeout
        while len(self.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._workers = self.pids()

    def pids(self) -> list[int]:
        """The main process and its workers."""
        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time (`run_seconds`) summed over the main process and every worker."""
        return tree_cpu_seconds(self._workers or self.pids())

    def peak_rss_kib(self) -> int:
        """Memory of all the processes (sum of Pss, shared memory counted
        once), the largest value read so far."""
        self._peak_kib = max(self._peak_kib, pss_kib(self.pids()))
        return self._peak_kib

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM to the main process by PID; then SIGKILL, by PID, to any
        process of the tree still alive.  Returns the main process's exit code."""
        if self.proc is None:
            raise HarnessError("kamailio was never started")
        if self.proc.poll() is None:
            self.drops = self.drop_counts()
        tree = set(self._workers) | set(self.pids() if self.proc.poll() is None else [])
        end_process(self.proc, timeout)
        deadline = time.monotonic() + 5.0
        left = [p for p in tree if p != self.proc.pid and _alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [p for p in left if _alive(p)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.returncode = self.proc.returncode
        self.ctl.unlink(missing_ok=True)
        if left:
            raise HarnessError(f"kamailio workers {left} outlived the main process; killed")
        return self.returncode

    def drop_counts(self) -> dict[str, int]:
        """The config's `drop_<reason>` statistics (over kamcmd and the ctl
        socket), by reason; empty when they cannot be read."""
        kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        try:
            out = subprocess.run(
                [kamcmd, "-s", f"unix:{self.ctl}", "stats.get_statistics", "all"],
                capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL, check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        return parse_drop_stats(out)

    def output_tail(self, lines: int = 40) -> str:
        try:
            text = self._stderr_path.read_text("utf-8", "replace").splitlines()[-lines:]
        except FileNotFoundError:
            text = []
        return "--- kamailio stderr (last lines) ---\n" + "\n".join(text)


def parse_drop_stats(text: str) -> dict[str, int]:
    """`script:drop_scanner = 12` lines (kamcmd's listing) -> {"scanner": 12},
    zero counts left out as sbc leaves them out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.strip().strip('"').partition("=")
        name = name.strip().rpartition(":")[2]
        if name.startswith("drop_") and value.strip().isdigit() and int(value) > 0:
            out[name[len("drop_"):]] = int(value)
    return out


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
