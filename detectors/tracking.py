"""Track ids across frames with ByteTrack (ultralytics' implementation), per stream.

Detections of any backend are fed to the tracker as numpy boxes; each stream has its own
tracker, so ids are stable within a stream and replays give the same ids.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Sequence

import numpy as np

from detectors.yolo import import_ultralytics
from streams.models import Detection


class ObjectTracker:
    """ByteTrack over normalised detections; returns the detections with `track_id` set."""

    def __init__(
        self,
        labels: Sequence[str],
        frame_rate: float = 5.0,
        track_buffer_s: float = 3.0,
        high: float = 0.3,
        low: float = 0.1,
        new_track: float = 0.3,
        match: float = 0.9,
        buffer: float = 2.0,
    ) -> None:
        import_ultralytics()
        from ultralytics.engine.results import Boxes
        from ultralytics.trackers.byte_tracker import BYTETracker

        self._boxes = Boxes
        self._labels = list(labels)
        self._buffer = buffer
        args = Namespace(
            track_high_thresh=high,
            track_low_thresh=low,
            new_track_thresh=new_track,
            track_buffer=max(int(track_buffer_s * frame_rate), 1),
            match_thresh=match,
            fuse_score=True,
        )
        self._tracker = BYTETracker(args)

    def update(self, detections: Sequence[Detection]) -> list[Detection]:
        """Assign track ids; detections the tracker does not confirm keep `track_id=None`."""
        known = [d for d in detections if d.label in self._labels]
        # Work in a 1000x1000 space so IoU and Kalman gating behave like pixel coordinates, and
        # match on boxes grown by `buffer` around their centre (buffered IoU, C-BIoU): at a few
        # analysed frames per second a walking person's boxes in consecutive frames barely overlap.
        rows = np.array(
            [[*self._buffered(d.box), d.confidence, self._labels.index(d.label)] for d in known], dtype=np.float32
        ).reshape(-1, 6)
        tracks = self._tracker.update(self._boxes(rows, (1000, 1000)).numpy())
        ids: dict[int, int] = {int(row[7]): int(row[4]) for row in tracks}
        out = []
        for index, detection in enumerate(known):
            track_id = ids.get(index)
            out.append(detection.model_copy(update={"track_id": track_id}) if track_id is not None else detection)
        return out + [d for d in detections if d.label not in self._labels]

    def _buffered(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box
        cx, cy = (x1 + x2) * 500, (y1 + y2) * 500
        half_w, half_h = (x2 - x1) * 500 * self._buffer, (y2 - y1) * 500 * self._buffer
        return cx - half_w, cy - half_h, cx + half_w, cy + half_h
