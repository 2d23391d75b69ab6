"""The model-training commands of `notestream train` (pretrain, finetune, distill, evaluate, baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from notestream.training.errors import TrainRunError
from notestream.training.run_config import DistillConfig, FinetuneConfig, PretrainConfig


def _data_file(data: Path | None, given: Path | None, name: str, *, required: bool = True) -> Path | None:
    if given is not None:
        return given
    if data is not None and (data / name).is_file():
        return data / name
    if required:
        raise TrainRunError(
            f"No {name}: pass --data DIR (a `notestream train prepare` output) or the file itself."
        )
    return None


def pretrain_cmd(
    out: Path = typer.Option(..., "--out", help="Folder for the pre-trained BERT."),
    data: Path | None = typer.Option(
        None, "--data", help="Prepared dataset: its training admissions' notes."
    ),
    corpus: Path | None = typer.Option(None, "--corpus", help="A ready corpus (sentence per line)."),
    mimic_iii: Path | None = typer.Option(None, "--mimic-iii", help="All notes of a MIMIC-III folder..."),
    mimic_iv: Path | None = typer.Option(None, "--mimic-iv", help="...or of a MIMIC-IV folder..."),
    exclude: Path | None = typer.Option(
        None, "--exclude", help="...less the val/test admissions of this dataset."
    ),
    max_notes: int | None = typer.Option(None, "--max-notes", help="Stop the MIMIC corpus after N notes."),
    base_model: Path | None = typer.Option(
        None, "--base-model", help="Local BERT to continue (else a fresh one)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
    epochs: float = typer.Option(PretrainConfig.epochs, "--epochs"),
    batch_size: int = typer.Option(PretrainConfig.batch_size, "--batch-size"),
    lr: float = typer.Option(PretrainConfig.lr, "--lr"),
    max_length: int = typer.Option(
        PretrainConfig.max_length, "--max-length", help="Tokens per example (the paper: 128 then 512)."
    ),
    hidden: int = typer.Option(PretrainConfig.hidden, "--hidden", help="Fresh model: hidden size."),
    layers: int = typer.Option(PretrainConfig.layers, "--layers", help="Fresh model: layers."),
    heads: int = typer.Option(PretrainConfig.heads, "--heads", help="Fresh model: attention heads."),
    vocab_size: int = typer.Option(
        PretrainConfig.vocab_size, "--vocab-size", help="Fresh model: WordPiece vocabulary size."
    ),
    dupe_factor: int = typer.Option(
        PretrainConfig.dupe_factor,
        "--dupe-factor",
        min=1,
        help="Passes over the corpus with new masks/pairs (the reference: 3).",
    ),
    buffer_docs: int = typer.Option(
        PretrainConfig.buffer_docs,
        "--buffer-docs",
        min=2,
        help="Notes in memory while pairing; random NSP B comes from them.",
    ),
    seed: int = typer.Option(
        PretrainConfig.seed, "--seed", help="Seed of the pairs, the model and the training order."
    ),
) -> None:
    """Masked-LM + next-sentence pre-training on clinical notes (evaluation admissions left out)."""
    from notestream.training.pretrain import corpus_from_dataset, corpus_from_mimic, pretrain

    out.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        corpus = out / "corpus.txt"
        if data is not None:
            corpus_from_dataset(data, corpus)
        elif mimic_iii is not None or mimic_iv is not None:
            import pandas as pd

            from notestream.training.mimic import Source

            held_out: set[int] = set()
            for name in ("val.csv", "test.csv"):
                if exclude is not None and (exclude / name).is_file():
                    held_out |= set(pd.read_csv(exclude / name, usecols=["ID"])["ID"].astype(int))
            if exclude is None:
                typer.echo("warning: no --exclude dataset; no admission is held out of the corpus", err=True)
            source = Source.open(mimic_iii=mimic_iii, mimic_iv=mimic_iv)
            corpus_from_mimic(source, corpus, exclude_hadm=held_out, max_notes=max_notes)
        else:
            raise TrainRunError("Give --data DIR, --corpus FILE or --mimic-iii/--mimic-iv DIR.")
    config = PretrainConfig(
        max_length=max_length,
        batch_size=batch_size,
        lr=lr,
        epochs=epochs,
        max_steps=max_steps,
        vocab_size=vocab_size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        dupe_factor=dupe_factor,
        buffer_docs=buffer_docs,
        seed=seed,
    )
    typer.echo(json.dumps({"model": str(pretrain(corpus, out, base_model, config=config))}))


def finetune_cmd(
    out: Path = typer.Option(..., "--out", help="Model folder to write (served by the worker unchanged)."),
    data: Path | None = typer.Option(None, "--data", help="Prepared dataset with train.csv and val.csv."),
    train: Path | None = typer.Option(None, "--train", help="Training chunks (ID, TEXT, Label)."),
    val: Path | None = typer.Option(None, "--val", help="Validation chunks: metrics and threshold."),
    base_model: Path | None = typer.Option(
        None, "--base-model", help="Local BERT folder (else a fresh small one)."
    ),
    epochs: float = typer.Option(FinetuneConfig.epochs, "--epochs"),
    batch_size: int = typer.Option(FinetuneConfig.batch_size, "--batch-size", help="Per device."),
    lr: float = typer.Option(FinetuneConfig.lr, "--lr"),
    warmup: float = typer.Option(FinetuneConfig.warmup, "--warmup", help="Warm-up share of the steps."),
    weight_decay: float = typer.Option(FinetuneConfig.weight_decay, "--weight-decay"),
    grad_accum: int = typer.Option(
        FinetuneConfig.grad_accum, "--grad-accum", help="Gradient accumulation steps."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    max_length: int = typer.Option(FinetuneConfig.max_length, "--max-length"),
    seed: int = typer.Option(FinetuneConfig.seed, "--seed"),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in OUT."),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="Default: on for GPUs that support it."),
) -> None:
    """Fine-tune a readmission (or other task) chunk classifier; several GPUs via torchrun."""
    from notestream.training.finetune import finetune, fresh_base

    train_csv = _data_file(data, train, "train.csv")
    assert train_csv is not None
    val_csv = _data_file(data, val, "val.csv", required=False)
    if base_model is None:
        base_model = fresh_base(train_csv, out / "base", max_length=max_length)
    config = FinetuneConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        grad_accum=grad_accum,
        max_steps=max_steps,
        max_length=max_length,
        seed=seed,
        save_steps=save_steps,
        resume=resume,
        bf16=bf16,
    )
    typer.echo(json.dumps({"model": str(finetune(train_csv, val_csv, base_model, out, config=config))}))


def distill_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="The fine-tuned (float) model folder to distil."),
    out: Path = typer.Option(
        ..., "--out", help="Student model folder to write (served by the worker unchanged)."
    ),
    data: Path | None = typer.Option(None, "--data", help="Prepared dataset with train.csv and val.csv."),
    train: Path | None = typer.Option(None, "--train", help="Training chunks (ID, TEXT, Label)."),
    val: Path | None = typer.Option(None, "--val", help="Validation chunks: metrics and threshold."),
    size: str = typer.Option(
        DistillConfig.size, "--size", help="small (6 layers, teacher's width) | tiny (4 x 312)."
    ),
    layers: int | None = typer.Option(None, "--layers", help="Override the preset's layers."),
    hidden: int | None = typer.Option(None, "--hidden", help="Override the preset's width."),
    heads: int | None = typer.Option(None, "--heads", help="Override the preset's attention heads."),
    init_from_teacher: bool = typer.Option(
        DistillConfig.init_from_teacher,
        "--init-from-teacher/--random-init",
        help="Start from the teacher's layers (same width only).",
    ),
    alpha: float = typer.Option(
        DistillConfig.alpha, "--alpha", help="Weight of the label loss (1 - alpha: the teacher's)."
    ),
    temperature: float = typer.Option(DistillConfig.temperature, "--temperature"),
    epochs: float = typer.Option(DistillConfig.epochs, "--epochs"),
    batch_size: int = typer.Option(DistillConfig.batch_size, "--batch-size"),
    lr: float = typer.Option(DistillConfig.lr, "--lr"),
    max_steps: int | None = typer.Option(DistillConfig.max_steps, "--max-steps"),
    seed: int = typer.Option(DistillConfig.seed, "--seed"),
) -> None:
    """Distil a fine-tuned teacher into a small or tiny student (labels + the teacher's soft targets)."""
    from notestream.training.distill import distill

    train_csv = _data_file(data, train, "train.csv")
    assert train_csv is not None
    val_csv = _data_file(data, val, "val.csv", required=False)
    config = DistillConfig(
        size=size,
        layers=layers,
        hidden=hidden,
        heads=heads,
        init_from_teacher=init_from_teacher,
        alpha=alpha,
        temperature=temperature,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_steps=max_steps,
        seed=seed,
    )
    typer.echo(json.dumps({"model": str(distill(train_csv, val_csv, teacher, out, config=config))}))


def evaluate_cmd(
    out: Path = typer.Option(..., "--out", help="Folder for report.json / metrics.json and the plots."),
    chunk_scores: Path | None = typer.Option(
        None, "--chunk-scores", help="Evaluate a file (ID, Label, pred_score)."
    ),
    model: Path | None = typer.Option(None, "--model", help="Model folder to evaluate."),
    data: Path | None = typer.Option(None, "--data", help="Prepared dataset (test.csv; val.csv; train.csv)."),
    test: Path | None = typer.Option(None, "--test", help="Test chunks (ID, TEXT, Label)."),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate", help="Fit the calibrator and the alert threshold on val.csv."
    ),
    calibration: str = typer.Option("isotonic", "--calibration", help="isotonic | platt | none."),
    policy: str = typer.Option(
        "rp80",
        "--policy",
        help="How the alert threshold is chosen on val.csv: rp80 (the reference) | precision | sensitivity "
        "| budget (with --target: a precision or recall in 0-1, or alerts per 100 admissions).",
    ),
    target: float | None = typer.Option(
        None, "--target", help="Target of --policy precision/sensitivity/budget."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap resamples of the 95% CIs (0: none)."
    ),
    subgroup_margin: float = typer.Option(
        0.05, "--subgroup-margin", help="Flag a subgroup whose AUROC is this much below the whole test set's."
    ),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Bag-of-words beside the model."),
    c: float = typer.Option(2.0, "--c", help="Aggregation constant for --chunk-scores."),
) -> None:
    """Admission-level AUROC, AUPRC, AP and RP80 with 95% CIs, calibration, alert policy, plots, report."""
    from notestream.training.evaluate import evaluate_chunk_scores, evaluate_model

    if calibration not in ("isotonic", "platt", "none"):
        raise TrainRunError(f"--calibration must be isotonic, platt or none, not {calibration!r}.")
    if policy not in ("rp80", "precision", "sensitivity", "budget"):
        raise TrainRunError(f"--policy must be rp80, precision, sensitivity or budget, not {policy!r}.")
    if (policy == "rp80") != (target is None):
        raise TrainRunError(
            "--target goes with --policy precision, sensitivity or budget (and only with them)."
        )

    if chunk_scores is not None:
        typer.echo(json.dumps(evaluate_chunk_scores(chunk_scores, out, c=c)))
        return
    if model is None:
        raise TrainRunError("Give --model DIR (with --data DIR or --test FILE), or --chunk-scores FILE.")
    test_csv = _data_file(data, test, "test.csv")
    assert test_csv is not None
    manifest = data / "manifest.json" if data is not None else None
    balanced = json.loads(manifest.read_text()).get("balanced") if manifest and manifest.is_file() else None
    report = evaluate_model(
        model,
        test_csv,
        out,
        val_csv=_data_file(data, None, "val.csv", required=False) if calibrate else None,
        train_csv=_data_file(data, None, "train.csv", required=False) if baseline else None,
        balanced_test_csv=_data_file(data, None, "test_balanced.csv", required=False)
        if test is None
        else None,
        balanced=balanced,
        method=None if calibration == "none" else calibration,  # type: ignore[arg-type]
        policy=policy,  # type: ignore[arg-type]
        target=target,
        n_boot=bootstrap,
        demographics_csv=_data_file(data, None, "demographics.csv", required=False),
        subgroup_margin=subgroup_margin,
    )
    keys = ("model", "model_balanced", "baseline", "alert_policy")
    typer.echo(json.dumps({k: report[k] for k in keys if k in report}))


def baseline_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset (train.csv, test.csv)."),
    out: Path = typer.Option(..., "--out", help="Folder for report.json and the plots."),
) -> None:
    """The paper's bag-of-words baseline (TF-IDF + logistic regression) on the same split and metrics."""
    from notestream.training.baseline import baseline_report

    typer.echo(json.dumps(baseline_report(data, out)))


def add_training_commands(app: typer.Typer) -> None:
    """Attach pretrain, finetune, evaluate and baseline to ``app``."""
    app.command("pretrain")(pretrain_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("distill")(distill_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("baseline")(baseline_cmd)
