"""The data that flows between fusewatch stages.

Media-side objects (packets, decoded frames and audio) are frozen dataclasses: they carry
bytes and numpy arrays and never leave a process except through `streams.wire`. The JSON
messages on `fw.features`, `fw.alerts` and `fw.summaries` are frozen pydantic models, so
their JSON Schema is published (`fusewatch schema`) and incoming records are validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

WIRE_VERSION = 1
MediaKind = Literal["video", "audio"]


# --------------------------------------------------------------------------- media


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """Everything a decoder needs about one elementary stream, sent in `init` messages."""

    kind: MediaKind
    codec: str
    time_base: Fraction
    extradata: bytes = b""
    width: int = 0
    height: int = 0
    pix_fmt: str = ""
    sample_rate: int = 0
    channels: int = 0
    layout: str = ""


@dataclass(frozen=True, slots=True)
class StreamInit:
    """Decoder set-up of a stream; sent before the first packet and every video keyframe."""

    stream: str
    site: str
    tracks: tuple[TrackInfo, ...]
    wall_ns: int
    seq: int
    # False for a recording replayed into `fw.media` (`fusewatch replay`, file sources): its
    # frames are held back rather than dropped when the detector is behind. True (the
    # default, also for an init written before the field existed) for a camera or microphone.
    live: bool = True

    def track(self, kind: MediaKind) -> TrackInfo | None:
        """The first track of this kind, if the stream has one."""
        return next((track for track in self.tracks if track.kind == kind), None)


@dataclass(frozen=True, slots=True)
class Packet:
    """One encoded packet, untouched, with its timing in its own time base."""

    stream: str
    kind: MediaKind
    data: bytes
    pts: int | None
    dts: int | None
    time_base: Fraction
    keyframe: bool
    wall_ns: int
    seq: int


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The source ended (end of file, or ingest stopped for good)."""

    stream: str
    wall_ns: int
    seq: int


MediaMessage = StreamInit | Packet | EndOfStream


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded video frame as RGB24 (height, width, 3) uint8."""

    stream: str
    site: str
    pts: int | None
    time_base: Fraction
    wall_ns: int
    image: npt.NDArray[np.uint8] = field(repr=False)
    keyframe: bool = False
    # From the stream's init: a live source cannot wait, so the detector may drop its frames
    # when behind; a replayed recording is held back instead (see `DetectionBatcher.submit`).
    live: bool = True

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Decoded audio as float32 PCM, shape (channels, samples), at `sample_rate`."""

    stream: str
    site: str
    pts: int | None
    time_base: Fraction
    wall_ns: int
    samples: npt.NDArray[np.float32] = field(repr=False)
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True, slots=True)
class WordTiming:
    """A transcribed word, times in seconds from the start of the transcribed audio."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    """One decoded segment with its confidence figures."""

    start: float
    end: float
    text: str
    words: tuple[WordTiming, ...]
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a transcriber heard in one piece of audio."""

    segments: tuple[TranscriptSegment, ...]
    language: str | None
    language_probability: float | None

    @property
    def text(self) -> str:
        return " ".join(segment.text.strip() for segment in self.segments).strip()

    @property
    def words(self) -> tuple[WordTiming, ...]:
        return tuple(word for segment in self.segments for word in segment.words)


# --------------------------------------------------------------------------- JSON messages


class WireModel(BaseModel):
    """Base of the JSON wire messages: frozen, unknown fields rejected, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Detection(WireModel):
    """One detected object in a frame; box in normalised (x1, y1, x2, y2)."""

    label: str
    confidence: float = Field(ge=0, le=1)
    box: tuple[float, float, float, float]
    track_id: int | None = None


class ClassStats(WireModel):
    """Per-class counts over the frames of a window."""

    max_count: int = Field(ge=0)
    mean_count: float = Field(ge=0)
    max_confidence: float = Field(ge=0, le=1)
    new_tracks: list[int] = Field(default_factory=list)


class ZoneStats(WireModel):
    """What happened in one zone during a window."""

    entered: int = Field(default=0, ge=0)
    occupancy: float = Field(default=0, ge=0)
    dwell_s: float = Field(default=0, ge=0)


class VideoFeatures(WireModel):
    """Video features of one window."""

    frames: int = Field(ge=0)
    dropped_frames: int = Field(default=0, ge=0)
    classes: dict[str, ClassStats] = Field(default_factory=dict)
    zones: dict[str, ZoneStats] = Field(default_factory=dict)
    detections: list[Detection] = Field(default_factory=list)
    snapshot: str | None = None


class AudioFeatures(WireModel):
    """Audio features of one window."""

    loudness_dbfs: float
    peak_dbfs: float
    speech_ratio: float = Field(ge=0, le=1)
    loudness_lufs: float | None = Field(default=None, description="EBU R128 integrated loudness")


class Word(WireModel):
    """A transcribed word with its wallclock time (ms) and probability."""

    text: str
    start_ms: int
    end_ms: int
    probability: float = Field(ge=0, le=1)


class SpeechFeatures(WireModel):
    """Speech of one window."""

    text: str
    words: list[Word] = Field(default_factory=list)
    language: str | None = None
    confidence: float | None = None
    keywords: list[str] = Field(default_factory=list)


class _WindowFeaturesBase(WireModel):
    v: Literal[1] = 1
    stream: str
    site: str
    window_start: int = Field(description="stream wallclock, ms since epoch")
    window_end: int
    latency_ms: dict[str, float] = Field(default_factory=dict)


# Wire v1 records carry every payload key, the other modalities' as null: they are accepted and written so.
class VideoWindowFeatures(_WindowFeaturesBase):
    """One stream's video in one window, on `fw.features`."""

    modality: Literal["video"] = "video"
    video: VideoFeatures
    audio: None = None
    speech: None = None


