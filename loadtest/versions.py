"""Which code sbc runs: the working tree and a git revision side by side.

Shared by bench_memory.py and flood/bench_flood.py (`--baseline REV`).

A `Version` is a label, the folder its `sbc` package is imported from and
what it is in git.  `open_versions(rev, root)` yields the versions of one
benchmark: the working tree alone, or `rev` checked out (detached) as a
temporary `git worktree` under `root` and then the working tree; the
worktree is removed at the end, also after an error.  `check_import`
resolves `import sbc` with the cwd and environment the child will get and
refuses a folder that is not the version's.  `VersionSbc` starts
`python -m sbc run` from the version's folder and checks the running
process's cwd and PYTHONPATH; `VersionTarget` is the `SbcTarget` of the
benchmarks that does so.

Nothing here imports from `sbc`: the child process is started the same way
for every layout of the package (`python -m sbc run --config FILE`), so a
baseline with an older module tree (sbc/server.py instead of
sbc/io/server.py, ...) runs as it is.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtest.harness import REPO, HarnessError, SbcProcess, write_config
from loadtest.targets import Layout, SbcTarget


@dataclass(frozen=True)
class Version:
    """One code version: a label, the folder its `sbc` package is imported
    from, and what it is in git."""

    label: str
    code_dir: Path
    commit: str
    dirty: bool  # uncommitted changes under sbc/
    tag: str = "work"  # short name for run folders: "baseline" or "work"


def git(*argv: str, cwd: Path = REPO) -> str:
    out = subprocess.run(
        ["git", *argv], cwd=cwd, check=True, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip()


def working_tree() -> Version:
    dirty = bool(git("status", "--porcelain", "--", "sbc"))
    return Version("working tree", REPO, git("rev-parse", "HEAD"), dirty, "work")


@contextmanager
def baseline_worktree(rev: str, where: Path, who: str = "bench") -> Iterator[Version]:
    """`rev` checked out (detached) at `where` for the duration; removed after."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    git("worktree", "add", "--detach", str(where), commit)
    try:
        yield Version(f"baseline {rev}", where, commit, False, "baseline")
    finally:
        try:
            git("worktree", "remove", "--force", str(where))
        except subprocess.CalledProcessError as e:
            print(f"{who}: git worktree remove {where}: {e.stderr.strip()}", file=sys.stderr)
        git("worktree", "prune")


@contextmanager
def open_versions(
    rev: str | None, root: Path, who: str = "bench"
) -> Iterator[list[Version]]:
    """[working tree], or with `rev` [baseline, working tree]: the order runs
    alternate in.  The baseline lives in `root`/baseline-<short hash>."""
    work = working_tree()
    if rev is None:
        yield [work]
        return
    short = git("rev-parse", "--short", f"{rev}^{{commit}}")
    with baseline_worktree(rev, root / f"baseline-{short}", who) as base:
        yield [base, work]


def check_import(version: Version) -> str:
    """Where `import sbc` resolves with the env and cwd sbc will get; raises
    when it is not the version's folder (e.g. a stray installed copy wins)."""
    env = dict(os.environ, PYTHONPATH=str(version.code_dir))
    out = subprocess.run(
        [sys.executable, "-c", "import sbc; print(sbc.__file__)"],
        cwd=version.code_dir, env=env, check=True, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(version.code_dir.resolve()):
        raise HarnessError(f"{version.label}: sbc imports from {out}, not {version.code_dir}")
    return out


def announce(versions: Sequence[Version], who: str) -> None:
    """check_import each version and print what it is."""
    for v in versions:
        where = check_import(v)
        print(f"{who}: {v.label}: {v.commit[:10]}{' + uncommitted sbc/' if v.dirty else ''}"
              f", sbc from {where}", flush=True)


def code_fingerprint(code_dir: Path) -> str:
    """A short hash of every sbc/**/*.py of `code_dir` as it is now: the
    working tree may change between runs (someone editing it)."""
    h = hashlib.sha256()
    for path in sorted((code_dir / "sbc").rglob("*.py")):
        h.update(str(path.relative_to(code_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


class VersionSbc(SbcProcess):
    """SbcProcess running the `sbc` package of `code_dir` (its working
    directory and the head of its PYTHONPATH). After the start the running
    process's cwd and PYTHONPATH are checked, so a change in the harness
    cannot silently run the wrong code.
    """

    def __init__(self, config_path: Path, workdir: Path, code_dir: Path) -> None:
        super().__init__(config_path, workdir, code=code_dir)
        self.code_dir = code_dir

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        cwd = Path(os.readlink(f"/proc/{self.pid}/cwd")).resolve()
        with open(f"/proc/{self.pid}/environ", "rb") as f:
            env = dict(
                item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item
            )
        head = env.get(b"PYTHONPATH", b"").decode().split(os.pathsep)[0]
        if cwd != self.code_dir.resolve() or Path(head).resolve() != self.code_dir.resolve():
            self.stop()
            raise HarnessError(
                f"sbc pid {self.pid} runs in {cwd} with PYTHONPATH {head!r}, "
                f"not {self.code_dir}"
            )


class VersionTarget(SbcTarget):
    """SbcTarget (bench_calls, bench_flood, targets) whose sbc runs `version`'s code."""

    def __init__(
        self, version: Version, log_level: str, sets: Sequence[str], tag: str | None = None
    ) -> None:
        super().__init__(log_level, sets)
        self.version = version
        self.name = f"sbc-{tag or version.tag}"
        self.fingerprints: list[str] = []  # code_fingerprint at each start

    def start(self, workdir: Path, layout: Layout, *, account: bool = False) -> VersionSbc:
        path = write_config(workdir / "sbc.yaml", self.config(layout, account))
        self.fingerprints.append(code_fingerprint(self.version.code_dir))
        sbc = VersionSbc(path, workdir, self.version.code_dir)
        sbc.start()
        return sbc


def delta(base: float | None, work: float | None, percent: bool = False) -> float | None:
    """work - base (or the change in percent of base), None when either is missing."""
    if base is None or work is None:
        return None
    if percent:
        return None if base == 0 else 100.0 * (work - base) / base
    return work - base


def print_problems(problems: list[str]) -> None:
    """The first line of each problem a run saw, after the table."""
    if problems:
        print(f"\n{len(problems)} problem(s) seen; see the JSON / run folders:")
        for msg in problems:
            print(f"  - {msg.splitlines()[0]}")
