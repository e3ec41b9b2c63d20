"""A small moment index for the web tests: hand-made moments, described and embedded as the index role does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from config.schema import FusewatchConfig, SearchConfig
from daemon.search.moments import describe
from daemon.search.store import open_index
from detectors.text_embedding import TextEmbedder
from streams.models import AlertRef, Heard, Moment
from tests.helpers import make_alert


def make_moment(
    stream: str,
    start_ms: int,
    end_ms: int,
    objects: dict[str, int] | None = None,
    transcript: str = "",
    loudness_dbfs: float | None = None,
    alert: str | None = None,
    snapshot: str | None = None,
    site: str = "test",
    heard: Heard | None = None,
) -> Moment:
    """A moment as `daemon.search.moments` builds one: id `<stream>@<start>`, the real description.

    Unless `heard` says how it sounded, it is heard as in a block whose quiet floor is high:
    speech when something was said, else a sound only when it is loud (`search.loud_dbfs`),
    else quiet.
    """
    loud = SearchConfig().loud_dbfs
    if heard is None and transcript:
        heard = "speech"
    elif heard is None and loudness_dbfs is not None:
        heard = "sound" if loudness_dbfs >= loud else "quiet"
    refs = []
    if alert is not None:
        fired = make_alert(alert, site, start_ms, streams=(stream,))
        refs = [AlertRef(id=fired.id, event=fired.event, score=fired.score, window_start=fired.window_start)]
    moment = Moment(
        id=f"{stream}@{start_ms}",
        site=site,
        stream=stream,
        start_ms=start_ms,
        end_ms=end_ms,
        windows=max((end_ms - start_ms) // 2000, 1),
        objects=objects or {},
        transcript=transcript,
        keywords=sorted({word for word in ("help", "police") if word in transcript.lower()}),
        loudness_dbfs=loudness_dbfs,
        peak_dbfs=None if loudness_dbfs is None else loudness_dbfs + 8,
        speech_ratio=None if loudness_dbfs is None else (0.8 if transcript else 0.0),
        heard=heard,
        alerts=refs,
        snapshot=snapshot,
        description="",
    )
    return moment.model_copy(
        update={"description": describe(moment, loudness_dbfs is not None and loudness_dbfs >= loud)}
    )


def search_on(config: FusewatchConfig, root: Path) -> FusewatchConfig:
    """`config` with its search index under `root` (the web opens `<root>/moments`)."""
    return config.model_copy(update={"search": config.search.model_copy(update={"path": str(root)})})


def write_moments(config: FusewatchConfig, moments: Sequence[Moment], embedder: TextEmbedder) -> None:
    """Upsert `moments` through a writer of the index at `search.path`, then close it (the graph is saved)."""
    index = open_index(Path(config.search.path) / "moments")
    try:
        index.upsert(moments, embedder.embed([moment.description for moment in moments]))
    finally:
        index.close()
