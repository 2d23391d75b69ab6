"""Secrets are never printed or logged: repr, str, JSON, `config show`, errors and log lines."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from notestream.cli.config import config_app
from notestream.core.errors import ConfigError
from notestream.core.logging import setup_logging
from notestream.core.settings import Settings, load_settings
from notestream.stream.store.redis_store import redis_options
from tests.fixtures.deploy import RedisProcess

SECRETS = {
    "NOTESTREAM_KAFKA_SASL_PASSWORD": "sasl-Secret-1",
    "NOTESTREAM_KAFKA_SSL_KEYFILE_PASSWORD": "keyfile-Secret-2",
    "NOTESTREAM_REDIS_PASSWORD": "redis-Secret-3",
    "NOTESTREAM_STORE": "redis://default:url-Secret-4@redis:6379/0",
    "NOTESTREAM_WEBHOOK_URL": "https://hooks.example.org/services/T0/B0/hook-Secret-5",
}
PLAIN = ["sasl-Secret-1", "keyfile-Secret-2", "redis-Secret-3", "url-Secret-4", "hook-Secret-5"]
OTHERS = {
    "NOTESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "NOTESTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "NOTESTREAM_KAFKA_SASL_USERNAME": "notestream",
}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NOTESTREAM_"):
            monkeypatch.delenv(name)
    for name, value in {**SECRETS, **OTHERS}.items():
        monkeypatch.setenv(name, value)


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in PLAIN if secret in text]
    assert not leaked, f"secrets leaked: {leaked}"


def test_settings_hold_the_secrets_but_never_show_them(secret_env: None) -> None:
    s = load_settings()
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "sasl-Secret-1"
    assert s.store == SECRETS["NOTESTREAM_STORE"]  # the clients still get the real URL
    assert sorted(s.secret_values()) == sorted([*PLAIN[:4], SECRETS["NOTESTREAM_WEBHOOK_URL"]])
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(s.masked()), f"{s}", f"{s!r}"):
        assert_no_secret(text)
        assert "**********" in text


def test_config_show_masks_every_secret(secret_env: None) -> None:
    runner = CliRunner()
    for args in (["show"], ["show", "--json"], ["check"]):
        result = runner.invoke(config_app, args)
        assert result.exit_code == 0, result.output
        assert_no_secret(result.output)
    shown = json.loads(runner.invoke(config_app, ["show", "--json"]).output)
    assert shown["redis_password"] == "**********"
    assert shown["kafka_sasl_username"] == "notestream"
    assert shown["store"] == "redis://default:**********@redis:6379/0"


def test_config_show_reads_a_toml_file(tmp_path: Path, secret_env: None) -> None:
    config = tmp_path / "ns.toml"
    config.write_text('partitions = 7\nredis_password = "toml-Secret-6"\n')
    result = CliRunner().invoke(config_app, ["show", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "partitions = 7" in result.output
    assert "toml-Secret-6" not in result.output
    assert "redis-Secret-3" not in result.output


def test_invalid_settings_error_does_not_repeat_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(redis_password="invalid-Secret-7", partitions=-1, kafka_sasl_password="sasl-Secret-8")
    text = str(info.value)
    assert "partitions" in text
    assert "invalid-Secret-7" not in text
    assert "sasl-Secret-8" not in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_log_lines_mask_secrets_in_messages_extras_and_tracebacks(secret_env: None) -> None:
    s = load_settings()
    for json_lines in (False, True):
        out = io.StringIO()
        handler = setup_logging(s, json_lines=json_lines, stream=out)
        try:
            log = logging.getLogger("notestream.test.secrets")
            log.warning("connecting to %s with %s", s.store, s.redis_password)  # SecretStr prints masked
            log.warning("raw password %s", s.redis_password.get_secret_value() if s.redis_password else "")
            log.info("hook", extra={"url": s.webhook_url})
            try:
                raise ConnectionError(f"cannot reach rediss://u:other-Secret-9@h:6380 with {PLAIN[0]}")
            except ConnectionError:
                log.exception("store down")
        finally:
            logging.getLogger().removeHandler(handler)
        text = out.getvalue()
        assert "cannot reach" in text
        assert "store down" in text
        assert_no_secret(text)
        assert "other-Secret-9" not in text


def test_notestream_command_mounts_config_show(secret_env: None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "notestream.cli", "config", "show"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert 'kafka_sasl_mechanism = "SCRAM-SHA-512"' in done.stdout
    assert_no_secret(done.stdout + done.stderr)


async def test_redis_kwargs_authenticate_against_a_real_server(redis_process: RedisProcess) -> None:
    s = Settings(store=redis_process.url, redis_password=redis_process.password)
    client = aioredis.Redis.from_url(s.store, **redis_options(s))
    try:
        assert await client.ping()
    finally:
        await client.aclose()  # type: ignore[attr-defined]
    anonymous = aioredis.Redis.from_url(s.store)
    try:
        with pytest.raises(aioredis.AuthenticationError):
            await anonymous.ping()
    finally:
        await anonymous.aclose()  # type: ignore[attr-defined]
