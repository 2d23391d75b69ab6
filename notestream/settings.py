"""The one frozen settings object of a notestream process.

Every field can be set through the environment (``NOTESTREAM_<FIELD>``, e.g. ``NOTESTREAM_BROKER``),
through a TOML file (``NOTESTREAM_CONFIG=/etc/notestream.toml`` or ``--config``; keys are the field
names), or by keyword in code. Precedence, highest first: keywords, environment, TOML file, defaults.

Secrets are :class:`pydantic.SecretStr`: printed and logged as ``**********``.

>>> s = Settings(broker="kafka://k1:9092,k2:9092")
>>> s.kafka_bootstrap_servers()
'k1:9092,k2:9092'
>>> s.topic("notes")
'notes'
>>> Settings(topic_prefix="ward7.").topic("risk-updates")
'ward7.risk-updates'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from notestream.errors import ConfigError

CONFIG_ENV = "NOTESTREAM_CONFIG"


class Settings(BaseSettings):
    """Settings of one notestream process (worker, replayer, alerts, demo, score)."""

    model_config = SettingsConfigDict(
        env_prefix="NOTESTREAM_",
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    # --- where things are -------------------------------------------------------------------------
    broker: str = Field(
        "embedded://",
        description="Kafka bootstrap servers as `kafka://host:port[,host:port]`, or `embedded://` for "
        "the in-process Kafka-protocol mock cluster (one machine, demo and tests).",
    )
    store: str = Field(
        "memory://",
        description="Risk store: `redis://[:password@]host:port/db`, `rediss://...` for TLS, or "
        "`memory://` for the in-process store of the embedded mode.",
    )
    model_dir: Path | None = Field(
        None, description="Model folder to serve (Hugging Face format + notestream.json)."
    )
    topic_prefix: str = Field(
        "", description="Prefix for every topic name, e.g. `ward7.` gives `ward7.notes`."
    )
    consumer_group: str = Field(
        "notestream-worker", description="Kafka consumer group shared by all workers."
    )
    partitions: int = Field(
        4,
        ge=1,
        description="Partition count of the topics notestream creates (key = admission id). The "
        "number of workers that can share the load is at most this.",
    )

    # --- Kafka security ---------------------------------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")

    # --- Redis ------------------------------------------------------------------------------------
    redis_password: SecretStr | None = Field(
        None, description="Redis password (secret); overrides one given in the store URL."
    )
    redis_pool_size: int = Field(32, ge=1, description="Connections in the blocking Redis pool.")
    redis_timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for a Redis connection or reply before failing."
    )
    redis_ssl_cafile: Path | None = Field(None, description="CA bundle for `rediss://` stores.")

    # --- inference engine -------------------------------------------------------------------------
    devices: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="Devices for model replicas, e.g. `[\"cuda:0\", \"cuda:1\"]` or `[\"cpu\"]`; "
        "`auto` means every visible GPU, else the CPU. Env: JSON list.",
    )
    max_batch_tokens: int = Field(
        32768,
        ge=512,
        description="Token budget of one engine batch (padded length x rows). IMPORTANT for GPU memory: "
        "64 chunks x 512 tokens = 32768.",
    )
    max_batch_size: int = Field(64, ge=1, description="Most chunks in one engine batch.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the engine waits to fill a batch before running it anyway."
    )
    queue_size: int = Field(
        4096, ge=1, description="Chunks the engine queue holds before callers wait (backpressure)."
    )
    overload_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A caller that waited this long for room in a full engine queue gets an overload error.",
    )

    # --- worker -----------------------------------------------------------------------------------
    take_max: int = Field(64, ge=1, description="Most notes the notes agent takes in one batch.")
    take_within_s: float = Field(
        0.05, gt=0, description="Seconds the notes agent waits to fill a batch."
    )
    max_note_bytes: int = Field(
        2_000_000, ge=1, description="Notes larger than this (UTF-8 bytes) are dead-lettered."
    )
    retention_hours: float = Field(
        72.0, ge=0, description="Hours an admission's state stays in the store after discharge."
    )
    idle_ttl_hours: float = Field(
        24.0 * 30,
        gt=0,
        description="Sliding time-to-live of an admission's state without any event (no discharge seen).",
    )

    # --- alerts -----------------------------------------------------------------------------------
    alert_threshold: float | None = Field(
        None, ge=0, le=1, description="Alert threshold; default: the model's decision threshold."
    )
    alert_hysteresis: float = Field(
        0.05, ge=0, le=0.5, description="An alert clears only below threshold - hysteresis."
    )
    webhook_url: str | None = Field(None, description="Optional URL that receives each alert as JSON.")
    webhook_retries: int = Field(3, ge=0, description="Retries of a failed webhook post.")

    # --- observability ----------------------------------------------------------------------------
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of the Prometheus /metrics, /healthz and /readyz server."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Write logs as JSON lines (never with note text).")

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if not (value.startswith("kafka://") or value.startswith("embedded://")):
            raise ValueError("broker must start with kafka:// or embedded://")
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "memory://", "unix://")):
            raise ValueError("store must start with redis://, rediss://, unix:// or memory://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get(CONFIG_ENV)
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    # --- derived values ---------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The full topic name for one of notestream's topics."""
        return f"{self.topic_prefix}{name}"

    @property
    def embedded(self) -> bool:
        return self.broker.startswith("embedded://")

    def kafka_bootstrap_servers(self) -> str:
        """Bootstrap servers of a `kafka://` broker, as Kafka clients want them."""
        if not self.broker.startswith("kafka://"):
            raise ConfigError(f"Broker {self.broker!r} is not a kafka:// address.")
        return self.broker.removeprefix("kafka://")


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the process's settings; ``config`` names a TOML file (else ``$NOTESTREAM_CONFIG``).

    Keyword overrides whose value is None are ignored, so CLI options can be passed straight through.
    Errors come back as :class:`ConfigError` naming the field.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    previous = os.environ.get(CONFIG_ENV)
    try:
        if config is not None:
            if not Path(config).is_file():
                raise ConfigError(f"Settings file {config} does not exist.")
            os.environ[CONFIG_ENV] = str(config)
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(f"Invalid notestream settings: {exc}") from exc
    finally:
        if config is not None:
            if previous is None:
                os.environ.pop(CONFIG_ENV, None)
            else:
                os.environ[CONFIG_ENV] = previous
