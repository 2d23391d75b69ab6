"""Errors of the models package.

::

    NotestreamError
    └── ModelsError
        ├── CheckpointError      a folder is not a usable model checkpoint (says what is missing)
        ├── TokenizerError       text could not be tokenized
        └── EngineError          the inference engine failed
            ├── EngineClosed     the engine is not running (not started, or closed)
            ├── EngineOverloaded the queue stayed full longer than the overload timeout
            └── BatchFailed      the batch holding a request failed (the engine keeps serving)
"""

from __future__ import annotations

from notestream.core.errors import NotestreamError


class ModelsError(NotestreamError):
    """Root of the models package's errors."""


class CheckpointError(ModelsError):
    """A model folder or legacy checkpoint cannot be loaded or written."""


class TokenizerError(ModelsError):
    """The tokenizer rejected the input."""


class EngineError(ModelsError):
    """The inference engine could not score a request."""


class EngineClosed(EngineError):
    """The engine is not running: call ``await engine.start()`` first, or it was closed."""


class EngineOverloaded(EngineError):
    """The engine queue stayed full for longer than ``overload_timeout_s``."""


class BatchFailed(EngineError):
    """The batch that held this request failed; other batches are unaffected."""
