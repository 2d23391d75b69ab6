"""Honest packaging: every import declared, each role's processes load only their extra, pins cover all.

The roles and their closures come from scripts/roles.py (pyproject.toml's extras resolved against the
installed distributions). A role's processes run in a fresh interpreter that imports what the process
imports; every third-party distribution it loaded must belong to that role's closure, so a light image
built from ``.[alerts,ingest]`` cannot fail with ImportError, and none of them loads torch.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from notestream.core.settings import Settings
from notestream.stream.worker import worker_env
from tests.deploy.test_cli_startup import ROOT, run_script

OWN = {"models", "stream", "training", "notestream"}
# imported directly, shipped and pinned by the distribution named on the right (never declared alone)
PROVIDED_BY = {"pydantic-core": "pydantic"}
# loaded when present, never required: httpx imports click for its optional command line (httpx[cli]),
# pandas uses pytz when installed, fhir-core (fhir.resources) PyYAML for its optional YAML support, and
# this machine's interpreter start-up imports certifi
OPTIONAL_WHEN_PRESENT = {"click", "pytz", "certifi", "pyyaml"}

# What each light process imports when it runs: its command module and everything that command
# imports. Processes of these roles run the `light` image (Dockerfile), installed from their extra.
ROLE_MODULES: dict[str, list[str]] = {
    "alerts": [
        "notestream.cli",
        "notestream.stream.cli_data",
        "notestream.stream.alerts",
        "notestream.stream.alerts_service",
        "notestream.stream.alert_sinks",
        "notestream.stream.kafka",
        "notestream.stream.metrics",
        "notestream.core.logging",
        "aiokafka.admin",
    ],
    "topics": [
        "notestream.cli",
        "notestream.stream.kafka",
        "notestream.stream.metrics",
        "notestream.core.logging",
        "aiokafka.admin",
    ],
    "ingest": [
        "notestream.cli",
        "notestream.stream.cli_data",
        "notestream.stream.replay",
        "notestream.stream.metrics",
        "notestream.core.logging",
    ],
    "ehr": [
        "notestream.cli",
        "notestream.stream.ingest.cli",
        "notestream.stream.ingest.hl7_server",
        "notestream.stream.ingest.hl7_file",
        "notestream.stream.ingest.fhir_server",
        "notestream.stream.ingest.fhir_ndjson",
        "notestream.stream.ingest.fhir_export",
        "notestream.stream.metrics",
        "notestream.core.logging",
        "fhir.resources.R4B.documentreference",
        "fhir.resources.R4B.encounter",
        "fhir.resources.R4B.riskassessment",
        "hl7.mllp",
    ],
}


@pytest.fixture(scope="module")
def roles() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notestream_roles", ROOT / "scripts" / "roles.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += extra
    return {canonicalize_name(Requirement(t).name) for t in texts}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in the four packages -> the files."""
    found: dict[str, set[str]] = {}
    for package in sorted(OWN):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_library_is_declared() -> None:
    owners = metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module, files in _third_party_imports().items():
        dists = {canonicalize_name(d) for d in owners.get(module, [module])}
        dists = {canonicalize_name(PROVIDED_BY.get(d, d)) for d in dists}
        if not dists & declared:
            missing[module] = sorted(files)
    assert missing == {}, f"imported but not in pyproject.toml: {missing}"
    assert "aiohttp" in declared  # stream/metrics.py serves /metrics with it


def test_light_roles_leave_out_torch_and_the_worker_has_it(roles: ModuleType) -> None:
    for role in ("topics", "alerts", "ingest", "ehr"):
        names = set(roles.closure(roles.role_requirements(role)))
        assert names.isdisjoint({"torch", "transformers", "faust-streaming", "scikit-learn"}), role
    worker = set(roles.closure(roles.role_requirements("worker")))
    assert {"torch", "transformers", "faust-streaming", "redis"} <= worker
    assert "pandas" not in worker  # the worker image carries no training stack
    dev = set(roles.closure(roles.role_requirements("dev")))
    assert {"pytest", "torch", "pandas", "httpx", "confluent-kafka", "spacy"} <= dev  # CI: everything


@pytest.mark.parametrize("role", sorted(ROLE_MODULES))
def test_light_role_processes_load_only_their_extra(roles: ModuleType, role: str) -> None:
    imports = "\n".join(f"import {module}" for module in ROLE_MODULES[role])
    script = f"""
import json, sys
{imports}
import notestream.cli as cli
cli._mount()
print(json.dumps({{"modules": sorted({{m.split('.')[0] for m in sys.modules}})}}))
"""
    loaded = set(run_script(script)["modules"])
    assert "torch" not in loaded
    assert "transformers" not in loaded
    assert "faust" not in loaded
    owners = metadata.packages_distributions()
    allowed = set(roles.closure(roles.role_requirements(role)))
    outside = {}
    for module in loaded - OWN:
        if module in sys.stdlib_module_names or module.startswith("_") or module not in owners:
            continue
        dists = {canonicalize_name(d) for d in owners[module]}
        if not dists & (allowed | OPTIONAL_WHEN_PRESENT):
            outside[module] = sorted(dists)
    assert outside == {}, f"the {role} process loads distributions outside notestream[{role}]: {outside}"


def test_the_alerts_process_runs_without_torch(kafka_settings: Settings) -> None:
    # the real command, against the mock Kafka cluster, until it has seen no update for a second
    env = worker_env(kafka_settings)
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "notestream.cli",
            "alerts",
            "--threshold",
            "0.5",
            "--idle-timeout",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert {"aiokafka", "notestream"} <= imported  # it ran: the Kafka client is loaded
    assert imported.isdisjoint({"torch", "transformers", "faust", "pandas", "sklearn"}), sorted(imported)
    assert '"updates": 0' in done.stderr  # its summary line


def test_constraints_pin_every_runtime_distribution_within_the_declared_ranges(roles: ModuleType) -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for role in roles.RUNTIME_ROLES:
        requirements = roles.role_requirements(role)
        for req in requirements:
            name = canonicalize_name(req.name)
            assert name in pins, f"{name} (notestream[{role}]) is not pinned in constraints.txt"
            assert req.specifier.contains(pins[name], prereleases=True), (name, str(req.specifier))
        missing = set(roles.closure(requirements)) - set(pins)
        assert missing == set(), (
            f"not pinned in constraints.txt (run `python scripts/roles.py lock`): {missing}"
        )
    assert pins["torch"] == "2.13.0"
    assert {"pytest", "ruff", "mypy", "hypothesis"}.isdisjoint(pins)  # dev tools are not locked


def test_license_file_is_the_apache_2_0_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert re.search(r"Apache License\s+Version 2\.0, January 2004", text)
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


def test_setup_installs_everything_within_the_constraints() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r'pip install -q -c constraints\.txt -e "\.\[dev\]"', setup)
