"""The one frozen settings object of a notestream process.

Every field can be set through the environment (``NOTESTREAM_<FIELD>``, e.g. ``NOTESTREAM_BROKER``),
through a TOML file (``NOTESTREAM_CONFIG=/etc/notestream.toml`` or ``--config``; keys are the field
names), or by keyword in code. Precedence, highest first: keywords, environment, TOML file, defaults.

Secrets are :class:`pydantic.SecretStr`: printed and logged as ``**********``. A password inside a URL
(``redis://:pw@host``) is masked the same way by ``repr``, ``str``, JSON dumps and ``notestream config
show``; prefer ``redis_password`` all the same. The reference table of every field is
docs/configuration.md, generated from this model by ``notestream config docs``.

The settings build no client: Kafka clients are made from them in :mod:`notestream.stream.kafka` and
Redis clients in :mod:`notestream.stream.store.redis_options`, each in one place.

>>> s = Settings(broker="kafka://k1:9092,k2:9092")
>>> s.kafka_bootstrap_servers()
'k1:9092,k2:9092'
>>> s.topic("notes")
'notes'
>>> Settings(topic_prefix="ward7.").topic("risk-updates")
'ward7.risk-updates'
>>> Settings(store="redis://:hunter2@redis:6379/0")
Settings(... store='redis://:**********@redis:6379/0', ...)
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from notestream.core.errors import ConfigError
from notestream.core.topics import TOPICS

CONFIG_ENV = "NOTESTREAM_CONFIG"
MASK = "**********"

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)@", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Hide the password of every ``scheme://user:password@host`` in ``url``.

    >>> mask_url("rediss://default:s3cret@redis:6380/0")
    'rediss://default:**********@redis:6380/0'
    >>> mask_url("redis://redis:6379/0")
    'redis://redis:6379/0'
    """
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", url)


def url_password(url: str) -> str | None:
    """The password inside a URL, if any.

    >>> url_password("redis://:pw@h:6379"), url_password("redis://h:6379")
    ('pw', None)
    """
    match = _URL_PASSWORD.search(url)
    return match["pw"] if match else None


