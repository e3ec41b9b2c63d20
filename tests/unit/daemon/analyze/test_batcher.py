"""Detection batching across streams, and backpressure: drop (live) or wait (replay)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np

from daemon.analyze.batcher import DetectionBatcher
from detectors.testing import CountingDetector
from streams.models import Detection, Frame


def _frame(stream: str, n: int, live: bool = True) -> Frame:
    image = np.full((8, 8, 3), n % 256, dtype=np.uint8)
    return Frame(stream, "hq", n, Fraction(1, 10), n * 100_000_000, image, live=live)


async def _run(batcher: DetectionBatcher, frames: list[Frame]) -> list[list[Detection] | None]:
    task = asyncio.create_task(batcher.run())
    try:
        futures = [await batcher.submit(frame) for frame in frames]
        return list(await asyncio.gather(*futures))
    finally:
        task.cancel()


async def test_frames_of_all_streams_share_batches_and_results_keep_order() -> None:
    detector = CountingDetector(delay=0.02)
    with ThreadPoolExecutor(1) as pool:
        batcher = DetectionBatcher(detector, pool, max_batch=8, max_wait=0.05, capacity=64, when_behind="wait")
        frames = [_frame(f"cam{n % 4}", n) for n in range(64)]
        results = await _run(batcher, frames)
    assert all(r is not None and abs(r[0].confidence - (n % 256) / 255) < 1e-6 for n, r in enumerate(results))
    assert max(detector.batches) == 8 and sum(detector.batches) == 64
    assert len(detector.batches) <= 16, "frames were batched, not detected one by one"
    assert batcher.stats.dropped == 0


async def test_slow_detector_drops_oldest_frames_and_memory_stays_bounded() -> None:
    detector = CountingDetector(delay=0.05)
    with ThreadPoolExecutor(1) as pool:
        batcher = DetectionBatcher(detector, pool, max_batch=2, max_wait=0.0, capacity=4, when_behind="drop")
        task = asyncio.create_task(batcher.run())
        futures = []
        for n in range(100):
            futures.append(await batcher.submit(_frame("cam", n)))
            assert batcher.waiting <= 4
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*futures)
        task.cancel()
    dropped = sum(r is None for r in results)
    assert dropped == batcher.stats.dropped > 50
    assert batcher.stats.frames + dropped == 100
    assert results[-1] is not None, "the newest frame is analysed, the oldest are dropped"


async def test_wait_policy_applies_backpressure_instead_of_dropping() -> None:
    detector = CountingDetector(delay=0.01)
    with ThreadPoolExecutor(1) as pool:
        batcher = DetectionBatcher(detector, pool, max_batch=2, max_wait=0.0, capacity=2, when_behind="wait")
        results = await _run(batcher, [_frame("cam", n) for n in range(30)])
    assert all(r is not None for r in results) and batcher.stats.dropped == 0


async def test_drop_policy_never_drops_a_replayed_frame() -> None:
    detector = CountingDetector(delay=0.01)
    with ThreadPoolExecutor(1) as pool:
        batcher = DetectionBatcher(detector, pool, max_batch=2, max_wait=0.0, capacity=4, when_behind="drop")
        task = asyncio.create_task(batcher.run())
        try:
            futures = []
            for n in range(40):  # submitted far faster than detected: a live stream would lose most of them
                futures.append(await batcher.submit(_frame("replay", n, live=False)))
                assert batcher.waiting <= 4
            results = await asyncio.gather(*futures)
        finally:
            task.cancel()
    assert batcher.stats.dropped == 0 and batcher.stats.frames == 40
    assert all(r is not None and abs(r[0].confidence - n / 255) < 1e-6 for n, r in enumerate(results))


async def test_drop_policy_drops_live_frames_beside_a_replay_and_keeps_every_replayed_one() -> None:
    detector = CountingDetector(delay=0.02)
    with ThreadPoolExecutor(1) as pool:
        batcher = DetectionBatcher(detector, pool, max_batch=2, max_wait=0.0, capacity=4, when_behind="drop")
        task = asyncio.create_task(batcher.run())
        try:
            replayed, live = [], []
            for n in range(30):
                live.append(await batcher.submit(_frame("cam", n)))
                live.append(await batcher.submit(_frame("cam", 100 + n)))
                replayed.append(await batcher.submit(_frame("replay", n, live=False)))
                assert batcher.waiting <= 4
            replayed_results = await asyncio.gather(*replayed)
            live_results = await asyncio.gather(*live)
        finally:
            task.cancel()
    assert all(r is not None and abs(r[0].confidence - n / 255) < 1e-6 for n, r in enumerate(replayed_results))
    dropped = sum(r is None for r in live_results)
    assert dropped == batcher.stats.dropped > 10, "live frames still give way when the detector is behind"
    assert batcher.stats.frames + dropped == 90
