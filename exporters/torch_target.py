"""`--target gpu-torch`: the checkpoint the exporter validated, saved into the version folder, and
checked through the serving code (`samo.torch_encoding`, as `samo/triton/backends/torch_encoder.py`
runs it) before the folder is finished."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samo.contracts.text import INPUT_IDS
from samo.torch_encoding import (
    BucketedRunner,
    Bucketing,
    Head,
    load_torch_encoder,
    rows_from_batch,
    save_prototypes,
)


@dataclass(frozen=True)
class Prototypes:
    """The zero-shot head: normalized label prototypes [labels, hidden], a bias per label, a slope."""

    prototypes: torch.Tensor
    bias: torch.Tensor
    scale: float


def save_checkpoint(
    version_dir: Path, model: torch.nn.Module, head: Head, prototypes: Prototypes | None = None
) -> None:
    """`save_pretrained` of the Hugging Face model (safetensors), and the prototypes for that head."""
    if (head == "prototypes") != (prototypes is not None):
        raise ValueError("prototypes go with the `prototypes` head, and only with it")
    model.save_pretrained(str(version_dir))  # type: ignore[operator]
    if prototypes is not None:
        save_prototypes(version_dir, prototypes.prototypes, prototypes.bias, prototypes.scale)


class ServedSession:
    """The saved folder run by the serving code on the CPU in fp32, shaped like an ONNX Runtime
    session (`run(output_names, feed)`), so the ONNX targets' validation applies unchanged. Each
    padded batch is stripped to rows and re-padded by the bucketing, as Triton's batches are."""

    def __init__(
        self,
        version_dir: Path,
        *,
        head: Head,
        input_names: Sequence[str],
        padding_mask: str,
        pad_token_id: int,
        max_length: int,
    ) -> None:
        self.padding_mask = padding_mask
        self.runner = BucketedRunner(
            load_torch_encoder(version_dir, head),
            input_names=input_names,
            padding_mask=padding_mask,
            pad_values={INPUT_IDS: pad_token_id},
            device=torch.device("cpu"),
            bucketing=Bucketing(max_length=max_length),
        )

    def run(self, output_names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        rows = rows_from_batch(
            {name: torch.from_numpy(array) for name, array in feed.items()}, self.padding_mask
        )
        return [self.runner.run(rows).numpy()]
