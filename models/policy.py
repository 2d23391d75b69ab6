"""The alert policy a model folder carries: how its threshold was chosen and what it should give.

``train evaluate`` chooses the alert threshold on validation admissions at natural prevalence by one
of four rules and stores the rule, its target and the threshold's expected precision, recall and alert
rate in ``notestream.json`` (:class:`AlertPolicyChoice`); ``notestream alerts`` reports it at start.

- ``rp80``: the reference's point (the lowest threshold whose precision exceeds 0.8).
- ``precision``: the lowest threshold whose precision reaches the target (most alerts at that precision).
- ``sensitivity``: the highest threshold whose recall reaches the target (fewest alerts at that recall).
- ``budget``: the lowest threshold that raises at most ``target`` alerts per 100 admissions.

>>> choice = AlertPolicyChoice(kind="budget", target=5, threshold=0.61, precision=0.3, recall=0.4,
...                            alerts_per_100=4.8, prevalence=0.07, n=1200)
>>> choice.describe()
'at most 5 alerts per 100 admissions: threshold 0.61, expected precision 0.300, recall 0.400, 4.80 alerts per 100 admissions at prevalence 0.070 (n=1200)'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PolicyKind = Literal["rp80", "precision", "sensitivity", "budget"]


class AlertPolicyChoice(BaseModel):
    """A chosen alert threshold and what it is expected to give on the validation admissions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PolicyKind
    target: float | None = Field(None, description="Target precision or recall (0-1), or alerts per 100.")
    threshold: float = Field(ge=0, le=1)
    precision: float | None = None
    recall: float | None = None
    alerts_per_100: float = Field(ge=0)
    prevalence: float | None = None
    n: int = Field(ge=0)
    met: bool = Field(True, description="False when no threshold reaches the target (the nearest is used).")

    def describe(self) -> str:
        """One line: the rule and its expected figures."""
        rule = {
            "rp80": "rp80 (precision > 0.8)",
            "precision": f"precision >= {self.target:g}",
            "sensitivity": f"recall >= {self.target:g}",
            "budget": f"at most {self.target:g} alerts per 100 admissions",
        }[self.kind]
        pairs = (("precision", self.precision), ("recall", self.recall))
        figures = ", ".join(f"{name} {value:.3f}" for name, value in pairs if value is not None)
        prevalence = f" at prevalence {self.prevalence:.3f}" if self.prevalence is not None else ""
        missed = "" if self.met else " (target not reached)"
        return (
            f"{rule}: threshold {self.threshold:g}{missed}, expected {figures}, "
            f"{self.alerts_per_100:.2f} alerts per 100 admissions{prevalence} (n={self.n})"
        )
