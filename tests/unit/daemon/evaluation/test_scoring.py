"""Event-level matching and precision/recall/F1, and single-modality variants of an event."""

from __future__ import annotations

import pytest

from daemon.evaluation.scoring import AlertSpan, Label, Score, match, single_modality
from tests.helpers import DISTRESS


def test_matching_with_tolerance_counts_each_label_once() -> None:
    score = Score("distress", "fused")
    labels = [Label("distress", 30.0, 32.9), Label("distress", 60.0, 61.0), Label("other", 10, 11)]
    detections = [
        AlertSpan("distress", 28.0, 30.0),  # touches the label widened by 2 s: hit
        AlertSpan("distress", 30.0, 32.0),  # the same label again: false positive
        AlertSpan("distress", 70.0, 72.0),  # nothing there
        AlertSpan("other", 10.0, 12.0),
    ]  # another event: ignored here
    match(score, labels, detections, tolerance=2.0)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 2, 1)
    assert score.precision == pytest.approx(1 / 3) and score.recall == pytest.approx(1 / 2)
    assert score.f1 == pytest.approx(0.4)
    assert score.alerts == [28.0, 30.0, 70.0]


def test_no_labels_and_no_alerts_is_perfect_and_missing_everything_is_zero() -> None:
    quiet = Score("distress", "fused")
    match(quiet, [], [], 2.0)
    assert quiet.f1 == 1.0
    missed = Score("distress", "fused")
    match(missed, [Label("distress", 1, 2)], [], 2.0)
    assert (missed.precision, missed.recall, missed.f1) == (0.0, 0.0, 0.0)


def test_single_modality_keeps_its_terms_and_scales_the_threshold() -> None:
    speech = single_modality(DISTRESS, "speech")
    assert speech is not None and [t.signal for t in speech.terms] == ["speech.keywords"]
    assert speech.threshold == pytest.approx(0.8 * 0.4)
    assert single_modality(DISTRESS.model_copy(update={"terms": DISTRESS.terms[:1]}), "audio") is None
