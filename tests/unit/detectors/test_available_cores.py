"""The CPU backends' default thread count follows the container's CPU quota, not the host's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detectors.base import available_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, min(AFFINITY, 2)),  # docker --cpus 1.5 (cgroup v2)
        ({"cpu.max": "50000 100000\n"}, 1),  # half a core: still one thread
        ({"cpu.max": "max 100000\n"}, AFFINITY),  # no quota
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1, one core
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, AFFINITY),
        ({"cpu.max": "garbage\n"}, AFFINITY),
        ({}, AFFINITY),  # no cgroup files at all
    ],
)
def test_cgroup_quota_caps_the_affinity(tmp_path: Path, files: dict[str, str], expected: int) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cores(tmp_path) == expected
