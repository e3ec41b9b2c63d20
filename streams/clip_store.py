"""Where clips are kept: an interface, and a directory store with retention by age and total size.

The clips role writes through `ClipStore` and the dashboard serves from it, so a bucket
(S3-compatible) can be added as another implementation without touching either. A clip is
two objects: `<name>.mp4` and `<name>.json` (its `Clip` record). The record is written last,
so a clip whose record exists is whole: a worker that restarts after a crash between the
two writes the clip again instead of serving half of one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from config.schema import ClipStoreConfig
from streams.models import Clip

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_ORPHAN_S = 3600.0  # an MP4 without its record this old was left by a crash


class ClipStore(Protocol):
    """What the clips role and the dashboard need of a clip store."""

    def has(self, name: str) -> bool: ...

    def record(self, name: str) -> Clip | None: ...

    def put(self, clip: Clip, file: Path) -> None: ...

    def local_path(self, name: str) -> Path | None: ...

    def staging_file(self) -> Path: ...

    def prune(self) -> PruneResult: ...


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one retention pass removed and what is left."""

    removed: int
    freed_bytes: int
    kept: int
    kept_bytes: int  # the clips and their records


def check_name(name: str) -> str:
    """A clip name that is safe as a file name and a URL path segment; ValueError otherwise."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"not a clip name: {name[:80]!r}")
    return name


class DirectoryClipStore:
    """Clips as files in one directory; retention by age and by total size, oldest removed first."""

    def __init__(self, config: ClipStoreConfig, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(config.path).resolve()
        self._max_age = config.max_age
        self._max_bytes = int(config.max_bytes)
        self._clock = clock

    def _files(self, name: str) -> tuple[Path, Path]:
        check_name(name)
        return self.root / f"{name}.mp4", self.root / f"{name}.json"

    def has(self, name: str) -> bool:
        return self.record(name) is not None

    def record(self, name: str) -> Clip | None:
        video, meta = self._files(name)
        try:
            clip = Clip.model_validate_json(meta.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None
        return clip if video.is_file() else None

    def staging_file(self) -> Path:
        """A new empty file in the store's directory, for a clip being written (moved in by `put`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.root, prefix=".staging-", suffix=".mp4")
        os.close(handle)
        return Path(name)

    def put(self, clip: Clip, file: Path) -> None:
        video, meta = self._files(clip.id)
        self.root.mkdir(parents=True, exist_ok=True)
        file.replace(video)
        staging = meta.with_name(f".staging-{meta.name}")
        staging.write_text(clip.model_dump_json())
        staging.replace(meta)

    def local_path(self, name: str) -> Path | None:
        video, _ = self._files(name)
        return video if self.has(name) else None

    def prune(self) -> PruneResult:
        """Remove clips older than `max_age`, then the oldest until the total is within `max_bytes`."""
        if not self.root.is_dir():
            return PruneResult(0, 0, 0, 0)
        now = self._clock()
        clips: list[tuple[float, int, str]] = []
        removed = freed = 0
        for path in self.root.iterdir():
            stat = path.stat()
            if path.suffix == ".mp4" and not path.with_suffix(".json").exists():
                if now - stat.st_mtime > _ORPHAN_S:  # a crash between the two writes, or a staging file
                    freed += _remove(path)
                continue
            if path.suffix == ".json" and not path.name.startswith("."):
                video = path.with_suffix(".mp4")
                size = stat.st_size + (video.stat().st_size if video.exists() else 0)
                clips.append((stat.st_mtime, size, path.stem))
        clips.sort()
        total = sum(size for _, size, _ in clips)
        kept: list[tuple[float, int, str]] = []
        for index, (mtime, size, name) in enumerate(clips):
            remaining = clips[index:]
            if now - mtime > self._max_age or total > self._max_bytes:
                video, meta = self._files(name)
                freed += _remove(video) + _remove(meta)
                total -= size
                removed += 1
            else:
                kept = remaining
                break
        if removed:
            log.info("clips: retention removed %d clips (%d bytes)", removed, freed)
        return PruneResult(removed, freed, len(kept), total)


def _remove(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
        path.unlink()
        return size
    return 0


def open_store(config: ClipStoreConfig) -> ClipStore:
    """The store the config names (a directory; other kinds add a branch here)."""
    return DirectoryClipStore(config)
