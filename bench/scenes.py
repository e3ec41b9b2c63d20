"""The scenes the pipeline benchmarks run, and the pipeline they run them through.

`scenes()`: the busy lobby and a quiet camera; `embedded_services()` and `scene_config()`:
the embedded broker and Redis, and the demo config pointed at them with topics of its own
and N sources of one scene (gating on or off). Used by `bench.cost_profile` and
`bench.capacity`.

A quiet camera, because the shared recordings are all busy:
the people-walking lobby has someone in every frame. Most
cameras show nothing moving most of the time, so capacity and cost are measured on a quiet
scene too, built from the lobby itself: the per-pixel median of its frames is the empty
hall; it plays with camera noise, and one stretch of the lobby's people walking plays in it
once, in the middle. The audio is the lobby's own (speech, a call for help). The file is
made once with PyAV (H.264 + AAC in MPEG-TS, keyframe every 2 s) and cached.

    .venv/bin/python -m bench.scenes    # writes .cache/media/quiet.ts
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from config import load_config
from config.schema import (
    DarknetDetectorConfig,
    FusewatchConfig,
    KafkaConfig,
    KafkaTopics,
    MotionConfig,
    ObjectDetectorConfig,
    SourceConfig,
    VideoInput,
)
from daemon.cli.commands import fetch_media
from daemon.cli.main import default_config_path
from daemon.runtime.services import ServiceSet, free_port
from detectors.darknet import Runtime

MEDIA = Path(".cache/media")
SECONDS = 60
WALK_SECONDS = 6
PHASE_SECONDS = 10  # between the phases of the quiet scene: walk-throughs never overlap
PHASES = SECONDS // PHASE_SECONDS
AUDIO_CHUNK = 1024


def quiet_scene(media_dir: Path = MEDIA, phase: int = 0) -> Path:
    """`media_dir/quiet.ts` (phase 0) or `quiet-PHASE.ts`, made from lobby.ts on first use.

    Phase p plays the same minute started `p * PHASE_SECONDS` later (video and sound), so
    cameras given different phases see their walk-through and hear their speech at different
    times, as cameras of one site do; phase 0 has the walk-through in the middle.
    """
    target = media_dir / ("quiet.ts" if phase == 0 else f"quiet-{phase}.ts")
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
    shift_s = phase * PHASE_SECONDS % SECONDS
    with av.open(str(lobby)) as source:
        audio_in = source.streams.audio[0]
        sample_rate = audio_in.rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        pcm = np.concatenate(
            [frame.to_ndarray()[0] for decoded in source.decode(audio_in) for frame in resampler.resample(decoded)]
        )[: SECONDS * sample_rate]
    pcm = np.roll(pcm, -shift_s * sample_rate).astype(np.float32)
    partial = target.with_suffix(".part.ts")
    with av.open(str(partial), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = empty.shape[1], empty.shape[0], "yuv420p"
        video.options = {"preset": "veryfast", "g": str(2 * rate), "keyint_min": str(2 * rate)}
        audio = out.add_stream("aac", rate=sample_rate, layout="mono")
        samples = 0
        for index in range(count):
            played = (index + shift_s * rate) % count
            walking = walk_from <= played < walk_from + WALK_SECONDS * rate
            base = frames[played - walk_from] if walking else empty
            noisy = np.clip(base.astype(np.int16) + rng.integers(-3, 4, size=base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            out.mux(video.encode(frame))
            while samples < min((index + 1) * sample_rate // rate, len(pcm)):  # interleaved as a camera sends
                chunk = av.AudioFrame.from_ndarray(
                    pcm[None, samples : samples + AUDIO_CHUNK], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, samples, Fraction(1, sample_rate)
                samples += chunk.samples
                out.mux(audio.encode(chunk))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    partial.rename(target)
    return target


def quiet_phases(count: int) -> list[Path]:
    """The quiet scene at `count` different phases (at most `SECONDS / PHASE_SECONDS`)."""
    return [quiet_scene(phase=phase) for phase in range(count)]


def scenes() -> dict[str, Path]:
    """The busy scene (lobby.ts, people walking) and the quiet one."""
    return {"busy": fetch_media(MEDIA) / "lobby.ts", "quiet": quiet_scene()}


@contextmanager
def embedded_services() -> Iterator[ServiceSet]:
    """The embedded broker and Redis on free ports, for the length of a benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        services = ServiceSet(Path(tmp) / "services")
        services.start()
        try:
            yield services
        finally:
            services.stop()


def scene_config(
    services: ServiceSet,
    path: Path | Sequence[Path],
    streams: list[str],
    gating: bool,
    *,
    loop: bool = False,
    wait: bool = False,
    runtime: Runtime | None = None,
    half: bool = False,
) -> FusewatchConfig:
    """The demo config on `services` (topics and keys of its own), `streams` sources of `path` at 5 fps.

    Given several paths, the sources take them in turn (the phases of the quiet scene).

    `loop`: the sources replay the recording again and again (for `fusewatch run`); `wait`:
    detection waits instead of dropping frames; `runtime`, `half`: the Darknet detector's
    (default: the config's default runtime, float32).
    """
    suffix = uuid.uuid4().hex[:8]
    paths = [path] if isinstance(path, Path) else list(path)
    demo = load_config(default_config_path(), env={})
    return demo.model_copy(
        update={
            "kafka": KafkaConfig(
                bootstrap_servers=[services.kafka.address],
                group_prefix=f"bench{suffix}",
                media_partitions=max(4, len(streams)),
                session_timeout=6.0,
                topics=KafkaTopics.suffixed(suffix),
            ),
            "redis": demo.redis.model_copy(
                update={"url": f"redis://{services.redis.address}/0", "key_prefix": f"bench{suffix}"}
            ),
            "sources": [
                SourceConfig(
                    id=stream,
                    url=str(paths[index % len(paths)]),
                    loop=loop,
                    video=VideoInput(sample_fps=5, motion=MotionConfig(enabled=gating)),
                )
                for index, stream in enumerate(streams)
            ],
            "detectors": demo.detectors.model_copy(
                update={
                    "when_behind": "wait" if wait else "drop",
                    "objects": _detector(demo.detectors.objects, runtime, half),
                }
            ),
            "web": demo.web.model_copy(update={"port": free_port()}),
        }
    )


def _detector(config: ObjectDetectorConfig, runtime: Runtime | None, half: bool) -> ObjectDetectorConfig:
    if not isinstance(config, DarknetDetectorConfig):
        raise TypeError(f"the scenes run the demo's Darknet detector, not {config.type}")
    changes: dict[str, Any] = {"half": half} | ({"runtime": runtime} if runtime else {})
    return DarknetDetectorConfig.model_validate(config.model_dump() | changes)


if __name__ == "__main__":
    print(quiet_scene())
