"""Load a site YAML into `FusewatchConfig`, with errors an operator can act on.

ruamel.yaml keeps the line of every key and list item, so a validation error is reported
as `file:line: field.path: what was expected, got what`. `${VAR}` and `${VAR:-default}`
in string values are substituted from the environment before validation, so secrets stay
out of the file; an undefined variable is an error at its own line.

A hostile file is an error like any other, found in time linear in its size: the file is at
most `MAX_CONFIG_BYTES`, nesting, aliases and the values they expand to are bounded, and an
integer literal is at most `MAX_INT_CHARS` long (Python refuses to print longer ones).
Comments are dropped by the scanner: ruamel's round-trip scanner keeps them by appending each
comment line to one growing string, which is quadratic in a run of comment lines.
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
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import Scanner

from config.schema import FusewatchConfig

# A default may hold `$` but not `${`, so an unclosed `${A:-` is given up at the next `${`: linear time.
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}$]|\$(?!\{))*))?\}")
PathPart = str | int

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config accepted (bytes of a file, characters of text): a site file is a few kilobytes."""
MAX_DEPTH = 32
"""Deepest nesting: the top-level mapping is level 1, each value one level below its mapping or list."""
MAX_ALIASES = 100
"""Most `*alias` references in one file."""
MAX_VALUES = 20_000
"""Most keys, items and scalars in one file, counted with every alias expanded."""
MAX_INT_CHARS = 1000
"""Longest integer literal (hexadecimal ones included, whose decimal form is longer)."""


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
        with file.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(file), None, "", f"cannot read: {exc.strerror}")]) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([_too_large(file.name, data.count(b"\n", 0, MAX_CONFIG_BYTES) + 1)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded (save the file as UTF-8)"
        raise ConfigError([ConfigProblem(file.name, line, "", message)]) from None
    return load_config_text(text, name=file.name, env=env)


def load_config_text(text: str, name: str = "<config>", env: Mapping[str, str] | None = None) -> FusewatchConfig:
    """Validate YAML text; `name` is used in error messages."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([_too_large(name, text.count("\n", 0, MAX_CONFIG_BYTES) + 1)])
    yaml = YAML(typ="rt")
    yaml.Scanner = Scanner
    yaml.Composer = _BoundedComposer
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        if not isinstance(exc, _LimitError):
            message = f"invalid YAML: {message}"
        raise ConfigError([ConfigProblem(name, line, "", message)]) from exc
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise ConfigError([ConfigProblem(name, line, "", message)]) from exc
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


def _too_large(name: str, line: int) -> ConfigProblem:
    return ConfigProblem(
        name, line, "", f"larger than 1 MiB ({MAX_CONFIG_BYTES} bytes), the most a config file may hold"
    )


class _LimitError(ComposerError):
    """A document over one of the size limits; its message stands without an `invalid YAML` prefix."""


class _BoundedComposer(Composer):
    """ruamel's composer with nesting, alias references and the values they expand to bounded.

    Aliases share nodes, so a document of a few lines can stand for billions of values once
    they are copied into plain dicts and lists; every alias therefore counts the values of
    its anchor again. An alias inside its own anchor would make a cycle and is refused.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._nesting = 0
        self._aliases = 0
        self._values = 0
        self._anchor_values: dict[Any, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitError(None, None, f"more than {MAX_ALIASES} aliases", event.start_mark)
            if event.anchor in self.anchors and event.anchor not in self._anchor_values:
                raise _LimitError(None, None, f"alias *{event.anchor} is inside its own anchor", event.start_mark)
            self._values += self._anchor_values.get(event.anchor, 0)
            if self._values > MAX_VALUES:
                raise _LimitError(
                    None, None, f"aliases expand the document to more than {MAX_VALUES} values", event.start_mark
                )
            return super().compose_node(parent, index)
        self._nesting += 1
        self._values += 1
        if self._nesting > MAX_DEPTH:
            raise _LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        if self._values > MAX_VALUES:
            raise _LimitError(None, None, f"more than {MAX_VALUES} values (keys, items and scalars)", event.start_mark)
        before = self._values
        self._anchor_values.pop(event.anchor, None)
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._anchor_values[event.anchor] = self._values - before + 1
        self._nesting -= 1
        return node


@dataclass(frozen=True)
class _LongInteger:
    """An integer literal over `MAX_INT_CHARS`, kept as a marker so it is reported at its path."""

    chars: int

    def __str__(self) -> str:
        return f"<integer of {self.chars} characters>"


class _Constructor(RoundTripConstructor):
    """The round-trip constructor, with over-long integer literals turned into `_LongInteger`."""

    def construct_yaml_int(self, node: Any) -> Any:
        if len(node.value) > MAX_INT_CHARS:
            return _LongInteger(len(node.value))
        return super().construct_yaml_int(node)


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)


def _substitute(
    node: Any,
    path: tuple[PathPart, ...],
    document: Any,
    env: Mapping[str, str],
    name: str,
    problems: list[ConfigProblem],
) -> Any:
    """Plain dicts/lists with `${VAR}` replaced; undefined variables and long integers become problems."""
    if isinstance(node, _LongInteger):
        problems.append(
            ConfigProblem(
                name,
                _walk(document, path)[0],
                _render(path),
                f"integer literal too long: {node.chars} characters (at most {MAX_INT_CHARS})",
            )
        )
        return None
    if isinstance(node, Mapping):
        return {key: _substitute(value, (*path, key), document, env, name, problems) for key, value in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [_substitute(item, (*path, index), document, env, name, problems) for index, item in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def replace(match: re.Match[str]) -> str:
            variable, default = match.group(1), match.group(2)
            if variable in env:
                return env[variable]
            if default is not None:
                return default
            problems.append(
                ConfigProblem(
                    name,
                    _walk(document, path)[0],
                    _render(path),
                    f"environment variable {variable} is not set (use ${{{variable}:-default}} for an optional value)",
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
            if part in node.lc.data:  # a key merged in with `<<:` keeps the line found so far
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
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(context.values()), "?")
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}, got {shown}"
    if kind == "literal_error":
        return f"must be {context.get('expected', 'one of the allowed values')}, got {shown}"
    if kind == "union_tag_invalid":
        return f"unknown type {context.get('tag')!r} (expected {context.get('expected_tags')})"
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
