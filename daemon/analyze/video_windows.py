"""Per-window video features of one stream: class counts, new tracks, zones, best snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from detectors.tracking import ObjectTracker
from detectors.zones import ZoneTracker
from streams.clock import NS_PER_MS
from streams.models import ClassStats, Detection, VideoFeatures


@dataclass
class VideoWindowState:
    """What one window of one stream has gathered so far."""

    start_ms: int
    end_ms: int
    frames: int = 0
    dropped: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)
    max_confidence: dict[str, float] = field(default_factory=dict)
    new_tracks: dict[str, list[int]] = field(default_factory=dict)
    best_score: tuple[int, float] = (-1, 0.0)
    best_image: npt.NDArray[np.uint8] | None = field(default=None, repr=False)
    best_detections: list[Detection] = field(default_factory=list)


class VideoFeatureBuilder:
    """Turns one stream's detections, in frame order, into `VideoFeatures` per window."""

    def __init__(
        self,
        labels: list[str],
        zones: dict[str, list[tuple[float, float]]],
        sample_fps: float,
        snapshot_dir: Path | None,
    ) -> None:
        self._labels = labels
        self._tracker = ObjectTracker(labels, frame_rate=sample_fps)
        self._zones = ZoneTracker(zones)
        self._seen_tracks: set[int] = set()
        self._snapshot_dir = snapshot_dir

    def add(
        self, window: VideoWindowState, detections: list[Detection] | None, image: npt.NDArray[np.uint8], wall_ns: int
    ) -> None:
        """Account one analysed (or dropped, `detections=None`) frame."""
        if detections is None:
            window.dropped += 1
            return
        tracked = self._tracker.update(detections)
        self._zones.update(tracked, wall_ns)
        window.frames += 1
        per_frame: dict[str, int] = dict.fromkeys(self._labels, 0)
        for detection in tracked:
            per_frame[detection.label] = per_frame.get(detection.label, 0) + 1
            window.max_confidence[detection.label] = max(
                window.max_confidence.get(detection.label, 0.0), detection.confidence
            )
            if detection.track_id is not None and detection.track_id not in self._seen_tracks:
                self._seen_tracks.add(detection.track_id)
                window.new_tracks.setdefault(detection.label, []).append(detection.track_id)
        for label, count in per_frame.items():
            window.counts.setdefault(label, []).append(count)
        score = (len(tracked), sum(d.confidence for d in tracked))
        if score > window.best_score:
            window.best_score = score
            window.best_image = image
            window.best_detections = tracked

    def close(self, window: VideoWindowState, stream: str, site: str) -> VideoFeatures:
        """The window's features; writes the best frame as JPEG when a snapshot dir is set."""
        classes = {}
        for label, counts in window.counts.items():
            if not any(counts):
                continue
            classes[label] = ClassStats(
                max_count=max(counts),
                mean_count=round(sum(counts) / window.frames, 4) if window.frames else 0.0,
                max_confidence=round(window.max_confidence.get(label, 0.0), 4),
                new_tracks=window.new_tracks.get(label, []),
            )
        snapshot = None
        if self._snapshot_dir is not None and window.best_image is not None and window.best_detections:
            snapshot = f"{site}/{stream}/{window.start_ms}.jpg"
            path = self._snapshot_dir / snapshot
            path.parent.mkdir(parents=True, exist_ok=True)
            ok, jpeg = cv2.imencode(".jpg", window.best_image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                path.write_bytes(jpeg.tobytes())
        return VideoFeatures(
            frames=window.frames,
            dropped_frames=window.dropped,
            classes=classes,
            zones=self._zones.close_window(window.end_ms * NS_PER_MS),
            detections=window.best_detections,
            snapshot=snapshot,
        )
