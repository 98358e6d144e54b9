"""Drive sbc and SIPp on loopback: free ports, sbc as a subprocess, SIPp runs.

Shared by the end-to-end tests (tests/e2e) and the benchmark
(loadtest/bench_calls.py).  Everything here is bounded: every wait has a
deadline, every SIPp run has a call count (-m) and a global timeout
(-timeout), and every process is ended by its own PID.  Traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "loadtest" / "scenarios"
LOOPBACK = "127.0.0.1"


class HarnessError(RuntimeError):
    """A process did not start, stop or answer in time."""


# --------------------------------------------------------------------------
# Ports


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports that are free for both UDP and TCP on `host`.

    Each candidate comes from binding UDP port 0; it is kept only if TCP can
    bind the same number too.  All sockets stay open until the set is
    complete, so the ports are distinct; then they are closed and the numbers
    returned (a small window remains in which another process could take one).
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count * 20):
            if len(ports) == count:
                break
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            held.append(udp)
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind((host, port))
            except OSError:
                tcp.close()
                continue
            held.append(tcp)
            ports.append(port)
        if len(ports) != count:
            raise HarnessError(f"could not find {count} ports free for UDP and TCP")
        return ports
    finally:
        for s in held:
            s.close()


def _proc_net_bound(port: int, proto: str, host: str, proc_net: str = "/proc/net") -> bool:
    """Whether /proc/net shows `host:port` bound (UDP) or listening (TCP);
    `proc_net` is another network namespace's view (`/proc/PID/net` of a
    process inside it)."""
    want_port = f"{port:04X}"
    want_host = socket.inet_aton(host)[::-1].hex().upper()  # little-endian IPv4
    any_host = "00000000"
    for name in (proto,):
        try:
            with open(f"{proc_net}/{name}", encoding="ascii") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local_host, local_port = parts[1].split(":")
                    state = parts[3]
                    if local_port != want_port or local_host not in (want_host, any_host):
                        continue
                    if proto == "tcp" and state != "0A":  # TCP_LISTEN
                        continue
                    return True
        except FileNotFoundError:
            raise HarnessError("/proc/net is not available: cannot poll ports") from None
    return False


def wait_port_bound(
    port: int,
    proto: str = "udp",
    host: str = LOOPBACK,
    timeout: float = 10.0,
    alive: subprocess.Popen[bytes] | None = None,
    proc_net: str = "/proc/net",
) -> None:
    """Poll until something is bound to `host:port` (`proto` "udp" or "tcp").

    Reads /proc/net instead of probing with a bind or a packet, so the check
    never disturbs the process that is about to bind.  `alive`, when given,
    is the process expected to bind: its exit ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        if _proc_net_bound(port, proto, host, proc_net):
            return
        if alive is not None and alive.poll() is not None:
            raise HarnessError(
                f"process {alive.pid} exited ({alive.returncode}) before binding "
                f"{proto} {host}:{port}"
            )
        if time.monotonic() >= deadline:
            raise HarnessError(f"nothing bound {proto} {host}:{port} within {timeout:.0f}s")
        time.sleep(0.02)


