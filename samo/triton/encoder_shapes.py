"""Every input shape the gateway can send a text encoder served without ragged batching (`--target gpu`).

The gateway pads token lengths up to a multiple of `NON_RAGGED_LENGTH_MULTIPLE` (16), capped at the
card's `max_length`, and sends at most the card's `max_batch_size` texts; Triton's dynamic batcher joins
requests of equal length up to `max_batch_size` rows. So a batch has 1 to `max_batch_size` rows and
one of the sequence lengths below. TensorRT's optimization profile (min/opt/max), the warm-up and
`samo build-engines` all come from here, so an engine never meets a shape outside its profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from samo.text_encoding import NON_RAGGED_LENGTH_MULTIPLE

OPT_TOKENS = 128
"""The sequence length TensorRT tunes its kernels for: journal sentences run 13 to 43 tokens, entries
several sentences; longer texts still run, on kernels tuned for this length."""


@dataclass(frozen=True)
class EncoderShapes:
    max_batch_size: int
    max_length: int

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_length < 1:
            raise ValueError(
                f"`max_batch_size` and `max_length` must be at least 1, got {self.max_batch_size} "
                f"and {self.max_length}"
            )

    @property
    def sequence_lengths(self) -> tuple[int, ...]:
        """Every length the gateway pads to: the multiples of 16 below `max_length`, then `max_length`."""
        step = NON_RAGGED_LENGTH_MULTIPLE
        return (*range(step, self.max_length, step), self.max_length)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Batch buckets to exercise: powers of two below `max_batch_size`, then `max_batch_size`. The
        profile covers every size in between; these reach each of its kernels' ranges."""
        sizes = []
        size = 1
        while size < self.max_batch_size:
            sizes.append(size)
            size *= 2
        return (*sizes, self.max_batch_size)

    @property
    def min(self) -> tuple[int, int]:
        return 1, self.sequence_lengths[0]

    @property
    def opt(self) -> tuple[int, int]:
        """Half the largest batch (the batcher's usual size under load) at `OPT_TOKENS` tokens."""
        tokens = min((n for n in self.sequence_lengths if n >= OPT_TOKENS), default=self.max_length)
        return max(1, self.max_batch_size // 2), tokens

    @property
    def max(self) -> tuple[int, int]:
        return self.max_batch_size, self.max_length

    @property
    def corners(self) -> tuple[tuple[int, int], ...]:
        """min/opt/max batch x min/opt/max length: the warm-up's shapes, each once."""
        batches = sorted({self.min[0], self.opt[0], self.max[0]})
        lengths = sorted({self.min[1], self.opt[1], self.max[1]})
        return tuple((batch, length) for batch in batches for length in lengths)

    @property
    def every_bucket(self) -> tuple[tuple[int, int], ...]:
        """Every batch bucket x every sequence length: what `samo build-engines` sends."""
        return tuple((batch, length) for batch in self.batch_sizes for length in self.sequence_lengths)

    def profile(self, input_names: Sequence[str], shape: tuple[int, int]) -> str:
        """ONNX Runtime's TensorRT profile syntax: `input_ids:1x16,attention_mask:1x16`."""
        batch, length = shape
        return ",".join(f"{name}:{batch}x{length}" for name in input_names)
