"""Topics as fusewatch creates them, and records as other producers may compress them."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config.schema import FusewatchConfig, KafkaConfig, KafkaTopics
from streams.kafka import assign_all, client_options, ensure_topics, make_consumer, topic_settings


async def _settings(kafka: KafkaConfig, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    ((error_code, _message, _type, _name, entries, *_),) = response.resources
    assert error_code == 0, response
    return {entry[0]: entry[1] for entry in entries}


async def test_missing_topics_are_created_with_what_their_records_need(fw_config: FusewatchConfig) -> None:
    kafka = fw_config.kafka
    media = await _settings(kafka, kafka.topics.media)
    assert media["message.timestamp.type"] == "CreateTime" and media["compression.type"] == "producer"
    assert media["max.message.bytes"] == str(kafka.max_request_size)
    features = await _settings(kafka, kafka.topics.features)
    assert features["compression.type"] == "zstd" and features["max.message.bytes"] == str(kafka.max_request_size)
    assert set(topic_settings(kafka)) == set(kafka.topics.model_dump().values())


async def test_an_existing_topic_that_would_refuse_our_records_is_named_in_a_warning(
    fw_config: FusewatchConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # A topic made by hand with a 1 MB record limit and broker time stamps, before fusewatch starts.
    kafka = fw_config.kafka.model_copy(update={"topics": KafkaTopics.suffixed(uuid.uuid4().hex[:8])})
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        made = {"max.message.bytes": "1048588", "message.timestamp.type": "LogAppendTime"}
        await admin.create_topics([NewTopic(kafka.topics.media, 1, 1, topic_configs=made)])
    finally:
        await admin.close()
    with caplog.at_level(logging.WARNING, logger="streams.kafka"):
        await ensure_topics(kafka)
    (warning,) = [r.getMessage() for r in caplog.records if kafka.topics.media in r.getMessage()]
    assert "max.message.bytes=1048588 (fusewatch needs 8388608)" in warning
    assert "message.timestamp.type=LogAppendTime (fusewatch needs CreateTime)" in warning
    assert (await _settings(kafka, kafka.topics.media))["max.message.bytes"] == "1048588"  # left as it was


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_batches_compressed_by_any_codec_are_read(fw_config: FusewatchConfig, codec: str) -> None:
    kafka = fw_config.kafka
    producer = AIOKafkaProducer(**client_options(kafka), compression_type=codec)
    await producer.start()
    try:
        sent = [b'{"n": %d}' % n * 50 for n in range(20)]
        for value in sent:
            await producer.send(kafka.topics.features, value, key=b"site", partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = make_consumer(kafka, group=None)
    await consumer.start()
    try:
        await assign_all(consumer, kafka.topics.features)
        got: list[bytes] = []
        while len(got) < len(sent):
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, f"no records came back ({len(got)} of {len(sent)})"
            got += [record.value for records in batch.values() for record in records if record.value is not None]
    finally:
        await consumer.stop()
    assert got == sent
