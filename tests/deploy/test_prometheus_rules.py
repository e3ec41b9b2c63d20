"""deploy/prometheus/fusewatch-rules.yaml: checked and unit-tested by promtool (Debian's prometheus
package), and written only against metrics fusewatch really exports."""

from __future__ import annotations

import re
import subprocess

import yaml

from daemon.telemetry.metrics import Metrics
from tests.deploy.conftest import DEPLOY, system_tool

RULES = DEPLOY / "prometheus" / "fusewatch-rules.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tool("promtool", "prometheus"), *args], capture_output=True, text=True, check=False, cwd=RULES.parent
    )


def test_promtool_accepts_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 15 rules found" in done.stdout


def test_the_rules_fire_on_fusewatchs_series_and_only_then() -> None:
    done = promtool("test", "rules", "fusewatch-rules.test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_in_the_rules_is_one_fusewatch_exports() -> None:
    exported = set()
    for family in Metrics().registry.collect():
        exported |= {sample.name for sample in family.samples} | {family.name}
    for family in Metrics().registry.collect():  # histograms and counters before their first sample
        kind = family.type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])
        exported |= {family.name + suffix for suffix in suffixes}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = set()
    for group in groups:
        for rule in group["rules"]:
            used |= set(re.findall(r"\bfusewatch_[a-z_]+", rule["expr"]))
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert used and used <= exported, used - exported
