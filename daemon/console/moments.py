"""What a click on a stream's timeline needs: the nearest snapshot, and a clip of any span.

The timeline (`/streams/<stream>`) shows a stream's period summaries on one time axis; an
operator who clicks a moment wants to see and hear it. Two pieces serve that:

- `nearest_snapshot` finds the JPEG of the window nearest to a time. Window starts are
  multiples of `windows.size`, so it probes those file names outward from the time instead
  of listing a stream's snapshot folder, which gains a file per window with detections and
  is never pruned.
- `SpanClips` cuts a span still on `fw.media` into the clip store with the clips role's own
  code (`streams.clipping.cut_clip`), under a name made of the span
  (`span-<stream>-<from>-<to>`), so asking twice reuses the first cut. One cut at a time per
  web process: a cut reads up to `clips.max_keyframe_interval` of a partition and remuxes in
  a thread, and a few operators clicking must not take the broker's and the machine's time
  from the pipeline. A request that finds a cut running is refused (429 with Retry-After)
  rather than queued, so no request waits for cuts it did not ask for while holding a
  connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from config.schema import ClipsConfig, Identifier
from streams.clip_store import ClipStore, check_name
from streams.clipping import cut_clip
from streams.media_span import SpanError, SpanSource
from streams.models import Clip
from streams.remux import RemuxError

MAX_SPAN_MS = 120_000
"""The longest span the dashboard cuts (2 min): a moment, not an archive export."""
MAX_SNAPSHOT_RANGE_MS = 3_600_000 + 60_000
"""The widest range a snapshot is looked for in: an hour's period (and a little)."""
_END_MARGIN_S = 2.0  # past the span's end, for its last packets to reach the topic
_KAFKA_BUDGET_S = 30.0  # starting the reader and finding the span, on top of waiting for the end
RETRY_AFTER_S = 2


class MomentError(Exception):
    """A request the timeline's API refuses: the HTTP status and a reason for the operator."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class SpanRequest(BaseModel):
    """The body of `POST /api/clips`: a stream and a span of its wallclock, in ms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: Identifier
    from_ms: StrictInt = Field(ge=0)
    to_ms: StrictInt = Field(ge=0)


def parse_span(body: bytes, now_ms: int) -> SpanRequest:
    """The request's span, checked: MomentError(400) says what is wrong."""
    try:
        span = SpanRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise MomentError(
            400, f'{where}: {first["msg"]} (send {{"stream": "lobby", "from_ms": …, "to_ms": …}})'
        ) from None
    if span.to_ms <= span.from_ms:
        raise MomentError(400, f"to_ms ({span.to_ms}) must be after from_ms ({span.from_ms})")
    if span.to_ms - span.from_ms > MAX_SPAN_MS:
        raise MomentError(
            400, f"a span is at most {MAX_SPAN_MS // 1000} s, got {(span.to_ms - span.from_ms) / 1000:g} s"
        )
    if span.from_ms > now_ms:
        raise MomentError(400, "the span starts in the future: nothing to cut yet")
    return span


def span_clip_name(span: SpanRequest) -> str:
    """The store name of a span's clip: the same span, the same clip."""
    return check_name(f"span-{span.stream}-{span.from_ms}-{span.to_ms}")


@dataclass(frozen=True, slots=True)
class SpanCut:
    """A span's clip in the store, and whether an earlier request had cut it already."""

    clip: Clip
    reused: bool


class SpanClips:
    """Cuts spans of `fw.media` into the clip store for the dashboard, one at a time (see the module)."""

    def __init__(
        self,
        config: ClipsConfig,
        store: ClipStore,
        open_reader: Callable[[], AbstractAsyncContextManager[SpanSource]],
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self.store = store
        self._open_reader = open_reader
        self._wallclock = wallclock
        self._cutting = asyncio.Semaphore(1)

    def now_ms(self) -> int:
        return round(self._wallclock() * 1000)

    async def cut(self, span: SpanRequest) -> SpanCut:
        """The span's clip: the stored one, or a fresh cut; MomentError with the status otherwise."""
        name = span_clip_name(span)
        existing = await asyncio.to_thread(self.store.record, name)
        if existing is not None:
            return SpanCut(existing, reused=True)
        if self._cutting.locked():
            raise MomentError(
                429, "another clip is being cut on this dashboard: try again in a moment", retry_after=RETRY_AFTER_S
            )
        async with self._cutting:
            existing = await asyncio.to_thread(self.store.record, name)  # cut while this one looked
            if existing is not None:
                return SpanCut(existing, reused=True)
            return SpanCut(await self._cut(span, name), reused=False)

    async def _cut(self, span: SpanRequest, name: str) -> Clip:
        wait_s = min(max(span.to_ms - self.now_ms(), 0) / 1000, MAX_SPAN_MS / 1000) + _END_MARGIN_S
        staging = await asyncio.to_thread(self.store.staging_file)
        try:
            async with asyncio.timeout(wait_s + _KAFKA_BUDGET_S):
                async with self._open_reader() as reader:
                    clip = await cut_clip(
                        reader, span.stream, span.from_ms, span.to_ms, time.monotonic() + wait_s, staging, name
                    )
            await asyncio.to_thread(self.store.put, clip, staging)
        except SpanError as exc:  # BeyondRetention included: both say what the topic holds
            raise MomentError(404, str(exc)) from None
        except RemuxError as exc:
            raise MomentError(500, f"the span could not be written as an MP4: {exc}") from None
        except TimeoutError:
            raise MomentError(503, "Kafka did not answer in time: the span could not be read") from None
        except KafkaError as exc:
            raise MomentError(503, f"Kafka is not reachable, the span could not be read: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
        return clip


def nearest_snapshot(
    root: Path, site: str | None, stream: str, near_ms: int, from_ms: int, to_ms: int, window_ms: int
) -> tuple[str, int] | None:
    """(site, window start) of the snapshot nearest to `near_ms` among windows starting in [from_ms, to_ms].

    Probes `<root>/<site>/<stream>/<window start>.jpg` outward from `near_ms` (the earlier
    window first on a tie, then the sites by name); `site` None looks in every site folder.
    Blocking: run it off the loop.
    """
    step = max(window_ms, 1)
    first, last = -(-from_ms // step), to_ms // step
    sites = snapshot_sites(root, site)
    folders = [(name, root / name / stream) for name in sites if (root / name / stream).is_dir()]
    if not folders or first > last:
        return None
    middle = min(max(round(near_ms / step), first), last)
    for distance in range(max(middle - first, last - middle) + 1):
        for index in (middle - distance, middle + distance) if distance else (middle,):
            if first <= index <= last:
                for site, folder in folders:
                    if (folder / f"{index * step}.jpg").is_file():
                        return site, index * step
    return None


def snapshot_sites(root: Path, site: str | None) -> list[str]:
    """The site folders to look in: `site`, or (None: a stream of unknown site) every one under `root`."""
    if site is not None:
        return [site]
    with contextlib.suppress(OSError):
        return sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    return []
