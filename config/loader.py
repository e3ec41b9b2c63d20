"""Load a site YAML into `FusewatchConfig`, with errors an operator can act on.

ruamel.yaml keeps the line of every key and list item, so a validation error is reported
as `file:line: field.path: what was expected, got what`. `${VAR}` and `${VAR:-default}`
in string values are substituted from the environment before validation, so secrets stay
out of the file; an undefined variable is an error at its own line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from config.schema import FusewatchConfig

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
PathPart = str | int


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config file that cannot be used; `problems` lists every located error."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> FusewatchConfig:
    """Read and validate a config file; raise ConfigError naming file, line and field."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(file), None, "", f"cannot read: {exc.strerror}")]) from exc
    return load_config_text(text, name=file.name, env=env)


def load_config_text(
    text: str, name: str = "<config>", env: Mapping[str, str] | None = None
) -> FusewatchConfig:
    """Validate YAML text; `name` is used in error messages."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError([ConfigProblem(name, line, "", f"invalid YAML: {message}")]) from exc
    if document is None:
        document = CommentedMap()
    if not isinstance(document, Mapping):
        raise ConfigError(
            [ConfigProblem(name, 1, "", f"expected a mapping of sections, got {type(document).__name__}")]
        )
    problems: list[ConfigProblem] = []
    environment = env if env is not None else os.environ
    plain = _substitute(document, (), document, environment, name, problems)
    if problems:
        raise ConfigError(problems)
    try:
        return FusewatchConfig.model_validate(plain)
    except ValidationError as exc:
        raise ConfigError([_locate(error, document, name) for error in exc.errors()]) from exc


def _substitute(
    node: Any, path: tuple[PathPart, ...], document: Any, env: Mapping[str, str], name: str,
    problems: list[ConfigProblem],
) -> Any:
    """Plain dicts/lists with `${VAR}` replaced; undefined variables become problems."""
    if isinstance(node, Mapping):
        return {
            key: _substitute(value, (*path, key), document, env, name, problems)
            for key, value in node.items()
        }
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [
            _substitute(item, (*path, index), document, env, name, problems)
            for index, item in enumerate(node)
        ]
    if isinstance(node, str) and "${" in node:

        def replace(match: re.Match[str]) -> str:
            variable, default = match.group(1), match.group(2)
            if variable in env:
                return env[variable]
            if default is not None:
                return default
            problems.append(
                ConfigProblem(
                    name, _walk(document, path)[0], _render(path),
                    f"environment variable {variable} is not set (use ${{{variable}:-default}} "
                    "for an optional value)",
                )
            )
            return ""

        return _ENV.sub(replace, str(node))
    return node


def _walk(document: Any, path: Sequence[PathPart]) -> tuple[int | None, list[PathPart]]:
    """Follow `path` through the YAML; return the best line found and the parts used.

    Parts that are not keys of the data (pydantic's union tags, for example) are skipped.
    A missing final key reports the line of the mapping that should contain it.
    """
    node = document
    line: int | None = None
    used: list[PathPart] = []
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
            used.append(part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
            used.append(part)
        elif isinstance(node, CommentedMap) and isinstance(part, str) and _is_last_field(path, part):
            if line is None and node.lc.line is not None:
                line = node.lc.line + 1
            used.append(part)
            break
    return line, used


def _is_last_field(path: Sequence[PathPart], part: PathPart) -> bool:
    return bool(path) and path[-1] == part


def _render(path: Sequence[PathPart]) -> str:
    rendered = ""
    for part in path:
        rendered += f"[{part}]" if isinstance(part, int) else (f".{part}" if rendered else str(part))
    return rendered


def _locate(error: ErrorDetails, document: Any, name: str) -> ConfigProblem:
    context = error.get("ctx") or {}
    at = context.get("at", ())
    path = tuple(error["loc"]) + tuple(at)
    if error["type"] == "union_tag_invalid":
        path += ("type",)
    line, used = _walk(document, path)
    return ConfigProblem(name, line, _render(used), _describe(error))


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    context = error.get("ctx") or {}
    got = error.get("input")
    shown = _show(got)
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(context.values()), "?")
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}, got {shown}"
    if kind == "literal_error":
        return f"must be {context.get('expected', 'one of the allowed values')}, got {shown}"
    if kind == "union_tag_invalid":
        return (f"unknown type {context.get('tag')!r} "
                f"(expected {context.get('expected_tags')})")
    if kind == "union_tag_not_found":
        return "needs `type:` to choose the implementation"
    if kind == "string_pattern_mismatch":
        return f"invalid value {shown} (must match {context.get('pattern')})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = kind.removesuffix("_type").removesuffix("_parsing").replace("_", " ")
        return f"expected {expected}, got {shown}"
    if kind in ("too_short", "too_long"):
        return error["msg"][0].lower() + error["msg"][1:] + f", got {shown}"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _show(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
