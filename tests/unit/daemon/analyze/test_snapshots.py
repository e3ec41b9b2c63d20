"""Snapshot retention: windows older than the retention go, everything else stays."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon.analyze.snapshots import keep_snapshots, prune_snapshots

NOW_S = 1_700_000_000.0


def _snapshot(root: Path, stream: str, start_ms: int) -> Path:
    path = root / "hq" / stream / f"{start_ms}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8jpeg")
    return path


def test_only_snapshots_of_windows_before_the_bound_are_deleted(tmp_path: Path) -> None:
    old = [_snapshot(tmp_path, stream, 1_000_000 + i) for stream in ("lobby", "gate") for i in range(3)]
    kept = [_snapshot(tmp_path, "lobby", 2_000_000), _snapshot(tmp_path, "gate", 1_999_999 + 1)]
    foreign = tmp_path / "hq" / "lobby" / "notes.jpg"
    foreign.write_bytes(b"mine")
    assert prune_snapshots(tmp_path, before_ms=2_000_000) == len(old)
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in kept) and foreign.exists()
    assert prune_snapshots(tmp_path, before_ms=2_000_000) == 0


async def test_the_analyze_role_keeps_pruning_until_cancelled(tmp_path: Path) -> None:
    retention_s = 3600.0
    expired = _snapshot(tmp_path, "lobby", int((NOW_S - retention_s - 1) * 1000))
    fresh = _snapshot(tmp_path, "lobby", int((NOW_S - retention_s + 60) * 1000))
    now = [NOW_S]
    task = asyncio.create_task(keep_snapshots(tmp_path, retention_s, every_s=0.01, clock=lambda: now[0]))
    try:
        for _ in range(200):
            if not expired.exists():
                break
            await asyncio.sleep(0.01)
        assert not expired.exists() and fresh.exists()
        now[0] += 120  # two minutes later the other one has expired too
        for _ in range(200):
            if not fresh.exists():
                break
            await asyncio.sleep(0.01)
        assert not fresh.exists()
    finally:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
