"""Zones with a known polygon: entering, occupancy and dwell from tracked detections."""

from __future__ import annotations

from detectors.zones import ZoneTracker, inside
from streams.models import Detection

DOOR = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]
S = 1_000_000_000


def _person(track: int, x: float, y: float) -> Detection:
    """A person whose feet are at (x, y)."""
    return Detection(label="person", confidence=0.9, box=(x - 0.02, y - 0.2, x + 0.02, y), track_id=track)


def test_point_in_polygon() -> None:
    assert inside(DOOR, 0.75, 0.75) and inside(DOOR, 0.5, 0.5)
    assert not inside(DOOR, 0.25, 0.75)


def test_entering_occupancy_and_dwell() -> None:
    zones = ZoneTracker({"door": DOOR})
    zones.update([_person(1, 0.2, 0.8), _person(2, 0.7, 0.8)], 0)  # 2 inside from the start
    zones.update([_person(1, 0.6, 0.8), _person(2, 0.7, 0.8)], 1 * S)  # 1 walks in
    window = zones.close_window(2 * S)["door"]
    assert (window.entered, window.occupancy, window.dwell_s) == (2, 2.0, 2.0)
    zones.update([_person(1, 0.6, 0.8)], 3 * S)  # 2 left
    zones.update([_person(1, 0.3, 0.8), _person(3, 0.9, 0.9)], 3.5 * S)  # 1 left, 3 came
    window = zones.close_window(4 * S)["door"]
    assert (window.entered, window.occupancy) == (1, 1.0)
    assert window.dwell_s == 0.5
    untracked = Detection(label="person", confidence=0.9, box=(0.6, 0.6, 0.7, 0.9))
    zones.update([untracked], 5 * S)
    assert zones.close_window(6 * S)["door"].occupancy == 0, "only tracked objects count"