class AudioWindowFeatures(_WindowFeaturesBase):
    """One stream's sound in one window, on `fw.features`."""

    modality: Literal["audio"] = "audio"
    video: None = None
    audio: AudioFeatures
    speech: None = None


class SpeechWindowFeatures(_WindowFeaturesBase):
    """What was said on one stream in one window, on `fw.features`."""

    modality: Literal["speech"] = "speech"
    video: None = None
    audio: None = None
    speech: SpeechFeatures


WindowFeatures = Annotated[
    VideoWindowFeatures | AudioWindowFeatures | SpeechWindowFeatures, Field(discriminator="modality")
]
"""One (stream, modality, window) on `fw.features`, keyed by site: the payload its `modality` names."""
WINDOW_FEATURES: TypeAdapter[WindowFeatures] = TypeAdapter(WindowFeatures)
"""Parses (`validate_json`) and describes (`json_schema`) a `WindowFeatures` record."""


class TermContribution(WireModel):
    """How much one term of an event contributed: weight x g(signal)."""

    signal: str
    weight: float
    value: float | None
    g: float = Field(ge=0, le=1)
    contribution: float
    # Added to v1 without a version bump: absent (null) in alerts written before it existed.
    stream: str | None = Field(
        default=None,
        description="the stream whose signal gave `value` (the largest over the term's streams, the first "
        "by name on a tie); null when no stream measured it, and absent in alerts older than the field",
    )


class Evidence(WireModel):
    """What an operator needs to judge an alert."""

    transcript: str = ""
    detections: list[Detection] = Field(default_factory=list)
    snapshot: str | None = None


class Alert(WireModel):
    """An event that fired; `id` is a hash of (event, site, window_start) so it is idempotent."""

    v: Literal[1] = 1
    id: str
    event: str
    site: str
    streams: list[str]
    window_start: int
    window_end: int
    score: float
    threshold: float
    terms: list[TermContribution]
    severity: Literal["info", "low", "medium", "high", "critical"]
    evidence: Evidence = Evidence()
    published_ns: int | None = None


class Summary(WireModel):
    """What one stream saw and heard in one window."""

    v: Literal[1] = 1
    stream: str
    site: str
    window_start: int
    window_end: int
    objects: dict[str, int] = Field(default_factory=dict)
    loudness_dbfs: float | None = None
    speech_ratio: float | None = None
    transcript: str = ""


class Clip(WireModel):
    """An MP4 of one stream's span in the clip store, remuxed from `fw.media`: on `fw.clips` and in Redis.

    The span asked for is `requested_from_ms`..`requested_to_ms`; what the file holds starts at
    the keyframe at or before it (`start_ms`) and ends with the last packet at or before its
    end (`end_ms`). `complete` is false when the stream ended or went silent before that end.
    """

    v: Literal[1] = 1
    id: str = Field(
        description="the clip's name in the store: `<alert id>-<stream>` for an alert's clip, "
        "`span-<stream>-<from ms>-<to ms>` for a span cut from the dashboard"
    )
    alert_id: str | None = None
    site: str
    stream: str
    requested_from_ms: int = Field(description="stream wallclock, ms since epoch")
    requested_to_ms: int
    start_ms: int
    end_ms: int
    starts_late: bool = Field(description="the first keyframe the topic held came after the requested start")
    complete: bool
    video_codec: str | None = None
    audio_codec: str | None = None
    packets: int = Field(ge=0)
    bytes: int = Field(ge=0)
    cut_ms: float = Field(ge=0, description="time spent reading and remuxing")
    created_ms: int


class PeriodObjects(WireModel):
    """One class of object over a period."""

    max_count: int = Field(ge=0, description="most seen at once in any window")
    mean_count: float = Field(ge=0, description="mean over the period's video windows (absent in one: 0)")
    new_tracks: int = Field(ge=0, description="distinct track ids first seen in the period")


class PeriodZone(WireModel):
    """One zone over a period."""

    entries: int = Field(ge=0, description="sum of the windows' entries")
    max_occupancy: float = Field(ge=0, description="most objects in the zone at once")
    dwell_s: float = Field(ge=0, description="the longest stay seen (the maximum, not a sum)")


