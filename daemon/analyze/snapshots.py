"""Retention of the snapshot JPEGs the analyze role writes, so a camera's snapshots cannot fill the disk.

Every video window with detections leaves `<site>/<stream>/<window start ms>.jpg` under
`outputs.snapshots_dir` (`VideoFeatureBuilder`). The analyze role deletes those whose window
started more than `outputs.snapshots_retention` ago, at start and every
`PRUNE_EVERY_S` after. Several workers sharing the directory may prune it at once: a file
another one removed first is simply gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 600.0


def prune_snapshots(root: Path, before_ms: int) -> int:
    """Delete the snapshots under `root` of windows that started before `before_ms`; how many went.

    Files not named by a window start (anything an operator put there) are left alone.
    """
    removed = 0
    for path in root.glob("*/*/*.jpg"):
        if path.stem.isdigit() and int(path.stem) < before_ms:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


async def keep_snapshots(
    root: Path, retention_s: float, every_s: float = PRUNE_EVERY_S, clock: Callable[[], float] = time.time
) -> None:
    """Prune `root` to `retention_s` now and every `every_s`, until cancelled."""
    while True:
        before_ms = int((clock() - retention_s) * 1000)
        try:
            removed = await asyncio.to_thread(prune_snapshots, root, before_ms)
        except OSError as exc:  # a full or read-only disk: try again next time
            log.warning("snapshot pruning under %s failed: %s", root, exc)
        else:
            if removed:
                log.info("pruned %d snapshots older than %.0f s under %s", removed, retention_s, root)
        await asyncio.sleep(every_s)
