"""Loading a configuration file (sbc/config/load.py): the shipped files,
unreadable files, odd YAML, and how every problem is reported with its file and
line (tests/config/cases/load.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbc.config import (
    Config,
    ConfigError,
    LogFormat,
    LogLevel,
    Transport,
    load_config,
    parse_config,
)

from .support import EXAMPLE, LOCAL, assert_one_error, bad_configs, yaml_text


def test_example_file_loads_and_equals_defaults() -> None:
    assert load_config(EXAMPLE) == Config()
    assert load_config(str(EXAMPLE)) == Config()


def test_local_file() -> None:
    cfg = load_config(LOCAL)
    assert cfg.public.address == ("127.0.0.1", 5060)
    assert cfg.public.transports == (Transport.UDP, Transport.TCP)
    assert cfg.private.address == ("127.0.0.1", 5080)
    assert cfg.backend.address == ("127.0.0.1", 5070)
    assert cfg.logging.format is LogFormat.CONSOLE
    assert cfg.logging.level is LogLevel.INFO
    (local,) = cfg.gateways
    assert (local.name, local.ip, local.ip_port, local.digest) == ("local", ("127.0.0.0/8",), (), ())
    assert local.egress is None


def test_every_problem_reported_one_per_line_in_file_order() -> None:
    text = yaml_text("""
        sip:
          t1_ms: 1
        public:
          port: 0
          host: nowhere
        extra: 1
    """)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "multi.yaml")
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        ["multi.yaml:2", "sip.t1_ms"],
        ["multi.yaml:4", "public.port"],
        ["multi.yaml:5", "public.host"],
        ["multi.yaml:6", "extra"],
    ]
    assert [(i.path, i.line) for i in info.value.issues] == [
        ("sip.t1_ms", 2),
        ("public.port", 4),
        ("public.host", 5),
        ("extra", 6),
    ]


def test_load_config_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sbc.yaml"
    path.write_text("public:\n  port: 99999\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:2: public.port: Input should be less than or equal to 65535"
    )
    assert info.value.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"public:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not UTF-8 text")


def test_control_character_reports_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("public:\n  host: a\x07b\n", "x.yaml")
    assert str(info.value).startswith("x.yaml:2: invalid YAML: character #x0007")


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [*x]\n",  # recursive alias
        "a: " + "[" * 5000 + "]" * 5000 + "\n",  # absurd nesting
        "base: &b {port: 5090}\npublic:\n  <<: *b\n  <<: *b\n",
    ],
    ids=["recursive_alias", "deep_nesting", "merge_keys"],
)
def test_odd_yaml_is_still_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text, "odd.yaml")


def test_merge_key_is_honoured() -> None:
    text = "public: &p\n  host: 10.0.0.1\nprivate:\n  <<: *p\n  port: 5090\n"
    cfg = parse_config(text)
    assert cfg.private.address == ("10.0.0.1", 5090)


@pytest.mark.parametrize(("text", "expected"), bad_configs("load"))
def test_bad_config(text: str, expected: str) -> None:
    assert_one_error(text, expected)
