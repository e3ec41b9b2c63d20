"""Window alignment, frame sampling and cutting audio at window edges."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from streams.models import AudioChunk
from streams.windows import AudioWindower, FrameSampler, window_size_ms, window_start

MS = 1_000_000


def test_windows_are_aligned_to_the_epoch() -> None:
    size = window_size_ms(2.0)
    assert window_start(1_700_000_001_999 * MS, size) == 1_700_000_000_000
    assert window_start(1_700_000_002_000 * MS, size) == 1_700_000_002_000
    assert window_size_ms(0.5) == 500


def test_sampler_keeps_the_first_frame_of_each_slot_per_stream() -> None:
    sampler = FrameSampler({"a": 5.0, "off": 0.0}, default_fps=2.0)
    walls = [n * 100 * MS for n in range(20)]  # 10 fps for 2 s
    assert sum(sampler("a", w) for w in walls) == 10
    assert sum(sampler("b", w) for w in walls) == 4  # default 2 fps
    assert not any(sampler("off", w) for w in walls)


def test_audio_is_resampled_to_16k_mono_and_cut_exactly_at_window_edges() -> None:
    windower = AudioWindower(window_size_ms(2.0))
    rate = 48_000
    start = 1_700_000_000_500 * MS
    windows = []
    for n in range(10):  # 10 chunks of 0.5 s stereo at 48 kHz = 5 s
        samples = np.full((2, rate // 2), 0.25, dtype=np.float32)
        wall = start + n * 500 * MS
        windows += windower.feed(AudioChunk("s", "hq", n * rate // 2, Fraction(1, rate), wall, samples, rate))
    windows += windower.flush()
    assert [w.start_ms for w in windows] == [1_700_000_000_000, 1_700_000_002_000, 1_700_000_004_000]
    sizes = [w.pcm().size for w in windows]
    assert sizes[1] == 32_000, "a full 2 s window holds exactly 2 s at 16 kHz"
    assert abs(sum(sizes) - 5 * 16_000) <= 64  # resampler latency at most a few samples
    assert abs(sizes[0] - 24_000) <= 64
    # FFmpeg's stereo→mono downmix is equal-power: (L + R) / sqrt(2).
    assert float(np.median(windows[1].pcm())) == np.float32(0.25 * 2 / np.sqrt(2))