# --------------------------------------------------------------------------
# /proc readings for a process


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def run_seconds(pid: int) -> float:
    """CPU time of the threads of `pid` alive now, in seconds with nanosecond
    resolution: the first field of /proc/PID/task/TID/schedstat (time spent
    running on a CPU) summed over the threads; `cpu_seconds` where schedstat
    is missing.  What the benchmarks count as a server's CPU.

    `cpu_seconds` (utime + stime) comes in 10 ms clock ticks per process and
    lags the run time it is scaled to: for sbc (one thread) the two agree
    within 0.3 % over a call run, for Kamailio's ten or so processes utime +
    stime read 2-8 % low over 5-second runs.  A thread that has exited drops
    out of this sum (utime + stime keep it); neither server's threads or
    processes end during a run."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        raise ProcessLookupError(pid) from None
    seen = False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
            seen = True
        except (OSError, ValueError, IndexError):
            continue
    if not seen:
        return cpu_seconds(pid)
    return total / 1e9


def peak_rss_kib(pid: int) -> int:
    """Peak resident set size of `pid` in KiB (VmHWM from /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise HarnessError(f"no VmHWM for pid {pid}")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now (from /proc/*/stat)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                stat = f.read()
        except OSError:
            continue
        parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in parent or current == pid:
            tree.append(current)
        todo.extend(child for child, ppid in parent.items() if ppid == current)
    return tree


def tree_cpu_seconds(
    pids: Iterable[int], reading: Callable[[int], float] | None = None
) -> float:
    """CPU time summed over `pids` (processes gone are skipped): the run time
    of their threads (`run_seconds`), or `reading` (e.g. `cpu_seconds`)."""
    read = reading or run_seconds
    total = 0.0
    for pid in pids:
        try:
            total += read(pid)
        except OSError:
            continue
    return total


def pss_kib(pids: Iterable[int]) -> int:
    """Proportional set size summed over `pids` (Pss of /proc/PID/smaps_rollup):
    memory shared between the processes is counted once."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


# --------------------------------------------------------------------------
# sbc


def end_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> bool:
    """End a child we started, by its PID: SIGTERM, and SIGKILL if it has not
    exited within `timeout`.  True when it ended on SIGTERM (or had already)."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)
        return False


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def sbc_config(
    public_port: int,
    private_port: int,
    backend_port: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An sbc configuration on loopback; `overrides` is merged in section by section."""
    cfg: dict[str, Any] = {
        "public": {"host": LOOPBACK, "port": public_port, "transports": ["udp", "tcp"]},
        "private": {"host": LOOPBACK, "port": private_port},
        "backend": {"host": LOOPBACK, "port": backend_port},
        "sip": {"t1_ms": 500, "invite_timeout_s": 32},
        "logging": {"format": "json", "level": "info"},
        # Every loopback caller is one trusted gateway unless a test says otherwise.
        "gateways": [{"name": "loopback", "ip": ["127.0.0.0/8"]}],
        # No admin listener (and so no OPTIONS pings at the VOS3000 stand-in).
        "admin": {"enabled": False},
    }
    return _merge(cfg, overrides or {})


def write_config(path: Path, cfg: Mapping[str, Any]) -> Path:
    """Write `cfg`; its state file goes beside it unless the config names one."""
    cfg = dict(cfg)
    cfg.setdefault("state", {"path": str(path.parent / "state.sqlite")})
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


class SbcProcess:
    """`python -m sbc run --config FILE` as a child process.

    A thread reads stdout for the whole life of the process, so the pipe never
    fills; each line is written to `stdout.log` in `workdir`, JSON lines are
    parsed, and the last `keep` lines are kept in memory.  `start` returns
    when the line whose `event` is "started" has been printed.
    """

    def __init__(
        self,
        config_path: Path,
        workdir: Path,
        keep: int = 5000,
        prefix: Sequence[str] = (),
        *,
        python: str | None = None,
        code: Path | None = REPO,
        args: Sequence[str] | None = None,
    ) -> None:
        self.config_path = config_path
        # The interpreter (default: this one), and the folder its `sbc` is
        # imported from: made the child's working directory (`python -m`
        # puts it first on sys.path) and the head of its PYTHONPATH. None:
        # the interpreter's own installed sbc (the compiled wheel's venv),
        # so neither names a source tree.
        self.python = python or sys.executable
        self.code = code
        # What follows the interpreter: sbc itself, or another program in
        # its place (loadtest/relay.py) with its arguments.
        self.args = list(args) if args is not None else [
            "-m", "sbc", "run", "--config", str(config_path)]
        # Put before the command, e.g. `ip netns exec NAME` (which execs, so
        # the PID is sbc's own).
        self.prefix = list(prefix)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._started = threading.Event()
        self._reader: threading.Thread | None = None
        self._stderr_path = workdir / "sbc.stderr.log"
        self._stdout_path = workdir / "sbc.stdout.log"
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ)
        if self.code is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.code), env.get("PYTHONPATH")]))
        else:
            env.pop("PYTHONPATH", None)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self._stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [*self.prefix, self.python, *self.args],
                cwd=self.code if self.code is not None else self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self._reader = threading.Thread(target=self._read, name=f"sbc-{self.proc.pid}", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._started.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2.0)
                self.returncode = self.proc.returncode
                raise HarnessError(
                    f"sbc exited with {self.proc.returncode} before 'started'\n{self.output_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise HarnessError(
                    f"sbc printed no 'started' line within {timeout:.0f}s\n{self.output_tail()}"
                )

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout, open(self._stdout_path, "wb") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.lines.append(line)
                if line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        self.events.append(event)
                        if event.get("event") == "started":
                            self._started.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        """Parsed log lines whose `event` is `name` (from the kept lines)."""
        return [e for e in list(self.events) if e.get("event") == name]

    def wait_named(self, name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """`named(name)` once there is at least one such line (sbc writes its
        log lines in batches); HarnessError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not (found := self.named(name)):
            if time.monotonic() >= deadline:
                raise HarnessError(f"no {name!r} log line within {timeout:g}s\n{self.output_tail()}")
            time.sleep(0.02)
        return found

    def cpu_seconds(self) -> float:
        """CPU time of all of sbc's threads (`run_seconds`)."""
        return run_seconds(self.pid)

    def pids(self) -> list[int]:
        return [self.pid]

    def peak_rss_kib(self) -> int:
        return peak_rss_kib(self.pid)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM by PID, wait; SIGKILL if it does not exit in time.  Returns the exit code."""
        if self.proc is None:
            raise HarnessError("sbc was never started")
        if not end_process(self.proc, timeout):
            if self._reader is not None:
                self._reader.join(2.0)
            self.returncode = self.proc.returncode
            raise HarnessError(
                f"sbc ignored SIGTERM for {timeout:.0f}s and was killed\n{self.output_tail()}"
            )
        if self._reader is not None:
            self._reader.join(5.0)
        self.returncode = self.proc.returncode
        return self.returncode

    def output_tail(self, lines: int = 40) -> str:
        out = list(self.lines)[-lines:]
        try:
            err = self._stderr_path.read_text("utf-8", "replace").splitlines()[-lines:]
        except FileNotFoundError:
            err = []
        return (
            "--- sbc stdout (last lines) ---\n"
            + "\n".join(out)
            + "\n--- sbc stderr (last lines) ---\n"
            + "\n".join(err)
        )


# --------------------------------------------------------------------------
# SIPp

SIPP_EXIT = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    254: "fatal error binding a socket",
    255: "fatal error (or -timeout reached with -timeout_error)",
}


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def sipsak_binary() -> str | None:
    return shutil.which("sipsak")


def read_stat_csv(path: Path) -> dict[str, str]:
    """The last row of a SIPp ';'-separated statistics file, keyed by column."""
    rows = [
        line.rstrip("\r\n").split(";")
        for line in path.read_text("utf-8", "replace").splitlines()
        if line.strip()
    ]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


_TRACE_SEP = re.compile(r"^-{20,} (\S+ \S+)\n(\w+) message (sent|received)[^\n]*\n\n", re.MULTILINE)


@dataclass(frozen=True)
class TracedMessage:
    """One SIP message from a SIPp -trace_msg log."""

    when: str
    transport: str
    direction: str  # "sent" or "received"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        word = self.first_line.split(" ", 1)[0]
        return None if word.startswith("SIP/") else word

    @property
    def status(self) -> int | None:
        parts = self.first_line.split(" ", 2)
        return int(parts[1]) if parts[0].startswith("SIP/") and len(parts) > 1 else None

    def headers(self, name: str) -> list[str]:
        """Values of every `name` header line, in order (one value per line)."""
        head = self.text.replace("\r\n", "\n").split("\n\n", 1)[0]
        want = name.lower()
        out = []
        for line in head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == want:
                out.append(value.strip())
        return out

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    @property
    def cseq_method(self) -> str | None:
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None


def parse_trace(text: str) -> list[TracedMessage]:
    """Split a -trace_msg log into messages."""
    matches = list(_TRACE_SEP.finditer(text))
    out = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : end].rstrip("\n")
        out.append(TracedMessage(m.group(1), m.group(2), m.group(3), body))
    return out


@dataclass
class SippResult:
    """What one SIPp run left behind."""

    name: str
    scenario: str
    command: list[str]
    returncode: int
    workdir: Path
    stats: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)

    def stat(self, column: str) -> int:
        """A cumulative integer counter from -trace_stat, e.g. stat("SuccessfulCall")."""
        return int(self.stats.get(f"{column}(C)", "0") or 0)

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall")

    def count(self, column: str) -> int:
        """A per-message counter from -trace_counts, e.g. count("0_INVITE_Retrans")."""
        return int(self.counts.get(column, "0") or 0)

    @property
    def received_messages(self) -> int:
        """Every message this SIPp received, first copies and retransmissions
        (the -trace_counts columns of its receive steps)."""
        total = 0
        for column, value in self.counts.items():
            if column.endswith("_Recv") or (
                column.endswith("_Retrans") and f"{column[: -len('_Retrans')]}_Recv" in self.counts
            ):
                total += int(value or 0)
        return total

    def file(self, suffix: str) -> Path | None:
        """The trace file ending in `suffix` ("messages.log", "errors.log", "rtt.csv", ...)."""
        found = sorted(self.workdir.glob(f"{self.scenario}_*_{suffix}"))
        return found[-1] if found else None

    def text(self, suffix: str, limit: int = 20000) -> str:
        path = self.file(suffix)
        return "" if path is None else _read_tail(path, limit)

    @property
    def stdout(self) -> str:
        """SIPp's standard output: its periodic statistics screen."""
        return _read_tail(self.workdir / "stdout.log")

    @property
    def stderr(self) -> str:
        return _read_tail(self.workdir / "stderr.log")

    def messages(self) -> list[TracedMessage]:
        """Every message SIPp sent or received (needs trace_msg=True)."""
        path = self.file("messages.log")
        return [] if path is None else parse_trace(path.read_text("utf-8", "replace"))

    def rtts_ms(self, rtd: str = "invite") -> list[float]:
        """Response times of one rtd from -trace_rtt, in ms."""
        path = self.file("rtt.csv")
        if path is None:
            return []
        out: list[float] = []
        for line in path.read_text("utf-8", "replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2] == rtd:
                out.append(float(parts[1]))
        return out

    def describe(self, messages: int = 8000) -> str:
        """A report for an assertion message: exit code, counters, errors, last messages."""
        nonzero = {
            k: v
            for k, v in self.stats.items()
            if k.endswith("(C)")
            and (
                k.startswith("Failed")
                or k
                in (
                    "SuccessfulCall(C)",
                    "OutgoingCall(C)",
                    "IncomingCall(C)",
                    "Retransmissions(C)",
                    "OutOfCallMsgs(C)",
                    "DeadCallMsgs(C)",
                )
            )
            and v not in ("0", "")
        }
        parts = [
            (
                f"=== SIPp {self.name} ({self.scenario}.xml): exit {self.returncode} "
                f"({SIPP_EXIT.get(self.returncode, 'unknown')})"
            ),
            "command: " + " ".join(self.command),
            f"workdir: {self.workdir}",
            f"counters: {nonzero}",
        ]
        stderr = self.stderr.strip()
        if stderr:
            parts += ["--- stderr ---", stderr[-3000:]]
        errors = self.text("errors.log", 6000)
        if errors:
            parts += ["--- errors.log ---", errors]
        msgs = self.text("messages.log", messages)
        if msgs:
            parts += ["--- messages.log (tail) ---", msgs]
        screen = self.text("screen.log", 4000)
        if screen and not msgs:
            parts += ["--- screen.log ---", screen]
        elif not (errors or msgs) and self.stdout.strip():
            parts += ["--- stdout (tail) ---", self.stdout[-3000:]]
        return "\n".join(parts)


def _read_tail(path: Path, limit: int = 20000) -> str:
    try:
        data = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return data if len(data) <= limit else "[...]\n" + data[-limit:]


class Sipp:
    """One SIPp process, started with bounded calls and a global timeout.

    Always: -i LOCAL_IP -bind_local (listen and send from one loopback address,
    127.0.0.1 unless `local_ip` names another address of 127.0.0.0/8),
    an explicit -p, -nostdin, -m, -timeout ... -timeout_error, and trace files
    in `workdir`.  stdout (the periodic screen) goes to a file.
    """

    def __init__(
        self,
        name: str,
        scenario: str,
        workdir: Path,
        *,
        local_port: int,
        calls: int,
        timeout_s: float,
        remote: tuple[str, int] | None = None,
        local_ip: str = LOOPBACK,
        transport: str = "u1",
        rate: float | None = None,
        rate_period_ms: int | None = None,
        limit: int | None = None,
        duration_ms: int | None = None,
        recv_timeout_ms: int | None = 10000,
        trace_msg: bool = True,
        trace_rtt: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        binary = sipp_binary()
        if binary is None:
            raise HarnessError("sipp is not installed (Debian/Ubuntu: apt-get install sip-tester)")
        self.name = name
        self.scenario = Path(scenario).stem
        path = Path(scenario) if Path(scenario).is_absolute() else SCENARIOS / scenario
        if not path.exists():
            raise HarnessError(f"no scenario {path}")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.local_ip = local_ip
        self.local_port = local_port
        self.transport = transport
        self.timeout_s = timeout_s
        cmd = [
            binary,
            "-sf",
            str(path),
            "-i",
            local_ip,
            "-bind_local",
            "-p",
            str(local_port),
            "-t",
            transport,
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            f"{timeout_s:g}s",
            "-timeout_error",
            "-trace_err",
            "-trace_stat",
            "-trace_counts",
            "-trace_screen",
            "-fd",
            "1",
        ]
        if trace_msg:
            cmd.append("-trace_msg")
        if trace_rtt:
            cmd += ["-trace_rtt", "-rtt_freq", "1"]
        if rate is not None:
            cmd += ["-r", f"{rate:g}"]
        if rate_period_ms is not None:
            cmd += ["-rp", str(rate_period_ms)]
        if limit is not None:
            cmd += ["-l", str(limit)]
        if duration_ms is not None:
            cmd += ["-d", str(duration_ms)]
        if recv_timeout_ms is not None:
            cmd += ["-recv_timeout", str(recv_timeout_ms)]
        cmd += list(extra)
        if remote is not None:
            cmd.append(f"{remote[0]}:{remote[1]}")
        self.command = cmd
        # Where wait_bound looks: another namespace's /proc/PID/net when the
        # command is run inside one.
        self.proc_net = "/proc/net"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        with (
            open(self.workdir / "stdout.log", "wb") as out,
            open(self.workdir / "stderr.log", "wb") as err,
        ):
            self.proc = subprocess.Popen(
                self.command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        return self

    def wait_bound(self, timeout: float = 10.0) -> Sipp:
        """Return once SIPp's own port is bound (UDP) or listening (TCP)."""
        assert self.proc is not None
        proto = "tcp" if self.transport.startswith("t") else "udp"
        try:
            wait_port_bound(self.local_port, proto, self.local_ip, timeout, alive=self.proc,
                            proc_net=self.proc_net)
        except HarnessError as e:
            self.stop()
            rc = self.proc.returncode
            raise HarnessError(f"SIPp {self.name}: {e}\n{self.result(rc).describe()}") from None
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (its own -timeout plus a margin); then collect results."""
        assert self.proc is not None
        limit = self.timeout_s + 15.0 if timeout is None else timeout
        try:
            rc = self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop()
            raise HarnessError(
                f"SIPp {self.name} still running {limit:.0f}s after start; "
                f"killed (pid {self.proc.pid})"
            ) from None
        return self.result(rc)

    def stop(self) -> None:
        """End SIPp by PID if it is still running: SIGTERM, then SIGKILL."""
        if self.proc is not None:
            end_process(self.proc)

    def result(self, rc: int) -> SippResult:
        res = SippResult(self.name, self.scenario, self.command, rc, self.workdir)
        stat = sorted(self.workdir.glob(f"{self.scenario}_*_.csv"))
        if stat:
            res.stats = read_stat_csv(stat[-1])
        counts = sorted(self.workdir.glob(f"{self.scenario}_*_counts.csv"))
        if counts:
            res.counts = read_stat_csv(counts[-1])
        return res


def run_pair(uas: Sipp, uac: Sipp, bind_timeout: float = 10.0) -> tuple[SippResult, SippResult]:
    """Start `uas`, wait until its port is bound, run `uac` to its end, then wait for `uas`.

    Returns (uas result, uac result).  Both processes are stopped by PID if
    anything goes wrong on the way.
    """
    try:
        uas.start().wait_bound(bind_timeout)
        uac.start()
        uac_res = uac.wait()
        uas_res = uas.wait()
        return uas_res, uac_res
    finally:
        uac.stop()
        uas.stop()


def report(results: Iterable[SippResult], sbc: SbcProcess | None = None) -> str:
    """Everything useful after a failed run, for an assertion message."""
    parts = [r.describe() for r in results]
    if sbc is not None:
        parts.append(sbc.output_tail())
    return "\n\n".join(parts)


def medians(rows: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, float | None]:
    """Per key, the median over the rows that have a value for it (None if none do)."""
    rows = list(rows)
    out: dict[str, float | None] = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Right-aligned text table: `columns` are (heading, row key, format)."""
    head = [c[0] for c in columns]
    body = [["-" if row.get(key) is None else fmt.format(row.get(key)) for _, key, fmt in columns]
            for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)
