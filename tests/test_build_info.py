"""The compiled core (setup.py, SBC_COMPILE=1) is opt-in and never lands in the
source tree, and sbc knows which core it runs.

`make test-compiled` runs this file against the compiled package with
SBC_EXPECT_CORE=mypyc: then every module setup.py compiles must have been
loaded from an extension module, and none from the sources."""

from __future__ import annotations

import importlib
import os
import runpy
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from sbc import build_info

ROOT = Path(__file__).resolve().parent.parent
SOURCE_PACKAGE = ROOT / "sbc"


def _setup_lists() -> tuple[list[str], set[str], tuple[str, ...]]:
    """setup.py's lists, for the package imported (this tree's sbc/, or the
    installed one with its sources), read without building (setup.py calls
    setup() only when run as __main__)."""
    found = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_lists")
    installed_root = Path(build_info.__file__).resolve().parent.parent
    return (found["compiled_modules"](installed_root), found["INTERPRETED"],
            found["COMPILED_GLOBS"])


def _module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_compiled_module_in_the_source_tree() -> None:
    # A .so beside a .py is imported instead of it: edits to the source would
    # silently not run.  Compiled builds go to build/ and a wheel only.
    stale = sorted({p for suffix in EXTENSION_SUFFIXES
                    for p in SOURCE_PACKAGE.rglob(f"*{suffix}")})
    assert stale == [], f"compiled modules in the source tree, delete them: {stale}"


def test_the_default_build_compiles_nothing() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert 'os.environ.get("SBC_COMPILE", "")' in setup
    pyproject = (ROOT / "pyproject.toml").read_text()
    build_requires = pyproject.split("[build-system]", 1)[1].split("\n[", 1)[0]
    assert "mypy" not in build_requires  # mypy is needed only to compile


def test_the_module_list_is_the_pure_core_minus_named_exclusions() -> None:
    modules, interpreted, globs = _setup_lists()
    assert globs == ("sbc/sip/*.py", "sbc/core/**/*.py")
    assert "sbc/sip/parser.py" in modules and "sbc/core/proxy/inbound.py" in modules
    assert "sbc/core/engine.py" in interpreted and "sbc/core/engine.py" not in modules
    assert not interpreted & set(modules)
    assert all(p.startswith(("sbc/sip/", "sbc/core/")) for p in modules)
    if SOURCE_PACKAGE.is_dir():  # in the repository, not in a copy of tests/
        every = {p.relative_to(ROOT).as_posix() for g in globs for p in ROOT.glob(g)}
        assert interpreted <= every, interpreted - every  # no exclusion left behind
        assert set(modules) | interpreted == every


def test_core_names_how_the_running_sbc_was_built() -> None:
    assert build_info.core() in ("mypyc", "python")
    assert (build_info.core() == "mypyc") == build_info.where().endswith(tuple(EXTENSION_SUFFIXES))


def test_the_core_loaded_is_the_one_expected() -> None:
    # make test: the sources of this tree.  make test-compiled (from a copy of
    # tests/, SBC_EXPECT_CORE=mypyc): every module setup.py compiles comes from
    # an extension module of the installed wheel, every exclusion from its source.
    expected = os.environ.get("SBC_EXPECT_CORE", "python")
    assert build_info.core() == expected, build_info.where()
    modules, interpreted, _ = _setup_lists()
    for path in modules:
        loaded = importlib.import_module(_module_name(path)).__file__ or ""
        if expected == "mypyc":
            assert loaded.endswith(tuple(EXTENSION_SUFFIXES)), f"{path}: loaded from {loaded}"
        else:
            assert Path(loaded) == ROOT / path, f"{path}: loaded from {loaded}"
    for path in interpreted:
        loaded = importlib.import_module(_module_name(path)).__file__ or ""
        assert loaded.endswith(path), f"{path}: loaded from {loaded}"
