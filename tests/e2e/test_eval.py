"""`fusewatch eval` on the shared recordings and their labels: fused F1 ≥ best single modality."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.runtime.services import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _eval(config: Path, media_dir: Path, report: Path) -> dict[tuple[str, str], dict[str, Any]]:
    env = os.environ | {
        "FUSEWATCH_KAFKA": f"127.0.0.1:{free_port()}",
        "FUSEWATCH_REDIS": f"redis://127.0.0.1:{free_port()}/0",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "eval",
            str(config),
            str(media_dir / "lobby.ts"),
            str(media_dir / "street.ts"),
            "--json",
            str(report),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "precision" in done.stdout and "distress" in done.stdout
    return {(s["event"], s["variant"]): s for s in json.loads(report.read_text())["scores"]}


def test_eval_reports_f1_per_event_and_fusion_beats_single_modalities(media_dir: Path, tmp_path: Path) -> None:
    scores = _eval(ROOT / "config/examples/demo.yaml", media_dir, tmp_path / "eval.json")
    fused = scores[("distress", "fused")]
    singles = [s for (event, variant), s in scores.items() if event == "distress" and variant != "fused"]
    assert {s["variant"] for s in singles} == {"video", "speech"}
    assert (fused["true_positives"], fused["false_positives"], fused["false_negatives"]) == (1, 0, 0)
    assert fused["f1"] >= max(s["f1"] for s in singles)
    assert scores[("distress", "video")]["false_positives"] > 0, "people alone are no distress"

    # The demo gates detection on motion (the default); detecting every sampled frame scores the same.
    demo = yaml.safe_load((ROOT / "config/examples/demo.yaml").read_text())
    for source in demo["sources"]:
        source["video"]["motion"] = {"enabled": False}
    ungated = tmp_path / "ungated.yaml"
    ungated.write_text(yaml.safe_dump(demo))
    assert _eval(ungated, media_dir, tmp_path / "ungated.json") == scores
