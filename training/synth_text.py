"""Sentence pools and note headers for synthetic MIMIC notes (see :mod:`notestream.training.synth`).

Notes are built from pools of clinical-sounding sentences drawn once per seed: a pool per note
category, plus small pools of *marker* sentences that carry the planted signal (readmission risk,
protective context, mortality, long stay). A note body is a run of pool sentences chosen by numpy, so
that millions of notes are written in minutes. Sentences carry de-identification placeholders in the
MIMIC-III style (``[**2151-7-16**]``, ``[**Hospital1 18**]``); :func:`to_mimic_iv` rewrites them as
MIMIC-IV-Note's ``___``.

>>> to_mimic_iv("Seen at [**Hospital1 18**] on [**2151-7-16**].")
'Seen at ___ on ___.'
>>> pools = SentencePools.build(seed=3)
>>> pools.text([pools.start["ECG"], pools.marker_start["risk"]]).count(" ") > 2
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: (category as written in NOTEEVENTS, notes per admission-day, mean words, has CHARTTIME, descriptions)
CATEGORIES: list[tuple[str, float, int, bool, tuple[str, ...]]] = [
    ("Nursing/other", 1.39, 230, True, ("Report",)),
    (
        "Radiology",
        0.64,
        260,
        True,
        ("CHEST (PORTABLE AP)", "CT HEAD W/O CONTRAST", "CHEST (PA & LAT)", "ABDOMEN U.S. (COMPLETE STUDY)"),
    ),
    ("Nursing", 0.37, 480, True, ("Nursing Progress Note", "Generic Note", "Nursing Transfer Note")),
    (
        "Physician ",
        0.24,
        1100,
        True,
        ("Physician Resident Progress Note", "Intensivist Note", "Physician Attending Admission Note"),
    ),
    ("ECG", 0.23, 30, False, ("Report",)),
    ("Echo", 0.058, 420, False, ("Report",)),
    ("Respiratory ", 0.054, 190, True, ("Respiratory Care Shift Note",)),
    ("Nutrition", 0.016, 420, True, ("Nutrition Follow-up", "Nutrition Assessment")),
    ("General", 0.014, 300, True, ("Generic Note",)),
    ("Rehab Services", 0.009, 520, True, ("Physical Therapy Evaluation",)),
    ("Social Work", 0.0044, 360, True, ("Social Work Progress Note",)),
    ("Case Management ", 0.0016, 210, True, ("Case Management Initial Assessment",)),
    ("Pharmacy", 0.00017, 320, True, ("Pharmacy Note",)),
    ("Consult", 0.00017, 800, True, ("Consult Note",)),
]
DISCHARGE = "Discharge summary"
DISCHARGE_WORDS = 1650

_SUBJ = [
    "Patient",
    "Pt",
    "He",
    "She",
    "The patient",
    "Family",
    "Nursing",
    "Team",
    "Cardiology",
    "Renal",
    "Neuro",
]
_VERB = [
    "reports",
    "denies",
    "was given",
    "was started on",
    "tolerated",
    "remains on",
    "was weaned from",
    "complains of",
    "was noted to have",
    "will continue",
    "refused",
    "received",
]
_OBJ = [
    "chest pain",
    "shortness of breath",
    "lasix 40 mg IV",
    "metoprolol 25 mg PO BID",
    "heparin gtt",
    "nausea",
    "abdominal pain",
    "a temperature of 101.2",
    "hypotension to the 80s",
    "levophed",
    "a foley catheter",
    "2L nasal cannula",
    "insulin sliding scale",
    "vancomycin 1 gm q12h",
    "PRBC 2 units",
    "tube feeds at goal",
    "ativan 0.5 mg",
    "morphine 2 mg IV prn",
    "a CXR",
    "incentive spirometry",
    "K repletion",
    "pressure support 10/5",
    "clear liquids",
]
_TAIL = [
    "overnight",
    "this AM",
    "without complications",
    "per team",
    "with good effect",
    "as ordered",
    "on [**2151-7-16**]",
    "at [**Hospital1 18**]",
    "per Dr. [**Last Name (NamePattern1) 952**]",
    "- will monitor",
    "since admission",
    "after discussion with [**Known lastname **]",
    "",
]
_VITALS = [
    "T 98.6 HR 88 BP 122/68 RR 18 SpO2 97% RA",
    "HR 110s ST, BP 90s/50s",
    "UO 30-50cc/hr",
    "Na 134 K 3.9 Cl 101 HCO3 24 BUN 32 Cr 1.4 Glu 145",
    "WBC 12.3 Hct 29.8 Plt 211",
    "INR 1.3 PTT 35.2",
    "ABG 7.38/42/88",
    "lactate 2.1",
    "FiO2 40% PEEP 5",
]
_HEADERS = {
    "Radiology": [
        "FINAL REPORT",
        "INDICATION:",
        "COMPARISON:",
        "FINDINGS:",
        "IMPRESSION:",
        "Reason: eval for infiltrate",
    ],
    "Nursing/other": ["NPN 7a-7p", "Neuro:", "CV:", "Resp:", "GI/GU:", "ID:", "Social:", "Plan:"],
    "Nursing": ["Assessment:", "Action:", "Response:", "Plan:"],
    "Physician ": [
        "Chief Complaint:",
        "24 Hour Events:",
        "Allergies:",
        "Physical Examination",
        "Labs / Radiology",
        "Assessment and Plan",
    ],
    "ECG": [
        "Sinus rhythm.",
        "Sinus tachycardia.",
        "Atrial fibrillation with rapid ventricular response.",
        "Left axis deviation.",
        "Nonspecific ST-T wave changes.",
        "Since the previous tracing of [**2151-7-16**] no significant change.",
    ],
    "Echo": [
        "PATIENT/TEST INFORMATION:",
        "Conclusions:",
        "The left atrium is mildly dilated.",
        "Left ventricular wall thickness, cavity size and regional/global systolic function are normal (LVEF >55%).",
    ],
}
_DISCHARGE_SECTIONS = [
    "Chief Complaint:",
    "History of Present Illness:",
    "Past Medical History:",
    "Social History:",
    "Physical Exam:",
    "Pertinent Results:",
    "Brief Hospital Course:",
    "Medications on Admission:",
    "Discharge Medications:",
    "Discharge Disposition:",
    "Discharge Diagnosis:",
    "Discharge Condition:",
    "Discharge Instructions:",
    "Followup Instructions:",
]
#: The planted signal. Readmission risk and its opposite, death in hospital, a long stay.
MARKERS: dict[str, list[str]] = {
    "risk": [
        "Pt has had multiple prior admissions for CHF exacerbation this year.",
        "Poor adherence to diuretic regimen at home noted.",
        "Lives alone with limited social support.",
        "Discharged home without services despite PT recommendation.",
        "ESRD on hemodialysis with frequently missed sessions.",
        "Active alcohol use, left AMA previously.",
        "Recurrent aspiration pneumonia, goals not yet addressed.",
        "Unable to afford medications per SW.",
        "Frequent ED visits for dyspnea in the past months.",
        "Brittle diabetes with recurrent DKA.",
    ],
    "protective": [
        "Excellent family support at home.",
        "Adherent to all medications per wife.",
        "Follow up arranged with PCP within one week.",
        "Ambulating independently at baseline.",
        "Symptoms fully resolved prior to discharge.",
        "Elective procedure without complications.",
        "Home services and VNA confirmed.",
        "Understands discharge plan and warning signs.",
    ],
    "death": [
        "Goals of care discussed, family wishes to focus on comfort.",
        "Made CMO after family meeting.",
        "Requiring escalating pressor support despite fluids.",
        "Poor prognosis discussed with HCP.",
        "Multiorgan failure progressing overnight.",
        "DNR/DNI confirmed with family.",
    ],
    "long": [
        "Remains intubated and sedated.",
        "Course complicated by VAP.",
        "Awaiting rehab placement.",
        "Trach and PEG discussed with family.",
        "Failed SBT again today.",
        "Screening for LTAC.",
    ],
}
PLACEHOLDER = re.compile(r"\[\*\*(.*?)\*\*\]")


def to_mimic_iv(text: str) -> str:
    """Rewrite MIMIC-III placeholders as MIMIC-IV-Note's ``___``."""
    return PLACEHOLDER.sub("___", text)


