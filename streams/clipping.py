"""One span of one stream to an MP4 file: what the clips role, `fusewatch clip` and the dashboard all do.

It lives in `streams` (below `daemon/`) because three callers in sibling layers share it: the
clips role (`daemon/clips`), the dashboard's on-demand cut (`daemon/console`) and the CLI.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streams.clock import NS_PER_MS
from streams.media_span import MediaSpan, SpanSource
from streams.models import Clip
from streams.remux import write_mp4


async def cut_clip(
    reader: SpanSource,
    stream: str,
    from_ms: int,
    to_ms: int,
    deadline: float,
    path: Path,
    clip_id: str,
    alert_id: str | None = None,
) -> Clip:
    """Read the span (waiting until `deadline`, time.monotonic, for its end) and remux it into `path`.

    Raises `streams.media_span.SpanError` (or `BeyondRetention`) and `streams.remux.RemuxError`.
    `cut_ms` is the time of reading and remuxing; for a span whose end never came it includes
    the wait until `deadline`.
    """
    started = time.monotonic()
    span: MediaSpan = await reader.read(stream, from_ms, to_ms, deadline)
    result = await asyncio.to_thread(write_mp4, span.init, span.packets, path)
    return Clip(
        id=clip_id,
        alert_id=alert_id,
        site=span.init.site,
        stream=stream,
        requested_from_ms=from_ms,
        requested_to_ms=to_ms,
        start_ms=span.start_ns // NS_PER_MS,
        end_ms=span.end_ns // NS_PER_MS,
        starts_late=span.starts_late,
        complete=span.complete,
        video_codec=result.video_codec,
        audio_codec=result.audio_codec,
        packets=result.packets,
        bytes=result.bytes,
        cut_ms=round((time.monotonic() - started) * 1000, 1),
        created_ms=time.time_ns() // NS_PER_MS,
    )
