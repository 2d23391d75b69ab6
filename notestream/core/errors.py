"""The one error root of notestream.

Every package derives its errors from :class:`NotestreamError` (in its own small ``errors`` module)
and wraps lower-layer failures (Kafka, Redis, tokenizers, torch) with ``raise ... from exc``, so a
caller can catch one type and a reader sees the cause::

    NotestreamError
    ├── ConfigError            settings or a model folder's notestream.json are wrong
    ├── notestream.models.errors.*        checkpoint, tokenizer, inference engine
    ├── notestream.training.errors.*      MIMIC files, cohorts, training runs
    └── notestream.stream.errors.*        events, store, broker

Messages are full sentences that say what went wrong and what to do.
"""

from __future__ import annotations


class NotestreamError(Exception):
    """Root of every error notestream raises on purpose."""


class ConfigError(NotestreamError, ValueError):
    """A setting, a settings file or a model folder's description is invalid."""
