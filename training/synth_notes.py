"""Synthetic notes for a synthetic admission timeline (see :mod:`notestream.training.synth`), written in batches.

For each batch of patients: notes per category from a Poisson rate per admission-day, note times inside
the stay (a few before it), outpatient Radiology/ECG/Echo notes without HADM_ID, one discharge summary
per admission (sometimes none, sometimes an addendum or a duplicate on the same date), then note bodies
from :class:`notestream.training.synth_text.SentencePools` with the planted marker sentences. Everything is drawn
with numpy in whole batches; only the final string joins run per note, so 2M notes take minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.progress import Progress

from notestream.training.synth_csv import open_csv, quote
from notestream.training.synth_text import CATEGORIES, DISCHARGE, DISCHARGE_WORDS, SentencePools

if TYPE_CHECKING:
    from notestream.training.synth_config import SynthConfig

DAY_S = 86_400
BASE_RATE = 0.004
PATIENTS_PER_BATCH = 1000


@dataclass
class NoteBatch:
    """Parallel arrays, one entry per note."""

    subject: np.ndarray
    hadm: np.ndarray  # -1 = none
    category: np.ndarray  # object
    description: np.ndarray  # object
    chartdate: np.ndarray  # datetime64[D], NaT = missing
    charttime: np.ndarray  # datetime64[s], NaT = missing
    storetime: np.ndarray  # datetime64[s]
    iserror: np.ndarray  # bool
    text: list[str | None]


def _batches(adm: pd.DataFrame) -> Iterator[pd.DataFrame]:
    adm = adm.sort_values(["SUBJECT_ID", "ADMITTIME"], kind="stable")
    subjects = adm["SUBJECT_ID"].unique()
    for i in range(0, len(subjects), PATIENTS_PER_BATCH):
        chosen = subjects[i : i + PATIENTS_PER_BATCH]
        yield adm[adm["SUBJECT_ID"].isin(chosen)]


def _deid_dates(days: np.ndarray) -> list[str]:
    idx = pd.DatetimeIndex(days.astype("datetime64[ns]"))
    return [f"[**{y}-{m}-{d}**]" for y, m, d in zip(idx.year, idx.month, idx.day, strict=True)]


def _plan(batch: pd.DataFrame, cfg: SynthConfig, rng: np.random.Generator, mimic_iv: bool) -> NoteBatch:
    m = len(batch)
    admit = batch["ADMITTIME"].to_numpy(dtype="datetime64[s]")
    disch = batch["DISCHTIME"].to_numpy(dtype="datetime64[s]")
    dur = batch["DUR"].to_numpy()
    newborn = (batch["ADMISSION_TYPE"] == "NEWBORN").to_numpy()
    cats = [c for c in CATEGORIES if not mimic_iv or c[0] == "Radiology"]
    rates = np.array([c[1] for c in cats]) * (3.0 if mimic_iv else 1.0)
    lam = (
        np.maximum(dur, 1.0)[:, None]
        * rates[None, :]
        * cfg.notes_scale
        * np.where(newborn, 0.5, 1.0)[:, None]
    )
    counts = rng.poisson(lam)
    adm_idx = np.repeat(np.tile(np.arange(m), len(cats)), counts.T.ravel())
    cat_idx = np.repeat(np.arange(len(cats)), counts.sum(axis=0))
    n = len(adm_idx)
    frac = rng.random(n)
    t = admit[adm_idx] + (np.round(frac * np.maximum(dur[adm_idx], 0.01) * DAY_S / 60) * 60).astype(
        "timedelta64[s]"
    )
    early = rng.random(n) < 0.03  # notes from before the admission (ED, outside studies)
    t[early] = admit[adm_idx[early]] - (rng.integers(10, 2160, int(early.sum())) * 60).astype(
        "timedelta64[s]"
    )
    # Discharge summaries: usually one, sometimes none, an addendum, or a duplicate the same day.
    n_ds = (rng.random(m) < 0.99).astype(int) + (rng.random(m) < 0.03) + (rng.random(m) < 0.01)
    ds_adm = np.repeat(np.arange(m), n_ds)
    ds_rank = np.arange(len(ds_adm)) - np.repeat(np.r_[0, np.cumsum(n_ds)[:-1]], n_ds)
    ds_day = disch[ds_adm].astype("datetime64[D]") + (rng.random(len(ds_adm)) < 0.1).astype("timedelta64[D]")
    # Outpatient notes (no HADM_ID): Radiology, ECG, Echo months before an admission.
    n_out = rng.poisson(3.0 * cfg.notes_scale, m)
    out_adm = np.repeat(np.arange(m), n_out)
    out_t = admit[out_adm] - (rng.integers(20 * 1440, 400 * 1440, len(out_adm)) * 60).astype("timedelta64[s]")
    out_names = ["Radiology"] if mimic_iv else ["Radiology", "ECG", "Echo"]
    out_cat = rng.choice(len(out_names), len(out_adm), p=[1.0] if mimic_iv else [0.6, 0.35, 0.05])

    names = [c[0] for c in cats]
    category = np.concatenate(
        [
            np.array(names, dtype=object)[cat_idx],
            np.full(len(ds_adm), DISCHARGE, dtype=object),
            np.array(out_names, dtype=object)[out_cat],
        ]
    )
    all_adm = np.concatenate([adm_idx, ds_adm, out_adm])
    has_hadm = np.r_[np.ones(n + len(ds_adm), dtype=bool), np.zeros(len(out_adm), dtype=bool)]
    when = np.concatenate([t, ds_day.astype("datetime64[s]"), out_t])
    timed = np.array([dict((c[0], c[3]) for c in CATEGORIES).get(c, False) for c in category])
    timed &= rng.random(len(category)) >= 0.003
    chartdate = when.astype("datetime64[D]")
    missing_date = (rng.random(len(category)) < 0.0005) & (category != DISCHARGE)
    chartdate[missing_date] = np.datetime64("NaT")
    charttime = np.where(timed & ~missing_date, when, np.datetime64("NaT"))
    storetime = charttime + (rng.integers(5, 240, len(category)) * 60).astype("timedelta64[s]")
    descriptions = {c[0]: c[4] for c in CATEGORIES}
    description = np.array(
        [
            descriptions[c][int(k) % len(descriptions[c])] if c in descriptions else "Report"
            for c, k in zip(category, rng.integers(0, 1000, len(category)), strict=True)
        ],
        dtype=object,
    )
    ds_desc = np.where(ds_rank == 1, "Addendum", "Report")
    description[n : n + len(ds_adm)] = ds_desc
    words = np.array(
        [dict((c[0], c[2]) for c in CATEGORIES).get(c, DISCHARGE_WORDS) for c in category], dtype=float
    )
    text = _texts(batch, cfg, rng, mimic_iv, category, all_adm, has_hadm, words, chartdate, admit, disch)
    return NoteBatch(
        subject=batch["SUBJECT_ID"].to_numpy()[all_adm],
        hadm=np.where(has_hadm, batch["HADM_ID"].to_numpy()[all_adm], -1),
        category=category,
        description=description,
        chartdate=chartdate,
        charttime=charttime,
        storetime=storetime,
        iserror=rng.random(len(category)) < 0.0005,
        text=text,
    )


_POOLS: dict[tuple[int, bool], SentencePools] = {}


def _pools(seed: int, mimic_iv: bool) -> SentencePools:
    if (seed, mimic_iv) not in _POOLS:
        _POOLS[(seed, mimic_iv)] = SentencePools.build(seed, mimic_iv=mimic_iv)
    return _POOLS[(seed, mimic_iv)]


def _texts(
    batch: pd.DataFrame,
    cfg: SynthConfig,
    rng: np.random.Generator,
    mimic_iv: bool,
    category: np.ndarray,
    all_adm: np.ndarray,
    has_hadm: np.ndarray,
    words: np.ndarray,
    chartdate: np.ndarray,
    admit: np.ndarray,
    disch: np.ndarray,
) -> list[str | None]:
    pools = _pools(cfg.seed, mimic_iv)
    n = len(category)
    sentence_words = 9.0
    target = rng.lognormal(np.log(words * cfg.words_scale) - 0.125, 0.5)
    n_sent = np.maximum(1, np.round(target / sentence_words)).astype(np.int64)
    slot_note = np.repeat(np.arange(n), n_sent)
    lab = {k: batch[k].to_numpy()[all_adm].astype(float) * has_hadm for k in ("READMIT", "DIED", "LONG")}
    s = cfg.signal
    q = np.stack(
        [
            BASE_RATE + 0.05 * s * lab["READMIT"],
            BASE_RATE + 0.05 * s * (1 - lab["READMIT"]) * has_hadm,
            BASE_RATE + 0.05 * s * lab["DIED"],
            BASE_RATE + 0.04 * s * lab["LONG"],
        ],
        axis=1,
    )
    cum = np.cumsum(q, axis=1)[slot_note]
    u = rng.random(len(slot_note))
    kind = (u[:, None] >= cum).sum(axis=1)  # 0..3 = marker kind, 4 = ordinary sentence
    start = np.array([pools.start[c] for c in category])[slot_note]
    idx = start + (rng.random(len(slot_note)) * pools.size[DISCHARGE]).astype(np.int64)
    for i, key in enumerate(("risk", "protective", "death", "long")):
        sel = kind == i
        idx[sel] = pools.marker_start[key] + rng.integers(0, pools.marker_size[key], int(sel.sum()))
    flat = pools.sentences[idx].tolist()
    bounds = np.r_[0, np.cumsum(n_sent)]
    heads = _headers(batch, rng, mimic_iv, category, all_adm, chartdate, admit, disch)
    missing = rng.random(n) < 0.0002
    texts: list[str | None] = []
    for i in range(n):
        if missing[i]:
            texts.append(None)
            continue
        texts.append(heads[i] + " ".join(flat[bounds[i] : bounds[i + 1]]) + "\n")
    return texts


def _headers(
    batch: pd.DataFrame,
    rng: np.random.Generator,
    mimic_iv: bool,
    category: np.ndarray,
    all_adm: np.ndarray,
    chartdate: np.ndarray,
    admit: np.ndarray,
    disch: np.ndarray,
) -> list[str]:
    gender = batch["GENDER"].to_numpy()[all_adm]
    heads = [""] * len(category)
    is_ds = np.flatnonzero(category == DISCHARGE)
    is_rad = np.flatnonzero(category == "Radiology")
    if mimic_iv:
        for i in is_ds:
            heads[i] = (
                f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              "
                f"Discharge Date:   ___\n \nDate of Birth:  ___             Sex:   {gender[i]}\n \n"
                "Service: MEDICINE\n \nAllergies: \nNo Known Allergies / Adverse Drug Reactions\n \n"
            )
        for i in is_rad:
            heads[i] = "EXAMINATION:  CHEST (PA AND LAT)\n\nINDICATION:  ___ with dyspnea, eval for pna\n\n"
        return heads
    a = _deid_dates(admit[all_adm[is_ds]].astype("datetime64[D]"))
    d = _deid_dates(disch[all_adm[is_ds]].astype("datetime64[D]"))
    dob = _deid_dates(batch["DOB"].to_numpy(dtype="datetime64[D]")[all_adm[is_ds]])
    for j, i in enumerate(is_ds):
        heads[i] = (
            f"Admission Date:  {a[j]}              Discharge Date:   {d[j]}\n\nDate of Birth:  {dob[j]}"
            f"             Sex:   {gender[i]}\n\nService: MEDICINE\n\nAllergies:\nPatient recorded as having "
            "No Known Allergies to Drugs\n\nAttending:[**First Name3 (LF) 1234**]\n"
        )
    ok = ~np.isnat(chartdate[is_rad])
    rd = _deid_dates(np.where(ok, chartdate[is_rad], np.datetime64("2150-01-01")))
    clip = rng.integers(10_000, 99_999, len(is_rad))
    for j, i in enumerate(is_rad):
        heads[i] = (
            f"{rd[j]} 10:12 AM\n CHEST (PORTABLE AP)                                             Clip # "
            f"[**Clip Number (Radiology) {clip[j]}**]\n Reason: eval for infiltrate\n"
            " ______________________________________________________________________________\n"
            "                                 FINAL REPORT\n"
        )
    return heads


def _fmt(times: np.ndarray, unit: str) -> list[str]:
    out = np.datetime_as_string(times, unit=unit)  # type: ignore[call-overload]
    return ["" if s == "NaT" else s.replace("T", " ") for s in out.tolist()]


def write_noteevents(adm: pd.DataFrame, path: Path, cfg: SynthConfig, *, progress: bool = False) -> int:
    """Write NOTEEVENTS in the MIMIC-III v1.4 format; returns the number of notes written."""

    rng = np.random.default_rng(cfg.seed + 3)
    n_batches = -(-adm["SUBJECT_ID"].nunique() // PATIENTS_PER_BATCH)
    row_id = 0
    with open_csv(path) as fh, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("Writing NOTEEVENTS", total=n_batches)
        fh.write(
            '"ROW_ID","SUBJECT_ID","HADM_ID","CHARTDATE","CHARTTIME","STORETIME","CATEGORY","DESCRIPTION",'
            '"CGID","ISERROR","TEXT"\n'
        )
        for batch in _batches(adm):
            notes = _plan(batch, cfg, rng, mimic_iv=False)
            order = rng.permutation(len(notes.category))
            cd, ct, st = _fmt(notes.chartdate, "D"), _fmt(notes.charttime, "s"), _fmt(notes.storetime, "s")
            cgid = rng.integers(14_000, 22_000, len(order))
            lines = []
            for i in order.tolist():
                row_id += 1
                hadm = notes.hadm[i]
                lines.append(
                    f"{row_id},{notes.subject[i]},{hadm if hadm >= 0 else ''},{cd[i]},{ct[i]},{st[i]},"
                    f"{quote(notes.category[i])},{quote(notes.description[i])},{cgid[i] if ct[i] else ''},"
                    f"{quote('1') if notes.iserror[i] else ''},{quote(notes.text[i])}\n"
                )
            fh.write("".join(lines))
            bar.update(task, advance=1)
    return row_id


def write_mimic_iv_notes(
    adm: pd.DataFrame, folder: Path, cfg: SynthConfig, *, progress: bool = False
) -> tuple[dict[str, Path], int]:
    """Write ``discharge.csv.gz`` and ``radiology.csv.gz`` (MIMIC-IV-Note v2.2 format); returns the
    paths and the number of notes written."""

    rng = np.random.default_rng(cfg.seed + 4)
    paths = {"discharge": folder / "discharge.csv.gz", "radiology": folder / "radiology.csv.gz"}
    header = "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text\n"
    counts = {"discharge": 0, "radiology": 0}
    n_batches = -(-adm["SUBJECT_ID"].nunique() // PATIENTS_PER_BATCH)
    with (
        open_csv(paths["discharge"]) as ds,
        open_csv(paths["radiology"]) as rr,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("Writing MIMIC-IV-Note", total=n_batches)
        ds.write(header)
        rr.write(header)
        for batch in _batches(adm):
            notes = _plan(batch, cfg, rng, mimic_iv=True)
            day = notes.chartdate.astype("datetime64[s]")
            when = np.where(np.isnat(notes.charttime), day, notes.charttime)
            order = np.lexsort((when, notes.subject))
            ct = _fmt(when, "s")
            st = _fmt(when + np.timedelta64(5 * 3600, "s"), "s")
            seq: dict[tuple[int, str], int] = {}
            for i in order.tolist():
                if notes.text[i] is None or not ct[i]:
                    continue
                discharge = notes.category[i] == DISCHARGE
                addendum = notes.description[i] == "Addendum"
                kind = ("AD" if addendum else "DS") if discharge else ("AR" if addendum else "RR")
                key = (int(notes.subject[i]), "DS" if discharge else "RR")
                seq[key] = seq.get(key, 0) + 1
                hadm = notes.hadm[i]
                line = (
                    f"{notes.subject[i]}-{kind}-{seq[key]},{notes.subject[i]},{hadm if hadm >= 0 else ''},"
                    f"{kind},{seq[key]},{ct[i]},{st[i]},{quote(notes.text[i])}\n"
                )
                (ds if discharge else rr).write(line)
                counts["discharge" if discharge else "radiology"] += 1
            bar.update(task, advance=1)
    return paths, sum(counts.values())
