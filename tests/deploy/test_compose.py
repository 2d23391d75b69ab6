"""docker-compose.yml and the Dockerfile: the file validates, and the topology is what the docs promise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV = {**os.environ, "NOTESTREAM_REDIS_PASSWORD": "compose-test-password", "NOTESTREAM_WORKERS": "3"}


def _compose_binary() -> list[str] | None:
    """`docker-compose` (Debian's v1 validates without an engine), else the `docker compose` v2 plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as parsed by PyYAML (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_validates_with_docker_compose() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip(
            "Neither docker-compose nor the docker compose plugin is installed (apt-get install docker-compose)."
        )
    for profiles in ([], ["--profile", "cpu", "--profile", "replay"], ["--profile", "gpu"]):
        done = subprocess.run(
            [*binary, "-f", str(COMPOSE), *profiles, "config"],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        resolved = yaml.safe_load(done.stdout)
        assert resolved["services"]["worker"]["deploy"]["replicas"] == 3


def test_compose_refuses_to_start_without_a_redis_password() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("Neither docker-compose nor the docker compose plugin is installed.")
    env = {k: v for k, v in ENV.items() if k != "NOTESTREAM_REDIS_PASSWORD"}
    done = subprocess.run(
        [*binary, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode != 0
    assert "NOTESTREAM_REDIS_PASSWORD" in done.stderr


def test_kafka_runs_kraft_with_a_pinned_3x_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:3\.[78]\.\d+", kafka["image"])
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any("zookeeper" in name.lower() for name in services)
    assert not any("ZOOKEEPER" in key for key in env)
    assert kafka["healthcheck"]["test"]


def test_redis_persists_with_aof_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command  # docs/operations.md: a Redis crash loses no acknowledged write
    assert "noeviction" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-data" in compose["volumes"]


def test_workers_share_one_consumer_group_and_wait_for_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert cpu["profiles"] == ["cpu"]
    assert gpu["profiles"] == ["gpu"]
    assert cpu["environment"]["NOTESTREAM_CONSUMER_GROUP"] == gpu["environment"]["NOTESTREAM_CONSUMER_GROUP"]
    assert "replicas" in cpu["deploy"]
    for worker in (cpu, gpu):
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert "reservations" not in cpu["deploy"].get("resources", {})
    assert gpu["build"]["args"]["TORCH_VARIANT"].endswith("cu130}")  # a CUDA build of torch 2.13
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert cpu["build"]["target"] == gpu["build"]["target"] == "worker"


def test_light_roles_run_the_image_without_torch(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("topics", "alerts", "replay"):
        assert services[name]["image"] == "notestream:light", name
        assert services[name]["build"]["target"] == "light", name
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM runtime-base AS light$", text, re.MULTILINE)
    assert re.search(r"^FROM runtime-base AS worker$", text, re.MULTILINE)
    light_install = re.search(r"^FROM build-base AS build-light\n(.+?)\n\n", text, re.MULTILINE | re.DOTALL)
    assert light_install is not None
    block = light_install.group(1)
    assert '".[alerts,ingest,ehr]"' in block
    assert "torch==" not in block
    assert "download.pytorch.org" not in block
    assert "find_spec('torch')" in light_install.group(1)  # the build fails if torch sneaks in


def test_topics_replay_and_alerts_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    topics = services["topics"]
    assert topics["restart"] == "no"
    assert "create_topics.py" in " ".join(topics["entrypoint"])
    assert "NOTESTREAM_PARTITIONS" in topics["environment"]
    assert "replay" in services["replay"]["command"]
    assert "alerts" in services["alerts"]["command"]
    assert "profiles" not in services["alerts"]  # alerts run beside either worker variant


def test_dockerfile_is_multi_stage_non_root_and_chooses_the_torch_build() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    assert "ARG TORCH_VARIANT=cpu" in text
    assert "cpu|cu126|cu130|cu132)" in text  # the builds published for torch 2.13.0; others fail fast
    assert text.count("pip install -c constraints.txt") == 2
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert "ARG TORCH_VERSION=2.13.0" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user
    assert not user[-1].startswith(("root", "0"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored
    assert "tests" in ignored
    assert ".env" in ignored


def test_every_compose_setting_is_a_real_setting(compose: dict[str, Any]) -> None:
    from notestream.core.settings import Settings

    names = set()
    for service in compose["services"].values():
        names |= {k for k in service.get("environment", {}) if k.startswith("NOTESTREAM_")}
    fields = {f"NOTESTREAM_{name.upper()}" for name in Settings.model_fields}
    assert names, "no NOTESTREAM_ settings in docker-compose.yml"
    assert names <= fields, f"unknown settings in docker-compose.yml: {sorted(names - fields)}"
