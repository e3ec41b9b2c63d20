"""Polygon zones: which tracked objects are inside, who entered, how long they stayed.

An object is in a zone when the bottom-centre of its box (where it stands) is inside the
polygon, in normalised image coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from streams.models import Detection, ZoneStats


def inside(polygon: Sequence[tuple[float, float]], x: float, y: float) -> bool:
    """Point-in-polygon (boundary counts as inside)."""
    contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    return bool(cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0)


def foot_point(detection: Detection) -> tuple[float, float]:
    x1, _, x2, y2 = detection.box
    return (x1 + x2) / 2, y2


@dataclass
class _ZoneWindow:
    entered: set[int] = field(default_factory=set)
    occupancy: int = 0


class ZoneTracker:
    """Per stream: zone membership of track ids over time, summarised per window."""

    def __init__(self, zones: Mapping[str, Sequence[tuple[float, float]]]) -> None:
        self._zones = dict(zones)
        self._since: dict[str, dict[int, int]] = {name: {} for name in zones}
        self._window: dict[str, _ZoneWindow] = {name: _ZoneWindow() for name in zones}
        self._last_ns: int | None = None

    @property
    def names(self) -> list[str]:
        return list(self._zones)

    def update(self, detections: Sequence[Detection], wall_ns: int) -> None:
        """One analysed frame: who is in each zone now."""
        self._last_ns = wall_ns
        for name, polygon in self._zones.items():
            present = {d.track_id for d in detections if d.track_id is not None and inside(polygon, *foot_point(d))}
            since = self._since[name]
            window = self._window[name]
            for track_id in present - since.keys():
                since[track_id] = wall_ns
                window.entered.add(track_id)
            for track_id in set(since) - present:
                del since[track_id]
            window.occupancy = max(window.occupancy, len(present))

    def close_window(self, end_ns: int) -> dict[str, ZoneStats]:
        """Stats of the window ending at `end_ns`; dwell is the longest stay so far."""
        stats = {}
        for name in self._zones:
            window = self._window[name]
            dwell = max(((end_ns - start) / 1e9 for start in self._since[name].values()), default=0.0)
            stats[name] = ZoneStats(
                entered=len(window.entered), occupancy=float(window.occupancy), dwell_s=round(max(dwell, 0.0), 3)
            )
            self._window[name] = _ZoneWindow()
        return stats
