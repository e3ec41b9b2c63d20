"""Moments from window records: runs of similar windows within aligned blocks, described in words."""

from __future__ import annotations

from config.schema import SearchConfig
from daemon.search.index import Hit
from daemon.search.moments import block_of, build_moments
from daemon.search.rank import reciprocal_rank_fusion
from streams.models import ClassStats
from tests.helpers import W, audio, make_alert, speech, video

T0 = 1_700_000_040_000  # a minute boundary
SEARCH = SearchConfig()


def moments(*parts, alerts=()):  # type: ignore[no-untyped-def]
    return build_moments("hq", "cam", list(parts), list(alerts), SEARCH)


def test_similar_consecutive_windows_are_one_moment_and_a_change_starts_another() -> None:
    quiet = [video("cam", T0 + n * W, persons=1) for n in range(5)] + [audio("cam", T0 + n * W, -45) for n in range(5)]
    said = [video("cam", T0 + 5 * W, persons=2), speech("cam", T0 + 5 * W, "help somebody call the police")]
    found = moments(*quiet, *said)
    assert [(m.id, m.windows) for m in found] == [(f"cam@{T0}", 5), (f"cam@{T0 + 5 * W}", 1)]
    assert found[0].objects == {"person": 1} and found[0].end_ms == T0 + 5 * W
    assert found[1].objects == {"person": 2} and found[1].transcript == "help somebody call the police"


def test_a_gap_in_the_windows_splits_a_run() -> None:
    found = moments(video("cam", T0, persons=1), video("cam", T0 + 2 * W, persons=1))
    assert [m.start_ms for m in found] == [T0, T0 + 2 * W]


def test_the_moments_do_not_depend_on_the_order_records_came_in() -> None:
    parts = [video("cam", T0 + n * W, persons=1 + n % 2) for n in range(6)] + [speech("cam", T0 + 2 * W, "hello there")]
    assert moments(*parts) == moments(*reversed(parts))


def test_the_description_says_what_was_seen_heard_said_and_alerted() -> None:
    cars = {
        "car": ClassStats(max_count=3, mean_count=2.0, max_confidence=0.8),
        "person": ClassStats(max_count=1, mean_count=1.0, max_confidence=0.9),
    }
    alert = make_alert(window_start=T0).model_copy(update={"streams": ["cam"]})
    (moment,) = moments(
        video("cam", T0, persons=0, classes=cars),
        audio("cam", T0, -12),
        speech("cam", T0, "Help! Somebody call the police!", keywords=["help", "police"]),
        alerts=[alert],
    )
    text = moment.description
    assert "three cars" in text and "one person" in text
    assert "Heard: loud speech, shouting." in text and '"Help! Somebody call the police!"' in text
    assert "Keywords: help, police." in text and "Alert: distress." in text
    assert [a.id for a in moment.alerts] == [alert.id] and moment.heard == "speech"
    (empty,) = moments(video("cam", T0, persons=0), audio("cam", T0, -60))
    assert "Nobody and nothing seen." in empty.description and "Heard: quiet." in empty.description
    assert "speech" not in empty.description  # a query for speech must not match a silent moment


def _street(levels: list[float], ratio: float = 0.0):  # type: ignore[no-untyped-def]
    return [audio("cam", T0 + n * W, level, ratio=ratio) for n, level in enumerate(levels)]


def test_a_sound_is_heard_against_its_blocks_quiet_floor_not_full_scale() -> None:
    # A camera's noise floor at -68 dBFS, a dog 40 dB over it: far under `loud_dbfs`, still a sound.
    found = moments(*_street([-68, -68, -28, -26, -68, -68]))
    assert [(m.windows, m.heard) for m in found] == [(2, "quiet"), (2, "sound"), (2, "quiet")]
    assert "Heard: a sound or noise." in found[1].description and "loud" not in found[1].description
    # The same level in a block that is loud throughout (traffic) stands out from nothing.
    (traffic,) = moments(*_street([-28, -27, -28, -26, -28, -27]))
    assert traffic.heard == "quiet" and traffic.windows == 6
    # Loud is loud whatever the floor; near digital silence, a faint hiss is still quiet.
    assert moments(*_street([-10] * 4))[0].description.endswith("Heard: a loud sound or noise.")
    assert moments(*_street([-120, -120, -58, -120]))[0].heard == "quiet"


def test_a_voice_nothing_was_made_of_is_a_voice_and_words_are_speech() -> None:
    found = moments(*_street([-68, -68, -30, -68], ratio=0.9))
    assert [m.heard for m in found] == ["quiet", "voice", "quiet"]
    assert "Heard: a voice." in found[1].description
    said = moments(*_street([-68, -68, -30, -68], ratio=0.9), speech("cam", T0 + 2 * W, "over here"))
    assert [m.heard for m in said] == ["quiet", "speech", "quiet"] and "Heard: speech." in said[1].description


def test_loudness_is_the_energy_mean_not_the_mean_of_decibels() -> None:
    (moment,) = moments(audio("cam", T0, -10), audio("cam", T0 + W, -10))
    assert moment.loudness_dbfs == -10.0
    (mixed,) = moments(audio("cam", T0, -30), audio("cam", T0 + W, -40))
    assert mixed.loudness_dbfs == round(10 * __import__("math").log10((1e-3 + 1e-4) / 2), 1)


def test_blocks_are_aligned_to_their_length() -> None:
    assert block_of(T0 + 59_999, 60_000) == (T0, T0 + 60_000)
    assert block_of(T0 + 60_000, 60_000) == (T0 + 60_000, T0 + 120_000)


def test_reciprocal_rank_fusion_prefers_a_moment_high_in_both_lists() -> None:
    keyword = [Hit("a", 9.0), Hit("b", 5.0), Hit("c", 1.0)]
    vector = [Hit("d", 0.9), Hit("b", 0.8), Hit("c", 0.7)]
    fused = reciprocal_rank_fusion(keyword, vector)
    assert [f.id for f in fused] == ["b", "c", "a", "d"]
    assert fused[0].keyword_rank == 2 and fused[0].vector_rank == 2 and fused[0].similarity == 0.8
    assert [f.id for f in reciprocal_rank_fusion(keyword, [])] == ["a", "b", "c"]


def test_loud_is_judged_per_window_before_any_rounding() -> None:
    _, loud, under = moments(*_street([-68, -68, -19.96, -20.04]))
    assert (loud.windows, under.windows) == (1, 1) and loud.loudness_dbfs == under.loudness_dbfs == -20.0
    assert loud.description.endswith("Heard: a loud sound or noise.")
    assert under.description.endswith("Heard: a sound or noise.")
