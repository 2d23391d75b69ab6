"""Dashboards and alert rules over the metrics the processes really export, and JSON-only worker logs.

A live worker (a process of its own, against the mock Kafka cluster and a real redis-server) scores a
small feed with JSON logging; its /metrics page, with the alerts and replay roles' registries, is the
set of metric names that exist. Every expression of deploy/grafana/notestream.json and
deploy/prometheus/rules.yml may only name those (and ``up``, which Prometheus itself writes). The
rules are checked and unit-tested by promtool (Debian package ``prometheus``; scripts/setup.sh installs
it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from notestream import __version__
from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, RISK_UPDATES
from notestream.models.fingerprint import model_fingerprint
from notestream.stream.events import admission_key
from notestream.stream.metrics import Metrics
from tests.fixtures.kafka import WorkerProcess, produce, read_topic
from tests.stream.feed import discharges, feed, final_updates
from tests.stream.test_e2e_worker import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "notestream.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_OWN = {"up"}  # written by Prometheus for every scrape target, not by a process
METRIC_NAME = re.compile(r"\b(?:notestream|process|python)_[a-z0-9_]+\b|\bup\b")
PANELS = (
    "Notes in",
    "Updates out",
    "Dead letters by reason",
    "Note-to-update latency",
    "Engine batch size",
    "Padding efficiency",
    "Engine queue depth",
    "Store latency p95 by operation",
    "Consumer lag by topic",
    "Alerts raised now",
)
RULE_NAMES = (
    "NotestreamWorkerDown",
    "NotestreamConsumerLagGrowing",
    "NotestreamDeadLetterRate",
    "NotestreamLatencyP95OverTarget",
    "NotestreamStoreErrors",
)


def exported_names(page: str) -> set[str]:
    """The sample names a Prometheus text page can show, including families without samples yet
    (a labelled counter before its first increment)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names: set[str] = set()
    for family in text_string_to_metric_families(page):
        names.add(family.name)
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
        names |= {sample.name for sample in family.samples}
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def named_metrics(exprs: list[str]) -> set[str]:
    """Metric names in PromQL expressions (this project's prefixes, and ``up``).

    >>> sorted(named_metrics(['sum by (op) (rate(notestream_store_errors_total[5m])) > 0', 'up == 0']))
    ['notestream_store_errors_total', 'up']
    """
    return {m for expr in exprs for m in METRIC_NAME.findall(expr)}


def test_dashboard_has_the_panels_operators_need() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert set(PANELS) <= titles
    latency = next(p for p in dash["panels"] if p["title"] == "Note-to-update latency")
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p95", "p99"]
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_rules_are_valid_and_fire_as_documented() -> None:
    names = {rule["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]}
    assert set(RULE_NAMES) <= names
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/setup.sh installs it).")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(names)} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULES.with_name("rules_test.yml"))], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.fixture
def live_worker(
    kafka_settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> tuple[Settings, WorkerProcess, int]:
    """A worker with JSON logs and a metrics port that has scored a small feed to the end."""
    settings = kafka_settings.model_copy(
        update={
            "store": redis_url,
            "model_dir": tiny_model_dir,
            "metrics_port": free_port(),
            "metrics_host": "127.0.0.1",
            "log_json": True,
            "take_max": 8,
        }
    )
    admissions, notes = feed(4, 3, seed=5)
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in admissions])
    produce(settings, NOTES, [(admission_key(n.hadm_id), n.to_bytes()) for n in notes])
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in discharges(admissions)])
    worker = start_worker(settings)

    def done(msgs: list[Any]) -> bool:
        last = final_updates(msgs)
        return len(last) == len(admissions) and all(u.final for u in last.values())

    updates = read_topic(
        settings, RISK_UPDATES, until=done, timeout_s=120, alive=lambda: worker.proc.poll() is None
    )
    assert done(updates), worker.output()[-3000:]
    return settings, worker, len(notes)


def _scrape_until(url: str, ready: Callable[[dict[tuple[str, tuple[Any, ...]], float]], bool]) -> str:
    deadline = time.monotonic() + 30  # the last batch's counters follow its emit by a moment
    while True:
        page = httpx.get(url, timeout=5).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(page)
            for s in f.samples
        }
        if ready(samples) or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def test_live_worker_exports_every_metric_the_dashboard_and_rules_name_and_logs_only_json(
    live_worker: tuple[Settings, WorkerProcess, int], tiny_model_dir: Path
) -> None:
    settings, worker, n_notes = live_worker

    def counted(samples: dict[tuple[str, tuple[Any, ...]], float]) -> bool:
        return samples.get(("notestream_notes_in_total", ()), 0) >= n_notes

    page = _scrape_until(f"http://127.0.0.1:{settings.metrics_port}/metrics", counted)
    families = {f.name: f for f in text_string_to_metric_families(page)}
    # the standard process collectors, and the info series naming the served model
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_cpu_seconds"].samples[0].value > 0
    [info] = families["notestream_info"].samples
    assert info.labels == {
        "role": "worker",
        "version": __version__,
        "model": tiny_model_dir.name,
        "fingerprint": model_fingerprint(tiny_model_dir),
    }
    # the engine's batch latency, and the worker's own lag on the notes partitions it consumed
    assert families["notestream_engine_batch_seconds"].samples
    batch_count = [
        s for s in families["notestream_engine_batch_seconds"].samples if s.name.endswith("_count")
    ]
    assert batch_count[0].value >= 1
    lag = [
        s for s in families["notestream_consumer_lag"].samples if s.labels["topic"] == settings.topic(NOTES)
    ]
    assert lag, "no consumer lag series for the notes topic"
    assert all(s.value >= 0 for s in lag)
    # a worker exports the worker's metrics only
    assert "notestream_alerts_raised_now" not in families
    assert "notestream_replay_sent" not in families

    exported = (
        exported_names(page)
        | exported_names(Metrics(role="alerts").render().decode())
        | exported_names(Metrics(role="replay").render().decode())
        | PROMETHEUS_OWN
    )
    for source, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        unknown = named_metrics(exprs) - exported
        assert unknown == set(), f"the {source} names metrics no process exports: {sorted(unknown)}"

    assert worker.stop() == 0
    lines = [line for line in worker.output().splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == [], f"{len(not_json)} of {len(lines)} lines are not JSON: {not_json[:5]}"
