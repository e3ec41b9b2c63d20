"""Test scenes the benchmarks need beside the shared recordings: a quiet camera.

The shared recordings are busy (people walk through the lobby in every frame). Most
cameras show nothing moving most of the time, so capacity and cost are measured on a quiet
scene too, built from the lobby itself: the per-pixel median of its frames is the empty
hall; it plays with camera noise, and one stretch of the lobby's people walking plays in it
once, in the middle. The audio is the lobby's own (speech, a call for help). The file is
made once with PyAV (H.264 + AAC in MPEG-TS, keyframe every 2 s) and cached.

    .venv/bin/python -m bench.scenes    # writes .cache/media/quiet.ts
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from daemon.commands import fetch_media

MEDIA = Path(".cache/media")
SECONDS = 60
WALK_SECONDS = 6


def quiet_scene(media_dir: Path = MEDIA) -> Path:
    """`media_dir/quiet.ts`, made from lobby.ts on first use."""
    target = media_dir / "quiet.ts"
    if target.is_file():
        return target
    lobby = fetch_media(media_dir) / "lobby.ts"
    with av.open(str(lobby)) as container:
        stream = container.streams.video[0]
        rate = int(stream.average_rate or 10)
        frames = [np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8) for frame in container.decode(stream)]
    empty = np.median(np.stack(frames[::8]), axis=0).astype(np.uint8)
    rng = np.random.default_rng(11)
    count, walk_from = SECONDS * rate, (SECONDS - WALK_SECONDS) // 2 * rate
    with av.open(str(lobby)) as source:
        audio_in = source.streams.audio[0]
        sample_rate = audio_in.rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        sound = [frame for decoded in source.decode(audio_in) for frame in resampler.resample(decoded)]
    partial = target.with_suffix(".part.ts")
    with av.open(str(partial), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = empty.shape[1], empty.shape[0], "yuv420p"
        video.options = {"preset": "veryfast", "g": str(2 * rate), "keyint_min": str(2 * rate)}
        audio = out.add_stream("aac", rate=sample_rate, layout="mono")
        samples = 0
        for index in range(count):
            walking = walk_from <= index < walk_from + WALK_SECONDS * rate
            base = frames[index - walk_from] if walking else empty
            noisy = np.clip(base.astype(np.int16) + rng.integers(-3, 4, size=base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            out.mux(video.encode(frame))
            while sound and samples < (index + 1) * sample_rate // rate:  # interleaved as a camera sends
                chunk = sound.pop(0)
                chunk.pts, chunk.time_base = samples, Fraction(1, sample_rate)
                samples += chunk.samples
                out.mux(audio.encode(chunk))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    partial.rename(target)
    return target


if __name__ == "__main__":
    print(quiet_scene())
