"""The `fusewatch` command line: exit codes and messages an operator sees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli.main import main

ROOT = Path(__file__).resolve().parents[4]


def test_config_check_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(ROOT / "config/examples/site.yaml")]) == 0
    assert main(["config", "check", str(ROOT / "config/examples/demo.yaml")]) == 0


def test_config_check_reports_file_line_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "site.yaml"
    text = (ROOT / "config/examples/site.yaml").read_text()
    broken.write_text(text.replace("sample_fps: 2", "sample_fps: -2"))
    line = next(i for i, row in enumerate(broken.read_text().splitlines(), 1) if "sample_fps: -2" in row)
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "config", "check", str(broken)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"site.yaml:{line}: sources[1].video.sample_fps: must be > 0, got -2"


def test_console_script_is_installed() -> None:
    script = shutil.which("fusewatch", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "replay" in done.stdout


def test_schema_prints_every_wire_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert set(schemas) == {"config", "init", "features", "alert", "summary", "period-summary", "clip"}
    assert schemas["period-summary"]["properties"]["kind"]["const"] == "period"
    assert "for" in json.dumps(schemas["config"]["$defs"]["EventConfig"]["properties"])
    assert schemas["alert"]["properties"]["id"]["type"] == "string"
    assert "starts_late" in schemas["clip"]["properties"]


def test_unknown_schema_and_bad_speed_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "nope"]) == 1
    assert main(["replay", "x.ts", "--stream-id", "a", "--speed", "fast"]) == 1
    assert "--speed: expected a number or 'max'" in capsys.readouterr().err


def test_summary_arguments_are_checked_before_redis_is_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--stream", "lobby", "--period", "1.5s"]) == 1
    assert "--period: whole seconds, at least 1 s, got 1.5s" in capsys.readouterr().err
    assert main(["summary", "--stream", "lobby", "--since", "yesterday"]) == 1
    assert "--since: expected a duration" in capsys.readouterr().err
