"""`fusewatch config check FILE` on hostile files: exit 2, one `file:line: …` line, no traceback, in time."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

FUSEWATCH = Path(sys.executable).with_name("fusewatch")
BUDGET_S = 5.0


def _billion_laughs() -> bytes:
    lines = [b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for previous, anchor in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{anchor}: &{anchor} [".encode() + b", ".join([f"*{previous}".encode()] * 9) + b"]")
    return b"\n".join(lines) + b"\n"


FILES: dict[str, bytes] = {
    "huge-integer": b"kafka:\n  media_partitions: " + b"9" * 5000 + b"\n",
    "not-utf8": b"site: hq\n# caf\xe9\nsources: []\n",
    "deep-nesting": b"site: hq\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "alias-bomb": _billion_laughs(),
    "ten-megabytes-of-comments": b"site: hq\n" + (b"# " + b"x" * 77 + b"\n") * (10 * 1024 * 1024 // 80),
    "undefined-zone": b"""\
sources:
  - id: cam1
    url: rtsp://cam1.local/s
    video:
      zones:
        - {name: gate, polygon: [[0, 0], [1, 0], [1, 1]]}
events:
  - name: e
    threshold: 1
    terms:
      - {signal: video.zone.nogate.entered, weight: 1, when: {op: '>=', value: 1}}
""",
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_config_check_reports_one_located_line(case: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(FILES[case])
    start = time.monotonic()
    done = subprocess.run(
        [str(FUSEWATCH), "config", "check", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-2000:]
    assert done.returncode == 2, output[-2000:]
    lines = output.splitlines()
    assert len(lines) == 1, output[-2000:]
    assert re.match(rf"^{re.escape(path.name)}:\d+: \S", lines[0]), lines[0]
    assert elapsed < BUDGET_S, f"{case}: {elapsed:.1f} s"