class SaidLine(WireModel):
    """What was said, with its wallclock span (ms): word times when known, else window bounds."""

    start_ms: int
    end_ms: int
    text: str


class LoudMoment(WireModel):
    """Consecutive windows at or above `summaries.loud_dbfs`, with their loudest levels."""

    start_ms: int
    end_ms: int
    loudness_dbfs: float
    peak_dbfs: float


class PeriodLoudness(WireModel):
    """Sound level over a period."""

    mean_dbfs: float = Field(description="energy mean of the windows' RMS levels, not a mean of decibels")
    peak_dbfs: float
    loud_moments: list[LoudMoment] = Field(default_factory=list)


class AlertRef(WireModel):
    """An alert fired in the period that names the stream (`Alert.streams`)."""

    id: str
    event: str
    score: float
    window_start: int


class PeriodSummary(WireModel):
    """What one stream saw, heard and alerted on over a period (1 min, 1 h…), on `fw.summaries`.

    Shares the topic (key: stream) with the per-window `Summary`; `kind` tells them apart
    (`SUMMARY_RECORD`). `complete` is false for a period cut short by the end of input; a later
    summary of the same (stream, period_s, period_start) replaces it.
    """

    v: Literal[1] = 1
    kind: Literal["period"] = "period"
    stream: str
    site: str
    period_s: int = Field(gt=0)
    period_start: int = Field(description="wallclock ms, a multiple of period_s")
    period_end: int
    complete: bool = True
    windows: int = Field(ge=0, description="windows of the stream folded in")
    video_windows: int = Field(default=0, ge=0)
    audio_windows: int = Field(default=0, ge=0)
    first_window: int
    last_window: int
    objects: dict[str, PeriodObjects] = Field(default_factory=dict)
    zones: dict[str, PeriodZone] = Field(default_factory=dict)
    speech: list[SaidLine] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    loudness: PeriodLoudness | None = None
    alerts: list[AlertRef] = Field(default_factory=list)


def _summary_kind(value: object) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "period" if kind == "period" else "window"


SummaryRecord = Annotated[
    Annotated[Summary, Tag("window")] | Annotated[PeriodSummary, Tag("period")], Discriminator(_summary_kind)
]
"""A record of `fw.summaries`: a `PeriodSummary` when `kind` is "period", else (no `kind`) a per-window `Summary`."""
SUMMARY_RECORD: TypeAdapter[SummaryRecord] = TypeAdapter(SummaryRecord)
"""Parses (`validate_json`) and describes (`json_schema`) a record of `fw.summaries`."""


Heard = Literal["quiet", "sound", "voice", "speech"]
"""How a moment sounded against its block's quiet floor (`daemon/search/moments.py`)."""


class Moment(WireModel):
    """One stream's moment for search: a window, or a run of similar consecutive windows.

    `id` is `<stream>@<start_ms>`: the same windows always give the same moment, so a window
    read again replaces its moment instead of adding one. `description` is the text that is
    embedded and indexed for keywords: what was seen, heard and said, in words.
    """

    v: Literal[1] = 1
    id: str
    site: str
    stream: str
    start_ms: int = Field(description="stream wallclock of the first window's start, ms since epoch")
    end_ms: int
    windows: int = Field(ge=1)
    objects: dict[str, int] = Field(default_factory=dict, description="class → most seen at once")
    zones: dict[str, int] = Field(default_factory=dict, description="zone → entries")
    transcript: str = ""
    words: list[Word] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    loudness_dbfs: float | None = None
    peak_dbfs: float | None = None
    speech_ratio: float | None = None
    heard: Heard | None = Field(
        default=None, description="how it sounded against its block's quiet floor; None without audio or speech"
    )
    alerts: list[AlertRef] = Field(default_factory=list)
    snapshot: str | None = None
    description: str


class InitTrack(WireModel):
    """JSON shape of one track inside an `init` message."""

    kind: MediaKind
    codec: str = Field(max_length=64)
    tb: str = Field(pattern=r"^\d{1,10}/\d{1,10}$")
    extradata: str = Field(default="", description="base64")
    # Bounds above any real camera or microphone (16K video, 768 kHz, 64 channels): a hostile init
    # is refused here with its reason before it reaches the codec setup.
    width: int = Field(default=0, ge=0, le=16384)
    height: int = Field(default=0, ge=0, le=16384)
    pix_fmt: str = Field(default="", max_length=32)
    sample_rate: int = Field(default=0, ge=0, le=768_000)
    channels: int = Field(default=0, ge=0, le=64)
    layout: str = Field(default="", max_length=64)


class InitMessage(WireModel):
    """JSON value of an `init` message on `fw.media`."""

    stream: str
    site: str
    tracks: list[InitTrack] = Field(min_length=1)
    # Added to v1 without a version bump: absent means live, and live inits leave it out, so
    # a reader that predates it still takes every live stream's init.
    live: bool = Field(
        default=True,
        strict=True,
        description="false: a replayed recording; analyze then waits for its frames instead of dropping "
        "them when behind (detectors.when_behind: drop applies to live sources only). "
        "Absent: live.",
    )
