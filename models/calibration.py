"""Calibrated risk: the admission score mapped to a probability at the deployed population's prevalence.

An admission score (the reference's ``(max + mean n/c) / (1 + n/c)``) ranks admissions, but it is not a
probability: a model trained on balanced data scores as if half of all admissions were readmitted.
``train evaluate`` fits a :class:`Calibrator` on the admission scores of validation data at natural
prevalence and stores its parameters in ``notestream.json`` as plain JSON numbers (never a pickle);
:func:`calibrated_risk` is the one function the worker (``RiskUpdate.risk``), ``notestream score`` and
``explain`` apply.

- ``isotonic``: a non-decreasing step-wise-linear map through the points ``(x, y)`` (scikit-learn's
  ``IsotonicRegression``, which predicts by linear interpolation and clips outside the fitted range).
- ``platt``: ``1 / (1 + exp(-(a * score + b)))`` (a logistic regression on the score).

>>> platt = Calibrator(method="platt", a=8.0, b=-6.0)
>>> round(platt.apply(0.75), 4), round(platt.apply(0.5), 4)
(0.5, 0.1192)
>>> iso = Calibrator(method="isotonic", x=[0.2, 0.6, 0.9], y=[0.01, 0.05, 0.4])
>>> iso.apply(0.1), round(iso.apply(0.75), 4), iso.apply(0.95), iso.apply(None)
(0.01, 0.225, 0.4, None)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # numpy loads when a calibrator runs: the alerts process reads model folders without it
    import numpy as np
    from numpy.typing import ArrayLike

CalibrationMethod = Literal["isotonic", "platt"]


class Calibrator(BaseModel):
    """A fitted map from admission score to probability (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: CalibrationMethod
    x: list[float] = Field(default_factory=list, description="isotonic: score points, increasing.")
    y: list[float] = Field(default_factory=list, description="isotonic: probabilities at those points.")
    a: float | None = Field(None, description="platt: slope on the score.")
    b: float | None = Field(None, description="platt: intercept.")
    fitted_on: dict[str, Any] = Field(
        default_factory=dict, description="What it was fitted on: file, n, positives, prevalence."
    )

    @model_validator(mode="after")
    def _parameters(self) -> Calibrator:
        if self.method == "isotonic":
            if not self.x or len(self.x) != len(self.y):
                raise ValueError("an isotonic calibrator needs points x and y of one length")
            if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
                raise ValueError("the isotonic points x must be increasing")
        elif self.a is None or self.b is None:
            raise ValueError("a Platt calibrator needs a and b")
        return self

    def apply(self, score: float | None) -> float | None:
        """The calibrated probability of ``score`` (None stays None)."""
        if score is None:
            return None
        if self.method == "isotonic":
            import numpy as np

            return float(np.interp(score, self.x, self.y))
        z = self._ab[0] * score + self._ab[1]
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def apply_many(self, scores: ArrayLike) -> np.ndarray:
        """:meth:`apply` over an array."""
        import numpy as np

        s = np.asarray(scores, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(s, self.x, self.y)
        a, b = self._ab
        return 1.0 / (1.0 + np.exp(-(a * s + b)))

    @property
    def _ab(self) -> tuple[float, float]:
        """The Platt parameters (checked present at validation)."""
        return float(self.a or 0.0), float(self.b or 0.0)


def fit_calibrator(
    labels: ArrayLike, scores: ArrayLike, *, method: CalibrationMethod = "isotonic", **fitted_on: Any
) -> Calibrator:
    """Fit a calibrator of ``scores`` to ``labels`` (0/1) with scikit-learn.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = rng.random(2000)
    >>> y = (rng.random(2000) < s ** 3).astype(int)   # the true risk is score cubed
    >>> cal = fit_calibrator(y, s, method="isotonic")
    >>> grid = np.linspace(0.05, 0.95, 19)
    >>> bool(np.abs(cal.apply_many(grid) - grid ** 3).mean() < 0.05), cal.fitted_on["n"]
    (True, 2000)
    >>> fit_calibrator(y, s, method="platt").a > 0
    True
    """
    import numpy as np

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("Calibration needs both classes among the labels.")
    info = {"n": len(y), "positives": int(y.sum()), "prevalence": float(y.mean()), **fitted_on}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
        x = [float(v) for v in iso.X_thresholds_]
        return Calibrator(method="isotonic", x=x, y=[float(v) for v in iso.y_thresholds_], fitted_on=info)
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6).fit(s.reshape(-1, 1), y)
    return Calibrator(method="platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), fitted_on=info)


def calibrated_risk(calibrator: Calibrator | None, score: float | None) -> float | None:
    """The calibrated risk of an admission score under a model's calibrator (``spec.calibration``);
    None without a calibrator or a score. The one function the worker, ``score`` and ``explain`` use.

    >>> calibrated_risk(None, 0.7), calibrated_risk(Calibrator(method="platt", a=0.0, b=0.0), 0.7)
    (None, 0.5)
    """
    if calibrator is None or score is None:
        return None
    return calibrator.apply(score)
