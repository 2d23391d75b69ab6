"""Synthetic MIMIC cohorts in the exact MIMIC-III and MIMIC-IV-Note file formats, with a planted signal.

No real MIMIC text may enter the project, so tests, benchmarks and the demo run on these files. They
follow the real formats (docs/mimic.md): quoted upper-case headers and quoted strings for MIMIC-III, dates
shifted into 2100-2200, discharge summaries (and ECG, Echo) with CHARTDATE only, a few notes without
CHARTTIME, outpatient Radiology/ECG/Echo notes without HADM_ID, ISERROR '1', categories with trailing
spaces ('Physician '), ``[**...**]`` placeholders, ELECTIVE chains, NEWBORN admissions, deaths, notes
dated before the admission, duplicate discharge summaries on one date. MIMIC-IV writes hosp
``admissions.csv.gz`` and note ``discharge.csv.gz`` / ``radiology.csv.gz`` with ``___`` placeholders.

The planted signal: every note of an admission carries marker sentences (``synth_text.MARKERS``) at a
rate that depends on the admission's true labels, computed by the reference rules of
:mod:`notestream.training.labels`: readmission risk markers for positives, protective ones for negatives, death
and long-stay markers. ``signal`` scales the difference (0: no signal; 1: the default, learnable by a
tiny model in minutes).

>>> timeline = synth_admissions(SynthConfig(n_patients=40, seed=1))
>>> timeline.equals(synth_admissions(SynthConfig(n_patients=40, seed=1)))
True
>>> set(timeline["ADMISSION_TYPE"]) <= {"EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"}
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from notestream.training.labels import readmission_labels
from notestream.training.synth_config import SynthConfig
from notestream.training.synth_csv import open_csv, quote

MINUTE = np.timedelta64(60, "s")
DAY_S = 86_400


@dataclass
class SynthSummary:
    """What was written: file paths and counts."""

    files: dict[str, Path] = field(default_factory=dict)
    patients: int = 0
    admissions: int = 0
    notes: int = 0
    cohort_positives: int = 0


def synth_admissions(cfg: SynthConfig, *, mimic_iv: bool = False) -> pd.DataFrame:
    """The admission timeline: one row per admission in a shuffled file order, MIMIC-III column names,
    times as datetimes, plus helper columns READMIT, DIED, LONG (true labels) and DOB, GENDER."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_patients
    newborn = rng.random(n) < 0.13
    n_adm = rng.geometric(1.0 / max(cfg.mean_admissions, 1.0), n)
    n_adm[newborn] = np.minimum(n_adm[newborn], rng.geometric(0.9, int(newborn.sum())))
    pat = np.repeat(np.arange(n), n_adm)
    first = np.r_[0, np.cumsum(n_adm)[:-1]]
    k = np.arange(len(pat)) - np.repeat(first, n_adm)
    m = len(pat)
    types = rng.choice(["EMERGENCY", "ELECTIVE", "URGENT"], size=m, p=[0.80, 0.16, 0.04]).astype(object)
    types[(k == 0) & newborn[pat]] = "NEWBORN"
    is_nb = types == "NEWBORN"
    dur = np.where(is_nb, rng.lognormal(np.log(3.0), 0.6, m), rng.lognormal(np.log(6.0), 0.8, m))
    dur = np.clip(dur, 0.1, 120.0)
    death = rng.random(m) < np.where(is_nb, 0.005, 0.10)
    # A death ends the chain: drop every later admission of that patient.
    cum = np.cumsum(death)
    before = np.r_[0, cum[:-1]] - np.repeat(np.r_[0, cum[np.cumsum(n_adm)[:-1] - 1]], n_adm)
    died_before = before > 0
    keep = ~died_before
    pat, k, types, dur, death = pat[keep], k[keep], types[keep], dur[keep], death[keep]
    m = len(pat)
    gap = np.where(
        rng.random(m) < cfg.readmit_rate, rng.uniform(0.2, 29.5, m), 30.0 + rng.exponential(500.0, m)
    )
    odd = rng.random(m)
    gap = np.where(odd < 0.01, 30.0, np.where(odd < 0.015, -0.1, gap))  # exactly 30 days; overlaps
    start_year = rng.integers(2100, 2185, n)
    start = (start_year - 1970).astype("datetime64[Y]").astype("datetime64[s]") + (
        rng.integers(0, 365 * DAY_S // 60, n) * 60
    ).astype("timedelta64[s]")
    step_s = np.round((dur + gap) * DAY_S / 60) * 60
    new_pat = np.r_[True, pat[1:] != pat[:-1]]
    csum = np.cumsum(step_s)
    base = np.maximum.accumulate(np.where(new_pat, np.arange(m), 0))
    offs = csum - step_s - (csum[base] - step_s[base])
    admit = start[pat] + offs.astype("timedelta64[s]")
    disch = admit + (np.round(dur * DAY_S / 60) * 60).astype("timedelta64[s]")
    hadm = rng.choice(900_000, m, replace=False) + (20_000_000 if mimic_iv else 100_000)
    subject = pat + (10_000_000 if mimic_iv else 100)
    age = np.clip(rng.normal(64, 16, n), 18, 89)
    old = rng.random(n) < 0.05
    dob = (start - (age * 365.25 * DAY_S).astype("timedelta64[s]")).astype("datetime64[D]")
    dob[old] = start[old].astype("datetime64[D]") - np.timedelta64(300 * 365 + 73, "D")
    dob[newborn] = start[newborn].astype("datetime64[D]")
    df = pd.DataFrame(
        {
            "SUBJECT_ID": subject,
            "HADM_ID": hadm,
            "ADMITTIME": admit.astype("datetime64[ns]"),
            "DISCHTIME": disch.astype("datetime64[ns]"),
            "DEATHTIME": pd.Series(disch.astype("datetime64[ns]")).where(death),
            "ADMISSION_TYPE": types,
            "DOB": dob[pat].astype("datetime64[ns]"),
            "GENDER": np.where(rng.random(n) < 0.55, "M", "F")[pat],
            "DUR": dur,
        }
    )
    labels = readmission_labels(
        df[["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE"]]
    )
    df["READMIT"] = df["HADM_ID"].map(dict(zip(labels["HADM_ID"], labels["OUTPUT_LABEL"], strict=True)))
    df["DIED"] = death.astype(int)
    df["LONG"] = (dur > 7).astype(int)
    order = rng.permutation(m)  # real files are not in time order
    return df.iloc[order].reset_index(drop=True)


def _fmt(times: np.ndarray, unit: str = "s") -> np.ndarray:
    """datetime64 -> 'YYYY-MM-DD HH:MM:SS' (unit s) or 'YYYY-MM-DD' (unit D); NaT -> ''."""
    out = np.datetime_as_string(times, unit=unit).astype(object)  # type: ignore[call-overload]
    if unit == "s":
        out = np.array([s.replace("T", " ") for s in out], dtype=object)
    out[np.isnat(times)] = ""
    return out


def _name(out: Path, stem: str, compress: bool) -> Path:
    return out / (stem + (".csv.gz" if compress else ".csv"))


def write_mimic_iii(
    out: str | Path,
    n_patients: int = 500,
    seed: int = 0,
    signal: float = 1.0,
    *,
    readmit_rate: float = 0.25,
    notes_scale: float = 1.0,
    words_scale: float = 1.0,
    compress: bool = False,
    mean_admissions: float = 1.35,
    progress: bool = False,
) -> SynthSummary:
    """Write ADMISSIONS, PATIENTS, DIAGNOSES_ICD and NOTEEVENTS (MIMIC-III v1.4 format) into ``out``."""
    from notestream.training.synth_notes import write_noteevents

    cfg = SynthConfig(
        n_patients, seed, signal, readmit_rate, notes_scale, words_scale, compress, mean_admissions
    )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    adm = synth_admissions(cfg)
    summary = SynthSummary(patients=n_patients, admissions=len(adm))
    summary.files["ADMISSIONS"] = _write_admissions_iii(adm, _name(folder, "ADMISSIONS", compress), cfg)
    summary.files["PATIENTS"] = _write_patients_iii(adm, _name(folder, "PATIENTS", compress))
    summary.files["DIAGNOSES_ICD"] = _write_diagnoses_iii(adm, _name(folder, "DIAGNOSES_ICD", compress), cfg)
    path = _name(folder, "NOTEEVENTS", compress)
    summary.notes = write_noteevents(adm, path, cfg, progress=progress)
    summary.files["NOTEEVENTS"] = path
    cohort = adm[(adm["ADMISSION_TYPE"] != "NEWBORN") & adm["DEATHTIME"].isna()]
    summary.cohort_positives = int(cohort["READMIT"].sum())
    return summary


def write_mimic_iv(
    out: str | Path,
    n_patients: int = 500,
    seed: int = 0,
    signal: float = 1.0,
    *,
    readmit_rate: float = 0.25,
    notes_scale: float = 1.0,
    words_scale: float = 1.0,
    mean_admissions: float = 1.35,
    progress: bool = False,
) -> SynthSummary:
    """Write ``hosp/admissions.csv.gz`` and ``note/discharge.csv.gz`` / ``note/radiology.csv.gz``."""
    from notestream.training.synth_notes import write_mimic_iv_notes

    cfg = SynthConfig(n_patients, seed, signal, readmit_rate, notes_scale, words_scale, True, mean_admissions)
    folder = Path(out)
    (folder / "hosp").mkdir(parents=True, exist_ok=True)
    (folder / "note").mkdir(parents=True, exist_ok=True)
    adm = synth_admissions(cfg, mimic_iv=True)
    rng = np.random.default_rng(seed + 11)
    types = adm["ADMISSION_TYPE"].to_numpy().copy()
    emer = types == "EMERGENCY"
    types[emer] = rng.choice(
        ["EW EMER.", "DIRECT EMER.", "EU OBSERVATION", "OBSERVATION ADMIT"], int(emer.sum())
    )
    types[types == "NEWBORN"] = "OBSERVATION ADMIT"  # MIMIC-IV hosp has no NEWBORN admissions
    adm["ADMISSION_TYPE"] = types
    summary = SynthSummary(patients=n_patients, admissions=len(adm))
    path = folder / "hosp" / "admissions.csv.gz"
    t = {c: _fmt(adm[c].to_numpy(dtype="datetime64[s]")) for c in ("ADMITTIME", "DISCHTIME", "DEATHTIME")}
    insurance, race = _demographics(adm, cfg, ETHNICITIES_IV)
    with open_csv(path) as fh:
        fh.write(
            "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
            "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,"
            "edouttime,hospital_expire_flag\n"
        )
        for i, row in enumerate(adm.to_dict("records")):
            died = int(row["DIED"])
            fh.write(
                f"{row['SUBJECT_ID']},{row['HADM_ID']},{t['ADMITTIME'][i]},{t['DISCHTIME'][i]},{t['DEATHTIME'][i]},"
                f"{row['ADMISSION_TYPE']},P{row['HADM_ID'] % 997:05d},EMERGENCY ROOM,"
                f"{'DIED' if died else 'HOME'},{insurance[i]},ENGLISH,MARRIED,{race[i]},,,{died}\n"
            )
    summary.files["admissions"] = path
    summary.files["patients"] = _write_patients_iv(adm, folder / "hosp" / "patients.csv.gz")
    paths, summary.notes = write_mimic_iv_notes(adm, folder / "note", cfg, progress=progress)
    summary.files.update(paths)
    summary.cohort_positives = int(adm[adm["DEATHTIME"].isna()]["READMIT"].sum())
    return summary


def _write_admissions_iii(adm: pd.DataFrame, path: Path, cfg: SynthConfig) -> Path:
    rng = np.random.default_rng(cfg.seed + 1)
    t = {c: _fmt(adm[c].to_numpy(dtype="datetime64[s]")) for c in ("ADMITTIME", "DISCHTIME", "DEATHTIME")}
    ed_in = adm["ADMITTIME"].to_numpy(dtype="datetime64[s]") - (rng.integers(60, 600, len(adm)) * MINUTE)
    ed_in_s = _fmt(ed_in)
    ed_out_s = _fmt(adm["ADMITTIME"].to_numpy(dtype="datetime64[s]") - 15 * MINUTE)
    diagnoses = [
        "PNEUMONIA",
        "CONGESTIVE HEART FAILURE",
        "SEPSIS",
        "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA",
        "NEWBORN",
        "GI BLEED",
        "S/P FALL",
    ]
    insurance, ethnicity = _demographics(adm, cfg, ETHNICITIES_III)
    with open_csv(path) as fh:
        fh.write(
            '"ROW_ID","SUBJECT_ID","HADM_ID","ADMITTIME","DISCHTIME","DEATHTIME","ADMISSION_TYPE",'
            '"ADMISSION_LOCATION","DISCHARGE_LOCATION","INSURANCE","LANGUAGE","RELIGION","MARITAL_STATUS",'
            '"ETHNICITY","EDREGTIME","EDOUTTIME","DIAGNOSIS","HOSPITAL_EXPIRE_FLAG","HAS_CHARTEVENTS_DATA"\n'
        )
        for i, row in enumerate(adm.to_dict("records")):
            emergency = row["ADMISSION_TYPE"] == "EMERGENCY"
            newborn = row["ADMISSION_TYPE"] == "NEWBORN"
            died = int(row["DIED"])
            fh.write(
                f"{i + 1},{row['SUBJECT_ID']},{row['HADM_ID']},{t['ADMITTIME'][i]},{t['DISCHTIME'][i]},"
                f"{t['DEATHTIME'][i]},{quote(row['ADMISSION_TYPE'])},"
                f"{quote('EMERGENCY ROOM ADMIT' if emergency else 'PHYS REFERRAL/NORMAL DELI')},"
                f"{quote('DEAD/EXPIRED' if died else 'HOME')},{quote(insurance[i])},{quote('' if newborn else 'ENGL')},"
                f"{quote('CATHOLIC')},{quote('' if newborn else 'MARRIED')},{quote(ethnicity[i])},"
                f"{ed_in_s[i] if emergency else ''},{ed_out_s[i] if emergency else ''},"
                f"{quote('NEWBORN' if newborn else diagnoses[row['HADM_ID'] % 6])},{died},1\n"
            )
    return path


INSURANCES = ("Medicare", "Private", "Medicaid", "Government", "Self Pay")
ETHNICITIES_III = (
    "WHITE",
    "BLACK/AFRICAN AMERICAN",
    "HISPANIC OR LATINO",
    "ASIAN",
    "UNKNOWN/NOT SPECIFIED",
    "OTHER",
)
ETHNICITIES_IV = (
    "WHITE",
    "BLACK/AFRICAN AMERICAN",
    "HISPANIC/LATINO - PUERTO RICAN",
    "ASIAN",
    "UNKNOWN",
    "OTHER",
)


def _demographics(
    adm: pd.DataFrame, cfg: SynthConfig, ethnicities: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Insurance per admission and ethnicity per patient (the same for all of a patient's admissions),
    from their own random stream so the other columns stay as they were."""
    rng = np.random.default_rng(cfg.seed + 5)
    insurance = rng.choice(INSURANCES, len(adm), p=[0.5, 0.3, 0.12, 0.05, 0.03])
    subjects = np.unique(adm["SUBJECT_ID"].to_numpy())
    by_subject = dict(
        zip(
            subjects,
            rng.choice(ethnicities, len(subjects), p=[0.65, 0.12, 0.08, 0.05, 0.06, 0.04]),
            strict=True,
        )
    )
    return [str(x) for x in insurance], [str(by_subject[s]) for s in adm["SUBJECT_ID"]]


def _write_patients_iii(adm: pd.DataFrame, path: Path) -> Path:
    pats = (
        adm.sort_values("SUBJECT_ID")
        .groupby("SUBJECT_ID", sort=True)
        .agg(GENDER=("GENDER", "first"), DOB=("DOB", "first"), DOD=("DEATHTIME", "max"))
    )
    dob = _fmt(pats["DOB"].to_numpy(dtype="datetime64[s]"))
    dod = _fmt(pats["DOD"].to_numpy(dtype="datetime64[D]").astype("datetime64[s]"))
    with open_csv(path) as fh:
        fh.write('"ROW_ID","SUBJECT_ID","GENDER","DOB","DOD","DOD_HOSP","DOD_SSN","EXPIRE_FLAG"\n')
        for i, (subject, gender) in enumerate(zip(pats.index, pats["GENDER"], strict=True)):
            flag = int(dod[i] != "")
            fh.write(f"{i + 1},{subject},{quote(gender)},{dob[i]},{dod[i]},{dod[i]},,{flag}\n")
    return path


def _write_patients_iv(adm: pd.DataFrame, path: Path) -> Path:
    """MIMIC-IV hosp/patients: gender, anchor_age (age in anchor_year, the year of the first admission)."""
    first = adm.sort_values(["SUBJECT_ID", "ADMITTIME"]).groupby("SUBJECT_ID", sort=True).first()
    year = first["ADMITTIME"].dt.year
    # whole years (a DOB shifted ~300 years back, MIMIC's over-89 rule, overflows nanosecond arithmetic)
    age = (year - first["DOB"].dt.year).clip(lower=0, upper=91)
    dod = _fmt(first["DEATHTIME"].to_numpy(dtype="datetime64[D]").astype("datetime64[s]"))
    with open_csv(path) as fh:
        fh.write("subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n")
        for i, subject in enumerate(first.index):
            fh.write(
                f"{subject},{first['GENDER'].iloc[i]},{int(age.iloc[i])},{int(year.iloc[i])},2011 - 2013,{dod[i][:10]}\n"
            )
    return path


def _write_diagnoses_iii(adm: pd.DataFrame, path: Path, cfg: SynthConfig) -> Path:
    rng = np.random.default_rng(cfg.seed + 2)
    codes = np.array(
        ["4280", "42731", "5849", "25000", "4019", "5990", "486", "2724", "51881", "V3000", "2859"]
    )
    row_id = 1
    with open_csv(path) as fh:
        fh.write('"ROW_ID","SUBJECT_ID","HADM_ID","SEQ_NUM","ICD9_CODE"\n')
        for row in adm.to_dict("records"):
            n = int(rng.integers(1, 9))
            for seq, code in enumerate(rng.choice(codes, n, replace=False), start=1):
                fh.write(f"{row_id},{row['SUBJECT_ID']},{row['HADM_ID']},{seq},{quote(code)}\n")
                row_id += 1
    return path
