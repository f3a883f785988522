"""An encoder-decoder exported with past key values (optimum's layout), run by ONNX Runtime.

Files: `encoder_model.onnx`, `decoder_model.onnx` (runs the prompt, returns the first cache) and
`decoder_with_past_model.onnx` (one token per step). Tensor names follow optimum:
`past_key_values.{layer}.{decoder|encoder}.{key|value}` in, `present.…` out; the cross-attention
(encoder) keys and values are computed once by the first pass and reused by every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
ONNX_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)


@dataclass(frozen=True)
class Encoded:
    """Encoder outputs for a batch: hidden states [batch, frames, hidden] and, for text, the mask."""

    hidden: np.ndarray
    mask: np.ndarray | None


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # A shared CPU: spinning threads would steal cycles from the gateway and the other models.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def run_dense(
    session: ort.InferenceSession, names: Sequence[str], feeds: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """`session.run` for graphs whose outputs are all dense tensors (ONNX Runtime's hints also allow
    sparse tensors, sequences and maps)."""
    return cast("list[np.ndarray]", session.run(names, feeds))


def instance_providers(args: dict[str, str]) -> list:
    """ONNX Runtime providers for the Triton model instance described by `args` (the Python backend's
    `initialize` arguments): CUDA on the instance's GPU for KIND_GPU, else the CPU."""
    if args.get("model_instance_kind") != "GPU":
        return ["CPUExecutionProvider"]
    device = {"device_id": int(args.get("model_instance_device_id", 0))}
    return [("CUDAExecutionProvider", device), "CPUExecutionProvider"]


class OnnxSeq2Seq:
    def __init__(self, folder: Path, threads: int = 2, providers: list[str] | None = None) -> None:
        options = session_options(threads)
        providers = providers or ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=providers)
        self.first = ort.InferenceSession(str(folder / DECODER_FILE), options, providers=providers)
        self.next = ort.InferenceSession(str(folder / DECODER_WITH_PAST_FILE), options, providers=providers)
        self._encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        self._first_inputs = {i.name for i in self.first.get_inputs()}
        self._next_inputs = {i.name for i in self.next.get_inputs()}
        self._first_outputs = [o.name for o in self.first.get_outputs()]
        self._next_outputs = [o.name for o in self.next.get_outputs()]

    def encode_tokens(self, token_ids: list[np.ndarray], pad_id: int) -> Encoded:
        """Right-pad token sequences of any lengths into one batch and encode it."""
        width = max(len(ids) for ids in token_ids)
        input_ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        (hidden,) = run_dense(
            self.encoder, ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask}
        )
        return Encoded(hidden, mask)

    def encode_features(self, features: np.ndarray) -> Encoded:
        """Encode audio features [batch, mels, frames] (Whisper)."""
        (hidden,) = run_dense(
            self.encoder, ["last_hidden_state"], {"input_features": features.astype(np.float32)}
        )
        return Encoded(hidden, None)

    def decoder(self, encoded: Encoded, items: np.ndarray) -> OnnxDecoderSession:
        return OnnxDecoderSession(self, encoded, items)


class OnnxDecoderSession:
    def __init__(self, model: OnnxSeq2Seq, encoded: Encoded, items: np.ndarray) -> None:
        self.model = model
        self.hidden = encoded.hidden[items]
        self.mask = None if encoded.mask is None else encoded.mask[items]
        self.past: dict[str, np.ndarray] = {}

    def start(self, prompt: np.ndarray) -> np.ndarray:
        return self.start_all(prompt)[:, -1, :]

    def start_all(self, prompt: np.ndarray) -> np.ndarray:
        """Like `start`, but the logits at every prompt position [rows, length, vocab] (Whisper reads
        its no-speech probability at <|startoftranscript|>, inside the prompt)."""
        feeds = {"input_ids": prompt.astype(np.int64), "encoder_hidden_states": self.hidden}
        if "encoder_attention_mask" in self.model._first_inputs and self.mask is not None:
            feeds["encoder_attention_mask"] = self.mask
        outputs = run_dense(self.model.first, self.model._first_outputs, feeds)
        self._store(self.model._first_outputs, outputs)
        self.hidden = None  # the cross-attention cache replaces it
        return outputs[0]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        feeds = dict(self.past)
        feeds["input_ids"] = tokens.astype(np.int64).reshape(-1, 1)
        if "encoder_attention_mask" in self.model._next_inputs and self.mask is not None:
            feeds["encoder_attention_mask"] = self.mask
        outputs = run_dense(self.model.next, self.model._next_outputs, feeds)
        self._store(self.model._next_outputs, outputs)
        return outputs[0][:, -1, :]

    def keep(self, rows: np.ndarray) -> None:
        self.past = {name: value[rows] for name, value in self.past.items()}
        if self.mask is not None:
            self.mask = self.mask[rows]

    def reorder_beams(self, rows: np.ndarray) -> None:
        # The cross-attention cache (and the mask) is the same for every beam of an item: moving it
        # would copy the largest tensors every step for nothing.
        self.past = {name: value if ".encoder." in name else value[rows] for name, value in self.past.items()}

    def _store(self, names: list[str], outputs: list[np.ndarray]) -> None:
        for name, value in zip(names[1:], outputs[1:], strict=True):
            self.past[name.replace("present.", "past_key_values.", 1)] = value
