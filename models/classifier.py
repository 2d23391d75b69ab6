"""Chunk texts -> probabilities on one device, in length-sorted batches.

The probability of a chunk is the sigmoid of the single logit (the reference head, docs/reference.md §6), or
the softmax probability of class 1 for a two-label head. Inputs are tokenized with [CLS]/[SEP] and
truncated to the model's maximum length keeping the head (docs/reference.md §4). Inference runs in eval mode
under ``torch.inference_mode`` (deterministic), in bf16 autocast on CUDA devices that support it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from notestream.models.batching import plan_batches
from notestream.models.errors import ModelsError, TokenizerError
from notestream.models.thread_copies import thread_copy

if TYPE_CHECKING:
    import torch

    from notestream.models.checkpoint import LoadedModel


class ChunkClassifier:
    """A loaded model on one device that scores chunk texts.

    ``bf16``: None (default) uses bf16 autocast on CUDA devices that support it and float32 elsewhere.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | None = None,
        *,
        bf16: bool | None = None,
        max_batch_size: int = 64,
        max_batch_tokens: int = 32768,
    ) -> None:
        import torch

        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.spec = loaded.spec
        self.max_length = loaded.max_length
        self.num_labels = loaded.num_labels
        self.device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self.model.to(self.device)  # type: ignore[arg-type]
        self.model.eval()
        cuda = self.device.type == "cuda"
        if bf16 is None:
            bf16 = cuda and torch.cuda.is_bf16_supported()
        self.bf16 = bool(bf16)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.row_by_row = self.spec.quantization != "none"
        """Run each chunk alone: dynamic int8 scales a batch's activations together, so a chunk's
        probability would depend on the chunks (and padding) it was batched with; alone, it is the same
        in the stream, offline and in any batch. On CPU at 512 tokens batching gains little anyway."""

    def __repr__(self) -> str:
        return f"ChunkClassifier({self.loaded.path}, device={self.device}, bf16={self.bf16})"

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text with [CLS]/[SEP], truncated to ``max_length`` keeping the head."""
        if not texts:
            return []
        try:
            encoded = thread_copy(self.tokenizer)(  # this thread's own: see notestream.models.thread_copies
                list(texts),
                add_special_tokens=True,
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        except (TypeError, ValueError) as exc:
            raise TokenizerError(f"The tokenizer could not encode {len(texts)} chunk texts: {exc}") from exc
        return [list(ids) for ids in encoded["input_ids"]]

    def forward_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities of one batch of token-id lists, in the given order (padded to the longest)."""
        import torch

        if not batch:
            return np.zeros(0, dtype=np.float64)
        if self.row_by_row and len(batch) > 1:
            return np.concatenate([self.forward_ids([ids]) for ids in batch])
        longest = max(len(ids) for ids in batch)
        if longest > self.max_length:
            raise ModelsError(
                f"A chunk has {longest} tokens but the model takes at most {self.max_length}; "
                "encode chunks with ChunkClassifier.encode, which truncates."
            )
        input_ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        token_type_ids = torch.zeros_like(input_ids)
        with torch.inference_mode(), self._autocast():
            logits = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                token_type_ids=token_type_ids.to(self.device),
            ).logits  # (B, num_labels)
        return self._probabilities(logits)

    def warm_up(self) -> None:
        """Run one short forward pass in the calling thread (torch's per-thread set-up, kernel choice and
        allocator warm-up), so that the first real batch is not slow; raises if the model cannot run."""
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        ids = [
            int(cls_id) if cls_id is not None else self.pad_id,
            int(sep_id) if sep_id is not None else self.pad_id,
        ]
        ChunkClassifier.forward_ids(self, [ids * 8, ids])  # not an override: warm-up is no request

    def _autocast(self) -> torch.autocast:
        import torch

        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        import torch

        logits = logits.float()
        if logits.shape[-1] == 1:
            probs = torch.sigmoid(logits[:, 0])
        elif logits.shape[-1] == 2:
            probs = torch.softmax(logits, dim=-1)[:, 1]
        else:
            raise ModelsError(f"The model returned {logits.shape[-1]} logits per chunk; expected 1 or 2.")
        return probs.cpu().numpy().astype(np.float64)

    def predict_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities of token-id lists, in input order, in the batches the engine's rule plans
        (:func:`notestream.models.batching.plan_batches`)."""
        out = np.full(len(ids), np.nan, dtype=np.float64)
        for group in plan_batches(
            [len(x) for x in ids], max_batch_size=self.max_batch_size, max_batch_tokens=self.max_batch_tokens
        ):
            probs = self.forward_ids([ids[i] for i in group])
            if len(probs) != len(group):
                raise ModelsError(f"The model returned {len(probs)} outputs for {len(group)} chunks.")
            out[group] = probs
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities of chunk texts, in input order."""
        return self.predict_ids(self.encode(texts))
