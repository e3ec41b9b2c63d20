"""aiokafka producers and consumers built from the `kafka:` config section.

One place turns `KafkaConfig` into client arguments (bootstrap, SASL/TLS, sizes), creates
the topics of the wire format, and sends to the dead-letter topic. Secrets are read from
the config's `SecretStr`s here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from config.schema import KafkaConfig
from streams.backoff import SERVICE_RETRY
from streams.clock import NS_PER_MS
from streams.models import MediaMessage
from streams.wire import WireRecord, encode_media

log = logging.getLogger(__name__)


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """Connection arguments shared by every aiokafka client.

    SSL/SASL_SSL: a context that verifies the brokers' certificates (against `ssl_cafile`, else the
    system's CAs) and their names, with the client certificate when one is configured. A file that
    cannot be read or parsed raises OSError naming the setting and the path. The SASL password is
    handed to aiokafka only; `configure_logging` keeps aiokafka's request logging (which would show
    a PLAIN exchange) off even with --verbose.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        try:
            context = ssl.create_default_context(cafile=config.ssl_cafile)
            if config.ssl_certfile:
                context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
        except OSError as exc:  # ssl.SSLError too: a file that is not PEM, a key that does not match
            files = ", ".join(
                f"{name} {path}"
                for name, path in (
                    ("kafka.ssl_cafile", config.ssl_cafile),
                    ("kafka.ssl_certfile", config.ssl_certfile),
                    ("kafka.ssl_keyfile", config.ssl_keyfile),
                )
                if path
            )
            raise OSError(exc.errno, f"cannot load the Kafka TLS files ({files}): {exc.strerror or exc}") from exc
        options["ssl_context"] = context
    if config.security_protocol.startswith("SASL"):
        assert config.sasl_password is not None
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = config.sasl_password.get_secret_value()
    return options


def make_producer(config: KafkaConfig, **overrides: Any) -> AIOKafkaProducer:
    """A producer sized for media packets; ordering per partition is kept by aiokafka."""
    options = client_options(config) | {
        "acks": "all",
        "max_request_size": config.max_request_size,
        "linger_ms": 5,
        "request_timeout_ms": 30_000,
    }
    return AIOKafkaProducer(**(options | overrides))


def make_consumer(config: KafkaConfig, *topics: str, group: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with manual commits: fusewatch commits only after outputs are acknowledged."""
    options = client_options(config) | {
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": config.max_request_size,
        "fetch_max_bytes": max(config.max_request_size * 4, 52_428_800),
        "session_timeout_ms": int(config.session_timeout * 1000),
        "heartbeat_interval_ms": max(int(config.session_timeout * 1000) // 4, 100),
        "rebalance_timeout_ms": int(config.session_timeout * 1000) * 2,
    }
    return AIOKafkaConsumer(*topics, **(options | overrides))


def topic_partitions(config: KafkaConfig) -> dict[str, int]:
    """Every topic of the wire format and its partition count."""
    t = config.topics
    return {
        t.media: config.media_partitions,
        t.features: config.media_partitions,
        t.alerts: 1,
        t.summaries: config.media_partitions,
        t.clips: 1,
        t.dead_letter: 1,
    }


def topic_settings(config: KafkaConfig) -> dict[str, dict[str, str]]:
    """The settings each topic's records need of the broker; missing topics are created with them.

    Every topic takes records up to `kafka.max_request_size` (a keyframe; a dead letter carries
    the record that failed). `fw.media` keeps the stream wallclock the producer stamped (spans
    are found by it) and what the producer sent (packets are compressed already); the JSON
    topics are compressed by the broker. Retention is left to the broker (`docs/operations.md`).
    """
    size = str(config.max_request_size)
    media = {"compression.type": "producer", "max.message.bytes": size, "message.timestamp.type": "CreateTime"}
    settings = {name: {"compression.type": "zstd", "max.message.bytes": size} for name in topic_partitions(config)}
    return settings | {config.topics.media: media}


def settings_at_odds(wanted: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """What an existing topic's settings lack of `wanted`: a smaller record limit, another timestamp type."""
    odd = []
    for name, value in wanted.items():
        have = found.get(name)
        if have is None or name == "compression.type":
            continue
        if name == "max.message.bytes" and have.isdigit() and int(have) >= int(value):
            continue
        if have != value:
            odd.append(f"{name}={have} (fusewatch needs {value})")
    return odd


def creation_refusals(response: Any) -> list[str]:
    """The topics a CreateTopics response refused, each with its reason; one that exists already is no refusal."""
    refused = []
    for topic, code, *message in response.topic_errors:
        if code and not issubclass(for_code(code), TopicAlreadyExistsError):
            reason = (message[0] if message else None) or for_code(code).__name__
            refused.append(f"{topic}: {reason}")
    return refused


_WARNED: set[str] = set()  # topics already warned about by this process


async def _check_settings(admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]) -> None:
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted if name not in _WARNED]
        )
    except KafkaError as error:  # a broker without DescribeConfigs: nothing to check against
        log.debug("topic settings not checked: %s", error)
        return
    for response in responses:
        for error_code, _message, _type, name, entries, *_ in response.resources:
            if error_code or name not in wanted:
                continue
            odd = settings_at_odds(wanted[name], {entry[0]: entry[1] for entry in entries if entry[1] is not None})
            if odd:
                _WARNED.add(name)
                log.warning("topic %s exists with settings fusewatch's records break: %s", name, ", ".join(odd))


