"""Motion detection and the gate in front of the detector, on synthetic scenes and a real recording."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from detectors.base import RgbImage
from detectors.motion import MotionDetector, MotionGate, MotionSettings

NS = 1_000_000_000
FPS = 5


def _scene(seed: int, noise: int = 3) -> RgbImage:
    """A fixed textured background with a little camera noise."""
    background = np.random.default_rng(0).integers(60, 200, size=(240, 320, 3), dtype=np.uint8)
    jitter = np.random.default_rng(seed).integers(-noise, noise + 1, size=background.shape)
    return np.clip(background.astype(np.int16) + jitter, 0, 255).astype(np.uint8)


def _with_square(image: RgbImage, x: int, y: int, side: int = 40) -> RgbImage:
    moved = image.copy()
    moved[y:y + side, x:x + side] = (250, 20, 20)
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
    decisions = [gate.needs_detection(_scene(i), i * NS // FPS) for i in range(30)]  # 6 s of a still scene
    assert [i for i, detect in enumerate(decisions) if detect] == [0, 10, 20]
    assert gate.needs_detection(_with_square(_scene(30), 100, 100), 30 * NS // FPS), "motion: detect now"
    assert not any(gate.needs_detection(_scene(i), i * NS // FPS) for i in range(31, 40)), \
        "a flash one frame long barely reached the background"
    assert gate.needs_detection(_scene(40), 40 * NS // FPS), "two seconds after the last detection"


def test_the_gate_detects_again_when_the_clock_goes_back() -> None:
    gate = MotionGate(MotionSettings(), recheck_ns=2 * NS)
    assert gate.needs_detection(_scene(0), 100 * NS)
    assert not gate.needs_detection(_scene(1), 100 * NS + NS // FPS)
    assert gate.needs_detection(_scene(2), 50 * NS), "a replay started over"


def test_people_walking_in_the_lobby_move_in_most_sampled_frames(media_dir: Path) -> None:
    gate = MotionGate(MotionSettings(), recheck_ns=2 * NS)
    moved = []
    with av.open(str(media_dir / "lobby.ts")) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index % 2:  # 10 fps → the default 5 sampled
                continue
            gate.needs_detection(frame.to_ndarray(format="rgb24"), int(index * NS / 10))
            moved.append(bool(gate.regions))
            if len(moved) == 100:
                break
    assert sum(moved) >= 80, f"{sum(moved)} of {len(moved)} sampled frames moved"
