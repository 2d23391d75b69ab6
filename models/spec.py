"""`notestream.json`: what a model folder says about itself, and which notes it scores.

A model must be served exactly as it was trained: the same cleaning mode, chunking, note window and
aggregation constant. Training writes a :class:`ModelSpec` beside the weights; the worker, the offline
scorer and the evaluator all read it back from the folder.

>>> spec = ModelSpec(task="readmission", window=Window(kind="hours", value=72))
>>> spec.cleaning, spec.chunking.size, spec.c
('huang2019', 318, 2.0)
>>> from datetime import datetime
>>> admit = datetime(2150, 1, 1, 12, 0)
>>> spec.window.admits(admit=admit, chart_time=datetime(2150, 1, 4, 11, 59), chart_date=None, category="Nursing")
True
>>> spec.window.admits(admit=admit, chart_time=datetime(2150, 1, 4, 12, 0), chart_date=None, category="Nursing")
False
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from notestream.core.errors import ConfigError
from notestream.models.calibration import Calibrator
from notestream.models.policy import AlertPolicyChoice

SPEC_FILE = "notestream.json"
SPEC_VERSION = 1
DISCHARGE_CATEGORY = "Discharge summary"


class Chunking(BaseModel):
    """How a cleaned note becomes chunks.

    ``words``: the reference 318-word chunks (docs/reference.md §4); a tail of ``min_tail`` words or fewer is
    dropped. ``tokens``: WordPiece windows of ``max_length - 2`` tokens advancing by ``stride`` tokens.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["words", "tokens"] = "words"
    size: int = Field(318, ge=1, description="Words per chunk (kind=words).")
    min_tail: int = Field(10, ge=0, description="A last chunk needs more than this many words.")
    stride: int = Field(
        384, ge=1, description="Tokens between window starts (kind=tokens); at most max_length - 2."
    )


class Window(BaseModel):
    """Which notes of an admission a model scores.

    - ``all``: every note of the admission.
    - ``discharge``: discharge summaries only (the reference discharge task).
    - ``days``: the reference early-notes rule, calendar days: ``CHARTDATE - date(ADMITTIME) < value``
      (notes dated before the admission count).
    - ``hours``: event time, for streaming: ``CHARTTIME`` (else ``CHARTDATE``) earlier than
      ``ADMITTIME + value`` hours.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["all", "discharge", "days", "hours"] = "all"
    value: float | None = Field(None, gt=0, description="Days or hours for kind days/hours.")

    def admits(
        self,
        *,
        admit: datetime | None,
        chart_time: datetime | None,
        chart_date: date | None,
        category: str | None,
    ) -> bool:
        """Whether a note falls inside this window. Notes that cannot be placed are outside.

        >>> w = Window(kind="days", value=3)
        >>> w.admits(admit=datetime(2150, 1, 1, 23, 0), chart_time=None, chart_date=date(2150, 1, 3), category="Nursing")
        True
        >>> w.admits(admit=datetime(2150, 1, 1, 23, 0), chart_time=None, chart_date=date(2150, 1, 4), category="Nursing")
        False
        >>> Window(kind="discharge").admits(admit=None, chart_time=None, chart_date=None, category="Discharge summary")
        True
        """
        if self.kind == "all":
            return True
        if self.kind == "discharge":
            return (category or "").strip() == DISCHARGE_CATEGORY
        if admit is None or self.value is None:
            return False
        if self.kind == "days":
            day = chart_date if chart_date is not None else None
            if day is None:
                return False
            if isinstance(day, datetime):
                day = day.date()
            return (day - admit.date()).days < self.value
        moment: datetime | None = chart_time
        if moment is None and chart_date is not None:
            moment = (
                chart_date
                if isinstance(chart_date, datetime)
                else datetime(chart_date.year, chart_date.month, chart_date.day)
            )
        if moment is None:
            return False
        return (moment - admit).total_seconds() < self.value * 3600.0


class ModelSpec(BaseModel):
    """The contents of a model folder's ``notestream.json``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = SPEC_VERSION
    task: str = Field("readmission", description="readmission | mortality | prolonged_stay | ...")
    label: str = Field(
        "unplanned readmission within 30 days of discharge",
        description="What a positive label means, in words.",
    )
    cleaning: Literal["huang2019", "clinical"] = "huang2019"
    chunking: Chunking = Field(default_factory=Chunking)
    max_length: int = Field(512, ge=8, le=8192)
    window: Window = Field(default_factory=Window)
    c: float = Field(2.0, gt=0, description="Aggregation constant of the admission score.")
    notes_joined: bool = Field(
        False,
        description="Trained on each admission's notes joined before chunking (`prepare --mode huang2019` "
        "with early notes); the stream chunks each note alone, so served scores differ from training.",
    )
    quantization: Literal["none", "int8-dynamic"] = Field(
        "none",
        description="How the loader runs the float weights: as they are, or with dynamic int8 linear "
        "layers on CPU (written by `notestream model optimize --int8`; see notestream.models.quantize).",
    )
    threshold: float | None = Field(None, ge=0, le=1, description="Decision threshold (RP80 on val).")
    calibration: Calibrator | None = Field(
        None,
        description="Admission score -> probability, fitted by `train evaluate` (notestream.models.calibration).",
    )
    alert_policy: AlertPolicyChoice | None = Field(
        None, description="How `threshold` was chosen and what it should give (notestream.models.policy)."
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path) -> ModelSpec:
        """Read ``folder/notestream.json``; a folder without one gets the reference defaults."""
        path = Path(folder) / SPEC_FILE
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"{path} is not a valid notestream model description: {exc}") from exc

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/notestream.json`` and return its path."""
        path = Path(folder) / SPEC_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def parse_window(text: str) -> Window:
    """A window from its command-line form: ``all``, ``discharge``, ``days:N`` or ``hours:N``.

    >>> parse_window("days:3"), parse_window("discharge").kind
    (Window(kind='days', value=3.0), 'discharge')
    >>> parse_window("weeks:2")
    Traceback (most recent call last):
    ...
    notestream.core.errors.ConfigError: A window is all, discharge, days:N or hours:N, not 'weeks:2'.
    """
    kind, _, value = text.strip().partition(":")
    try:
        if kind in ("all", "discharge") and not value:
            return Window(kind=kind)  # type: ignore[arg-type]
        if kind in ("days", "hours") and value:
            return Window(kind=kind, value=float(value))  # type: ignore[arg-type]
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"A window is all, discharge, days:N or hours:N, not {text!r}.") from exc
    raise ConfigError(f"A window is all, discharge, days:N or hours:N, not {text!r}.")


def serving_warning(spec: ModelSpec) -> str | None:
    """Why this model's served scores differ from how it was trained, or None: the stream and
    ``notestream score`` chunk each note alone, which a model trained on joined notes never saw.

    >>> serving_warning(ModelSpec()) is None, "joined" in serving_warning(ModelSpec(notes_joined=True))
    (True, True)
    """
    if spec.notes_joined:
        return (
            "This model was trained on each admission's notes joined before chunking (prepare --mode "
            "huang2019); served, each note is chunked alone, so its scores differ from training and its "
            "threshold and calibration may not hold. Train with prepare --mode hours to serve it as trained."
        )
    return None
