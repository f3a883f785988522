"""Text encoders in PyTorch, as the `gpu-torch` target serves them: a Hugging Face checkpoint plus the
head its ONNX graph would have had, run over ragged rows in length buckets.

Used inside Triton by `samo/triton/backends/torch_encoder.py` and by the exporter, which validates the
saved checkpoint through this same code before writing the model folder.

Heads (the output the ONNX targets compute, so the gateway reads both the same way):
- `logits`: a sequence classifier's logits; the card's activation turns them into scores;
- `mean-pooled`: token states averaged under the mask and L2-normalized (the sentence embedder);
- `prototypes`: `mean-pooled`, then sigmoid(scale * (cos(text, prototype) - bias)) per label
  (the zero-shot emotion default; prototypes, bias and scale in `prototypes.safetensors`).

Bucketing: rows are stripped of their padding, sorted by length and cut into sub-batches (at most
`max_rows` rows and `max_tokens` padded tokens each); each sub-batch is padded to the next multiple of
`multiple` tokens, so a few shapes repeat. With `static_rows` the row count is also rounded up to a
power of two (dummy rows, dropped after the run), which a compiled model (CUDA graphs) needs to reuse
its graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

Head = Literal["logits", "mean-pooled", "prototypes"]
Precision = Literal["fp16", "bf16"]
CompileMode = Literal["off", "reduce-overhead", "max-autotune"]

HEADS: tuple[Head, ...] = ("logits", "mean-pooled", "prototypes")
PRECISIONS: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES: tuple[CompileMode, ...] = ("off", "reduce-overhead", "max-autotune")
PROTOTYPES_FILE = "prototypes.safetensors"


class TorchEncoder(torch.nn.Module):
    """A Hugging Face encoder and its head: named int64 inputs in, one float32 vector per row out."""

    # Buffers, set by `register_buffer`: None unless the head is `prototypes`.
    prototypes: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(
        self,
        model: torch.nn.Module,
        head: Head,
        *,
        prototypes: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {', '.join(HEADS)}, got {head!r}")
        if head == "prototypes" and (prototypes is None or bias is None):
            raise ValueError("the `prototypes` head needs prototypes and bias")
        self.model = model
        self.head = head
        self.scale = scale
        # Kept in fp32 whatever precision the encoder runs in: the head is tiny and sets the scores.
        self.register_buffer("prototypes", prototypes.float() if prototypes is not None else None)
        self.register_buffer("bias", bias.float() if bias is not None else None)

    def place(self, device: torch.device, dtype: torch.dtype) -> TorchEncoder:
        """The encoder on `device` in `dtype`; the head's buffers on `device` in fp32."""
        self.to(device)
        self.model.to(dtype=dtype)
        return self.eval()

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.head == "logits":
            return self.model(**inputs).logits.float()
        hidden = self.model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        embeddings = F.normalize(pooled, dim=-1)
        if self.head == "mean-pooled":
            return embeddings
        prototypes, bias = self.prototypes, self.bias
        assert prototypes is not None and bias is not None  # the `prototypes` head has both (__init__)
        return torch.sigmoid(self.scale * (embeddings @ prototypes.T - bias))


def save_prototypes(folder: Path, prototypes: torch.Tensor, bias: torch.Tensor, scale: float) -> Path:
    from safetensors.torch import save_file

    path = folder / PROTOTYPES_FILE
    tensors = {
        "prototypes": prototypes.detach().float().contiguous(),
        "bias": bias.detach().float().contiguous(),
        "scale": torch.tensor(float(scale)),
    }
    save_file(tensors, str(path))
    return path


