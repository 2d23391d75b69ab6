"""Settings from the environment and TOML files, and the client options they build."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from notestream.core.errors import ConfigError
from notestream.core.settings import CONFIG_ENV, Settings, load_settings
from notestream.stream.kafka import faust_credentials, security_kwargs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NOTESTREAM_* variable of the surrounding shell leaks into these tests (monkeypatch undoes ours)."""
    import os

    for name in list(os.environ):
        if name.startswith("NOTESTREAM_"):
            monkeypatch.delenv(name)


def test_every_field_reads_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTESTREAM_BROKER", "kafka://k1:9092,k2:9092")
    monkeypatch.setenv("NOTESTREAM_PARTITIONS", "24")
    monkeypatch.setenv("NOTESTREAM_DEVICES", '["cuda:0", "cuda:1"]')
    monkeypatch.setenv("NOTESTREAM_LOG_JSON", "true")
    monkeypatch.setenv("NOTESTREAM_REDIS_PASSWORD", "pw-from-env")
    s = load_settings()
    assert s.kafka_bootstrap_servers() == "k1:9092,k2:9092"
    assert s.partitions == 24
    assert s.devices == ["cuda:0", "cuda:1"]
    assert s.log_json is True
    assert s.redis_password is not None
    assert s.redis_password.get_secret_value() == "pw-from-env"


def test_toml_file_then_environment_then_keywords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ns.toml"
    config.write_text('partitions = 8\ntopic_prefix = "ward7."\nmax_batch_size = 16\ndevices = ["cpu"]\n')
    from_file = load_settings(config)
    assert (from_file.partitions, from_file.topic("notes"), from_file.devices) == (8, "ward7.notes", ["cpu"])
    monkeypatch.setenv("NOTESTREAM_PARTITIONS", "16")
    assert load_settings(config).partitions == 16  # environment beats the file
    assert load_settings(config, partitions=2, max_batch_size=None).partitions == 2  # keywords beat both
    assert load_settings(config, max_batch_size=None).max_batch_size == 16  # None means "not given"
    monkeypatch.setenv(CONFIG_ENV, str(config))
    assert load_settings().topic_prefix == "ward7."


def test_example_toml_is_a_valid_settings_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTESTREAM_KAFKA_SASL_PASSWORD", "from-the-environment")
    s = load_settings(ROOT / "deploy" / "notestream.example.toml")
    assert s.kafka_security_protocol == "SASL_SSL"
    assert s.partitions == 12
    assert s.replication_factor == 3


def test_bad_settings_name_the_field_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="partitions"):
        load_settings(partitions=0)
    config = tmp_path / "typo.toml"
    config.write_text("partitionz = 4\n")
    with pytest.raises(ConfigError, match="partitionz"):
        load_settings(config)
    broken = tmp_path / "broken.toml"
    broken.write_text("partitions = = 4\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_sasl_without_a_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="kafka_sasl_password"):
        load_settings(
            kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u"
        )


def test_empty_environment_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTESTREAM_WEBHOOK_URL", "")
    monkeypatch.setenv("NOTESTREAM_METRICS_PORT", "")
    s = load_settings()
    assert s.webhook_url is None
    assert s.metrics_port is None


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.partitions = 3  # type: ignore[misc]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA and a client certificate with an encrypted key, made by openssl."""
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.skip("openssl is not installed.")
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(args, cwd=d, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=notestream-test-ca",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-passout",
        "pass:keypw",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=notestream-client",
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
    )
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


async def test_sasl_ssl_kwargs_build_a_working_aiokafka_client(tls_files: dict[str, Path]) -> None:
    s = Settings(
        broker="kafka://127.0.0.1:9",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="notestream",
        kafka_sasl_password="sasl-pw",
        kafka_ssl_cafile=tls_files["ca"],
        kafka_ssl_certfile=tls_files["cert"],
        kafka_ssl_keyfile=tls_files["key"],
        kafka_ssl_keyfile_password="keypw",
        kafka_ssl_check_hostname=False,
    )
    kwargs = security_kwargs(s)
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname is False
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_password"]) == ("SCRAM-SHA-256", "sasl-pw")
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers(), **kwargs)  # accepts every key
    assert producer.client._security_protocol == "SASL_SSL"
    credentials = faust_credentials(s)
    assert credentials.username == "notestream"
    assert credentials.ssl_context is not None


def test_wrong_key_password_is_a_config_error(tls_files: dict[str, Path]) -> None:
    s = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls_files["ca"],
        kafka_ssl_certfile=tls_files["cert"],
        kafka_ssl_keyfile=tls_files["key"],
        kafka_ssl_keyfile_password="wrong",
    )
    with pytest.raises(ConfigError, match="key password") as info:
        security_kwargs(s)
    assert "wrong" not in str(info.value)


def test_plaintext_needs_no_tls() -> None:
    assert security_kwargs(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


def test_config_check_fails_clearly_on_a_missing_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from notestream.cli.config import config_app

    monkeypatch.setenv("NOTESTREAM_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("NOTESTREAM_KAFKA_SSL_CAFILE", str(tmp_path / "missing-ca.pem"))
    result = CliRunner().invoke(config_app, ["check"])
    assert isinstance(result.exception, ConfigError)
    assert "kafka_ssl_cafile" in str(result.exception)
    monkeypatch.delenv("NOTESTREAM_KAFKA_SECURITY_PROTOCOL")
    ok = CliRunner().invoke(config_app, ["check"])
    assert ok.exit_code == 0
    assert "settings ok" in ok.output
