"""The Helm chart (deploy/helm/fusewatch): linted and rendered by helm, every object checked against
the Kubernetes 1.30 JSON schemas (kubernetes-validate, strict) and the KEDA objects against KEDA's
CRD schemas (@kubernetes-models/keda); then what the schemas cannot know: one Deployment per role
and per source, probes with the token, volumes where the site file writes, autoscaling bounds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config import load_config
from streams.kafka import topic_partitions
from tests.deploy.conftest import CHART, SECRET_KEYS, SITE, SITE_ENV, TEST_SECRETS, documents, helm_template

KUBERNETES = "1.30.0"
ROLES = ("analyze", "fuse", "clips", "index", "web")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_helm_lints_the_chart_strictly(tools: Path) -> None:
    done = subprocess.run(
        [str(tools / "bin" / "helm"), "lint", "--strict", str(CHART), *TEST_SECRETS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_every_rendered_object_passes_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    core = [doc for doc in rendered if not doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for doc in core} == {
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    }
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_schemas_do_catch_a_wrong_object(rendered: list[dict[str, Any]]) -> None:
    deployment = json.loads(json.dumps(by_kind(rendered, "Deployment")["fw-fuse"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"] = "probe"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_keda_objects_pass_kedas_schemas(rendered: list[dict[str, Any]], tools: Path) -> None:
    keda = [doc for doc in rendered if doc["apiVersion"].startswith("keda.sh/")]
    assert sorted(doc["kind"] for doc in keda) == ["ScaledObject", "ScaledObject", "TriggerAuthentication"]
    broken = json.loads(json.dumps(keda[0]))
    broken["spec"]["maxReplicaCount"] = "four"
    lines = "\n".join(json.dumps(doc) for doc in [*keda, broken])
    done = subprocess.run(
        ["node", str(Path(__file__).with_name("validate_keda.mjs")), str(tools / "node" / "node_modules")],
        input=lines,
        capture_output=True,
        text=True,
        check=False,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["errors"] for r in results[:-1]] == [None] * len(keda), done.stdout + done.stderr
    assert results[-1]["errors"] and "maxReplicaCount" in results[-1]["errors"][0]  # the validator does validate


def test_keda_scales_analyze_and_fuse_on_their_groups_lag_up_to_the_partitions(rendered: list[dict[str, Any]]) -> None:
    """Field names the CRD schema leaves open (trigger metadata is a string map) are checked here."""
    kafka = load_config(SITE, env=SITE_ENV).kafka
    partitions = topic_partitions(kafka)
    scaled = by_kind(rendered, "ScaledObject")
    for role, topic in (("analyze", kafka.topics.media), ("fuse", kafka.topics.features)):
        spec = scaled[f"fw-{role}"]["spec"]
        assert set(spec) <= {
            "scaleTargetRef",
            "minReplicaCount",
            "maxReplicaCount",
            "pollingInterval",
            "cooldownPeriod",
            "advanced",
            "triggers",
        }
        assert spec["scaleTargetRef"] == {"name": f"fw-{role}"}
        assert spec["maxReplicaCount"] == partitions[topic] == kafka.media_partitions
        trigger = spec["triggers"][0]
        assert trigger["type"] == "kafka"
        assert set(trigger["metadata"]) <= {
            "bootstrapServers",
            "consumerGroup",
            "topic",
            "lagThreshold",
            "offsetResetPolicy",
            "allowIdleConsumers",
            "scaleToZeroOnInvalidOffset",
        }
        assert trigger["metadata"]["consumerGroup"] == f"{kafka.group_prefix}-{role}"
        assert trigger["metadata"]["topic"] == topic
        assert int(trigger["metadata"]["lagThreshold"]) > 0
        assert trigger["authenticationRef"] == {"name": "fw-kafka"}
    auth = by_kind(rendered, "TriggerAuthentication")["fw-kafka"]["spec"]["secretTargetRef"]
    assert {ref["parameter"] for ref in auth} == {"sasl", "tls", "username", "password"}
    assert {"parameter": "password", "name": "fusewatch", "key": "KAFKA_PASSWORD"} in auth
    keda_secret = by_kind(rendered, "Secret")["fw-keda-kafka"]["stringData"]
    assert keda_secret == {"sasl": "scram_sha512", "tls": "enable", "username": "fusewatch"}
    for role in ("analyze", "fuse"):  # KEDA owns the count: a chart upgrade must not reset it
        assert "replicas" not in by_kind(rendered, "Deployment")[f"fw-{role}"]["spec"]


def test_one_deployment_per_role_and_per_source(rendered: list[dict[str, Any]]) -> None:
    sources = [source.id for source in load_config(SITE, env=SITE_ENV).sources]
    deployments = by_kind(rendered, "Deployment")
    assert set(deployments) == {f"fw-{role}" for role in ROLES} | {f"fw-ingest-{source}" for source in sources}
    for source in sources:
        ingest = deployments[f"fw-ingest-{source}"]
        assert ingest["spec"]["replicas"] == 1
        assert ingest["spec"]["strategy"] == {"type": "Recreate"}  # a camera is never read twice
        assert container(ingest)["args"] == [
            "run",
            "/etc/fusewatch/site.yaml",
            "--role",
            f"ingest:{source}",
            "--metrics-port",
            "9100",
        ]
    for role in ("clips", "index"):
        assert deployments[f"fw-{role}"]["spec"]["replicas"] == 1
        assert deployments[f"fw-{role}"]["spec"]["strategy"] == {"type": "Recreate"}
    assert container(deployments["fw-web"])["args"] == ["run", "/etc/fusewatch/site.yaml", "--role", "web"]


def test_probes_run_in_the_container_with_the_token_on_the_roles_port(rendered: list[dict[str, Any]]) -> None:
    for name, deployment in by_kind(rendered, "Deployment").items():
        spec = container(deployment)
        port = spec["ports"][0]["containerPort"]
        assert {"name": "FUSEWATCH_HEALTH_PORT", "value": str(port)} in spec["env"]
        if name != "fw-web":
            assert spec["args"][-2:] == ["--metrics-port", str(port)]
        probe = ["python", "-m", "daemon.runtime.probe"]
        assert spec["livenessProbe"]["exec"]["command"] == [*probe, "/healthz"]
        assert spec["startupProbe"]["exec"]["command"] == [*probe, "/healthz"]
        ready = "/healthz" if name == "fw-web" else "/readyz"  # the dashboard stays up while Kafka is down
        assert spec["readinessProbe"]["exec"]["command"] == [*probe, ready]
        assert {"secretRef": {"name": "fusewatch"}} in spec["envFrom"]
        assert {"configMapRef": {"name": "fw-env"}} in spec["envFrom"]
        assert spec["resources"]["requests"] and spec["resources"]["limits"]
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False


def test_the_config_map_is_the_site_file_and_every_variable_it_needs_is_given(rendered: list[dict[str, Any]]) -> None:
    maps = by_kind(rendered, "ConfigMap")
    assert maps["fw-config"]["data"]["site.yaml"].strip() == SITE.read_text().strip()
    env = dict(maps["fw-env"]["data"])
    secret = by_kind(rendered, "Secret")["fusewatch"]["stringData"]
    assert set(secret) == set(SECRET_KEYS)
    config = load_config(SITE, env=env | secret)  # a variable the chart does not give fails here
    assert config.kafka.security_protocol == "SASL_SSL" and config.kafka.replication_factor == 3
    assert config.web.token is not None


def test_volumes_sit_where_the_site_file_writes_and_web_shares_the_index_node(rendered: list[dict[str, Any]]) -> None:
    config = load_config(SITE, env=SITE_ENV)
    paths = {"snapshots": config.outputs.snapshots_dir, "clips": config.clips.store.path, "search": config.search.path}
    expected = {
        "fw-analyze": {paths["snapshots"]: ("fw-shared", "snapshots")},
        "fw-clips": {paths["clips"]: ("fw-shared", "clips")},
        "fw-index": {paths["search"]: ("fw-search", None)},
        "fw-web": {
            paths["snapshots"]: ("fw-shared", "snapshots"),
            paths["clips"]: ("fw-shared", "clips"),
            paths["search"]: ("fw-search", None),
        },
    }
    deployments = by_kind(rendered, "Deployment")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        mounts = {
            m["mountPath"]: (claims[m["name"]], m.get("subPath"))
            for m in container(deployment)["volumeMounts"]
            if m["name"] in claims
        }
        assert mounts == expected.get(name, {}), name
    claims = by_kind(rendered, "PersistentVolumeClaim")
    assert claims["fw-shared"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claims["fw-search"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    affinity = deployments["fw-web"]["spec"]["template"]["spec"]["affinity"]["podAffinity"]
    term = affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    index_labels = deployments["fw-index"]["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= index_labels.items()


def test_analyze_and_fuse_have_disruption_budgets(rendered: list[dict[str, Any]]) -> None:
    budgets = by_kind(rendered, "PodDisruptionBudget")
    deployments = by_kind(rendered, "Deployment")
    assert set(budgets) == {"fw-analyze", "fw-fuse"}
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]


def test_without_autoscaling_the_replicas_are_the_values_and_a_gpu_is_asked_for(tools: Path) -> None:
    done = helm_template(
        tools,
        *TEST_SECRETS,
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "analyze.replicas=3",
        "--set",
        "analyze.gpu=1",
        "--set",
        "image.variant=cuda",
    )
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    assert not [doc for doc in docs if doc["apiVersion"].startswith("keda.sh/")]
    analyze = by_kind(docs, "Deployment")["fw-analyze"]
    assert analyze["spec"]["replicas"] == 3
    assert container(analyze)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container(analyze)["image"] == "registry.example.org/fusewatch:0.1.0-cuda"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_another_site_file_brings_its_own_sources_and_bounds(tools: Path, tmp_path: Path) -> None:
    site = yaml.safe_load(SITE.read_text())
    site["sources"] = [dict(site["sources"][0], id="Gate_2"), dict(site["sources"][1], id="lobby")]
    site["kafka"]["media_partitions"] = 12
    for event in site["events"]:
        event["terms"] = [dict(term, streams=["Gate_2"]) for term in event["terms"]]
    own = tmp_path / "site.yaml"
    own.write_text(yaml.safe_dump(site))
    done = helm_template(tools, *TEST_SECRETS, "--set-file", f"config={own}")
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    deployments = by_kind(docs, "Deployment")
    assert {"fw-ingest-gate-2", "fw-ingest-lobby"} <= set(deployments)
    assert container(deployments["fw-ingest-gate-2"])["args"][3] == "ingest:Gate_2"
    assert by_kind(docs, "ScaledObject")["fw-analyze"]["spec"]["maxReplicaCount"] == 12


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kafka": {"media_partitions": "${PARTITIONS}"}}, "kafka.media_partitions of the site file must be a number"),
        ({"search": {"path": ".cache/search"}}, "search path must be an absolute path"),
        ({"sources": [{"id": "a.b", "url": "rtsp://x/1"}, {"id": "a_b", "url": "rtsp://x/2"}]}, "same Deployment name"),
    ],
)
def test_a_site_file_the_chart_cannot_deploy_is_refused_with_a_reason(
    tools: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    site = yaml.safe_load(SITE.read_text())
    for key, value in change.items():
        site[key] = dict(site[key], **value) if isinstance(value, dict) else value
    own = tmp_path / "site.yaml"
    own.write_text(yaml.safe_dump(site))
    done = helm_template(tools, *TEST_SECRETS, "--set-file", f"config={own}")
    assert done.returncode != 0
    assert message in done.stderr
