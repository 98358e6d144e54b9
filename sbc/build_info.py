"""How this sbc was built: its pure core (sbc/sip, sbc/core) compiled with
mypyc (`SBC_COMPILE=1`, see setup.py) or interpreted, as the default build
installs it.  The start-up log line carries it (`core`)."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from typing import Literal

from .sip import parser

Core = Literal["mypyc", "python"]


def where() -> str:
    """The file the SIP parser, the core's busiest module, was loaded from."""
    return parser.__file__ or ""


def core() -> Core:
    """`mypyc` when the core's modules are extension modules, `python` when
    they are the sources."""
    return "mypyc" if where().endswith(tuple(EXTENSION_SUFFIXES)) else "python"
