"""Structured logging for every notestream process: plain or JSON lines, no note text, no secrets.

Call :func:`setup_logging` once at the start of a process (worker, replay, alerts, demo)::

    from notestream.core.logging import setup_logging
    setup_logging(settings)          # level, JSON or not, and the secrets to mask come from settings

Then log as usual, passing identifiers (never text) as ``extra`` fields, which JSON lines keep::

    log.info("note scored", extra={"hadm_id": 100001, "note_id": "n1", "chunks": 3})

Two filters sit on the handler, so they apply to every logger's records:

- :class:`NoteTextFilter` refuses to emit a record that carries a note-text field (``text``,
  ``note_text``, ``chunk_text``, ``texts``, ``chunk_texts``, ``body``) as an ``extra`` attribute or in a
  mapping of arguments: the record's message is replaced by a fixed line naming the fields, and the
  fields themselves are dropped. Note text inside a free-form message cannot be recognised; do not
  format it into one.
- :class:`SecretMaskFilter` replaces every known secret value and every ``scheme://user:pw@`` URL
  password in the formatted message (and traceback text) by ``**********``.

Third-party loggers that print message payloads at DEBUG (Faust and mode print the messages they send
and receive, aiokafka and kafka-python their records: a dead letter's payload holds the note) never go
below INFO, whatever ``log_level`` says (:data:`PAYLOAD_LOGGERS`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

from notestream.core.settings import MASK, Settings, mask_url

NOTE_TEXT_FIELDS = frozenset({"text", "note_text", "chunk_text", "texts", "chunk_texts", "body"})
"""Attribute names that mean "this is note text"; records carrying them are not emitted as they are."""

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_HANDLER_NAME = "notestream"

PAYLOAD_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "confluent_kafka", "redis")
"""Loggers capped at INFO: at DEBUG they print messages (and their note text) as they pass."""
QUIET_LIBRARY_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "NO_COLOR": "1",
}
"""Environment that keeps Hugging Face, tqdm and rich from writing progress bars, advisories and colour
codes to stderr, where a service's JSON log lines go. Defaults only: a value already set wins."""


def quiet_libraries(environ: MutableMapping[str, str] | None = None) -> None:
    """Set :data:`QUIET_LIBRARY_ENV` as defaults, before the libraries are imported (some read it then).

    >>> env = {"TQDM_DISABLE": "0"}
    >>> quiet_libraries(env)
    >>> env["TQDM_DISABLE"], env["HF_HUB_DISABLE_PROGRESS_BARS"]
    ('0', '1')
    """
    target = os.environ if environ is None else environ
    for name, value in QUIET_LIBRARY_ENV.items():
        target.setdefault(name, value)


def capture_library_logs() -> None:
    """Send Python warnings and the transformers library's own log handler through the root logger,
    so a service process writes them as its (JSON) lines. Call it once, after :func:`setup_logging`, in
    a process that may load a model (transformers is imported here if installed, not otherwise)."""
    logging.captureWarnings(True)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # a light image (alerts, topics): no transformers to route
        return
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


class NoteTextFilter(logging.Filter):
    """Redact records that carry note text in a field (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = sorted(NOTE_TEXT_FIELDS.intersection(record.__dict__))
        args = record.args
        if isinstance(args, Mapping):
            found += sorted(NOTE_TEXT_FIELDS.intersection(str(key) for key in args))
        if not found:
            return True
        for name in found:
            record.__dict__.pop(name, None)
        record.msg = (
            f"log record from {record.name} withheld: it carried note text in field(s) "
            f"{', '.join(sorted(set(found)))}; log identifiers (hadm_id, note_id), never text"
        )
        record.args = None
        return True


class SecretMaskFilter(logging.Filter):
    """Mask known secret values and URL passwords in the message and traceback of a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so that a secret containing another one is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """``text`` with secrets and URL passwords replaced by the mask."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return mask_url(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when the record is formatted
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS and isinstance(value, str):
                record.__dict__[key] = self.mask(value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ``extra`` fields, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(
    settings: Settings | None = None,
    *,
    level: str | None = None,
    json_lines: bool | None = None,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Install notestream's handler on the root logger (replacing any earlier one) and return it.

    ``settings`` gives the level (``log_level``), the format (``log_json``) and the secrets to mask;
    keywords override them. Safe to call again (e.g. once the settings are known).
    """
    if settings is not None:
        level = level or settings.log_level
        json_lines = settings.log_json if json_lines is None else json_lines
        secrets = [*secrets, *settings.secret_values()]
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(NoteTextFilter())
    handler.addFilter(SecretMaskFilter(secrets))
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        # basicConfig's handler and our own earlier one would print every record twice.
        if old.get_name() == _HANDLER_NAME or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or "INFO")
    cap = max(root.level, logging.INFO)
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(cap)
    return handler
