"""`make run` and `make test` work in the project's venv, never in the system
Python (PEP 668: Debian 12 and Ubuntu 23.04+ refuse `pip install` there)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _plan(target: str, venv: Path, *extra: str) -> list[str]:
    make = shutil.which("make")
    assert make, "make is needed to run the README's commands"
    # Under `make test` the suite runs inside make: its MAKEFLAGS and MAKELEVEL
    # would make this make print "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    out = subprocess.run([make, "--no-print-directory", "-n", target, f"VENV={venv}",
                          "PYTHON=/usr/bin/python3", *extra],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_a_fresh_run_makes_the_venv_and_installs_only_into_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    lines = _plan("run", venv)
    assert f"/usr/bin/python3 -m venv {venv}" in lines
    pip = [line for line in lines if " pip " in f" {line} "]
    assert pip and all(line.startswith(f"{venv}/bin/python -m pip install") for line in pip), pip
    assert not any("--break-system-packages" in line for line in lines)
    assert lines[-1] == f"{venv}/bin/python -m tools.demo --config configs/local.yaml"


def test_test_target_installs_the_extras_into_the_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    lines = _plan("test", venv)
    assert any(line.startswith(f"{venv}/bin/python -m pip install") and "'.[test]'" in line
               for line in lines), lines
    assert lines[-1] == f"{venv}/bin/python -m pytest"


def test_a_second_run_reuses_the_venv_until_pyproject_changes(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    stamp = venv / ".installed-run"
    stamp.touch()
    lines = _plan("run", venv)
    assert not any("venv" in line.split()[:3] or " pip " in f" {line} " for line in lines[:-1]), lines
    # pyproject.toml newer than the stamp: the install runs again, the venv is kept.
    old = (ROOT / "pyproject.toml").stat().st_mtime - 10
    os.utime(stamp, (old, old))
    lines = _plan("run", venv)
    assert any(line.startswith(f"{venv}/bin/python -m pip install") for line in lines), lines
    assert not any(line.startswith("/usr/bin/python3 -m venv") for line in lines), lines


def test_the_default_install_compiles_nothing(tmp_path: Path) -> None:
    for target in ("run", "test"):
        lines = _plan(target, tmp_path / "venv")
        assert not any("SBC_COMPILE" in line or "mypyc" in line for line in lines), lines


def test_compiled_builds_a_wheel_into_its_own_venv(tmp_path: Path) -> None:
    # The compiled core never lands in the source tree or in .venv/: a wheel
    # built under build/compiled/, installed into a venv of its own.
    venv, cvenv = tmp_path / "venv", tmp_path / "compiled"
    lines = _plan("compiled", venv, f"CVENV={cvenv}")
    assert f"/usr/bin/python3 -m venv {cvenv}" in lines
    (build,) = [line for line in lines if "SBC_COMPILE=1" in line]
    assert build.startswith(f"SBC_COMPILE=1 {cvenv}/bin/python -m pip wheel ")
    assert "--no-build-isolation" in build and "-w build/compiled/wheels ." in build
    pip = [line for line in lines if " pip " in f" {line} " and line != build]
    assert pip and all(line.startswith(f"{cvenv}/bin/python -m pip ") for line in pip), pip
    assert not any(" -e " in f" {line} " or "--inplace" in line or str(venv) in line
                   for line in lines), lines
    assert any("install" in line and "gcc" in line for line in lines)  # the compiler, when missing


def test_test_compiled_runs_a_copy_of_the_tests_against_the_compiled_venv(tmp_path: Path) -> None:
    cvenv = tmp_path / "compiled"
    lines = _plan("test-compiled", tmp_path / "venv", f"CVENV={cvenv}")
    run = lines[-1]
    assert run.startswith('cd "$d" && SBC_EXPECT_CORE=mypyc '), run
    assert f"{cvenv}/bin/python -m pytest" in run
    for needed in ("tests/core", "tests/sip", "tests/e2e/test_calls.py",
                   "tests/e2e/test_call_state.py", "tests/test_build_info.py"):
        assert needed in run.split(), needed
    copy = lines[-2]
    # No sources in the copy: they would be imported instead of the wheel.
    assert "tests loadtest tools" in copy and " sbc " not in f" {copy} "
