"""VAD-gated speech segments: utterance boundaries, padding, cuts of long speech."""

from __future__ import annotations

import itertools

import numpy as np

from daemon.analyze.speech import SpeechSegmenter
from streams.windows import AudioWindow

FRAME = 512 / 16_000  # 32 ms


def _feed(segmenter: SpeechSegmenter, pattern: list[int]) -> list:
    """Feed 2 s windows (62.5 frames each → 62 frames) whose frames are speech where pattern says 1."""
    out = []
    frames_per_window = 62
    for index in range(0, len(pattern), frames_per_window):
        probs = np.array(pattern[index : index + frames_per_window], dtype=np.float32)
        start_ns = int(index * FRAME * 1e9)
        pcm = np.zeros(probs.size * 512, dtype=np.float32)
        window = AudioWindow(start_ns // 1_000_000, start_ns // 1_000_000 + 2000, [pcm], first_ns=start_ns)
        out += segmenter.feed(window, probs, FRAME)
    return out


def test_an_utterance_ends_after_enough_silence_and_is_padded() -> None:
    segmenter = SpeechSegmenter(min_silence_s=0.6, pad_s=0.3)
    pattern = [0] * 31 + [1] * 62 + [0] * 93  # silence 1 s, speech 2 s, silence 3 s
    segments = _feed(segmenter, pattern)
    assert len(segments) == 1
    seg = segments[0]
    speech_start = 31 * FRAME
    assert abs(seg.audio_start_ns / 1e9 - (speech_start - 0.3)) < 0.002
    assert abs(seg.audio.size / 16_000 - (2 * 0.992 + 0.6)) < 0.1
    assert seg.own_start_ns == seg.audio_start_ns, "a natural edge owns its padding"
    assert segmenter.open_since_ns is None


def test_short_pauses_do_not_split_an_utterance() -> None:
    segmenter = SpeechSegmenter(min_silence_s=1.5, pad_s=0.3)
    pattern = ([1] * 31 + [0] * 20) * 3 + [0] * 62
    assert len(_feed(segmenter, pattern)) == 1


def test_long_speech_is_cut_and_each_cut_owns_its_own_span() -> None:
    segmenter = SpeechSegmenter(min_silence_s=0.6, max_segment_s=3.0, pad_s=0.3)
    segments = _feed(segmenter, [1] * 248 + [0] * 62)  # ~8 s of speech
    assert len(segments) == 3
    for first, second in itertools.pairwise(segments):
        assert first.own_end_ns == second.own_start_ns, "no gap and no overlap in ownership"
        assert second.audio_start_ns < second.own_start_ns, "audio overlaps the cut for context"


def test_open_utterance_holds_back_and_flush_closes_it() -> None:
    segmenter = SpeechSegmenter(min_silence_s=1.5)
    assert _feed(segmenter, [0] * 31 + [1] * 31) == []
    assert segmenter.open_since_ns is not None
    assert len(segmenter.flush()) == 1
