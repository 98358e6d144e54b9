"""What the configuration tests share: the shipped config files, YAML written
inline, and the tables of bad configs kept as data in tests/config/cases/.

A case file maps each case's id (its test id) to the config as written in a
file x.yaml and the start of the one error line parse_config must give::

    port_zero:
      config: |
        backend:
          port: 0
      error: "x.yaml:2: backend.port: Input should be greater than or equal to 1"
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from sbc.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "sbc.example.yaml"
LOCAL = ROOT / "configs" / "local.yaml"
CASES = Path(__file__).resolve().parent / "cases"


def yaml_text(text: str) -> str:
    """YAML written indented inside a triple-quoted string, as a file has it."""
    return textwrap.dedent(text).lstrip("\n")


def config_error(text: str, source: str = "x.yaml") -> ConfigError:
    """The error parse_config raises for `text` (the test fails if it raises none)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return info.value


def assert_one_error(text: str, expected: str) -> None:
    """`text` is refused with exactly one problem, whose line starts with `expected`."""
    error = config_error(text)
    message = str(error)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert len(error.issues) == 1


class _CaseLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice (two cases with one id)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def bad_configs(name: str) -> list[Any]:
    """The cases of tests/config/cases/<name>.yaml as (config, error) params."""
    path = CASES / f"{name}.yaml"
    cases = yaml.load(path.read_text(), Loader=_CaseLoader)
    assert isinstance(cases, dict) and cases, f"{path}: no cases"
    params = []
    for case_id, case in cases.items():
        assert isinstance(case, dict) and set(case) == {"config", "error"}, (
            f"{path}: {case_id}: a case has a config and an error, nothing else"
        )
        assert isinstance(case["config"], str) and isinstance(case["error"], str), (
            f"{path}: {case_id}: config and error are strings"
        )
        params.append(pytest.param(case["config"], case["error"], id=str(case_id)))
    return params
