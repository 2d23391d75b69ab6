"""What to synthesize: the one configuration of a synthetic MIMIC cohort."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize. ``notes_scale``/``words_scale`` shrink cohorts for fast demos and tests."""

    n_patients: int = 500
    seed: int = 0
    signal: float = 1.0
    readmit_rate: float = 0.25
    notes_scale: float = 1.0
    words_scale: float = 1.0
    gzip: bool = False
    mean_admissions: float = 1.35
