"""Embedded services: binary resolution, start/stop, state file across commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.runtime.services import EmbeddedService, ServiceError, ServiceSet, port_open, redis_binary, tansu_binary

pytestmark = pytest.mark.services


def test_tansu_binary_ships_in_the_wheel() -> None:
    path = tansu_binary()
    assert path.name == "tansu" and os.access(path, os.X_OK)


def test_missing_binaries_are_clear_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUSEWATCH_TANSU_BIN", str(tmp_path / "no-tansu"))
    with pytest.raises(ServiceError, match="broker binary missing"):
        tansu_binary()
    monkeypatch.setenv("FUSEWATCH_REDIS_SERVER", str(tmp_path / "no-redis"))
    with pytest.raises(ServiceError, match="apt-get install -y redis-server"):
        redis_binary()


def test_start_stop_and_attach_from_state_file(tmp_path: Path) -> None:
    services = ServiceSet(tmp_path)
    services.start(detach=True)
    try:
        assert port_open(services.kafka.port) and port_open(services.redis.port)
        attached = ServiceSet.attach(tmp_path)
        assert attached is not None
        status = attached.status()
        assert status["kafka"]["running"] and status["redis"]["ready"]
        attached.stop()
        assert not port_open(services.kafka.port) and not port_open(services.redis.port)
        assert ServiceSet.attach(tmp_path) is None
    finally:
        services.stop()


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    first = EmbeddedService("redis", tmp_path)
    first.start()
    try:
        second = EmbeddedService("redis", tmp_path / "b", port=first.port)
        with pytest.raises(ServiceError, match="already in use"):
            second.start()
    finally:
        first.stop()
    assert not first.running()
