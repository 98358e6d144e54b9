"""Build script beside pyproject.toml (which holds the metadata): the pure core
compiled to C extension modules with mypyc when SBC_COMPILE=1 is set, plain
Python otherwise.

The default build (`pip install -e .`, `make`, `make test`, `make run`) is
pure Python and needs nothing but setuptools.  The compiled build needs mypy
(which carries mypyc), a C compiler and the Python headers, all at build time
only; the wheel it makes needs none of them at run time:

    SBC_COMPILE=1 python -m pip wheel --no-build-isolation --no-deps -w DIR .

(`make compiled` does this in `.venv-compiled/`.)  The compiled wheel still
holds every `.py` file; the interpreter imports the extension module where
both exist.  Compiling into the source tree (an editable install, `build_ext
--inplace`) is refused: a `.so` beside a `.py` in `sbc/` would be imported
instead of the source and hide every later edit of it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

# What mypyc compiles: the pure core (no I/O, no clock, no logging: see
# tests/test_layout.py), where the CPU per message goes.
COMPILED_GLOBS = ("sbc/sip/*.py", "sbc/core/**/*.py")

# Modules under COMPILED_GLOBS that stay interpreted, and why.  Compiled code
# checks every declared type at run time and binds calls early; these modules
# (or what runs them) count on the interpreter's looser ways.
INTERPRETED = {
    # Engine's attributes are `_Shared` descriptors that live in its context
    # (a reload swaps them); compiled, Engine is a native class, the
    # descriptors are read as attributes of their declared types, and sbc
    # stops at start-up: "TypeError: BanTable object expected; got _Shared".
    "sbc/core/engine.py",
    # BanTable is subclassed by interpreted code (the tests' recording table:
    # "interpreted classes cannot inherit from compiled"), and its `offense`
    # accepts any string as the kind there, where compiled code raises
    # "Offense object expected; got str".
    "sbc/core/screen/bans.py",
}

# Where the build writes its C sources, objects and extension modules: never
# beside the sources.
BUILD_DIR = "build/compiled"


def core_modules(root: Path = HERE) -> set[str]:
    """Every source file under COMPILED_GLOBS, relative to `root` (the
    repository, or the site-packages an sbc wheel went into)."""
    return {p.relative_to(root).as_posix()
            for pattern in COMPILED_GLOBS for p in root.glob(pattern)}


def compiled_modules(root: Path = HERE) -> list[str]:
    """The source files mypyc compiles: the core minus INTERPRETED."""
    return sorted(core_modules(root) - INTERPRETED)


def _compile_wanted() -> bool:
    value = os.environ.get("SBC_COMPILE", "")
    if value not in ("", "0", "1"):
        raise SystemExit(f"SBC_COMPILE must be 0 or 1, not {value!r}")
    return value == "1"


def _ext_modules() -> list[object]:
    if {"egg_info", "dist_info"} & set(sys.argv):
        return []  # the metadata does not depend on them: compile once, for the wheel
    in_place = {"develop", "editable_wheel", "--inplace", "-i"} & set(sys.argv)
    if in_place:
        raise SystemExit(
            "SBC_COMPILE=1: no compiled modules in the source tree (they would shadow the "
            "sources); build a wheel instead: `make compiled`")
    try:
        # Imported only here: the default build needs no mypy.
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "SBC_COMPILE=1 needs mypy (with mypyc) importable by the build, a C compiler and "
            "the Python headers: pip install mypy, then build with --no-build-isolation "
            "(`make compiled`)") from None
    modules = compiled_modules()
    missing = sorted(INTERPRETED - core_modules())
    if missing or not modules:
        raise SystemExit(f"setup.py's module lists are out of date: {missing} not found, "
                         f"{len(modules)} modules to compile")
    return list(mypycify(modules, opt_level="3", target_dir=BUILD_DIR))


if __name__ == "__main__":  # setuptools runs this file as __main__; a test only reads the lists
    ext = _ext_modules() if _compile_wanted() else []
    setup(ext_modules=ext, options={"build": {"build_base": BUILD_DIR}} if ext else {})