def mask_webhook(url: str) -> str:
    """Webhook URLs often carry a token in their path or query: keep only scheme and host.

    >>> mask_webhook("https://hooks.example.org/services/T000/B000/XXXX?token=abc")
    'https://hooks.example.org/**********'
    """
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/{MASK}"


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
        "the embedded one-machine broker (tansu, started by `notestream demo`; `embedded://HOST:PORT` "
        "is the address `notestream broker` printed).",
    )
    store: str = Field(
        "memory://",
        description="Risk store: `redis://[:password@]host:port/db`, `rediss://...` for TLS, "
        "`redis+sentinel://host:port[,host:port...]/SERVICE[/DB]` for a Sentinel-managed primary, "
        "`redis+cluster://host:port[,host:port...]` for a Redis Cluster, or `memory://` for the "
        "in-process store of the embedded mode.",
    )
    store_namespace: str = Field(
        "notestream",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key (`<namespace>:{hadm_id}:...`). One namespace holds the "
        "probabilities of one model: a new model gets its own namespace (or database) beside the old one.",
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
    kafka_ssl_keyfile_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key (secret)."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to."
    )
    kafka_idempotence: bool = Field(
        False,
        description="Idempotent Kafka producers (worker, replay, alerts, ingest): a retried send is "
        "written once, in order (Kafka >= 0.11 and the embedded broker support it). Off by default: "
        "aiokafka 0.14's idempotent producer never fails a send while the broker is unreachable (it "
        "waits for a new producer id), so ingest could not answer 503 and replay could not fail; turn it "
        "on where waiting out a broker outage is the wanted behaviour.",
    )
    replication_factor: int = Field(
        1, ge=1, description="Replication factor of the topics notestream creates (3 on a real cluster)."
    )
    topic_retention_hours: float = Field(
        24.0 * 7,
        gt=0,
        description="Retention of the notes, admissions, risk-updates and risk-alerts topics. A replay "
        "from the topic (new consumer group, reprocessing after an upgrade) reaches back this far.",
    )
    dlq_retention_hours: float = Field(
        24.0 * 30, gt=0, description="Retention of the dead-letter topic (time to inspect and re-drive)."
    )

    # --- Redis ------------------------------------------------------------------------------------
    redis_password: SecretStr | None = Field(
        None, description="Redis password (secret); overrides one given in the store URL."
    )
    redis_pool_size: int = Field(32, ge=1, description="Connections in the blocking Redis pool.")
    redis_timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for a Redis connection or reply before failing."
    )
    redis_username: str | None = Field(None, description="Redis ACL user name (Redis 6+).")
    redis_min_replicas: int = Field(
        0,
        ge=0,
        description="Replicas that must confirm each store write (Redis `WAIT`, up to `redis_timeout_s`) "
        "before the batch is acknowledged; 1 with Sentinel, so a failover loses no acknowledged write. "
        "Ignored for Redis Cluster (`CLUSTER FAILOVER` waits for the replica itself).",
    )
    redis_ssl_cafile: Path | None = Field(None, description="CA bundle for `rediss://` stores.")
    redis_ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS to Redis.")
    redis_ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS to Redis.")

    # --- inference engine -------------------------------------------------------------------------
    devices: list[str] = Field(
        default_factory=lambda: ["auto"],
        description='Devices for model replicas, e.g. `["cuda:0", "cuda:1"]` or `["cpu"]`; '
        "`auto` means every visible GPU, else the CPU. Env: JSON list.",
    )
    max_batch_tokens: int = Field(
        32768,
        ge=512,
        description="Token budget of one engine batch (padded length x rows). IMPORTANT for GPU memory: "
        "64 chunks x 512 tokens = 32768.",
    )
    max_batch_size: int = Field(64, ge=1, description="Most chunks in one engine batch.")
    tokenize_threads: int = Field(
        0,
        ge=0,
        description="Threads that tokenize chunks beside the model (the fast tokenizer releases the GIL, "
        "so a batch's chunks are tokenized in parallel slices); 0: one per CPU core (at most 8) when the "
        "model runs on GPUs, 1 when it runs on the CPU, whose cores its own threads use.",
    )
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
    min_batch_efficiency: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Least share of real (not padding) tokens in an engine batch: queued chunks of very "
        "different length wait for a batch of their own. 0.9 suits CPUs (compute = padded tokens); on "
        "GPUs a lower value (e.g. 0.5) fills batches more; 0 disables the rule.",
    )

    # --- worker -----------------------------------------------------------------------------------
    take_max: int = Field(64, ge=1, description="Most notes the notes agent takes in one batch.")
    take_within_s: float = Field(0.05, gt=0, description="Seconds the notes agent waits to fill a batch.")
    max_note_bytes: int = Field(
        2_000_000, ge=1, description="Notes larger than this (UTF-8 bytes) are dead-lettered."
    )
    dead_letter_max_bytes: int = Field(
        900_000,
        ge=4096,
        description="Largest dead letter the worker sends (its JSON, the original message base64-encoded "
        "inside: x4/3). A dead letter of a larger message carries the original's SHA-256, size and Kafka "
        "coordinates instead of its bytes. Keep it under the broker's `message.max.bytes` (1 MB by "
        "default); the worker's producer accepts records up to this plus 64 KiB.",
    )
    startup_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long the worker's start-up checks keep retrying an unreachable broker or Redis "
        "before the worker exits with status 69 (EX_UNAVAILABLE).",
    )
    retention_hours: float = Field(
        72.0, ge=0, description="Hours an admission's state stays in the store after discharge."
    )
    idle_ttl_hours: float = Field(
        24.0 * 30,
        gt=0,
        description="Sliding time-to-live of an admission's state without any event (no discharge seen).",
    )
    admission_wait_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="How long a note that needs its admit time (days/hours windows) waits for its "
        "admission's admit event, held in the store (chunk probabilities, never text) while the worker "
        "goes on with other notes; after it the note is dead-lettered as `admission_unknown` (checked "
        "every 30 s, or a quarter of the wait when shorter).",
    )
    session_timeout_s: float = Field(
        30.0,
        ge=1,
        description="Kafka consumer-group session timeout of the worker: a crashed worker's partitions "
        "move to the others after this long (a rebalance waits it out; tests use ~6 s).",
    )
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Longest wait of one worker fetch for new notes. Kafka answers a waiting fetch as soon "
        "as data arrives; the embedded broker (tansu) answers only later in the wait, so this bounds the "
        "latency it adds.",
    )
    commit_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the worker commits the offsets of notes whose store write and risk "
        "updates are done (a crash reprocesses at most this much; the store dedupes it).",
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
    metrics_host: str = Field("0.0.0.0", description="Address the metrics and health server listens on.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Write logs as JSON lines (never with note text).")

    # --- EHR feeds (HL7 v2, FHIR R4): docs/ehr.md ----------------------------------------------------
    source_timezone: str = Field(
        "UTC",
        description="IANA time zone (e.g. `America/New_York`) of source times that carry no offset: HL7 "
        "times without `+/-ZZZZ`, FHIR dateTimes without one, MIMIC's CHARTTIME and ADMITTIME, naive times "
        "in JSON events. Times with an offset keep it; every time on the wire carries one (docs/events.md).",
    )
    hl7_field_map: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Where HL7 values are read, replacing defaults by name, e.g. `{"encounter_id": '
        '["PV1-50.1", "PV1-19.1"]}` (first non-empty path wins). Names and defaults: docs/ehr.md.',
    )
    hl7_default_charset: str = Field(
        "utf-8",
        description="Character set of HL7 messages whose MSH-18 is empty (`utf-8` reads ASCII too; "
        "e.g. `8859/1` or `windows-1252` for older feeds).",
    )
    hl7_processing_ids: list[str] = Field(
        default_factory=lambda: ["P"],
        description="HL7 processing ids (MSH-11) accepted; others get AR. `P` is production; add `T` "
        "only where training messages should be scored.",
    )
    note_category_map: dict[str, str] = Field(
        default_factory=lambda: {"DS": "Discharge summary", "18842-5": "Discharge summary"},
        description="Document type codes of EHR notes (HL7 TXA-2 / OBR-4, FHIR DocumentReference.type) "
        "renamed to the model's note categories; other codes pass through as they are.",
    )
    ingest_tls_certfile: Path | None = Field(
        None,
        description="Certificate (PEM, chain included) of the MLLP and FHIR listeners; with "
        "`ingest_tls_keyfile` they speak TLS (MLLP over TLS, HTTPS).",
    )
    ingest_tls_keyfile: Path | None = Field(None, description="Private key (PEM) of `ingest_tls_certfile`.")
    fhir_bearer_token: SecretStr | None = Field(
        None,
        description="When set, the FHIR endpoint answers 401 to requests without `Authorization: Bearer "
        "<token>` (secret); `/fhir/metadata` stays open.",
    )

    @field_validator("source_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"source_timezone must be an IANA time zone name such as UTC or Europe/Paris ({exc})"
            ) from exc
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # `NOTESTREAM_WEBHOOK_URL=` (as docker-compose passes an unset variable) means "unset".
        if value == "" and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if type(None) in get_args(annotation):
                return None
        return value

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if not (value.startswith("kafka://") or value.startswith("embedded://")):
            raise ValueError("broker must start with kafka:// or embedded://")
        return value

    @property
    def source_zone(self) -> ZoneInfo:
        """:attr:`source_timezone` as a ``tzinfo``."""
        return ZoneInfo(self.source_timezone)

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(
            ("redis://", "rediss://", "redis+sentinel://", "redis+cluster://", "memory://", "unix://")
        ):
            raise ValueError(
                "store must start with redis://, rediss://, redis+sentinel://, redis+cluster://, unix:// "
                "or memory://"
            )
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            needed = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
            missing = [name for name in needed if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"kafka_security_protocol {self.kafka_security_protocol} needs {', '.join(missing)}; "
                    "set them (NOTESTREAM_KAFKA_SASL_...) or use SSL or PLAINTEXT."
                )
        return self

    # --- masking: URLs may carry passwords, webhook URLs tokens -----------------------------------
    @field_serializer("broker", "store", when_used="json")
    def _mask_url_field(self, value: str) -> str:
        return mask_url(value)

    @field_serializer("webhook_url", when_used="json")
    def _mask_webhook_field(self, value: str | None) -> str | None:
        return None if value is None else mask_webhook(value)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("broker", "store") and isinstance(value, str):
                yield name, mask_url(value)
            elif name == "webhook_url" and isinstance(value, str):
                yield name, mask_webhook(value)
            else:
                yield name, value

    def masked(self) -> dict[str, Any]:
        """Every setting as JSON-able values, secrets and URL passwords masked (safe to print)."""
        return self.model_dump(mode="json")

    def secret_values(self) -> list[str]:
        """The plain text of every secret held here, for log masking. Never print what this returns."""
        values = [
            secret.get_secret_value()
            for secret in (
                self.kafka_sasl_password,
                self.kafka_ssl_keyfile_password,
                self.redis_password,
                self.fhir_bearer_token,
            )
            if secret is not None
        ]
        values += [pw for pw in (url_password(self.broker), url_password(self.store)) if pw]
        if self.webhook_url:
            values.append(self.webhook_url)
        return [value for value in values if value]

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

    def topic_names(self) -> dict[str, str]:
        """Every notestream topic, short name -> full (prefixed) name.

        >>> Settings(topic_prefix="t.").topic_names()["notes-dlq"]
        't.notes-dlq'
        """
        return {name: self.topic(name) for name in TOPICS}


def describe_errors(exc: ValidationError) -> str:
    """The validation errors as one line per field, without the input values (they may be secrets).

    >>> try:
    ...     Settings(partitions=0, redis_password="hunter2", broker="nope")
    ... except ValidationError as exc:
    ...     print(describe_errors(exc))
    broker: Value error, broker must start with kafka:// or embedded://; partitions: Input should be greater than or equal to 1
    """
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


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
        # Not `from exc`: pydantic's message and traceback repeat the input values, secrets included.
        raise ConfigError(f"Invalid notestream settings: {describe_errors(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Settings file {os.environ.get(CONFIG_ENV)} is not valid TOML ({exc}); fix it or unset "
            f"{CONFIG_ENV}."
        ) from exc
    finally:
        if config is not None:
            if previous is None:
                os.environ.pop(CONFIG_ENV, None)
            else:
                os.environ[CONFIG_ENV] = previous
