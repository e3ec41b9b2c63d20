"""Pydantic models of the fusewatch YAML, one per top-level section.

Every model is frozen and forbids unknown keys, so a typo in a site file is an error that
names the key instead of a setting that silently does nothing. Validators that check
relations between entries (duplicate ids, references to unknown streams) attach the
offending path in the error context under `at`, so the loader can point at its line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ByteSize, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from config.durations import Duration

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
"""Stream, site, zone and event names: they become Kafka keys and Redis key parts."""


class Section(BaseModel):
    """Base of every config model: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _duplicates(names: list[str]) -> list[tuple[int, str]]:
    seen: set[str] = set()
    found: list[tuple[int, str]] = []
    for index, name in enumerate(names):
        if name in seen:
            found.append((index, name))
        seen.add(name)
    return found


# --------------------------------------------------------------------------- kafka


def _host_port(server: str) -> str:
    host, sep, port = server.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
        raise PydanticCustomError("host_port", "expected 'host:port', got {got}", {"got": repr(server)})
    return server


HostPort = Annotated[str, AfterValidator(_host_port)]


class KafkaTopics(Section):
    """Topic names of the wire format (docs/design.md §1); override to share a cluster."""

    media: str = "fw.media"
    features: str = "fw.features"
    alerts: str = "fw.alerts"
    summaries: str = "fw.summaries"
    clips: str = "fw.clips"
    dead_letter: str = "fw.dead-letter"

    @classmethod
    def suffixed(cls, suffix: str) -> KafkaTopics:
        """The default names with `.suffix` added: topics of their own on a shared broker (tests, benches)."""
        defaults = cls()
        return cls(**{name: f"{value}.{suffix}" for name, value in defaults.model_dump().items()})


