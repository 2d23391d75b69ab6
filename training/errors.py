"""Errors of the training package.

::

    NotestreamError
    └── TrainingError
        ├── CohortError        the tables give no usable cohort (no admissions, no positives, no notes)
        ├── SplitError         a split cannot be drawn as asked (too few admissions of a class)
        └── TrainRunError      a pre-training, fine-tuning or evaluation run cannot go on

Malformed or missing MIMIC files raise :class:`notestream.mimic.tables.TableError`, shared with the stream.
"""

from __future__ import annotations

from notestream.core.errors import NotestreamError


class TrainingError(NotestreamError):
    """Root of the training package's errors."""


class CohortError(TrainingError, ValueError):
    """The input tables do not give a usable cohort for the task."""


class SplitError(TrainingError, ValueError):
    """The cohort is too small or too unbalanced for the requested split."""


class TrainRunError(TrainingError):
    """A training or evaluation run cannot continue (bad data file, bad model folder, bad option)."""