async def ensure_topics(config: KafkaConfig, wait: float = 30.0) -> None:
    """Create the wire-format topics that do not exist yet, with their settings; retry while the broker starts.

    Topics that exist are left as they are, with a warning for each setting their records need
    that they lack (`topic_settings`). A topic the broker refuses to create (a replication
    factor above its brokers, a setting its policy forbids) raises KafkaError with the reason.
    """
    deadline = asyncio.get_running_loop().time() + wait
    delays = SERVICE_RETRY.delays()
    settings = topic_settings(config)
    partitions = topic_partitions(config)
    while True:
        admin = AIOKafkaAdminClient(**client_options(config))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(
                    name,
                    num_partitions=count,
                    replication_factor=config.replication_factor,
                    topic_configs=settings[name],
                )
                for name, count in partitions.items()
                if name not in existing
            ]
            if missing:
                refused = creation_refusals(await admin.create_topics(missing))
                if refused:
                    raise KafkaError("the broker refused to create " + "; ".join(refused))
            present = {name: wanted for name, wanted in settings.items() if name in existing}
            if present:
                await _check_settings(admin, present)
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await delays.wait()
        finally:
            await admin.close()


class MediaPublisher:
    """Sends wire-format media messages to `fw.media`, keyed by stream id."""

    def __init__(
        self,
        config: KafkaConfig,
        producer: AIOKafkaProducer | None = None,
        on_publish: Callable[[], object] | None = None,
    ) -> None:
        self._topic = config.topics.media
        self._producer = producer or make_producer(config)
        self._owns = producer is None
        self._on_publish = on_publish
        self.sent = 0
        self.failed = 0  # sends the broker never acknowledged
        self.last_error = ""

    async def start(self) -> None:
        if self._owns:
            await self._producer.start()

    async def stop(self) -> None:
        if self._owns:
            await self._producer.stop()

    async def __aenter__(self) -> MediaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, message: MediaMessage) -> asyncio.Future[Any]:
        """Queue one message; the returned future resolves when the broker acknowledged it.

        Once a send has failed, the next publish raises `Unacknowledged`: a source must not go
        on as if its records arrived.
        """
        if self.failed:
            raise Unacknowledged(self.failed, self.sent, self.last_error)
        record = encode_media(message)
        # The record's timestamp is the stream's wallclock, so a span of a stream is found by time
        # (`streams.media_span`) and time-based retention follows the media, not the send.
        future: asyncio.Future[Any] = await self._producer.send(
            self._topic,
            value=record.value,
            key=record.key,
            headers=record.headers,
            timestamp_ms=message.wall_ns // NS_PER_MS,
        )
        self.sent += 1
        future.add_done_callback(self._acknowledged)
        if self._on_publish is not None:
            self._on_publish()
        return future

    def _acknowledged(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.failed += 1
            self.last_error = "cancelled"
        elif (exc := future.exception()) is not None:
            self.failed += 1
            text = str(exc)  # aiokafka's errors already begin with their type's name
            self.last_error = text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"

    async def flush(self) -> None:
        """Wait for every send; raise `Unacknowledged` if the broker did not acknowledge some."""
        await self._producer.flush()
        await asyncio.sleep(0)  # let the done callbacks of the last acknowledgements run
        if self.failed:
            raise Unacknowledged(self.failed, self.sent, self.last_error)


class Unacknowledged(KafkaError):  # type: ignore[misc]  # aiokafka ships no stubs
    """Records the broker never acknowledged: they are lost unless sent again."""

    def __init__(self, failed: int, sent: int, error: str) -> None:
        self.message = f"{failed} of {sent} records were not acknowledged by the broker (last error: {error})"
        super().__init__(self.message)
        self.failed = failed

    def __str__(self) -> str:  # the operator's line, without KafkaError's "Type: " prefix
        return self.message


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a record came from, for dead letters and commits."""

    topic: str
    partition: int
    offset: int


async def assign_all(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Read every partition of `topic` from the beginning, outside any group."""
    partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    await consumer.seek_to_beginning()


async def consumer_lag(
    consumer: AIOKafkaConsumer, processed: Mapping[tuple[str, int], int]
) -> dict[TopicPartition, int]:
    """Per assigned partition, the records after the last one processed (`processed`: topic, partition →
    offset); for a partition with nothing processed yet, the records after the consumer's position.

    Counted from what was processed, not from what was fetched: the consumer prefetches.
    """
    lags: dict[TopicPartition, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        last = processed.get((tp.topic, tp.partition))
        if last is not None:
            following = last + 1
        else:
            try:
                following = await asyncio.wait_for(consumer.position(tp), 1.0)
            except (TimeoutError, KafkaError):
                continue
        lags[tp] = max(high - following, 0)
    return lags


class PendingAcks:
    """Sends the broker has not acknowledged yet.

    `wait()` returns once every send made before it is acknowledged, also when two callers
    wait at once (a commit of the worker loop and one of a rebalance): neither may commit
    offsets past outputs the other is still waiting for.
    """

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[Any]] = []

    def add(self, future: asyncio.Future[Any]) -> None:
        self._futures.append(future)

    async def wait(self) -> None:
        pending = list(self._futures)
        try:
            if pending:
                await asyncio.gather(*pending)
        finally:  # a failed send is raised once, then forgotten
            self._futures = [future for future in self._futures if not future.done()]


async def commit_assigned(consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int], role: str) -> None:
    """Commit `offsets` of the partitions still assigned; a failed commit is logged, the next one covers it.

    A partition revoked meanwhile is left out: the broker refuses a commit that names one.
    """
    assigned = consumer.assignment()
    mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    if not mine:
        return
    try:
        await consumer.commit(mine)
    except KafkaError as exc:  # e.g. a rebalance under way
        log.warning("%s: offsets not committed (%s: %s)", role, type(exc).__name__, exc)


