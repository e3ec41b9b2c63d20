"""`fusewatch run --role …`: which roles a process runs, `ingest:<source id>` for one source's ingest."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import load_config
from daemon.cli.commands import parse_roles
from daemon.cli.errors import UserError
from daemon.cli.main import main
from daemon.runtime.app import ROLES, ingest_sources

ROOT = Path(__file__).resolve().parents[4]


def test_roles_come_back_in_run_order_with_single_sources_in_the_ingest_place() -> None:
    assert parse_roles([]) == ROLES
    assert parse_roles(["web,analyze"]) == ("analyze", "web")
    assert parse_roles(["index", "ingest:yard", "ingest:dock-door"]) == ("ingest:dock-door", "ingest:yard", "index")
    assert parse_roles(["ingest", "ingest:yard"]) == ("ingest",)  # every source already


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ingest:", "expected ingest:<source id>"),
        ("ingest:a b", "expected ingest:<source id>"),
        ("ingest:cams/yard", "expected ingest:<source id>"),
        ("analyse", "unknown role analyse"),
        ("ingestor:yard", "unknown role ingestor:yard"),
    ],
)
def test_malformed_roles_are_user_errors(raw: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_roles([raw])


def test_ingest_sources_are_every_source_or_the_named_ones() -> None:
    config = load_config(ROOT / "config/examples/site.yaml", env={})
    assert [s.id for s in ingest_sources(config, ("ingest", "analyze"))] == ["dock-door", "yard", "office-mic"]
    assert [s.id for s in ingest_sources(config, ("ingest:yard", "fuse"))] == ["yard"]
    assert ingest_sources(config, ("analyze", "fuse")) == []
    with pytest.raises(KeyError, match="no source 'gate'"):
        ingest_sources(config, ("ingest:gate",))


def test_run_refuses_a_source_the_config_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ROOT / "config/examples/site.yaml"), "--role", "ingest:gate"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--role: no source 'gate'" in err and "'dock-door', 'yard', 'office-mic'" in err
