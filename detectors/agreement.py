"""How far two detectors' outputs on the same frames agree.

A runtime or a precision is only offered when its detections agree with the reference's
(OpenCV's DNN in float32): the parity tests and `bench/detector_runtimes.py` measure that
agreement with these functions, so both mean the same thing by it.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.models import Detection

Box = tuple[float, float, float, float]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes (1.0 for two empty boxes)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def agreement(
    reference: Sequence[Sequence[Detection]], ours: Sequence[Sequence[Detection]], min_iou: float = 0.5
) -> tuple[int, int, int]:
    """Per frame, greedy one-to-one matching by label and IoU ≥ `min_iou`, reference's most confident first.

    Returns (matched, reference detections, detections of ours with no counterpart).
    """
    matched = total = extra = 0
    for expected, got in zip(reference, ours, strict=True):
        left = list(got)
        for detection in sorted(expected, key=lambda d: -d.confidence):
            total += 1
            candidates = [(box_iou(d.box, detection.box), i) for i, d in enumerate(left) if d.label == detection.label]
            best = max(candidates, default=(0.0, -1))
            if best[0] >= min_iou:
                matched += 1
                left.pop(best[1])
        extra += len(left)
    return matched, total, extra
