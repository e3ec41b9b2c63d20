"""Imports only run down the layers of docs/design.md ("Module map"), function-local ones included.

config ← streams ← detectors ← daemon, and inside the daemon: telemetry ← search ← analyze |
fuse | console | clips ← evaluation ← runtime ← cli. A module may import its own folder and anything
below; `analyze`, `fuse`, `console` and `clips` never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RANKS = {
    "config": 0,
    "streams": 1,
    "detectors": 2,
    "daemon.telemetry": 3,
    "daemon.search": 4,
    "daemon.analyze": 5,
    "daemon.fuse": 5,
    "daemon.console": 5,
    "daemon.clips": 5,
    "daemon.evaluation": 6,
    "daemon.runtime": 7,
    "daemon.cli": 8,
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    for size in (2, 1):
        name = ".".join(parts[:size])
        if name in RANKS:
            return name
    return None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


SOURCES = sorted(p for package in ("config", "streams", "detectors", "daemon") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_layers(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = _layer(module)
    if own is None:  # daemon/__init__.py: the package itself imports nothing
        assert not _imports(path), path
        return
    wrong = []
    for line, imported in _imports(path):
        layer = _layer(imported)
        if layer is None or layer == own:
            continue
        if RANKS[layer] > RANKS[own] or (RANKS[layer] == RANKS[own]):
            wrong.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {imported} ({layer})")
    assert not wrong, "\n".join(wrong)


def test_every_daemon_folder_says_its_job() -> None:
    for package in (ROOT / "daemon").iterdir():
        if package.is_dir() and (package / "__init__.py").is_file():
            doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
            assert doc and doc.split("\n")[0].endswith("."), f"{package.name}/__init__.py: a one-sentence job"
    assert {p.name for p in (ROOT / "daemon").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "cli",
        "runtime",
        "evaluation",
        "analyze",
        "fuse",
        "console",
        "clips",
        "search",
        "telemetry",
    }, "a new folder gets a layer here"
