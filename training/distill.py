"""Distil a fine-tuned teacher into a smaller student that serves unchanged (same notestream.json).

The student learns from the labels and from the teacher's chunk logits (knowledge distillation,
Hinton et al. 2015, for one logit): ``alpha * BCE(s, y) + (1 - alpha) * T^2 * BCE(sigmoid(s / T),
sigmoid(t / T))`` with ``s`` the student's logit, ``t`` the teacher's and ``T`` the temperature. The
teacher's logits are computed once, before training, on the same prepared chunk file.

Students (the ClinicalNoteBERT shapes against a BERT-base teacher):

- ``small``: the teacher's width, 6 layers; by default initialised from the teacher (embeddings,
  pooler, head and evenly spaced layers: 0, 2, 4, ... of 12), as DistilBERT is;
- ``tiny``: 4 layers, 312 wide, 12 heads, 1,200 intermediate; initialised at random (no teacher layer
  has its width), embeddings included.

``layers``/``hidden``/``heads``/``intermediate`` override a preset (a student for a teacher that is not
BERT-base). The student keeps the teacher's tokenizer, maximum length, cleaning, chunking, window, task
and ``c``; its threshold and metrics are its own (from ``val_csv``, as ``finetune`` does).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from notestream.training.chunk_files import read_chunks
from notestream.training.errors import TrainRunError
from notestream.training.finetune import _ChunkDataset, _Collator
from notestream.training.run_config import DistillConfig
from notestream.training.trainer_args import trainer_arguments

STUDENTS: dict[str, dict[str, int | None]] = {
    "small": {"layers": 6, "hidden": None, "heads": None, "intermediate": None},
    "tiny": {"layers": 4, "hidden": 312, "heads": 12, "intermediate": 1200},
}


def student_shape(teacher_config: Any, cfg: DistillConfig) -> dict[str, int]:
    """Layers, width, heads and intermediate size of the student.

    The intermediate (feed-forward) size keeps its width's ratio: the preset's (tiny: 1,200 / 312)
    when the preset names one, else the teacher's, unless ``cfg.intermediate`` says otherwise.

    >>> from types import SimpleNamespace
    >>> base = SimpleNamespace(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    >>> student_shape(base, DistillConfig(size="small")), student_shape(base, DistillConfig(size="tiny"))
    ({'layers': 6, 'hidden': 768, 'heads': 12, 'intermediate': 3072}, {'layers': 4, 'hidden': 312, 'heads': 12, 'intermediate': 1200})
    >>> student_shape(base, DistillConfig(size="tiny", hidden=156, heads=6))["intermediate"]
    600
    """
    if cfg.size not in STUDENTS:
        raise TrainRunError(f"Unknown student size {cfg.size!r}; use one of {', '.join(STUDENTS)}.")
    preset = STUDENTS[cfg.size]
    hidden = cfg.hidden or preset["hidden"] or int(teacher_config.hidden_size)
    if preset["intermediate"] and preset["hidden"]:
        ratio = preset["intermediate"] / preset["hidden"]
    else:
        ratio = int(teacher_config.intermediate_size) / int(teacher_config.hidden_size)
    shape = {
        "layers": cfg.layers or preset["layers"] or int(teacher_config.num_hidden_layers),
        "hidden": hidden,
        "heads": cfg.heads or preset["heads"] or int(teacher_config.num_attention_heads),
        "intermediate": cfg.intermediate or round(hidden * ratio),
    }
    if shape["hidden"] % shape["heads"]:
        raise TrainRunError(f"A student {shape['hidden']} wide cannot have {shape['heads']} attention heads.")
    return shape


def build_student(teacher: Any, cfg: DistillConfig) -> Any:
    """A one-logit BERT classifier of the student's shape, initialised from ``teacher`` where it can be."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    shape = student_shape(teacher.config, cfg)
    config = BertConfig(
        **{
            **{k: v for k, v in teacher.config.to_dict().items() if k not in ("id2label", "label2id")},
            "num_hidden_layers": shape["layers"],
            "hidden_size": shape["hidden"],
            "num_attention_heads": shape["heads"],
            "intermediate_size": shape["intermediate"],
            "num_labels": 1,
        }
    )
    torch.manual_seed(cfg.seed)
    student = BertForSequenceClassification(config)
    if cfg.init_from_teacher and shape["hidden"] == teacher.config.hidden_size:
        t_layers = int(teacher.config.num_hidden_layers)
        picked = [i * t_layers // shape["layers"] for i in range(shape["layers"])]
        teacher_state = teacher.state_dict()
        state = {}
        for name, value in student.state_dict().items():
            source = name
            if ".encoder.layer." in name:
                prefix, rest = name.split(".encoder.layer.", 1)
                index, tail = rest.split(".", 1)
                source = f"{prefix}.encoder.layer.{picked[int(index)]}.{tail}"
            got = teacher_state.get(source)
            state[name] = got.clone() if got is not None and got.shape == value.shape else value
        student.load_state_dict(state)
    return student


def distill_loss(
    student_logits: Any, labels: Any, teacher_logits: Any, *, alpha: float, temperature: float
) -> Any:
    """``alpha * BCE(s, y) + (1 - alpha) * T^2 * BCE(sigmoid(s/T), sigmoid(t/T))`` (mean over chunks)."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    hard = bce(student_logits, labels)
    soft = bce(student_logits / temperature, torch.sigmoid(teacher_logits / temperature))
    return alpha * hard + (1.0 - alpha) * temperature**2 * soft


def teacher_logits(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch: int) -> np.ndarray:
    """The teacher's logit of each chunk (the positive class's log-odds for a two-logit head)."""
    import torch

    out = np.zeros(len(texts), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            enc = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**enc).logits.float()
            one = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
            out[rows] = one.numpy()
    return out


class _DistillDataset(_ChunkDataset):
    def __init__(self, frame: Any, logits: np.ndarray) -> None:
        super().__init__(frame)
        self.teacher = logits.tolist()

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**super().__getitem__(i), "teacher": self.teacher[i]}


class _DistillCollator(_Collator):
    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        enc = super().__call__(items)
        enc["teacher_logits"] = torch.tensor([item["teacher"] for item in items], dtype=torch.float32)
        return enc


def _trainer_class(alpha: float, temperature: float) -> Any:
    from transformers import Trainer

    class DistillTrainer(Trainer):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            labels = inputs.pop("labels").float()
            teacher = inputs.pop("teacher_logits").float()
            outputs = model(**inputs)
            loss = distill_loss(
                outputs.logits[:, 0].float(), labels, teacher, alpha=alpha, temperature=temperature
            )
            return (loss, outputs) if return_outputs else loss

    return DistillTrainer


def distill(
    train_csv: str | Path,
    val_csv: str | Path | None,
    teacher_dir: str | Path,
    out_dir: str | Path,
    *,
    config: DistillConfig | None = None,
) -> Path:
    """Train a student of ``teacher_dir`` on ``train_csv`` and write a servable model folder to ``out_dir``."""
    from transformers.utils import logging as hf_logging

    from notestream.models.checkpoint import load_model_folder, save_model_folder
    from notestream.models.fingerprint import model_fingerprint
    from notestream.models.spec import ModelSpec

    cfg = config or DistillConfig()
    if not 0.0 <= cfg.alpha <= 1.0 or cfg.temperature <= 0:
        raise TrainRunError("alpha must be between 0 and 1 and the temperature positive.")
    if ModelSpec.read(teacher_dir).quantization != "none":
        raise TrainRunError(f"{teacher_dir} is quantized; distil from its float source folder.")
    teacher = load_model_folder(teacher_dir)
    spec = teacher.spec
    train = read_chunks(train_csv)
    if train.empty or train["Label"].nunique() < 2:
        raise TrainRunError(f"{train_csv} needs chunks of both labels to train a student.")
    student = build_student(teacher.model, cfg)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (student, teacher.model)]
    if sizes[0] > sizes[1]:
        shape = student_shape(teacher.model.config, cfg)
        raise TrainRunError(
            f"The {cfg.size} student ({shape['layers']} layers x {shape['hidden']}, {sizes[0]:,} parameters) "
            f"would be larger than its teacher ({sizes[1]:,}); the presets are for a BERT-base teacher: "
            "give --layers/--hidden/--heads for a smaller one."
        )
    logits = teacher_logits(
        teacher.model,
        teacher.tokenizer,
        train["TEXT"].astype(str).tolist(),
        spec.max_length,
        cfg.eval_batch_size,
    )
    out = Path(out_dir)
    args = trainer_arguments(cfg, out / "checkpoints", save_strategy="no", logging_steps=50)
    hf_logging.set_verbosity_error()
    trainer = _trainer_class(cfg.alpha, cfg.temperature)(
        model=student,
        args=args,
        train_dataset=_DistillDataset(train, logits),
        data_collator=_DistillCollator(teacher.tokenizer, spec.max_length),
    )
    try:
        result = trainer.train()
    except (RuntimeError, ValueError) as exc:
        raise TrainRunError(f"Distillation failed: {exc}") from exc
    if not trainer.is_world_process_zero():
        return out
    provenance = {
        **spec.provenance,
        "distilled_from": model_fingerprint(teacher_dir),
        "student": student_shape(student.config, cfg) | {"size": cfg.size},
        "distill": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "train_file": str(train_csv),
        "train_loss": float(result.training_loss) if math.isfinite(result.training_loss) else None,
        "steps": int(result.global_step),
    }
    student_spec = spec.model_copy(update={"provenance": provenance, "threshold": None, "metrics": {}})
    trainer.model.eval()  # type: ignore[union-attr]
    save_model_folder(trainer.model.to("cpu"), teacher.tokenizer, student_spec, out)  # type: ignore[union-attr]
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    if val_csv is not None:
        from notestream.training.evaluate import calibrate

        calibrate(out, val_csv, batch_size=cfg.eval_batch_size)
    return out
