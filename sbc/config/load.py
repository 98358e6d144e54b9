"""Reading a configuration file and turning every way it can be wrong into
one `ConfigError` that names the field, the problem, and the file and line.

The YAML text is composed into a node tree first so that every key path can be
mapped back to the line it was written on; pydantic's error locations are then
resolved against that map.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Any, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .gateways import Loc, kind
from .schema import Config

# --------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file."""

    path: str  # dotted key path, e.g. "public.port"; "" for the file as a whole
    message: str
    line: int | None  # 1-based, None when the problem has no place in the file

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; str() has one problem per line."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        super().__init__("\n".join(issue.format(source) for issue in self.issues))

    @classmethod
    def single(cls, source: str, message: str, line: int | None = None, path: str = "") -> Self:
        return cls(source, [ConfigIssue(path, message, line)])



# --------------------------------------------------------------------------
# Loading

_Path = tuple[str, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a configuration file; raises only ConfigError."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError.single(source, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError.single(source, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError.single(source, f"cannot read: {exc.strerror or exc}") from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate configuration text; `source` names it in errors."""
    data, lines = _parse_yaml(text, source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A list whose only item is invalid is also "too short"; the item says why.
        deeper = {tuple(err["loc"][:n]) for err in errors for n in range(len(err["loc"]))}
        issues = [
            _issue(err, lines)
            for err in errors
            if not (err["type"] == "too_short" and tuple(err["loc"]) in deeper)
        ]
        issues.sort(key=lambda issue: issue.line or 0)
        raise ConfigError(source, issues) from None


def _parse_yaml(text: str, source: str) -> tuple[dict[Any, Any], dict[_Path, int]]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:  # empty file, or only comments
            return {}, {}
        lines, duplicates = _line_map(node)
        if duplicates:
            raise ConfigError(source, duplicates)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or "invalid YAML").removeprefix("but ")
        if exc.context:
            where = ""
            if exc.context_mark is not None and exc.context_mark is not mark:
                where = f" at line {exc.context_mark.line + 1}"
            problem = f"{problem} ({exc.context}{where})"
        line = None if mark is None else mark.line + 1
        raise ConfigError.single(source, f"invalid YAML: {problem}", line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed ({exc.reason})"
        raise ConfigError.single(source, message, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError.single(source, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError.single(source, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:  # a document with no content, e.g. "---"
        return {}, {}
    if not isinstance(data, dict):
        shape = "a list" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise ConfigError.single(
            source,
            f"the top level must be a mapping of sections (public:, private:, ...), not {shape}",
            node.start_mark.line + 1,
        )
    return data, lines


def _line_map(root: yaml.Node) -> tuple[dict[_Path, int], list[ConfigIssue]]:
    """Map each key path (sequence indexes as strings) to its 1-based line."""
    lines: dict[_Path, int] = {}
    duplicates: list[ConfigIssue] = []
    stack: list[tuple[yaml.Node, _Path, frozenset[int]]] = [(root, (), frozenset())]
    while stack:
        node, path, ancestors = stack.pop()
        if id(node) in ancestors:  # a recursive alias
            continue
        ancestors = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key_path = (*path, key_node.value)
                line = key_node.start_mark.line + 1
                if key_path in lines:
                    duplicates.append(
                        ConfigIssue(
                            ".".join(key_path),
                            f"duplicate key (first given at line {lines[key_path]})",
                            line,
                        )
                    )
                    continue
                lines[key_path] = line
                stack.append((value_node, key_path, ancestors))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                item_path = (*path, str(index))
                lines[item_path] = item.start_mark.line + 1
                stack.append((item, item_path, ancestors))
    duplicates.sort(key=lambda issue: issue.line or 0)
    return lines, duplicates


def _issue(err: Any, lines: dict[_Path, int]) -> ConfigIssue:
    base: Loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    loc: Loc = (*base, *ctx.get("at", ()))
    line, depth = _find_line(lines, loc)
    if "also" in ctx and depth < len(loc):
        also_line, also_depth = _find_line(lines, (*base, *ctx["also"]))
        if also_depth > depth:
            line = also_line
    return ConfigIssue(_format_loc(loc), _message(err, loc), line)


def _find_line(lines: dict[_Path, int], loc: Iterable[str | int]) -> tuple[int | None, int]:
    """The line of the deepest prefix of `loc` written in the file, and its depth."""
    key = tuple(str(part) for part in loc)
    for depth in range(len(key), 0, -1):
        line = lines.get(key[:depth])
        if line is not None:
            return line, depth
    return None, 0


def _format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Any, loc: Sequence[str | int]) -> str:
    error_type = err["type"]
    if error_type == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        return f"unknown key; expected one of: {', '.join(known)}"
    if error_type in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping of keys, not {kind(err.get('input'))}"
    if error_type in ("tuple_type", "list_type"):
        return f"should be a list, not {kind(err.get('input'))}"
    if error_type == "too_short":
        return "should not be empty"
    return str(err["msg"])


def _known_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys of the section at `loc`, e.g. ("gateways", 0, "egress")."""
    annotation: Any = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list: tuple[Model, ...]
            args = get_args(annotation)
            annotation = args[0] if get_origin(annotation) is tuple and args else None
            continue
        model = _model_of(annotation)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return []
        annotation = field.annotation
    model = _model_of(annotation)
    return list(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model in `Model` or `Model | None`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None