def load_torch_encoder(folder: Path, head: Head) -> TorchEncoder:
    """The checkpoint `save_pretrained` wrote into `folder`, in fp32 on the CPU, with its head."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    if head not in HEADS:
        raise ValueError(f"`head` must be one of {', '.join(HEADS)}, got {head!r}")
    model_class = AutoModelForSequenceClassification if head == "logits" else AutoModel
    model = model_class.from_pretrained(str(folder)).eval()
    if head != "prototypes":
        return TorchEncoder(model, head).eval()
    from safetensors.torch import load_file

    tensors = load_file(str(folder / PROTOTYPES_FILE))
    return TorchEncoder(
        model,
        head,
        prototypes=tensors["prototypes"],
        bias=tensors["bias"],
        scale=float(tensors["scale"]),
    ).eval()


@dataclass(frozen=True)
class Bucketing:
    """How a dynamic batch is cut and padded. `max_length` caps the padded width (position embeddings)."""

    multiple: int = 16
    max_rows: int = 64
    max_tokens: int = 16384
    max_length: int = 512
    static_rows: bool = False

    def __post_init__(self) -> None:
        for name in ("multiple", "max_rows", "max_tokens", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")

    def width(self, longest: int) -> int:
        """The padded length of a sub-batch whose longest row has `longest` tokens."""
        rounded = -(-longest // self.multiple) * self.multiple
        return min(rounded, max(self.max_length, longest))

    def rows(self, count: int) -> int:
        """The padded row count: `count`, or with `static_rows` the next power of two (at most `max_rows`)."""
        if not self.static_rows:
            return count
        return min(1 << (count - 1).bit_length(), max(self.max_rows, count))


Rows = dict[str, list[torch.Tensor]]
"""Per input name, one 1-D int64 tensor per text, without padding."""


class BucketedRunner:
    """Runs a `TorchEncoder` over ragged rows: sorted by length, in bucketed sub-batches, on one device."""

    def __init__(
        self,
        encoder: TorchEncoder,
        *,
        input_names: Sequence[str],
        padding_mask: str,
        pad_values: Mapping[str, int],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        bucketing: Bucketing = Bucketing(),
        compile_mode: CompileMode = "off",
    ) -> None:
        if padding_mask not in input_names:
            raise ValueError(f"padding mask `{padding_mask}` is not an input: {', '.join(input_names)}")
        self.input_names = tuple(input_names)
        self.padding_mask = padding_mask
        self.pad_values = dict(pad_values)
        self.device = device
        self.dtype = dtype
        self.encoder = encoder.place(device, dtype)
        self.bucketing = bucketing
        self.shapes: dict[tuple[int, int], int] = {}
        """Sub-batches run per padded (rows, width) shape."""
        self.forward = self.encoder
        self.compiled = compile_mode != "off"
        if self.compiled:
            # One graph per shape: every (rows, width) bucket must fit in dynamo's cache.
            import torch._dynamo

            widths = -(-bucketing.max_length // bucketing.multiple) + 1
            row_counts = bucketing.max_rows.bit_length() + 1
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, widths * row_counts)
            config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, widths * row_counts)
            self.forward = torch.compile(self.encoder, mode=compile_mode, dynamic=False)

    def rows_of(self, inputs: Mapping[str, torch.Tensor]) -> Rows:
        """One request's [texts, tokens] inputs (padded within the request) as rows without padding."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"input `{missing[0]}` is missing")
        shapes = {tuple(inputs[name].shape) for name in self.input_names}
        if len(shapes) != 1 or len(shape := next(iter(shapes))) != 2 or 0 in shape:
            raise ValueError(
                f"inputs {', '.join(self.input_names)} must share one non-empty [texts, tokens] shape, "
                f"got {sorted(shapes)}"
            )
        mask = inputs[self.padding_mask]
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"`{self.padding_mask}` must hold only 0 and 1")
        lengths = mask.sum(dim=1).clamp(min=1).tolist()
        return {
            name: [inputs[name][row, :length] for row, length in enumerate(lengths)]
            for name in self.input_names
        }

    def run(self, rows: Rows) -> torch.Tensor:
        """One output vector per row, [texts, output width] float32 on the CPU, in the order of `rows`."""
        lengths = torch.tensor([row.numel() for row in rows[self.padding_mask]], dtype=torch.int64)
        if not len(lengths):
            raise ValueError("no rows to run")
        order = torch.argsort(lengths, stable=True).tolist()
        outputs = []
        start = 0
        with torch.inference_mode():
            while start < len(order):
                stop = self._sub_batch_end(lengths, order, start)
                outputs.append(self._run_chunk(rows, lengths, order[start:stop]))
                start = stop
            in_sorted_order = torch.cat(outputs).cpu()
            result = torch.empty_like(in_sorted_order)
            result[torch.tensor(order)] = in_sorted_order
        return result

    def _sub_batch_end(self, lengths: torch.Tensor, order: list[int], start: int) -> int:
        limits = self.bucketing
        stop = start + 1
        while stop < len(order) and stop - start < limits.max_rows:
            width = limits.width(int(lengths[order[stop]]))
            if limits.rows(stop - start + 1) * width > limits.max_tokens:
                break
            stop += 1
        return stop

    def _run_chunk(self, rows: Rows, lengths: torch.Tensor, chunk: list[int]) -> torch.Tensor:
        width = self.bucketing.width(int(lengths[chunk[-1]]))
        count = self.bucketing.rows(len(chunk))
        self.shapes[(count, width)] = self.shapes.get((count, width), 0) + 1
        feed = {}
        for name in self.input_names:
            batch = torch.full((count, width), self.pad_values.get(name, 0), dtype=torch.int64)
            for i, row in enumerate(chunk):
                values = rows[name][row]
                batch[i, : values.numel()] = values
            if name == self.padding_mask and count > len(chunk):
                batch[len(chunk) :, 0] = 1  # dummy rows attend to one token, so nothing divides by zero
            feed[name] = batch.to(self.device, non_blocking=True)
        if self.compiled:
            # CUDA-graph outputs live in a pool the next replay overwrites: keep a copy.
            torch.compiler.cudagraph_mark_step_begin()
            return self.forward(**feed)[: len(chunk)].clone()
        return self.forward(**feed)[: len(chunk)]


def rows_from_batch(batch: Mapping[str, torch.Tensor], padding_mask: str) -> Rows:
    """Rows of a padded [texts, tokens] batch (as a tokenizer returns it), for `BucketedRunner.run`."""
    lengths = batch[padding_mask].sum(dim=1).clamp(min=1).tolist()
    return {
        name: [tensor[row, :length] for row, length in enumerate(lengths)] for name, tensor in batch.items()
    }
