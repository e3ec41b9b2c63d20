"""deploy/systemd: one unit per role, checked by systemd itself. `systemd-analyze verify` loads each
unit as systemd would (unknown keys, bad values, a missing ExecStart binary); it runs on copies whose
ExecStart points at a stub in a temporary folder, since /opt/fusewatch is not installed here, so the
path itself is checked by the structural test below, not by systemd. `systemd-analyze security
--offline` scores the sandboxing of the unit files as written. Nothing is started."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from config import load_config
from tests.deploy.conftest import DEPLOY, SITE, SITE_ENV, system_tool

UNITS = DEPLOY / "systemd"
ROLES = ("ingest", "analyze", "fuse", "clips", "index", "web")
EXEC = "/opt/fusewatch/.venv/bin/fusewatch"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
}


def service(role: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / f"fusewatch-{role}.service").read_text())
    return parser["Service"]


def verify(folder: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tool("systemd-analyze", "systemd"), "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
    )


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart runs a stub executable under tmp_path."""
    stub = tmp_path / EXEC.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for unit in UNITS.glob("fusewatch*.*"):
        if unit.suffix in (".service", ".target"):
            (tmp_path / unit.name).write_text(unit.read_text().replace(f"ExecStart={EXEC}", f"ExecStart={stub}"))
    return tmp_path


def test_systemd_loads_every_unit_without_a_complaint(staged: Path) -> None:
    units = sorted(path.name for path in staged.glob("fusewatch*"))
    assert units == sorted([*(f"fusewatch-{role}.service" for role in ROLES), "fusewatch.target"])
    done = verify(staged, *(f"./{unit}" for unit in units))
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr


def test_verify_does_catch_a_wrong_key_and_a_missing_binary(staged: Path) -> None:
    unit = staged / "fusewatch-fuse.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    assert "Unknown key 'NoNewPrivilege'" in verify(staged, "./fusewatch-fuse.service").stderr
    (staged / EXEC.lstrip("/")).unlink()
    done = verify(staged, "./fusewatch-index.service")
    assert done.returncode != 0 and "is not executable" in done.stderr


@pytest.mark.parametrize("role", ROLES)
def test_the_sandbox_scores_ok(role: str) -> None:
    done = subprocess.run(
        [
            system_tool("systemd-analyze", "systemd"),
            "security",
            "--offline=yes",
            "--no-pager",
            f"fusewatch-{role}.service",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=UNITS,
    )
    found = re.search(r"Overall exposure level for fusewatch-\w+\.service: ([\d.]+) (\w+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.0, done.stdout  # systemd's scale: 0 (locked down) to 10 (exposed)


def test_one_unit_per_role_each_with_its_own_metrics_port_and_what_it_writes() -> None:
    config = load_config(SITE, env=SITE_ENV)
    writes = {
        "analyze": {config.outputs.snapshots_dir},
        "clips": {config.clips.store.path},
        "index": {config.search.path},
        "web": {config.clips.store.path, config.search.path},  # span clips; the index's SQLite shared memory
    }
    ports = set()
    for role in ROLES:
        unit = service(role)
        args = shlex.split(unit["ExecStart"])
        assert args[:3] == [EXEC, "run", "/etc/fusewatch/site.yaml"]
        assert args[3:5] == ["--role", role]
        if role == "web":
            assert len(args) == 5 and config.web.port == 8686
        else:
            assert args[5] == "--metrics-port"
            ports.add(int(args[6]))
        assert unit["User"] == "fusewatch" and unit["Restart"] == "on-failure"
        assert unit["EnvironmentFile"] == "/etc/fusewatch/fusewatch.env"
        for key, value in HARDENING.items():
            assert unit[key] == value, (role, key)
        state = {f"/var/lib/{d}" for d in unit["StateDirectory"].split()}
        assert state - {"/var/lib/fusewatch"} == writes.get(role, set()), role
    assert len(ports) == len(ROLES) - 1 and 8686 not in ports


def test_the_environment_file_gives_every_variable_the_site_file_needs() -> None:
    example = {}
    for line in (UNITS / "fusewatch.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value or f"filled-{key.lower()}"
    config = load_config(SITE, env=example)
    assert config.kafka.security_protocol == "SASL_SSL" and config.redis.ssl_ca_certs == "/etc/fusewatch/redis-ca.pem"
