"""A model card in Markdown, from a model folder's ``notestream.json`` and ``train evaluate``'s report.

``notestream model card DIR [--report REPORT_DIR]`` writes it: intended use and what the model is
not, data and cohort, metrics at natural prevalence with 95% confidence intervals (and the balanced
reference protocol beside them), calibration, subgroups, the alert policy, how it is served, and known
limitations. Missing parts say so instead of being left out, so a reader sees what was not measured.

>>> card = model_card(ModelSpec(task="readmission", threshold=0.4), None, fingerprint="m@abc")
>>> "not a diagnostic device" in card, "No test report" in card, "m@abc" in card
(True, True, True)
"""

from __future__ import annotations

from typing import Any

from notestream.models.spec import ModelSpec, serving_warning


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(metrics: dict[str, Any], name: str) -> str:
    ci = (metrics.get("ci") or {}).get(name)
    value = _num(metrics.get(name))
    return f"{value} ({_num(ci[0])}-{_num(ci[1])})" if ci else value


def _metrics_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| data | n | prevalence | AUROC (95% CI) | AUPRC (95% CI) | AP (95% CI) | RP80 (95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        cells = [name, str(m.get("n", "n/a")), _num(m.get("prevalence"))]
        cells += [_with_ci(m, k) for k in ("auroc", "auprc", "average_precision", "rp80")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def model_card(spec: ModelSpec, report: dict[str, Any] | None, *, fingerprint: str | None = None) -> str:
    """The Markdown model card of ``spec`` (and ``report``, ``train evaluate``'s report.json, if any)."""
    out: list[str] = [f"# Model card: {fingerprint or spec.task}", ""]
    out += [
        "## Intended use",
        "",
        f"Estimates, from the clinical notes of a hospital admission, the risk of **{spec.label}** "
        f"(task `{spec.task}`), to help a care team decide whom to look at more closely (for example for "
        "discharge planning or follow-up). It ranks and flags admissions; a clinician decides.",
        "",
        "**What it is not:** not a diagnostic device, not a substitute for clinical judgement, and not "
        "validated for individual treatment decisions or for populations other than the one below. Its "
        "scores reflect what the notes say, including their documentation habits and biases.",
        "",
        "## Data and cohort",
        "",
    ]
    data = spec.provenance.get("data_manifest_hash")
    out.append(
        f"- Notes scored: window `{spec.window.kind}`"
        + (f" ({spec.window.value:g})" if spec.window.value is not None else "")
        + f", cleaning `{spec.cleaning}`, chunks of {spec.chunking.size} "
        + ("words" if spec.chunking.kind == "words" else "tokens")
        + f", maximum length {spec.max_length} tokens, aggregation constant c = {spec.c:g}."
    )
    out.append(f"- Training data: dataset manifest `{data}`." if data else "- Training data: not recorded.")
    if report is not None:
        out.append(f"- Test file: `{report.get('test_file')}` ({report.get('protocol', 'as given')}).")
    out += ["", "## Performance", ""]
    if report is None:
        out += ["No test report was given (`--report`): the figures below are from validation only.", ""]
        val = spec.metrics.get("val")
        if val:
            out += _metrics_table([("validation", val)])
    else:
        rows = [
            (
                "test" + (" (natural prevalence)" if report.get("protocol") == "natural" else ""),
                report["model"],
            )
        ]
        if "model_balanced" in report:
            rows.append(("test, balanced (reference protocol)", report["model_balanced"]))
        if "baseline" in report:
            rows.append(("bag-of-words baseline", report["baseline"]))
        out += _metrics_table(rows)
        out += [
            "",
            "Figures at the test set's own prevalence are the ones a deployment meets; the balanced "
            "protocol (50% positives) compares with published results and overstates precision.",
        ]
    out += ["", "## Calibration", ""]
    if spec.calibration is None:
        out.append(
            "No calibrator: `risk` is absent from risk updates; the score is a ranking, not a probability."
        )
    else:
        fitted = spec.calibration.fitted_on
        out.append(
            f"A {spec.calibration.method} calibrator maps the admission score to a probability (`risk`), "
            f"fitted on {fitted.get('n', 'n/a')} validation admissions at prevalence "
            f"{_num(fitted.get('prevalence'))}."
        )
        cal = (report or {}).get("model", {}).get("calibration")
        if cal:
            out.append(
                f"On the test set: Brier score {_num(cal['brier'])}, expected calibration error "
                f"{_num(cal['ece'])} (n={cal['n']})."
            )
        if fitted.get("balanced"):
            out.append(
                "**Warning:** fitted on balanced data, so the risks are at 50% prevalence and overstate "
                "the risk of a real population."
            )
    out += ["", "## Subgroups", ""]
    subgroups = (report or {}).get("subgroups")
    if not subgroups:
        out.append("Not measured (no demographics in the test report).")
    else:
        out += [
            "| attribute | group | n | prevalence | AUROC (95% CI) | flagged |",
            "|---|---|---|---|---|---|",
        ]
        for attribute, groups in subgroups["groups"].items():
            for group, m in groups.items():
                out.append(
                    f"| {attribute} | {group} | {m['n']} | {_num(m['prevalence'])} | {_with_ci(m, 'auroc')} "
                    f"| {'**yes**' if m['flag'] else ''} |"
                )
        flagged = subgroups.get("flagged") or []
        out += [
            "",
            f"Flagged: AUROC more than {subgroups['margin']:g} below the whole test set's "
            f"({_num(subgroups['overall_auroc'])}) in a group with at least {subgroups['min_n']} admissions "
            f"of each class. {len(flagged)} group(s) flagged.",
        ]
    out += ["", "## Alert policy", ""]
    if spec.alert_policy is not None:
        out.append(f"{spec.alert_policy.describe()}.")
    elif spec.threshold is not None:
        out.append(
            f"Threshold {spec.threshold:g} ({spec.metrics.get('threshold_rule') or 'rule not recorded'})."
        )
    else:
        out.append("No threshold: `notestream alerts` needs one (`--threshold`).")
    out += ["", "## Serving", ""]
    out.append(f"Fingerprint `{fingerprint}`." if fingerprint else "Fingerprint: not computed.")
    warning = serving_warning(spec)
    out.append(warning if warning else "Served as trained: each note is cleaned and chunked as in training.")
    out += [
        "",
        "## Known limitations",
        "",
        "- Trained and validated on one hospital's de-identified notes (MIMIC); other hospitals, note "
        "styles and later years may shift both discrimination and calibration: watch `notestream monitor`'s "
        "drift and calibration before trusting the risks.",
        "- The label is what the records show (e.g. readmission to the same hospital); events elsewhere are missed.",
        "- Early in an admission few notes exist, and scores move as notes arrive.",
        "- Subgroups with few admissions have wide intervals; an unflagged group is not proof of fairness.",
        "",
    ]
    return "\n".join(out)
