"""Motion detection and the gate in front of the detector, on synthetic scenes and a real recording."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from detectors.base import RgbImage
from detectors.motion import MotionDetector, MotionGate, MotionSettings
from streams.windows import window_start

NS = 1_000_000_000
FPS = 5
WINDOW_MS = 2000


def _decide(gate: MotionGate, image: RgbImage, wall_ns: int) -> bool:
    return gate.needs_detection(image, wall_ns, window_start(wall_ns, WINDOW_MS))


def _scene(seed: int, noise: int = 3) -> RgbImage:
    """A fixed textured background with a little camera noise."""
    background = np.random.default_rng(0).integers(60, 200, size=(240, 320, 3), dtype=np.uint8)
    jitter = np.random.default_rng(seed).integers(-noise, noise + 1, size=background.shape)
    return np.clip(background.astype(np.int16) + jitter, 0, 255).astype(np.uint8)


def _with_square(image: RgbImage, x: int, y: int, side: int = 40) -> RgbImage:
    moved = image.copy()
    moved[y : y + side, x : x + side] = (250, 20, 20)
    return moved


def test_a_still_scene_with_camera_noise_shows_no_motion_after_the_first_frame() -> None:
    motion = MotionDetector(MotionSettings())
    assert motion.regions(_scene(0)) == [(0.0, 0.0, 1.0, 1.0)], "a first frame is all new"
    assert all(motion.regions(_scene(seed)) == [] for seed in range(1, 30))


def test_a_moving_object_is_one_region_around_it() -> None:
    motion = MotionDetector(MotionSettings())
    motion.regions(_scene(0))
    for step in range(1, 6):
        regions = motion.regions(_with_square(_scene(step), 40 * step, 100))
        assert regions, step
    x1, y1, x2, y2 = max(regions, key=lambda box: (box[2] - box[0]) * (box[3] - box[1]))
    assert x1 <= 200 / 320 and x2 >= 240 / 320 and y1 <= 100 / 240 and y2 >= 140 / 240, regions


def test_motion_inside_a_mask_is_not_motion() -> None:
    mask = ((0.0, 0.3), (1.0, 0.3), (1.0, 0.7), (0.0, 0.7))  # the band the square moves in
    motion = MotionDetector(MotionSettings(masks=(mask,)))
    motion.regions(_scene(0))
    assert all(motion.regions(_with_square(_scene(step), 40 * step, 100)) == [] for step in range(1, 6))


def test_a_region_below_the_minimum_area_is_noise() -> None:
    motion = MotionDetector(MotionSettings(min_area=0.05))
    motion.regions(_scene(0))
    assert motion.regions(_with_square(_scene(1), 100, 100, side=20)) == []  # 0.5 % of the frame


def test_the_gate_detects_on_motion_and_rechecks_a_still_scene_every_recheck_period() -> None:
    gate = MotionGate(MotionSettings(), recheck_ns=2 * NS)
    decisions = [_decide(gate, _scene(i), i * NS // FPS) for i in range(30)]  # 6 s of a still scene
    assert [i for i, detect in enumerate(decisions) if detect] == [0, 10, 20]
    assert _decide(gate, _scene(30), 30 * NS // FPS) and not _decide(gate, _scene(31), 31 * NS // FPS)
    assert _decide(gate, _with_square(_scene(32), 100, 100), 32 * NS // FPS), "motion: detect now"
    assert _decide(gate, _scene(33), 33 * NS // FPS), "the flash is gone: the detector sees the scene again"
    assert not any(_decide(gate, _scene(i), i * NS // FPS) for i in range(34, 40)), "then nothing moves"
    assert _decide(gate, _scene(40), 40 * NS // FPS), "the first frame of the next window"


def test_an_object_that_stops_is_not_motion_and_leaving_is() -> None:
    """Something walks in, stands for 2 s and leaves: the detector sees it walk, rests, and sees it gone.

    Against a running average alone, the standing object reads as motion while the average
    absorbs it, and once absorbed its leaving does not: its detections would outlive it.
    """
    gate = MotionGate(MotionSettings(), recheck_ns=10 * NS)
    frames = [_with_square(_scene(i), 20 + 30 * (min(i, 9) - 5), 100) if 5 <= i < 20 else _scene(i) for i in range(45)]
    detected = [i for i, frame in enumerate(frames) if gate.needs_detection(frame, i * NS // FPS, 0)]
    assert detected == [0, 5, 6, 7, 8, 9, 20], detected


def test_a_recheck_shorter_than_a_window_rechecks_inside_it() -> None:
    gate = MotionGate(MotionSettings(), recheck_ns=NS // 2)
    decisions = [gate.needs_detection(_scene(i), i * NS // FPS, 0) for i in range(10)]  # one 2 s window
    assert [i for i, detect in enumerate(decisions) if detect] == [0, 3, 6, 9]


def test_a_gate_that_starts_mid_recording_decides_as_the_one_that_saw_it_all() -> None:
    """From the first window it sees whole, a late gate (a worker taking over a stream) agrees exactly."""
    frames = [_with_square(_scene(i), 10 + 7 * i, 60) if 12 <= i < 26 or i >= 44 else _scene(i) for i in range(60)]
    early, late = MotionGate(MotionSettings(), recheck_ns=2 * NS), MotionGate(MotionSettings(), recheck_ns=2 * NS)
    whole = [_decide(early, frame, i * NS // FPS) for i, frame in enumerate(frames)]
    joined = [_decide(late, frame, i * NS // FPS) for i, frame in enumerate(frames) if i >= 17]
    assert joined[20 - 17 :] == whole[20:], "every frame from the first whole window on (frame 20) decided alike"
    assert any(whole[21:26]) and not any(whole[31:40]), whole


def test_the_gate_detects_again_when_the_clock_goes_back() -> None:
    gate = MotionGate(MotionSettings(), recheck_ns=2 * NS)
    assert _decide(gate, _scene(0), 100 * NS)
    assert not _decide(gate, _scene(1), 100 * NS + NS // FPS)
    assert gate.needs_detection(_scene(2), 50 * NS, window_start(100 * NS, WINDOW_MS)), "a replay started over"


def test_people_walking_in_the_lobby_move_in_most_sampled_frames(media_dir: Path) -> None:
    gate = MotionGate(MotionSettings(), recheck_ns=2 * NS)
    moved = []
    with av.open(str(media_dir / "lobby.ts")) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index % 2:  # 10 fps → the default 5 sampled
                continue
            _decide(gate, frame.to_ndarray(format="rgb24"), int(index * NS / 10))
            moved.append(bool(gate.regions))
            if len(moved) == 100:
                break
    assert sum(moved) >= 80, f"{sum(moved)} of {len(moved)} sampled frames moved"