class KafkaConfig(Section):
    """How to reach the Kafka-protocol broker; secrets come from `${ENV}` substitution.

    TLS (`SSL`, `SASL_SSL`): `ssl_cafile` is the CA bundle (PEM) that signed the brokers' certificates
    (default: the system's), `ssl_certfile`/`ssl_keyfile` a client certificate for brokers that require
    one; broker names are checked against their certificates. `sasl_password` is never shown: not in
    reprs, logs or config errors. An empty SASL or TLS setting (`${VAR:-}` left unset) counts as not
    given, so one site file serves a SASL_SSL cluster and a PLAINTEXT one (`deploy/compose.yaml`);
    a SASL protocol without its password is still an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    bootstrap_servers: list[HostPort] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    client_id: str = "fusewatch"
    group_prefix: Identifier = "fusewatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topics: KafkaTopics = KafkaTopics()
    media_partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    max_request_size: int = Field(default=8 * 1024 * 1024, ge=1024)
    session_timeout: Duration = 10.0
    # Where a consumer starts again when its offset lies beyond the log end (the topic was recreated or
    # the broker replaced): "earliest" reads the new log from its start (nothing lost, maybe a replay's
    # duplicates, which alert ids absorb); "latest" skips to new records only.
    offset_reset: Literal["earliest", "latest"] = "earliest"

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sasl_password", mode="before")
    @classmethod
    def _password_is_text(cls, value: object) -> object:
        return None if value == "" else _secret_text(value)

    @field_validator("sasl_mechanism", "sasl_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value  # `${VAR:-}` left unset: one site file for SASL and PLAINTEXT brokers

    @model_validator(mode="after")
    def _check_sasl(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise PydanticCustomError(
                "sasl",
                "security_protocol {proto} needs sasl_mechanism, sasl_username and sasl_password",
                {"proto": self.security_protocol, "at": ("security_protocol",)},
            )
        return self


# --------------------------------------------------------------------------- redis


class RedisConfig(Section):
    """Where alerts, summaries and acknowledgements live.

    TLS: a `rediss://` URL. `ssl_ca_certs` is the CA bundle (PEM) that signed the server's
    certificate (default: the system's); `ssl_certfile` and `ssl_keyfile` are a client
    certificate and its key, for servers that require one (`tls-auth-clients yes`); the key may
    also sit in the certificate file. The server's name is checked against its certificate.
    The ssl_* settings need a `rediss://` URL; the files must exist when a client is made
    (`redis_client` names a missing one) and are read as each connection opens.

    Credentials: `username` (an ACL user; none: Redis's `default` user) and `password`, e.g.
    `${FUSEWATCH_REDIS_PASSWORD}`. A user and password written in the URL
    (`rediss://user:password@host/0`, `?password=…`) are moved into these fields, so the URL that
    errors and logs show never carries them; the password is never shown (reprs, logs, config errors).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    key_prefix: str = "fusewatch"
    alerts_maxlen: int = Field(default=100_000, ge=100)
    buffer_max: int = Field(default=10_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        url, found = _take_credentials(data["url"])
        if not found:
            return data
        moved = dict(data, url=url)
        for field, value in found.items():
            if data.get(field) not in (None, ""):
                raise PydanticCustomError(
                    "redis_credentials",
                    "the URL and `{field}` both give a {field}: keep one (the value is not shown)",
                    {"field": field, "at": ("url",)},
                )
            moved[field] = value
        return moved

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
            raise PydanticCustomError(
                "redis_url",
                "expected redis://host:port/db, rediss://… or unix://path, got {got}",
                {"got": repr(_without_userinfo(url))},
            )
        return url

    @field_validator("password", mode="before")
    @classmethod
    def _password_is_text(cls, value: object) -> object:
        return None if value == "" else _secret_text(value)

    @field_validator("username", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value  # `${VAR:-}` left unset

    @model_validator(mode="after")
    def _check_tls(self) -> RedisConfig:
        tls = [name for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if getattr(self, name) is not None]
        if tls and urlsplit(self.url).scheme != "rediss":
            raise PydanticCustomError(
                "redis_tls",
                "TLS settings ({names}) need a rediss:// URL, got a {scheme}:// one",
                {"names": ", ".join(tls), "scheme": urlsplit(self.url).scheme, "at": (tls[0],)},
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise PydanticCustomError(
                "redis_tls", "ssl_keyfile needs ssl_certfile (the client certificate)", {"at": ("ssl_keyfile",)}
            )
        return self


def _split_userinfo(url: str) -> tuple[str | None, str]:
    """(`user:password` or None, `url` without it). Outside unix:// the userinfo ends at the last '@'
    before any '?' or '#', so a password substituted from the environment may hold '/', '@' or ':'."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None, url
    if scheme == "unix":
        end = rest.find("/") if "/" in rest else len(rest)
        at = rest.find("@", 0, end)
    else:
        end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, end)
    return (None, url) if at < 0 else (rest[:at], f"{scheme}{sep}{rest[at + 1 :]}")


def _take_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`url` without credentials, and those it held: `user:password@` and `?username=…&password=…`
    (redis-py reads both), percent-decoded."""
    userinfo, url = _split_userinfo(url)
    found: dict[str, str] = {}
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        found = {field: unquote(value) for field, value in (("username", user), ("password", password)) if value}
    base, qmark, rest = url.partition("?")
    query, hashmark, fragment = rest.partition("#")
    kept = []
    for pair in query.split("&") if qmark else []:
        key, _, value = pair.partition("=")
        if key in ("username", "password") and value:
            if key in found:
                raise PydanticCustomError(
                    "redis_credentials",
                    "the URL gives a {field} twice (the values are not shown)",
                    {"field": key, "at": ("url",)},
                )
            found[key] = unquote(value)
        else:
            kept.append(pair)
    return base + ("?" + "&".join(kept) if kept else "") + hashmark + fragment, found


def _without_userinfo(url: str) -> str:
    """`url` without any `user:password@`, for messages."""
    return _split_userinfo(url)[1]


def _secret_text(value: object) -> object:
    """Secrets must be text; anything else is refused without echoing it (config errors are printed and logged)."""
    if value is None or isinstance(value, str | SecretStr):
        return value
    raise PydanticCustomError("secret_value", "must be a string (quote it in the YAML); the value is not shown", {})


# --------------------------------------------------------------------------- sources

_SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file", "v4l2", "alsa")
_SCHEME_TYPO = re.compile(r"^(rtsps?|https?|file|v4l2|alsa)(:/?[^/]|//|:?$)", re.IGNORECASE)


def _normalised_polygon(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise PydanticCustomError(
                "zone_point",
                "polygon points are normalised to 0..1, got ({x}, {y})",
                {"x": x, "y": y},
            )
    return points


Polygon = Annotated[list[tuple[float, float]], Field(min_length=3), AfterValidator(_normalised_polygon)]


class Zone(Section):
    """A named polygon in normalised image coordinates (0..1, origin top-left)."""

    name: Identifier
    polygon: Polygon


class MotionConfig(Section):
    """Motion-gated detection: the detector sees a sampled frame only when something moved.

    A frame without motion reuses the stream's latest detections; the detector still looks
    every `recheck` seconds, so objects that stopped moving stay seen as they are. The
    recheck, rounded up to whole windows and aligned to the wallclock, is also the gate's
    period: its first sampled frame is detected and seeds the motion background afresh, so
    a window's features never depend on what a worker saw before the period began.
    """

    enabled: bool = True
    threshold: int = Field(default=25, ge=1, le=255, description="grey-level change (0..255) that counts")
    min_area: float = Field(default=0.002, gt=0, lt=1, description="smallest moving region, fraction of the frame")
    recheck: Duration = Field(
        default=10.0, gt=0, description="longest time between two detections, and the gate's period"
    )
    masks: list[Polygon] = Field(default_factory=list, description="areas never counted as motion")


class VideoInput(Section):
    """Video of one source: analysed at `sample_fps` frames per second."""

    enabled: bool = True
    sample_fps: float = Field(default=5.0, gt=0, le=120)
    zones: list[Zone] = Field(default_factory=list)
    motion: MotionConfig = Field(default_factory=MotionConfig)

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[Zone]) -> list[Zone]:
        for index, name in _duplicates([zone.name for zone in zones]):
            raise PydanticCustomError(
                "duplicate", "duplicate zone name {name}", {"name": repr(name), "at": (index, "name")}
            )
        return zones


class AudioInput(Section):
    """Audio of one source."""

    enabled: bool = True


class Reconnect(Section):
    """Exponential backoff when a live source drops."""

    initial: Duration = 0.5
    maximum: Duration = 30.0
    factor: float = Field(default=2.0, ge=1.0)


class SourceConfig(Section):
    """One camera/microphone: an RTSP/HTTP URL, a file, or a V4L2/ALSA device."""

    id: Identifier
    site: Identifier | None = None
    url: str
    video: VideoInput = VideoInput()
    audio: AudioInput = AudioInput()
    reconnect: Reconnect = Reconnect()
    loop: bool = Field(
        default=False,
        description="file sources: replay the recording again and again at its own "
        "speed (demo, rule tuning); live sources ignore it",
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="FFmpeg demuxer options, e.g. rtsp_transport: tcp"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if "://" in url:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in _SOURCE_SCHEMES:
                raise PydanticCustomError(
                    "source_url",
                    "unsupported URL scheme {scheme} (expected one of {schemes} or a file path)",
                    {"scheme": repr(scheme), "schemes": ", ".join(_SOURCE_SCHEMES)},
                )
            if scheme in ("rtsp", "rtsps", "http", "https") and not parts.hostname:
                raise PydanticCustomError("source_url", "URL {got} has no host", {"got": repr(url)})
            if scheme in ("v4l2", "alsa", "file") and not (parts.netloc or parts.path):
                raise PydanticCustomError("source_url", "URL {got} names no device or file", {"got": repr(url)})
        elif _SCHEME_TYPO.match(url):
            raise PydanticCustomError("source_url", "malformed URL {got}: expected scheme://…", {"got": repr(url)})
        elif not url.strip():
            raise PydanticCustomError("source_url", "url must not be empty", {})
        return url


# --------------------------------------------------------------------------- detectors


class YoloDetectorConfig(Section):
    """ultralytics YOLO with weights from a local file (nothing downloads at run time).

    `cpu_threads`: PyTorch threads when running on the CPU (default: every core the
    process may use; ultralytics alone would leave one core idle).
    """

    type: Literal["yolo"]
    weights: str
    classes: list[str] = Field(default_factory=lambda: ["person", "bicycle", "car"])
    confidence: float = Field(default=0.35, gt=0, lt=1)
    iou: float = Field(default=0.5, gt=0, lt=1)
    imgsz: int = Field(default=640, ge=32, le=4096, multiple_of=32)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    half: bool | None = None
    cpu_threads: int | None = Field(default=None, ge=1, le=256)
    max_batch: int = Field(default=8, ge=1, le=256)
    max_wait: Duration = 0.05


class DarknetDetectorConfig(Section):
    """A Darknet YOLO (default: the COCO-pretrained YOLOv3-tiny fetched at install) on a choice of runtimes.

    `runtime`: `openvino` (default: the ONNX export on OpenVINO's CPU plugin, the fastest
    on the CPUs measured in bench/README.md), `onnxruntime` (the same export on ONNX
    Runtime), `opencv` (OpenCV's DNN reading the Darknet files) or `torch` (the cfg built in
    PyTorch, detectors/darknet_torch.py; the only one that runs on CUDA). All four give the
    same detections in float32. `device` (`auto`: CUDA when torch sees a GPU, else the CPU)
    applies to `torch` only. `half`: float16 on CUDA with `torch` (ignored when `auto` picks
    the CPU), the CPU's reduced precision (bf16 where it has it) with `openvino`; it moves
    detections a little, so it is off by default.

    On the CPU a batch of frames is no faster than the same frames one by one, so
    `max_batch` is 1 by default and no frame waits for a batch to fill; the frames of every
    stream still share the one bounded queue. On CUDA (`runtime: torch`) a larger
    `max_batch` lets frames of many streams share one forward pass. `cpu_threads`: the
    runtime's threads (default: every core the process may use).
    """

    type: Literal["darknet"]
    model: str = "yolov3-tiny"
    model_dir: str | None = None
    classes: list[str] = Field(default_factory=lambda: ["person", "bicycle", "car"])
    confidence: float = Field(default=0.25, gt=0, lt=1)
    iou: float = Field(default=0.45, gt=0, lt=1)
    imgsz: int = Field(default=416, ge=32, le=4096, multiple_of=32)
    runtime: Literal["openvino", "onnxruntime", "opencv", "torch"] = "openvino"
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    half: bool = False
    cpu_threads: int | None = Field(default=None, ge=1, le=256)
    max_batch: int = Field(default=1, ge=1, le=64)
    max_wait: Duration = 0.05

    @model_validator(mode="after")
    def _check_runtime(self) -> DarknetDetectorConfig:
        # Values, not whether a field was set: a dumped config (every field written) must load again.
        if self.runtime != "torch" and self.device not in ("auto", "cpu"):
            raise PydanticCustomError(
                "darknet_runtime",
                "only runtime torch takes device {device} (runtime is {runtime})",
                {"device": self.device, "runtime": self.runtime, "at": ("device",)},
            )
        if self.half and self.runtime in ("opencv", "onnxruntime"):
            raise PydanticCustomError(
                "darknet_runtime",
                "only runtimes torch and openvino take half (runtime {runtime} is float32 only)",
                {"runtime": self.runtime, "at": ("half",)},
            )
        if self.half and self.runtime == "torch" and self.device == "cpu":
            raise PydanticCustomError(
                "darknet_half",
                "half precision with runtime torch runs on CUDA only, not device cpu",
                {"at": ("half",)},
            )
        return self


ObjectDetectorConfig = Annotated[YoloDetectorConfig | DarknetDetectorConfig, Field(discriminator="type")]


class WhisperConfig(Section):
    """What every Whisper backend shares: the model, decoding, keywords and speech segmentation.

    `model`: `auto` (English: tiny.en on a CPU, base on a GPU), `tiny.en` (installed with
    the package) or `base` (multilingual, fetched at install time: without `language` it
    detects the language of each utterance); `model_dir`, a CTranslate2 model directory,
    overrides it. Speech is cut into utterances by voice
    activity: an utterance ends after `min_silence`, is cut at `max_segment`, and is
    transcribed with `segment_overlap` of audio on each side so no word is cut at an edge.

    `encoder_context: fit` runs Whisper's encoder on the utterance plus a few seconds of
    padding (at least 10 s) instead of a fixed 30 s: the encoder is most of the cost of a
    short utterance. On the test speech tiny.en hears the same words; base the same words,
    one of them better (detectors/README.md). `full` is Whisper's own 30 s.
    """

    model: Literal["auto", "tiny.en", "base"] = "auto"
    model_dir: str | None = None
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    beam_size: int = Field(default=1, ge=1, le=10)
    language: str | None = None
    keywords: list[str] = Field(default_factory=list)
    segment_overlap: Duration = 0.5
    min_silence: Duration = 1.5
    max_segment: Duration = 15.0
    encoder_context: Literal["fit", "full"] = "fit"


class FasterWhisperConfig(WhisperConfig):
    """Whisper via CTranslate2 (faster-whisper), the default backend."""

    type: Literal["faster-whisper"]
    compute_type: str = "auto"
    cpu_threads: int = Field(default=2, ge=1, le=64)


class OpenAIWhisperConfig(WhisperConfig):
    """Whisper via openai-whisper (PyTorch, the reference implementation), same model directories.

    The CTranslate2 float16 weights are mapped exactly onto openai-whisper's model; slower
    than faster-whisper, for parity checks and as a second implementation.
    """

    type: Literal["openai-whisper"]


TranscriberConfig = Annotated[FasterWhisperConfig | OpenAIWhisperConfig, Field(discriminator="type")]


class LoudnessVadConfig(Section):
    """Loudness in dBFS and voice activity, per window.

    `vad_threshold`: the speech probability (Silero VAD, per 32 ms) at which a frame counts as
    speech, both for a window's `speech_ratio` and for where an utterance for Whisper begins.
    """

    type: Literal["loudness-vad"]
    sample_rate: Literal[16000] = 16000
    vad_threshold: float = Field(default=0.5, ge=0, le=1)


AudioAnalyzerConfig = Annotated[LoudnessVadConfig, Field(discriminator="type")]


class DetectorsConfig(Section):
    """Which implementation runs for each modality, selected by `type:`."""

    objects: ObjectDetectorConfig = Field(default_factory=lambda: DarknetDetectorConfig(type="darknet"))
    transcriber: TranscriberConfig | None = Field(default_factory=lambda: FasterWhisperConfig(type="faster-whisper"))
    audio: AudioAnalyzerConfig = Field(default_factory=lambda: LoudnessVadConfig(type="loudness-vad"))
    frame_queue: int = Field(default=32, ge=1, le=10_000)
    when_behind: Literal["drop", "wait"] = Field(
        default="drop",
        description="live: drop the oldest queued frame (counted); replay/eval: wait (deterministic)",
    )


# --------------------------------------------------------------------------- windows


class WindowsConfig(Section):
    """Tumbling windows aligned to stream wallclock (docs/design.md §4)."""

    size: Duration = 2.0
    # How long fusion waits for an input that has gone quiet. Speech comes last (an utterance is
    # transcribed when it ends, up to `max_segment` later), so this must exceed max_segment.
    grace: Duration = 20.0
    # A feature window starting more than this after the later of the wallclock and the site's
    # newest window is dead-lettered: one record from a clock gone wrong must not close a site's
    # windows for good. Replays at full speed run ahead of the wallclock, but in window steps.
    max_ahead: Duration = 300.0

    @field_validator("size", "max_ahead")
    @classmethod
    def _positive(cls, size: float) -> float:
        if size <= 0:
            raise PydanticCustomError("duration", "must be > 0, got {got}", {"got": size})
        return size


# --------------------------------------------------------------------------- events

SIGNAL_PATTERN = (
    r"^(video\.[A-Za-z0-9_ -]+\.(count|max_count|mean_count|confidence|new_tracks)"
    r"|video\.zone\.[A-Za-z0-9_.-]+\.(entered|occupancy|dwell)"
    r"|audio\.(loudness_dbfs|peak_dbfs|speech_ratio)"
    r"|speech\.(keywords|text_matches|words))$"
)


@dataclass(frozen=True)
class Signal:
    """A term's signal, parsed once: `video.<class>.<measure>`, `video.zone.<zone>.<measure>` (the zone
    name may hold dots), `audio.<measure>` or `speech.<measure>`; `str()` gives the text back."""

    modality: Literal["video", "audio", "speech"]
    measure: str
    label: str | None = None
    zone: str | None = None

    @property
    def is_text(self) -> bool:
        """Counts `match:` phrases in the transcript (scored 1 when any matched)."""
        return self.modality == "speech" and self.measure in ("keywords", "text_matches")

    def __str__(self) -> str:
        if self.zone is not None:
            return f"video.zone.{self.zone}.{self.measure}"
        return ".".join(part for part in (self.modality, self.label, self.measure) if part is not None)


@functools.lru_cache(maxsize=4096)
def parse_signal(text: str) -> Signal:
    """A signal of SIGNAL_PATTERN's syntax (checked by `Term` before this runs)."""
    parts = text.split(".")
    if parts[0] == "video" and parts[1] == "zone" and len(parts) >= 4:
        return Signal("video", parts[-1], zone=".".join(parts[2:-1]))
    if parts[0] == "video":
        return Signal("video", parts[2], label=parts[1])
    modality: Literal["audio", "speech"] = "audio" if parts[0] == "audio" else "speech"
    return Signal(modality, parts[1])


class Ramp(Section):
    """Linear map of a signal to [0, 1]: `low` gives 0, `high` gives 1."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Ramp:
        if self.low == self.high:
            raise PydanticCustomError("ramp", "ramp low and high must differ, both are {v}", {"v": self.low})
        return self


class Predicate(Section):
    """A comparison that gives 1 when true and 0 otherwise."""

    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float


class Term(Section):
    """One weighted piece of evidence of an event: g(signal) in [0, 1], weight alpha."""

    signal: str = Field(pattern=SIGNAL_PATTERN)
    weight: float = Field(gt=0)
    when: Predicate | None = None
    ramp: Ramp | None = None
    match: list[str] = Field(default_factory=list)
    streams: list[Identifier] = Field(default_factory=list)

    @property
    def parsed(self) -> Signal:
        return parse_signal(self.signal)

    @model_validator(mode="after")
    def _one_mapping(self) -> Term:
        text_signal = self.parsed.is_text
        if text_signal:
            if not self.match:
                raise PydanticCustomError("term", "{signal} needs `match:` (words or phrases)", {"signal": self.signal})
            if self.when is not None or self.ramp is not None:
                raise PydanticCustomError("term", "{signal} takes `match:`, not when/ramp", {"signal": self.signal})
        elif (self.when is None) == (self.ramp is None):
            raise PydanticCustomError("term", "a term needs exactly one of `when:` or `ramp:`", {"at": ("signal",)})
        return self


class EventConfig(Section):
    """An alert rule: weighted late fusion (or a learned model) over window signals."""

    name: Identifier
    description: str = ""
    sites: list[Identifier] = Field(default_factory=list)
    fusion: Literal["weighted", "learned"] = "weighted"
    model: str | None = None
    terms: list[Term] = Field(default_factory=list)
    threshold: float = Field(gt=0)
    for_windows: int = Field(default=1, ge=1, alias="for")
    cooldown: Duration = 30.0
    severity: Literal["info", "low", "medium", "high", "critical"] = "medium"

    @model_validator(mode="after")
    def _consistent(self) -> EventConfig:
        if self.fusion == "weighted":
            if not self.terms:
                raise PydanticCustomError("event", "a weighted event needs at least one term", {"at": ("terms",)})
            total = sum(term.weight for term in self.terms)
            if self.threshold > total + 1e-9:
                raise PydanticCustomError(
                    "event",
                    "threshold {t} can never be reached: the weights sum to {total}",
                    {"t": self.threshold, "total": total, "at": ("threshold",)},
                )
        elif self.model is None:
            raise PydanticCustomError(
                "event",
                "fusion: learned needs `model:` (a file from `fusewatch fusion train`)",
                {"at": ("fusion",)},
            )
        elif self.threshold > 1:
            raise PydanticCustomError(
                "event",
                "a learned event's threshold is a probability (0..1], got {t}",
                {"t": self.threshold, "at": ("threshold",)},
            )
        return self


# --------------------------------------------------------------------------- rolling summaries


class SummariesConfig(Section):
    """Rolling summaries per stream and period (docs/design.md §7): what an operator asks after the fact.

    Per-window summaries say what a stream saw in 2 s; a shift report needs minutes and hours.
    Periods are aligned to multiples of their length since the epoch (a 1 m period starts on a
    full minute), so every worker cuts a stream's history the same way; a window belongs to the
    period its start falls in (with a window size that does not divide a period, the window
    that straddles a boundary counts wholly in the earlier period). An empty list turns rolling
    summaries off.
    """

    periods: list[Duration] = Field(default_factory=lambda: [60.0, 3600.0], max_length=8)
    loud_dbfs: float = Field(
        default=-20.0, le=0, description="an audio window at or above this RMS level is a loud moment"
    )
    keep: int = Field(
        default=1440,
        ge=1,
        le=1_000_000,
        description="period summaries kept in Redis per stream and period (1440: a day of 1 m periods)",
    )

    @field_validator("periods")
    @classmethod
    def _whole_seconds(cls, periods: list[float]) -> list[float]:
        for index, period in enumerate(periods):
            if period < 1 or period != int(period):
                raise PydanticCustomError(
                    "period", "a period is whole seconds, at least 1 s, got {got}", {"got": period, "at": (index,)}
                )
        for index, shown in _duplicates([f"{period:g} s" for period in periods]):
            raise PydanticCustomError("duplicate", "duplicate period {got}", {"got": shown, "at": (index,)})
        return periods


# --------------------------------------------------------------------------- outputs, web


class OutputsConfig(Section):
    """Where alerts and summaries go."""

    redis: bool = True
    kafka: bool = True
    snapshots_dir: str = ".cache/snapshots"
    snapshots_retention: Duration = Field(
        default=7 * 86400.0, gt=0, description="snapshots of windows older than this are deleted"
    )


class ClipStoreConfig(Section):
    """Where clips are kept, and for how long: the oldest go first when either bound is reached."""

    path: str = Field(default=".cache/clips", min_length=1, description="a directory; created when missing")
    max_age: Duration = Field(default=7 * 86400.0, gt=0, description="clips older than this are deleted")
    max_bytes: ByteSize = Field(default=ByteSize(10 * 2**30), gt=0, description="e.g. 10GiB, 500MB")


class ClipsConfig(Section):
    """The clips role: an MP4 per alert and stream, remuxed from the packets on `fw.media`."""

    pre_roll: Duration = Field(default=5.0, description="before the alert's window, from the keyframe at or before")
    post_roll: Duration = Field(default=5.0, description="after the alert's window")
    max_keyframe_interval: Duration = Field(
        default=60.0, gt=0, description="how far before the clip's start the keyframe is looked for"
    )
    wait: Duration = Field(
        default=30.0,
        description="how long past the clip's end (wallclock) to wait for its packets before cutting what arrived",
    )
    store: ClipStoreConfig = ClipStoreConfig()


class SearchConfig(Section):
    """Cross-media search (docs/design.md §13): where the moment index lives, how moments are cut, what matches."""

    path: str = Field(default=".cache/search", min_length=1, description="the index directory (created when missing)")
    retention: Duration = Field(
        default=7 * 86400.0, gt=0, description="moments older than this are forgotten: match fw.media's retention"
    )
    moment_max: Duration = Field(
        default=60.0,
        gt=0,
        description="the longest moment: similar consecutive windows merge into one moment within aligned "
        "blocks of this length",
    )
    loud_dbfs: float = Field(
        default=-20.0, le=0, description="a window at or above this RMS level is described as loud"
    )
    sound_dbfs: float = Field(
        default=-50.0,
        le=0,
        description="a window under this RMS level is quiet, however quiet its background (unless it is loud, "
        "or something was transcribed from it)",
    )
    sound_above_db: float = Field(
        default=20.0,
        ge=0,
        description="a window is heard (a sound, a voice) when it is this much louder than the quiet floor of "
        "its block (the 10th percentile of the block's window levels)",
    )
    incident_similarity: float = Field(
        default=0.9,
        ge=-1,
        le=1,
        description="alerts of one event and site whose moments are at least this alike (cosine) are one incident",
    )
    incident_gap: Duration = Field(
        default=600.0, gt=0, description="an alert joins an incident only within this long of its alerts"
    )
    min_similarity: float = Field(
        default=0.3,
        ge=-1,
        le=1,
        description="a moment no keyword matched must be at least this close (cosine) to the query to be a result",
    )


class WebConfig(Section):
    """Dashboard, SSE feed, /metrics and health endpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8686, ge=0, le=65535)
    token: SecretStr | None = None
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="largest request body accepted on any path (login form, acknowledgements); larger → 413",
    )
    max_live_connections: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="open live feeds (/api/events) per process, each holding a Redis pub/sub connection; "
        "more are refused with 503 while the API keeps answering",
    )
    trusted_origins: list[str] = Field(
        default_factory=list,
        description="extra Origins (scheme://host[:port]) allowed to send state-changing requests, e.g. the "
        "public URL behind a reverse proxy that rewrites Host; the dashboard's own is always allowed",
    )
    login_attempts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="wrong tokens (login or bearer) a client may send in a row before it must wait",
    )
    login_backoff: Duration = Field(
        default=1.0,
        gt=0,
        description="the first wait after login_attempts wrong tokens; doubles with each one more",
    )
    login_backoff_max: Duration = Field(default=300.0, gt=0, description="the longest wait between login tries")

    @field_validator("trusted_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise PydanticCustomError(
                    "origin", "expected an Origin such as 'https://fusewatch.example', got {got}", {"got": repr(origin)}
                )
        return [origin.lower() for origin in value]

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else _secret_text(value)


# --------------------------------------------------------------------------- root


class FusewatchConfig(Section):
    """The whole site file."""

    site: Identifier = "default"
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    detectors: DetectorsConfig = DetectorsConfig()
    windows: WindowsConfig = WindowsConfig()
    events: list[EventConfig] = Field(default_factory=list)
    outputs: OutputsConfig = OutputsConfig()
    clips: ClipsConfig = ClipsConfig()
    search: SearchConfig = SearchConfig()
    web: WebConfig = WebConfig()
    summaries: SummariesConfig = SummariesConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> FusewatchConfig:
        for index, name in _duplicates([source.id for source in self.sources]):
            raise PydanticCustomError(
                "duplicate", "duplicate source id {name}", {"name": repr(name), "at": ("sources", index, "id")}
            )
        for index, name in _duplicates([event.name for event in self.events]):
            raise PydanticCustomError(
                "duplicate", "duplicate event name {name}", {"name": repr(name), "at": ("events", index, "name")}
            )
        known = {source.id for source in self.sources}
        for e_index, event in enumerate(self.events):
            for t_index, term in enumerate(event.terms):
                for s_index, stream in enumerate(term.streams):
                    if known and stream not in known:
                        raise PydanticCustomError(
                            "unknown_stream",
                            "unknown stream {stream} (sources are: {known})",
                            {
                                "stream": repr(stream),
                                "known": ", ".join(sorted(known)),
                                "at": ("events", e_index, "terms", t_index, "streams", s_index),
                            },
                        )
                self._check_zone(event, term, ("events", e_index, "terms", t_index, "signal"))
        return self

    def _check_zone(self, event: EventConfig, term: Term, at: tuple[str | int, ...]) -> None:
        """A `video.zone.NAME.*` term must name a zone of a source it reads (when the file has sources)."""
        zone = term.parsed.zone
        if zone is None or not self.sources:
            return
        zones = sorted(
            {
                defined.name
                for source in self.sources
                if (not event.sites or self.site_of(source) in event.sites)
                and (not term.streams or source.id in term.streams)
                for defined in source.video.zones
            }
        )
        if zone not in zones:
            where = (
                f"zones of this term's sources: {', '.join(zones)}"
                if zones
                else ("no source of this term defines a zone")
            )
            raise PydanticCustomError(
                "unknown_zone",
                "unknown zone {zone} ({where})",
                {"zone": repr(zone), "where": where, "at": at},
            )

    def source(self, stream_id: str) -> SourceConfig:
        """The source with this id; KeyError names the known ids."""
        for source in self.sources:
            if source.id == stream_id:
                return source
        raise KeyError(f"no source {stream_id!r} in config (have: {[s.id for s in self.sources]})")

    def site_of(self, source: SourceConfig) -> str:
        """A source's site, defaulting to the file's `site:`."""
        return source.site or self.site
