"""The directory clip store: whole clips only, safe names, retention by age and by size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.schema import ClipStoreConfig
from streams.clip_store import DirectoryClipStore, check_name
from streams.models import Clip

NOW = 1_700_000_000.0


def clip(name: str, size: int) -> Clip:
    return Clip(
        id=name,
        site="s",
        stream="cam",
        requested_from_ms=0,
        requested_to_ms=1,
        start_ms=0,
        end_ms=1,
        starts_late=False,
        complete=True,
        packets=1,
        bytes=size,
        cut_ms=1.0,
        created_ms=0,
    )


def store(tmp_path: Path, max_age: float = 3600.0, max_bytes: int = 10_000) -> DirectoryClipStore:
    config = ClipStoreConfig(path=str(tmp_path / "clips"), max_age=max_age, max_bytes=max_bytes)
    return DirectoryClipStore(config, clock=lambda: NOW)


def put(target: DirectoryClipStore, name: str, size: int, age: float) -> None:
    staging = target.staging_file()
    staging.write_bytes(b"x" * size)
    target.put(clip(name, size), staging)
    for path in (target.root / f"{name}.mp4", target.root / f"{name}.json"):
        os.utime(path, (NOW - age, NOW - age))


def test_a_put_clip_is_there_with_its_record_and_the_staging_file_is_gone(tmp_path: Path) -> None:
    target = store(tmp_path)
    assert not target.has("a1-cam") and target.record("a1-cam") is None and target.local_path("a1-cam") is None
    put(target, "a1-cam", 100, age=0)
    assert target.has("a1-cam") and target.record("a1-cam") == clip("a1-cam", 100)
    assert target.local_path("a1-cam") == target.root / "a1-cam.mp4"
    assert sorted(p.name for p in target.root.iterdir()) == ["a1-cam.json", "a1-cam.mp4"]


def test_an_mp4_without_its_record_is_not_a_clip(tmp_path: Path) -> None:
    target = store(tmp_path)
    target.root.mkdir(parents=True)
    (target.root / "half-cam.mp4").write_bytes(b"x")
    assert not target.has("half-cam")
    (target.root / "half-cam.json").write_text("{not json")
    assert not target.has("half-cam")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "a..b", "x" * 300])
def test_unsafe_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a clip name"):
        check_name(name)
    with pytest.raises(ValueError, match="not a clip name"):
        store(tmp_path).has(name)


def test_retention_removes_clips_older_than_max_age(tmp_path: Path) -> None:
    target = store(tmp_path, max_age=3600)
    put(target, "old", 100, age=7200)
    put(target, "new", 100, age=60)
    result = target.prune()
    record = len(clip("old", 100).model_dump_json())
    assert (result.removed, result.freed_bytes, result.kept, result.kept_bytes) == (1, 100 + record, 1, 100 + record)
    assert not target.has("old") and target.has("new")


def test_retention_removes_the_oldest_until_the_total_fits(tmp_path: Path) -> None:
    record = len(clip("c0", 1000).model_dump_json())
    target = store(tmp_path, max_bytes=2 * (1000 + record))
    for n, age in enumerate((400, 300, 200, 100)):
        put(target, f"c{n}", 1000, age=age)
    result = target.prune()
    assert result.removed == 2 and result.kept_bytes == 2 * (1000 + record)
    assert [target.has(f"c{n}") for n in range(4)] == [False, False, True, True]


def test_retention_removes_what_a_crash_left_after_an_hour(tmp_path: Path) -> None:
    target = store(tmp_path)
    put(target, "kept", 10, age=0)
    for name, age in (("orphan.mp4", 7200), (".staging-x.mp4", 7200), ("fresh.mp4", 60)):
        path = target.root / name
        path.write_bytes(b"x")
        os.utime(path, (NOW - age, NOW - age))
    target.prune()
    assert sorted(p.name for p in target.root.iterdir()) == ["fresh.mp4", "kept.json", "kept.mp4"]
