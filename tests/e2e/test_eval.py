"""`fusewatch eval` on the shared recordings and their labels: fused F1 ≥ best single modality."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.services import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_eval_reports_f1_per_event_and_fusion_beats_single_modalities(media_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "eval.json"
    env = os.environ | {"FUSEWATCH_KAFKA": f"127.0.0.1:{free_port()}",
                        "FUSEWATCH_REDIS": f"redis://127.0.0.1:{free_port()}/0"}
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "eval", "config/examples/demo.yaml",
         str(media_dir / "lobby.ts"), str(media_dir / "street.ts"), "--json", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "precision" in done.stdout and "distress" in done.stdout
    scores = {(s["event"], s["variant"]): s for s in json.loads(report.read_text())["scores"]}
    fused = scores[("distress", "fused")]
    singles = [s for (event, variant), s in scores.items() if event == "distress" and variant != "fused"]
    assert {s["variant"] for s in singles} == {"video", "speech"}
    assert (fused["true_positives"], fused["false_positives"], fused["false_negatives"]) == (1, 0, 0)
    assert fused["f1"] >= max(s["f1"] for s in singles)
    assert scores[("distress", "video")]["false_positives"] > 0, "people alone are no distress"