def deid_date(year: int, month: int, day: int) -> str:
    """A MIMIC-III date placeholder: month and day not zero-padded.

    >>> deid_date(2151, 7, 6)
    '[**2151-7-6**]'
    """
    return f"[**{year}-{month}-{day}**]"


@dataclass
class SentencePools:
    """All sentences in one array; ``start``/``size`` give each category's range, ``marker_*`` the
    marker pools'."""

    sentences: np.ndarray
    start: dict[str, int]
    size: dict[str, int]
    marker_start: dict[str, int]
    marker_size: dict[str, int]

    @classmethod
    def build(cls, seed: int, per_category: int = 600, mimic_iv: bool = False) -> SentencePools:
        rng = np.random.default_rng(seed + 7919)
        out: list[str] = []
        start: dict[str, int] = {}
        size: dict[str, int] = {}
        names = [c[0] for c in CATEGORIES] + [DISCHARGE]
        for name in names:
            start[name] = len(out)
            headers = _HEADERS.get(name, _DISCHARGE_SECTIONS if name == DISCHARGE else [])
            for _ in range(per_category):
                out.append(_sentence(rng, headers))
            size[name] = per_category
        marker_start: dict[str, int] = {}
        marker_size: dict[str, int] = {}
        for key, items in MARKERS.items():
            marker_start[key] = len(out)
            marker_size[key] = len(items)
            out.extend(items)
        if mimic_iv:
            out = [to_mimic_iv(s) for s in out]
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        return cls(arr, start, size, marker_start, marker_size)

    def text(self, idx: np.ndarray | list[int]) -> str:
        """Join the sentences at ``idx`` into one note body."""
        return " ".join(self.sentences[np.asarray(idx, dtype=np.int64)].tolist())


def _sentence(rng: np.random.Generator, headers: list[str]) -> str:
    roll = rng.random()
    if headers and roll < 0.12:
        sentence = str(rng.choice(headers))
        return "\n" + sentence + "\n" if sentence.endswith(":") else sentence
    if roll < 0.25:
        sentence = str(rng.choice(_VITALS)) + "."
    elif roll < 0.28:
        sentence = f'Pt states "{rng.choice(["I feel fine", "I want to go home", "it hurts here"])}".'
    else:
        parts = [str(rng.choice(_SUBJ)), str(rng.choice(_VERB)), str(rng.choice(_OBJ))]
        if rng.random() < 0.5:
            parts += ["and", str(rng.choice(_OBJ))]
        tail = str(rng.choice(_TAIL))
        if "2151-7-16" in tail:
            year = int(rng.integers(2100, 2200))
            tail = tail.replace(
                "[**2151-7-16**]", deid_date(year, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
            )
        sentence = " ".join([*parts, tail]).strip() + "."
    if rng.random() < 0.08:
        sentence += "\n"
    return sentence
