"""deploy/k8s: the Kustomize base and the GPU overlay build, validate against the Kubernetes schemas
(kubernetes-validate, offline), and say what the code does (probes on the endpoints the worker serves,
real settings, a grace period above the group's session timeout, light images without torch)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from notestream.core.settings import Settings
from notestream.core.topics import NOTES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
GPU = K8S / "overlays" / "gpu"
KEDA = K8S / "optional" / "keda-scaledobject.yaml"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes release the manifests are checked against


def _kustomize() -> list[str] | None:
    """`kustomize build`, or kubectl's built-in `kubectl kustomize`, whichever is installed."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _base_files() -> list[dict[str, Any]]:
    """The base's resources read file by file (what kustomize would build, without its transformers)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    return docs


def _build(folder: Path) -> list[dict[str, Any]]:
    command = _kustomize()
    if command is None:
        pytest.skip("Neither kustomize nor kubectl is installed; the files are validated one by one.")
    done = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _build(BASE)


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    return _build(GPU)


def test_every_file_validates_against_the_kubernetes_schema() -> None:
    docs = _base_files()
    docs += [d for d in yaml.safe_load_all((BASE / "secret.example.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]
    for doc in docs:
        # kustomize's image names are placeholders here; the schema only needs a string
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_built_base_and_gpu_overlay_validate(base: list[dict[str, Any]], gpu: list[dict[str, Any]]) -> None:
    for doc in [*base, *gpu]:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert _container(_one(base, "Deployment", "notestream-worker"))["image"] == "notestream:cpu"
    for docs in (base, gpu):
        assert _container(_one(docs, "Deployment", "notestream-alerts"))["image"] == "notestream:light"
        job = _one(docs, "Job", "notestream-topics")
        [topics] = job["spec"]["template"]["spec"]["containers"]
        assert topics["image"] == "notestream:light"  # no torch in the alerts and topics pods
        assert topics["args"] == ["topics"]  # `notestream topics`, the packaged create_topics step


def test_worker_probes_the_endpoints_it_serves(base: list[dict[str, Any]]) -> None:
    from notestream.stream.metrics import Metrics, make_app

    served = {resource.canonical for resource in make_app(Metrics()).router.resources()}
    assert {"/metrics", "/healthz", "/readyz"} <= served
    config = _one(base, "ConfigMap", "notestream-settings")["data"]
    for name in ("notestream-worker", "notestream-alerts"):
        deployment = _one(base, "Deployment", name)
        container = _container(deployment)
        [port] = container["ports"]
        assert port["containerPort"] == int(config["NOTESTREAM_METRICS_PORT"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == config["NOTESTREAM_METRICS_PORT"]
    worker = _one(base, "Deployment", "notestream-worker")
    assert _container(worker)["startupProbe"]["httpGet"]["path"] == "/healthz"  # the model load
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_worker_outlives_a_batch_and_leaves_its_group_on_termination(base: list[dict[str, Any]]) -> None:
    spec = _one(base, "Deployment", "notestream-worker")["spec"]["template"]["spec"]
    settings = Settings()
    grace = spec["terminationGracePeriodSeconds"]
    # SIGTERM: the batch in flight finishes (its engine wait is bounded by max_wait_ms per batch plus
    # the model time), emits, commits and leaves the group; a kill before that re-delivers the batch.
    assert grace >= 60
    assert grace > settings.session_timeout_s + settings.commit_interval_s
    assert grace > 10 * settings.max_wait_ms / 1000


def test_settings_are_real_and_secrets_stay_in_the_secret(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _one(base, "ConfigMap", "notestream-settings")["data"]
    fields = {f"NOTESTREAM_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields, sorted(set(config) - fields)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # every value parses
    assert settings.metrics_host == "0.0.0.0"  # reachable by the kubelet's probes
    assert settings.consumer_group == "notestream-worker"
    assert settings.secret_values() == []  # nothing secret in the ConfigMap
    [secret] = [d for d in yaml.safe_load_all((BASE / "secret.example.yaml").read_text()) if d]
    assert set(secret["stringData"]) <= fields
    monkeypatch.setenv("NOTESTREAM_REDIS_PASSWORD", secret["stringData"]["NOTESTREAM_REDIS_PASSWORD"])
    assert Settings().secret_values()  # the Secret's keys are secret settings
    for name in ("notestream-worker", "notestream-alerts"):
        env_from = _container(_one(base, "Deployment", name))["envFrom"]
        assert {"configMapRef": {"name": "notestream-settings"}} in env_from
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in env_from


def test_disruption_budget_and_service_select_the_workers(base: list[dict[str, Any]]) -> None:
    worker = _one(base, "Deployment", "notestream-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    pdb = _one(base, "PodDisruptionBudget", "notestream-worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(base, "Service", "notestream-worker-metrics")
    assert service["spec"]["selector"].items() <= labels.items()
    assert worker["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_gpu_overlay_requests_a_gpu_and_the_cuda_build(gpu: list[dict[str, Any]]) -> None:
    container = _container(_one(gpu, "Deployment", "notestream-worker"))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "notestream:cu130"  # a CUDA build published for torch 2.13
    assert {"name": "NOTESTREAM_DEVICES", "value": '["auto"]'} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the patch keeps the probes


def test_keda_scaled_object_is_optional_and_matches_the_worker(base: list[dict[str, Any]]) -> None:
    kustomization = (BASE / "kustomization.yaml").read_text()
    assert "# - ../optional/keda-scaledobject.yaml" in kustomization  # commented: KEDA is optional
    assert not any(d["kind"] == "ScaledObject" for d in base)
    scaled = yaml.safe_load(KEDA.read_text())
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "notestream-worker"
    [trigger] = scaled["spec"]["triggers"]
    config = _one(base, "ConfigMap", "notestream-settings")["data"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["NOTESTREAM_CONSUMER_GROUP"]
    assert trigger["metadata"]["topic"] == config["NOTESTREAM_TOPIC_PREFIX"] + NOTES
    assert scaled["spec"]["maxReplicaCount"] <= int(config["NOTESTREAM_PARTITIONS"])


def test_operations_guide_documents_kubernetes() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert "## Running on Kubernetes" in guide
    assert "deploy/k8s/base" in guide
    assert "deploy/k8s/overlays/gpu" in guide
