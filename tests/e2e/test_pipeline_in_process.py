"""Real recordings through analyze and fuse with the demo config, in one process.

The broker-backed run of the same pipeline is in tests/integration; this test pins the
product behaviour: the people + speech recording raises the `distress` alert at the
"Help! Somebody call the police!" moment, with the expected term contributions, and the
street recording (a dog, an alarm, no speech) does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config import load_config
from config.schema import EventConfig, FusewatchConfig
from daemon.analyze.memory import ListFeatureSink
from daemon.analyze.worker import AnalyzeWorker
from daemon.cli.main import default_config_path
from daemon.evaluation.scoring import joined_windows, load_labels, window_labels
from daemon.fuse.learned import FeatureSpec, train
from daemon.fuse.memory import ListOutputs
from daemon.fuse.worker import FuseWorker
from detectors import registry
from streams.models import WindowFeatures
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.windows import FrameSampler
from tests.helpers import decoded_items

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_config() -> FusewatchConfig:
    config = load_config(default_config_path(), env={})
    return config.model_copy(update={"detectors": config.detectors.model_copy(update={"when_behind": "wait"})})


async def _features(config: FusewatchConfig, path: Path, stream: str) -> tuple[list[WindowFeatures], int]:
    messages = ListSink()
    result = await replay(str(path), stream, config.site, messages, ReplayOptions(speed=None), ManualClock())
    sink = ListFeatureSink()
    assert config.detectors.transcriber is not None
    worker = AnalyzeWorker(
        config,
        registry.object_detector(config.detectors.objects),
        registry.audio_analyzer(config.detectors.audio),
        registry.transcriber(config.detectors.transcriber),
        sink,
    )
    await worker.run(decoded_items(messages.messages, FrameSampler(worker.sample_rates(), worker.default_fps)))
    return sink.features, result.wall_start_ns // 1_000_000


@pytest.fixture(scope="module")
async def lobby(demo_config: FusewatchConfig, media_dir: Path) -> tuple[list[WindowFeatures], int]:
    return await _features(demo_config, media_dir / "lobby.ts", "lobby")


@pytest.fixture(scope="module")
async def street(demo_config: FusewatchConfig, media_dir: Path) -> tuple[list[WindowFeatures], int]:
    return await _features(demo_config, media_dir / "street.ts", "street")


async def _fuse(config: FusewatchConfig, features: list[WindowFeatures]) -> ListOutputs:
    out = ListOutputs()
    worker = FuseWorker(config, [out])
    for record in features:
        await worker.handle(record)
    await worker.finish()
    assert worker.joiner.counters.late == 0
    return out


async def test_people_and_a_call_for_help_raise_one_distress_alert(
    demo_config: FusewatchConfig, media_dir: Path, lobby: tuple[list[WindowFeatures], int]
) -> None:
    features, base = lobby
    out = await _fuse(demo_config, features)
    labels = json.loads((media_dir / "lobby.labels.json").read_text())
    (expected,) = labels["events"]
    assert len(out.alerts) == 1, [(a.window_start - base, a.score) for a in out.alerts]
    alert = out.alerts[0]
    offset_s = (alert.window_start - base) / 1000
    assert expected["start"] - 2 <= offset_s <= expected["end"], offset_s
    assert alert.event == "distress" and alert.site == "demo" and alert.severity == "high"
    contributions = {term.signal: term.contribution for term in alert.terms}
    assert contributions == {"video.person.count": 0.4, "speech.keywords": 0.6}
    assert alert.score == pytest.approx(1.0)
    assert "help" in alert.evidence.transcript.lower() or "police" in alert.evidence.transcript.lower()
    assert alert.evidence.detections and all(d.label in ("person", "bicycle", "car") for d in alert.evidence.detections)
    assert alert.streams == ["lobby"]
    assert {s.stream for s in out.summaries} == {"lobby"} and len(out.summaries) >= 40


async def test_street_with_a_dog_and_an_alarm_raises_no_speech_alert(
    demo_config: FusewatchConfig, street: tuple[list[WindowFeatures], int]
) -> None:
    features, _ = street
    out = await _fuse(demo_config, features)
    assert out.alerts == []
    assert any(s.objects.get("person") for s in out.summaries)


async def test_learned_fusion_trained_on_the_labels_finds_the_call_for_help(
    demo_config: FusewatchConfig,
    media_dir: Path,
    tmp_path: Path,
    lobby: tuple[list[WindowFeatures], int],
    street: tuple[list[WindowFeatures], int],
) -> None:
    windows, truth = [], []
    for (features, base), labels in (
        (lobby, load_labels(media_dir / "lobby.labels.json")),
        (street, load_labels(media_dir / "street.labels.json")),
    ):
        joined = await joined_windows(demo_config, features)
        windows += joined
        truth += window_labels(joined, labels, "distress", base)
    assert 1 <= sum(truth) <= 3 and len(truth) >= 55
    model = train(FeatureSpec.from_config(demo_config), windows, truth)
    path = tmp_path / "distress.json"
    model.save(path)
    learned = demo_config.model_copy(
        update={
            "events": [
                EventConfig.model_validate(
                    {"name": "distress", "fusion": "learned", "model": str(path), "threshold": 0.5, "cooldown": 10}
                )
            ]
        }
    )
    features, base = lobby
    alerts = (await _fuse(learned, features)).alerts
    assert [(a.window_start - base) // 1000 for a in alerts] in ([28], [30], [32])
    assert (await _fuse(learned, street[0])).alerts == []
