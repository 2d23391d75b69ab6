"""Start-up that explains itself: each configuration or reachability problem is one line naming the
setting, exit 78 (configuration) or 69 (unavailable after bounded retries), no traceback, before the
worker joins its group; `notestream config check --connect` says which service failed; and a worker
whose Redis is down at start waits for it instead of crashing."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from notestream.cli.config import register as register_config
from notestream.core.settings import Settings
from notestream.stream.app import create_app
from notestream.stream.fate import EXIT_CONFIG, EXIT_UNAVAILABLE
from notestream.stream.preflight import exit_code, run_checks
from notestream.stream.worker import worker_env
from tests.fixtures.deploy import RedisProcess, free_port


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    return free_port()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port this test holds open."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def eventually(condition: Callable[[], bool], *, timeout_s: float = 90.0) -> bool:
    """Whether ``condition()`` became true within ``timeout_s`` (a generous bound, not a measure)."""
    deadline = time.monotonic() + timeout_s
    while not (done := condition()):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return done


def start_worker_process(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notestream.stream.worker"],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_worker_without_a_model_says_so_in_one_line_and_exits_78() -> None:
    done = start_worker_process(Settings(broker="kafka://127.0.0.1:9", devices=["cpu"]))
    assert done.returncode == EXIT_CONFIG
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "NOTESTREAM_MODEL_DIR" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_a_worker_whose_broker_is_unreachable_exits_69_after_its_retries(
    tiny_model_dir: Path, closed_port: int
) -> None:
    settings = Settings(
        broker=f"kafka://127.0.0.1:{closed_port}",
        model_dir=tiny_model_dir,
        devices=["cpu"],
        startup_timeout_s=2.0,
    )
    done = start_worker_process(settings)
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"NOTESTREAM_BROKER=kafka://127.0.0.1:{closed_port}" in line
    assert "no broker answered within 2 s" in line
    assert "Traceback" not in done.stderr + done.stdout


async def test_each_problem_names_its_setting_and_its_exit_status(
    tmp_path: Path,
    tiny_model_dir: Path,
    kafka_settings: Settings,
    redis_process: RedisProcess,
    closed_port: int,
    busy_port: int,
) -> None:
    reachable = kafka_settings.model_copy(
        update={
            "model_dir": tiny_model_dir,
            "store": redis_process.url,
            "redis_password": SecretStr(redis_process.password),
        }
    )
    checks = await run_checks(reachable, timeout_s=5)
    assert [c.name for c in checks if not c.ok] == []
    assert exit_code(checks) == 0

    cases: list[tuple[str, dict[str, Any], str, int, str]] = [
        ("missing folder", {"model_dir": tmp_path / "nope"}, "model", EXIT_CONFIG, "does not exist"),
        (
            "port in use",
            {"metrics_port": busy_port, "metrics_host": "127.0.0.1"},
            "metrics_port",
            EXIT_CONFIG,
            "in use",
        ),
        ("wrong password", {"redis_password": SecretStr("wrong")}, "store", EXIT_CONFIG, "refused"),
        (
            "redis down",
            {"store": f"redis://127.0.0.1:{closed_port}/0"},
            "store",
            EXIT_UNAVAILABLE,
            "did not answer within 1 s",
        ),
    ]
    for name, update, failed, code, words in cases:
        checks = await run_checks(reachable.model_copy(update=update), timeout_s=1)
        [bad] = [c for c in checks if not c.ok]
        assert (bad.name, bad.code) == (failed, code), name
        assert words in bad.line(), bad.line()
        assert "NOTESTREAM_" in bad.line()
        assert "wrong" not in bad.line(), "secrets never in the line"


def test_config_check_connect_says_which_service_failed(tiny_model_dir: Path, closed_port: int) -> None:
    env = {
        "NOTESTREAM_BROKER": f"kafka://127.0.0.1:{closed_port}",
        "NOTESTREAM_STORE": f"redis://:hunter2@127.0.0.1:{closed_port}/0",
        "NOTESTREAM_MODEL_DIR": str(tiny_model_dir),
    }
    cli_app = typer.Typer()
    register_config(cli_app)
    result = CliRunner().invoke(cli_app, ["config", "check", "--connect", "--timeout", "1"], env=env)
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert [line.split()[1] for line in failed] == ["broker:", "store:"]
    assert "hunter2" not in result.output
    assert any(line.startswith("ok     model:") for line in result.output.splitlines())
    plain = CliRunner().invoke(cli_app, ["config", "check"], env=env)
    assert plain.exit_code == 0, "without --connect nothing is reached"


async def test_a_worker_whose_redis_is_down_at_start_waits_for_it(
    tmp_path: Path,
    tiny_model_dir: Path,
    kafka_settings: Settings,
    redis_process: RedisProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ready file is written once Redis answers, however long that takes (it was a crash)."""
    settings = kafka_settings.model_copy(
        update={
            "model_dir": tiny_model_dir,
            "store": redis_process.url,
            "redis_password": SecretStr(redis_process.password),
            "redis_timeout_s": 1.0,
        }
    )
    redis_process.stop()
    ready = tmp_path / "ready"
    worker = create_app(settings, ready_file=ready)
    await worker.app.start()
    try:
        assert await eventually(lambda: worker.broker_check.joined), "the worker joined its group"
        # let the start-up fail against the stopped Redis twice per agent (it crashed on the first)

        def retries() -> int:
            return sum("starting the worker failed" in r.getMessage() for r in caplog.records)

        assert await eventually(lambda: retries() >= 4)
        assert not ready.exists()
        assert not worker.app.should_stop, "the worker is still running"
        redis_process.start()
        assert await eventually(ready.exists), "ready once Redis answered"
    finally:
        await worker.app.stop()