class Revocations:
    """Which partitions were revoked after a batch of records was fetched.

    After a rebalance the consumer reads each assigned partition again from its committed
    offset, so records of a revoked partition still waiting in an earlier batch must not
    be processed: they come again (here or at the partition's next owner).
    """

    def __init__(self) -> None:
        self.epoch = 0  # a batch keeps the epoch it was fetched in
        self._revoked_at: dict[tuple[str, int], int] = {}

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        self.epoch += 1
        for tp in partitions:
            self._revoked_at[(tp.topic, tp.partition)] = self.epoch

    def stale(self, topic: str, partition: int, fetched_epoch: int) -> bool:
        """True for a record of a batch fetched in `fetched_epoch` whose partition was revoked since."""
        return self._revoked_at.get((topic, partition), -1) > fetched_epoch


class CommitThenRelease(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no stubs for it
    """On revocation: commit what is done, then let the worker forget the revoked partitions (docs/design.md §8).

    A rebalance hands every assigned partition out again from its committed offset, also to
    the worker that had it: state kept across would take the same records twice. Committing
    first keeps the re-read short; forgetting makes it start afresh, to the same outputs.
    The callback runs in aiokafka's coordinator task, beside the worker's loop: `lock` is
    the one the loop holds while a commit (or a record's handling) must not be cut into.
    A failed commit is logged and the partitions are forgotten all the same: their next
    owner reads them from the last commit that succeeded.
    """

    def __init__(
        self,
        role: str,
        lock: asyncio.Lock,
        commit: Callable[[], Awaitable[None]],
        release: Callable[[set[TopicPartition]], None],
    ) -> None:
        self._role = role
        self._lock = lock
        self._commit = commit
        self._release = release

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        async with self._lock:
            try:
                await self._commit()
            except Exception:
                log.exception("%s: commit before the rebalance failed", self._role)
            finally:
                self._release(set(revoked))
        log.info(
            "%s: partitions revoked, read again from their committed offsets by their next owner: %s",
            self._role,
            _names(revoked),
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s: partitions assigned: %s", self._role, _names(assigned))


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


class DeadLetters:
    """Sends records that could not be processed to the dead-letter topic, losing nothing.

    The original key, value and headers are kept as they were; the reason and origin are
    added as `dl-*` headers (the same idea as Kafka Connect's error headers). `send` waits
    only for the producer to take the record (its buffer is the backpressure), so a flood of
    bad records does not cost a broker round trip each; `flush` waits for the acks, and a
    stage's `Checkpoint` flushes before it commits past a dead-lettered record.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, stage: str) -> None:
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self._acks = PendingAcks()
        self.count = 0

    async def send(self, record: WireRecord, origin: SourcePosition, reason: str) -> None:
        headers = [
            *_safe_headers(record.headers),
            ("dl-reason", reason.encode()[:1000]),
            ("dl-stage", self._stage.encode()),
            ("dl-topic", origin.topic.encode()),
            ("dl-partition", str(origin.partition).encode()),
            ("dl-offset", str(origin.offset).encode()),
        ]
        self._acks.add(await self._producer.send(self._topic, value=record.value, key=record.key, headers=headers))
        self.count += 1
        log.warning("dead letter %s[%d]@%d: %s", origin.topic, origin.partition, origin.offset, reason)

    async def flush(self) -> None:
        """Wait until the broker acknowledged every dead letter sent so far."""
        await self._acks.wait()


def _safe_headers(headers: Iterable[tuple[str, bytes]] | None) -> Iterable[tuple[str, bytes]]:
    for name, value in headers or ():
        yield str(name), value if isinstance(value, bytes) else b""
