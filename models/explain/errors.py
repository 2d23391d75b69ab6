"""Errors of the explanations (``notestream.models.explain``).

::

    NotestreamError
    └── ModelsError
        └── ExplainError         a text, layer, head or output folder cannot be explained / written
"""

from __future__ import annotations

from notestream.models.errors import ModelsError


class ExplainError(ModelsError):
    """An explanation cannot be computed or written (the message says what to change)."""
