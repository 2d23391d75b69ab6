"""Subgroups: who the model works for. Demographics of the cohort's admissions from MIMIC, and the
admission metrics (with 95% bootstrap CIs) of each group of each attribute, with gaps flagged.

:func:`load_demographics` reads, per admission: ``sex`` (PATIENTS.GENDER / patients.gender), ``age_band``
(MIMIC-III: ADMITTIME - DOB in whole years, where a DOB shifted ~300 years back marks an age over 89;
MIMIC-IV: anchor_age + the years from anchor_year to the admission), ``insurance`` and ``ethnicity``
(ADMISSIONS.ETHNICITY / admissions.race, folded into a few broad groups by :func:`ethnic_group`).
``prepare`` writes them as ``demographics.csv`` beside the split files; ``evaluate`` reports
:func:`subgroup_report` and draws :func:`plot_subgroups`.

A group is **flagged** when its AUROC is below the whole test set's by more than ``margin`` (0.05 by
default) and it has at least ``min_n`` admissions of each class (smaller groups are reported, not
judged: their intervals are too wide to say).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from notestream.mimic.tables import connect, fetch_df, find_table, table_sql
from notestream.training.metrics import metrics_with_ci

ATTRIBUTES = ("sex", "age_band", "insurance", "ethnicity")
AGE_BANDS = ((0, 18, "0-17"), (18, 45, "18-44"), (45, 65, "45-64"), (65, 80, "65-79"), (80, 200, "80+"))
_ETHNIC_PREFIXES = (
    ("WHITE", "white"),
    ("BLACK", "black"),
    ("HISPANIC", "hispanic"),
    ("SOUTH AMERICAN", "hispanic"),
    ("ASIAN", "asian"),
    ("UNKNOWN", "unknown"),
    ("UNABLE", "unknown"),
    ("PATIENT DECLINED", "unknown"),
)


def age_band(age: float | None) -> str:
    """The band of an age in years ("unknown" when missing).

    >>> [age_band(a) for a in (3, 18, 64.9, 79, 300, None)]
    ['0-17', '18-44', '45-64', '65-79', '80+', 'unknown']
    """
    if age is None or (isinstance(age, float) and np.isnan(age)):
        return "unknown"
    for low, high, name in AGE_BANDS:
        if low <= age < high:
            return name
    return "80+"


def ethnic_group(value: str | None) -> str:
    """MIMIC's detailed ethnicity / race folded into white, black, hispanic, asian, other, unknown.

    >>> [ethnic_group(v) for v in ("WHITE - RUSSIAN", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - CUBAN",
    ...                             "ASIAN - CHINESE", "UNABLE TO OBTAIN", "AMERICAN INDIAN/ALASKA NATIVE", None)]
    ['white', 'black', 'hispanic', 'asian', 'unknown', 'other', 'unknown']
    """
    if not value:
        return "unknown"
    upper = value.upper()
    for prefix, group in _ETHNIC_PREFIXES:
        if upper.startswith(prefix):
            return group
    return "other"


def _table(con: Any, folder: str | Path, name: str, columns: list[str]) -> pd.DataFrame:
    path = find_table(folder, name)
    assert path is not None  # required: find_table raises when it is absent
    return fetch_df(con, table_sql(path, columns))


def whole_years(start: pd.Series, end: pd.Series) -> pd.Series:
    """Completed years from ``start`` to ``end`` (calendar arithmetic: no nanosecond overflow for
    MIMIC-III's DOBs shifted ~300 years back).

    >>> whole_years(pd.Series(pd.to_datetime(["1850-06-02", "2100-06-02"])),
    ...             pd.Series(pd.to_datetime(["2150-06-01", "2150-06-02"]))).tolist()
    [299.0, 50.0]
    """
    a, b = pd.to_datetime(start, errors="coerce"), pd.to_datetime(end, errors="coerce")
    before = (b.dt.month < a.dt.month) | ((b.dt.month == a.dt.month) & (b.dt.day < a.dt.day))
    return (b.dt.year - a.dt.year - before.astype("int64")).astype("float64")


def load_demographics(
    mimic_iii: str | Path | None = None, mimic_iv: str | Path | None = None
) -> pd.DataFrame:
    """HADM_ID, sex, age_band, insurance, ethnicity of every admission (see the module docstring).
    Raises :class:`notestream.mimic.tables.TableError` when the patients table is missing."""
    con = connect()
    try:
        if mimic_iii is not None:
            adm = _table(
                con, mimic_iii, "ADMISSIONS", ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "INSURANCE", "ETHNICITY"]
            )
            pat = _table(con, mimic_iii, "PATIENTS", ["SUBJECT_ID", "GENDER", "DOB"])
            df = adm.merge(pat, on="SUBJECT_ID", how="left")
            age = whole_years(df["DOB"], df["ADMITTIME"])
            race = df["ETHNICITY"]
        else:
            assert mimic_iv is not None
            adm = _table(
                con, mimic_iv, "admissions", ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "INSURANCE", "RACE"]
            )
            pat = _table(con, mimic_iv, "patients", ["SUBJECT_ID", "GENDER", "ANCHOR_AGE", "ANCHOR_YEAR"])
            df = adm.merge(pat, on="SUBJECT_ID", how="left")
            years = pd.to_datetime(df["ADMITTIME"], errors="coerce").dt.year
            age = (
                pd.to_numeric(df["ANCHOR_AGE"], errors="coerce")
                + years
                - pd.to_numeric(df["ANCHOR_YEAR"], errors="coerce")
            )
            race = df["RACE"]
    finally:
        con.close()
    return pd.DataFrame(
        {
            "HADM_ID": pd.to_numeric(df["HADM_ID"], errors="coerce").astype("Int64"),
            "sex": df["GENDER"].fillna("").astype(str).str.upper().str[:1].replace({"": "unknown"}),
            "age_band": [age_band(a) for a in age.tolist()],
            "insurance": df["INSURANCE"].fillna("unknown").astype(str),
            "ethnicity": [ethnic_group(v if isinstance(v, str) else None) for v in race.tolist()],
        }
    ).dropna(subset=["HADM_ID"])


def subgroup_report(
    adm: pd.DataFrame,
    demographics: pd.DataFrame,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    margin: float = 0.05,
    min_n: int = 10,
) -> dict[str, Any]:
    """Per attribute and group: n, prevalence, AUROC/AUPRC/AP/RP80 with 95% CIs, precision and recall
    at ``threshold``, and ``flag`` (see the module docstring). ``adm``: ID, Label, score.

    >>> adm = pd.DataFrame({"ID": range(8), "Label": [0, 1] * 4, "score": [0.1, 0.9, 0.2, 0.8, 0.6, 0.4, 0.7, 0.3]})
    >>> demo = pd.DataFrame({"HADM_ID": range(8), "sex": ["F"] * 4 + ["M"] * 4, "age_band": "18-44",
    ...                      "insurance": "Private", "ethnicity": "white"})
    >>> r = subgroup_report(adm, demo, n_boot=0, min_n=2)
    >>> r["groups"]["sex"]["F"]["auroc"], r["groups"]["sex"]["M"]["auroc"], r["flagged"]
    (1.0, 0.0, [{'attribute': 'sex', 'group': 'M', 'auroc': 0.0, 'overall_auroc': 0.75, 'gap': 0.75}])
    """
    joined = adm.merge(demographics, left_on="ID", right_on="HADM_ID", how="left")
    overall = metrics_with_ci(joined["Label"], joined["score"], n_boot=0)["auroc"]
    groups: dict[str, dict[str, Any]] = {}
    flagged: list[dict[str, Any]] = []
    for attribute in ATTRIBUTES:
        if attribute not in joined:
            continue
        values = joined[attribute].fillna("unknown")
        groups[attribute] = {}
        for group in sorted(values.unique(), key=str):
            part = joined[values == group]
            m = metrics_with_ci(part["Label"], part["score"], n_boot=n_boot)
            if threshold is not None and len(part):
                flag = part["score"] >= threshold
                positives = part["Label"] == 1
                m["precision_at_threshold"] = float(part.loc[flag, "Label"].mean()) if flag.any() else None
                m["recall_at_threshold"] = float(flag[positives].mean()) if positives.any() else None
                m["alerts_per_100"] = 100.0 * float(flag.mean())
            judged = min(m["positives"], m["n"] - m["positives"]) >= min_n
            m["flag"] = bool(
                judged and m["auroc"] is not None and overall is not None and overall - m["auroc"] > margin
            )
            if m["flag"]:
                flagged.append(
                    {
                        "attribute": attribute,
                        "group": str(group),
                        "auroc": m["auroc"],
                        "overall_auroc": overall,
                        "gap": round(overall - m["auroc"], 6),
                    }
                )
            groups[attribute][str(group)] = m
    return {"overall_auroc": overall, "margin": margin, "min_n": min_n, "groups": groups, "flagged": flagged}


def plot_subgroups(report: dict[str, Any], path: str | Path) -> Path:
    """AUROC with its 95% CI per group (one row per group, attributes stacked), the overall AUROC as a
    line, flagged groups in red, n and prevalence in the labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(a, g, m) for a, gs in report["groups"].items() for g, m in gs.items() if m["auroc"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(rows), 4) + 1.2))
    for i, (_, _, m) in enumerate(rows):
        ci = m.get("ci", {}).get("auroc")
        err = [[m["auroc"] - ci[0]], [ci[1] - m["auroc"]]] if ci else None
        ax.errorbar(m["auroc"], i, xerr=err, fmt="o", color="red" if m["flag"] else "C0", capsize=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{a}: {g} (n={m['n']}, prev {m['prevalence']:.2f})" for a, g, m in rows], fontsize=7)
    if report["overall_auroc"] is not None:
        ax.axvline(report["overall_auroc"], color="grey", linestyle="--", linewidth=0.8)
    ax.set(
        xlabel="AUROC (95% CI)", title=f"Subgroups (flagged: more than {report['margin']:g} below overall)"
    )
    ax.invert_yaxis()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
