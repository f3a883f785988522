"""`samo convert ct2-whisper`: a CTranslate2 Whisper folder -> a Hugging Face checkpoint, bit for bit.

`model.bin` as ctranslate2's `specs/model_spec.py` (`ModelSpec._serialize`, binary version 6) writes it,
little-endian; a string is a u16 length (counting a trailing NUL), the UTF-8 bytes, then the NUL:

    u32 binary version | string spec name | u32 spec revision | u32 variable count
    per variable: string name | u8 rank | u32 dims[rank] | u8 dtype id | u32 byte count | raw bytes
    u32 alias count | per alias: string alias | string name of the variable it stands for

dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. The weight names invert
ctranslate2's `converters/transformers.py` (`WhisperLoader` on top of `BartLoader`): self-attention
q/k/v are fused into `self_attention/linear_0` (Whisper's k_proj has no bias: its part of the fused
bias is zeros), cross-attention q is `attention/linear_0` and k/v are fused into `attention/linear_1`,
and `decoder/projection/weight` is an alias of the token embedding (tied, like HF's `proj_out`).
"""

from __future__ import annotations

import json
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters.errors import ExportError

if TYPE_CHECKING:
    from transformers import WhisperTokenizerFast

SPEC_NAME = "WhisperSpec"
BINARY_VERSION = 6
# Order of the DataType enum in ctranslate2's include/ctranslate2/types.h (`_dtype_to_type_id`).
DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),  # raw bits: numpy has no bfloat16; they travel untouched
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")

GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU: exact erf GELU, HF's "gelu"
# Decoder flags the spec stores as scalars, and the values Whisper needs.
_EXPECTED_FLAGS = {
    "decoder/activation": GELU,
    "decoder/pre_norm": 1,
    "decoder/alibi": 0,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Scalars that describe the architecture (read below) or only steer CTranslate2 at run time.
_KNOWN_SCALARS = {
    "encoder/num_heads",
    "decoder/num_heads",
    "decoder/alignment_heads",
    "decoder/alignment_layer",
}
HEAD_DIM = 64  # every Whisper size; used only if a file does not store its head counts
# As in the hub's openai/whisper-* generation configs: 1 s of initial timestamp at 0.02 s per token.
MAX_INITIAL_TIMESTAMP_INDEX = 50
EOT, SOT = "<|endoftext|>", "<|startoftranscript|>"
TRANSLATE, TRANSCRIBE = "<|translate|>", "<|transcribe|>"
START_OF_PREV, NO_TIMESTAMPS = "<|startofprev|>", "<|notimestamps|>"
MULTILINGUAL_MIN_VOCAB = 51865  # OpenAI's rule: `is_multilingual = n_vocab >= 51865`
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


# --------------------------------------------------------------------------------------------------
# model.bin


@dataclass(frozen=True)
class Ct2ModelBin:
    """The variables of a CTranslate2 `model.bin`, as little-endian numpy views of the file's bytes.

    bfloat16 variables are kept as their raw uint16 bits (numpy has no bfloat16); `dtypes` says which.
    """

    path: Path
    binary_version: int
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str]

    def resolve(self, name: str) -> str:
        """The stored variable behind `name`, following aliases."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ExportError(f"{self.path}: alias cycle through {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return name

    def has(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def tensor(self, name: str) -> np.ndarray:
        resolved = self.resolve(name)
        if resolved not in self.variables:
            raise ExportError(
                f"{self.path} has no variable {name!r}: not a Whisper layout this converter knows"
            )
        return self.variables[resolved]

    @property
    def tensor_names(self) -> list[str]:
        """Stored variables with at least one dimension (weights); rank-0 ones are settings."""
        return [name for name, value in self.variables.items() if value.ndim > 0]

    @property
    def scalars(self) -> dict[str, float | int]:
        return {name: value.item() for name, value in self.variables.items() if value.ndim == 0}


class _Reader:
    def __init__(self, data: bytearray | mmap.mmap, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, size: int) -> int:
        start = self.offset
        if size < 0 or start + size > len(self.data):
            raise ExportError(f"{self.path} is truncated or not a CTranslate2 model.bin (at byte {start})")
        self.offset += size
        return start

    def unpack(self, fmt: str) -> int:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from("<" + fmt, self.data, start)[0]

    def string(self) -> str:
        size = self.unpack("H")
        start = self.take(size)
        raw = bytes(self.data[start : start + size])
        if size == 0 or raw[-1] != 0:
            raise ExportError(f"{self.path} is not a CTranslate2 model.bin (bad string at byte {start})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExportError(
                f"{self.path} is not a CTranslate2 model.bin (bad string at byte {start})"
            ) from exc


def read_ct2_model_bin(path: Path) -> Ct2ModelBin:
    """Parse a CTranslate2 `model.bin` (binary version 6) without ctranslate2."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ExportError(f"{path} is truncated or not a CTranslate2 model.bin (at byte 0)")
    # Mapped copy-on-write: the variables are views that read (and may change) pages only when used.
    with path.open("rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    reader = _Reader(data, path)
    version = reader.unpack("I")
    if version != BINARY_VERSION:
        raise ExportError(
            f"{path} is not a CTranslate2 model.bin this reader knows: binary version {version}, "
            f"expected {BINARY_VERSION} (ctranslate2 >= 3)"
        )
    spec_name = reader.string()
    revision = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        type_id = reader.unpack("B")
        if type_id >= len(DTYPE_NAMES):
            raise ExportError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        dtype = DTYPE_NAMES[type_id]
        num_bytes = reader.unpack("I")
        np_dtype = _NUMPY_DTYPES[dtype]
        count = int(np.prod(shape, dtype=np.int64))
        if num_bytes != count * np_dtype.itemsize:
            raise ExportError(f"{path}: variable {name!r} has {num_bytes} bytes for shape {shape} of {dtype}")
        start = reader.take(num_bytes)
        variables[name] = np.frombuffer(data, dtype=np_dtype, count=count, offset=start).reshape(shape)
        dtypes[name] = dtype
    aliases = {}
    for _ in range(reader.unpack("I")):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.offset != len(data):
        raise ExportError(f"{path}: {len(data) - reader.offset} unexpected bytes after the alias table")
    return Ct2ModelBin(path, version, spec_name, revision, variables, dtypes, aliases)


# --------------------------------------------------------------------------------------------------
# CTranslate2 variables -> Hugging Face tensors


@dataclass(frozen=True)
class WhisperDims:
    """The architecture, read off the tensor shapes (and the stored head counts)."""

    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int
    num_mel_bins: int
    max_source_positions: int
    max_target_positions: int


def _layer_count(model: Ct2ModelBin, stack: str) -> int:
    indices = {
        int(m.group(2)) for name in model.variables if (m := _LAYER.match(name)) and m.group(1) == stack
    }
    if not indices:
        raise ExportError(f"{model.path} has no {stack} layers: not a Whisper layout this converter knows")
    if indices != set(range(len(indices))):
        raise ExportError(f"{model.path}: {stack} layers are not numbered 0..{len(indices) - 1}")
    return len(indices)


def _heads(model: Ct2ModelBin, stack: str, d_model: int) -> int:
    stored = model.scalars.get(f"{stack}/num_heads")
    heads = int(stored) if stored is not None else d_model // HEAD_DIM
    if heads <= 0 or d_model % heads:
        raise ExportError(f"{model.path}: {stack} has {heads} heads for d_model {d_model}")
    return heads


def read_dims(model: Ct2ModelBin) -> WhisperDims:
    vocab_size, d_model = model.tensor("decoder/embeddings/weight").shape
    return WhisperDims(
        d_model=d_model,
        encoder_layers=_layer_count(model, "encoder"),
        decoder_layers=_layer_count(model, "decoder"),
        encoder_attention_heads=_heads(model, "encoder", d_model),
        decoder_attention_heads=_heads(model, "decoder", d_model),
        encoder_ffn_dim=model.tensor("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=model.tensor("decoder/layer_0/ffn/linear_0/weight").shape[0],
        vocab_size=vocab_size,
        num_mel_bins=model.tensor("encoder/conv1/weight").shape[1],
        max_source_positions=model.tensor("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.tensor("decoder/position_encodings/encodings").shape[0],
    )


def _check_scalars(model: Ct2ModelBin) -> None:
    for name, value in model.scalars.items():
        if name in _EXPECTED_FLAGS:
            if value != _EXPECTED_FLAGS[name]:
                raise ExportError(
                    f"{model.path}: {name} = {value}, Whisper needs {_EXPECTED_FLAGS[name]}; "
                    "this model cannot be expressed as WhisperForConditionalGeneration"
                )
        elif name not in _KNOWN_SCALARS and value != 0:
            raise ExportError(f"{model.path}: unsupported setting {name} = {value}")


def _is_zero(array: np.ndarray) -> bool:
    """All +0.0 or -0.0, for any float width (bfloat16 included, kept as raw bits)."""
    bits = array.view(f"<u{array.dtype.itemsize}")
    return not np.any(bits << np.array(1, dtype=bits.dtype))  # shifting out the sign bit


class _Mapper:
    """Builds the HF state dict and remembers which stored CTranslate2 variables went into it."""

    def __init__(self, model: Ct2ModelBin, dims: WhisperDims) -> None:
        self.model, self.dims = model, dims
        self.tensors: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        array = self.model.tensor(name)
        if array.shape != shape:
            raise ExportError(f"{self.model.path}: {name} has shape {array.shape}, expected {shape}")
        self.used.add(self.model.resolve(name))
        return array

    def put(self, hf_name: str, array: np.ndarray) -> None:
        self.tensors[hf_name] = array

    def linear(self, ct2: str, hf: str, out_features: int, in_features: int) -> None:
        self.put(f"{hf}.weight", self.take(f"{ct2}/weight", (out_features, in_features)))
        self.put(f"{hf}.bias", self.take(f"{ct2}/bias", (out_features,)))

    def layer_norm(self, ct2: str, hf: str) -> None:
        d = self.dims.d_model
        self.put(f"{hf}.weight", self.take(f"{ct2}/gamma", (d,)))
        self.put(f"{hf}.bias", self.take(f"{ct2}/beta", (d,)))

    def fused(self, ct2: str, projections: list[str], without_bias: str) -> None:
        """Split a fused projection; `without_bias` (k_proj) must have stored a zero bias."""
        d, parts = self.dims.d_model, len(projections)
        weight = self.take(f"{ct2}/weight", (parts * d, d))
        bias = self.take(f"{ct2}/bias", (parts * d,))
        for index, hf in enumerate(projections):
            rows = slice(index * d, (index + 1) * d)
            self.put(f"{hf}.weight", weight[rows])
            if hf == without_bias:
                if not _is_zero(bias[rows]):
                    raise ExportError(
                        f"{self.model.path}: {ct2}/bias has a non-zero part for {hf}, which has no bias "
                        "in Whisper; it cannot be converted losslessly"
                    )
            else:
                self.put(f"{hf}.bias", bias[rows])

    def attention_block(self, ct2: str, hf: str) -> None:
        d = self.dims.d_model
        self.fused(f"{ct2}/linear_0", [f"{hf}.q_proj", f"{hf}.k_proj", f"{hf}.v_proj"], f"{hf}.k_proj")
        self.linear(f"{ct2}/linear_1", f"{hf}.out_proj", d, d)

    def cross_attention_block(self, ct2: str, hf: str) -> None:
        d = self.dims.d_model
        self.linear(f"{ct2}/linear_0", f"{hf}.q_proj", d, d)
        self.fused(f"{ct2}/linear_1", [f"{hf}.k_proj", f"{hf}.v_proj"], f"{hf}.k_proj")
        self.linear(f"{ct2}/linear_2", f"{hf}.out_proj", d, d)

    def ffn(self, ct2: str, hf: str, ffn_dim: int) -> None:
        d = self.dims.d_model
        self.linear(f"{ct2}/linear_0", f"{hf}.fc1", ffn_dim, d)
        self.linear(f"{ct2}/linear_1", f"{hf}.fc2", d, ffn_dim)
        self.layer_norm(f"{ct2}/layer_norm", f"{hf}.final_layer_norm")

    def encoder(self) -> None:
        dims, d = self.dims, self.dims.d_model
        self.put("model.encoder.conv1.weight", self.take("encoder/conv1/weight", (d, dims.num_mel_bins, 3)))
        self.put("model.encoder.conv1.bias", self.take("encoder/conv1/bias", (d,)))
        self.put("model.encoder.conv2.weight", self.take("encoder/conv2/weight", (d, d, 3)))
        self.put("model.encoder.conv2.bias", self.take("encoder/conv2/bias", (d,)))
        self.put(
            "model.encoder.embed_positions.weight",
            self.take("encoder/position_encodings/encodings", (dims.max_source_positions, d)),
        )
        for i in range(dims.encoder_layers):
            ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
            self.attention_block(f"{ct2}/self_attention", f"{hf}.self_attn")
            self.layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            self.ffn(f"{ct2}/ffn", hf, dims.encoder_ffn_dim)
        self.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")

    def decoder(self) -> bool:
        """Map the decoder; True when the output projection is the token embedding (tied)."""
        dims, d = self.dims, self.dims.d_model
        embeddings = self.take("decoder/embeddings/weight", (dims.vocab_size, d))
        self.put("model.decoder.embed_tokens.weight", embeddings)
        self.put(
            "model.decoder.embed_positions.weight",
            self.take("decoder/position_encodings/encodings", (dims.max_target_positions, d)),
        )
        for i in range(dims.decoder_layers):
            ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
            self.attention_block(f"{ct2}/self_attention", f"{hf}.self_attn")
            self.layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            self.cross_attention_block(f"{ct2}/attention", f"{hf}.encoder_attn")
            self.layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            self.ffn(f"{ct2}/ffn", hf, dims.decoder_ffn_dim)
        self.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")

        projection = self.take("decoder/projection/weight", (dims.vocab_size, d))
        if self.model.has("decoder/projection/bias") and not _is_zero(
            self.take("decoder/projection/bias", (dims.vocab_size,))
        ):
            raise ExportError(
                f"{self.model.path}: decoder/projection/bias is not zero; Whisper's proj_out has no bias"
            )
        tied = self.model.resolve("decoder/projection/weight") == self.model.resolve(
            "decoder/embeddings/weight"
        ) or np.array_equal(projection.view(np.uint8), embeddings.view(np.uint8))
        if not tied:
            self.put("proj_out.weight", projection)
        return tied


# --------------------------------------------------------------------------------------------------
# Vocabulary, tokenizer and configs


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    text_file, json_file = ct2_dir / "vocabulary.txt", ct2_dir / "vocabulary.json"
    if json_file.is_file():
        tokens = _read_json(json_file)
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise ExportError(f"{json_file} is not a list of tokens")
        return tokens
    if text_file.is_file():
        tokens = text_file.read_text(encoding="utf-8").split(
            "\n"
        )  # one token a line, as ctranslate2 writes it
        return tokens[:-1] if tokens and tokens[-1] == "" else tokens
    raise ExportError(f"{ct2_dir} has no vocabulary.txt or vocabulary.json")


@dataclass(frozen=True)
class SpecialIds:
    eot: int
    sot: int
    translate: int
    transcribe: int
    start_of_prev: int
    no_timestamps: int
    languages: dict[str, int]  # "<|en|>" -> id, the tokens between <|startoftranscript|> and <|translate|>


def _special_ids(vocabulary: list[str], source: Path) -> SpecialIds:
    index: dict[str, int] = {}
    for i, token in enumerate(vocabulary):
        index.setdefault(token, i)

    def find(token: str) -> int:
        if token not in index:
            raise ExportError(f"{source}: the vocabulary has no {token}: not a Whisper vocabulary")
        return index[token]

    sot, translate = find(SOT), find(TRANSLATE)
    languages = {vocabulary[i]: i for i in range(sot + 1, translate)}
    odd = [token for token in languages if not (token.startswith("<|") and token.endswith("|>"))]
    if odd:
        raise ExportError(f"{source}: unexpected tokens between {SOT} and {TRANSLATE}: {odd[:5]}")
    return SpecialIds(
        eot=find(EOT),
        sot=sot,
        translate=translate,
        transcribe=find(TRANSCRIBE),
        start_of_prev=find(START_OF_PREV),
        no_timestamps=find(NO_TIMESTAMPS),
        languages=languages,
    )


def _build_tokenizer(
    ct2_dir: Path, vocabulary: list[str], ids: SpecialIds, dims: WhisperDims
) -> WhisperTokenizerFast:
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    tokenizer_file = ct2_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ExportError(f"{ct2_dir} has no tokenizer.json (the BPE merges cannot be rebuilt without it)")
    # Whisper's special tokens, <|endoftext|> .. <|notimestamps|>, in id order as on the hub: the
    # tokenizer takes the last of them as the one before the first timestamp token.
    specials = vocabulary[ids.eot : ids.no_timestamps + 1]
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token=EOT,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        additional_special_tokens=specials,
        model_max_length=dims.max_target_positions,
    )
    known = tokenizer.get_vocab()
    # The timestamp tokens <|0.00|> .. <|30.00|> are in the model's vocabulary but often not in
    # tokenizer.json; add the missing tail as ordinary added tokens so the ids line up.
    missing = [token for token in vocabulary if token not in known]
    if missing:
        # transformers hints `add_tokens` with its own fallback `AddedToken` class, not tokenizers' own.
        tokenizer.add_tokens(
            [  # pyright: ignore[reportArgumentType]
                AddedToken(token, lstrip=False, rstrip=False, normalized=False, special=False)
                for token in missing
            ]
        )
        known = tokenizer.get_vocab()
    wrong = [(i, token) for i, token in enumerate(vocabulary) if known.get(token) != i]
    if wrong:
        i, token = wrong[0]
        raise ExportError(
            f"{ct2_dir}/tokenizer.json does not match the model vocabulary: {len(wrong)} tokens differ, "
            f"first {token!r} (id {i} in the vocabulary, {known.get(token)} in the tokenizer)"
        )
    return tokenizer


def _ct2_config(ct2_dir: Path) -> dict[str, Any]:
    path = ct2_dir / "config.json"
    if not path.is_file():
        return {}
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ExportError(f"{path} is not a JSON object")
    return config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from exc


def _generation_fields(
    ct2_config: dict[str, Any], ids: SpecialIds, dims: WhisperDims, multilingual: bool
) -> dict[str, Any]:
    """generation_config.json as the hub's openai/whisper-* checkpoints have it.

    The deprecated `forced_decoder_ids` is left out; for multilingual models `task: transcribe` gives the
    same prompt (<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>, language detected unless given).
    """
    alignment_heads = ct2_config.get("alignment_heads")
    if alignment_heads is None:  # ctranslate2's own default: every head of the second half of the layers
        layers, heads = dims.decoder_layers, dims.decoder_attention_heads
        alignment_heads = [[layer, head] for layer in range(layers // 2, layers) for head in range(heads)]
    fields: dict[str, Any] = {
        "alignment_heads": [list(pair) for pair in alignment_heads],
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin") or [220, ids.eot]),
        # The hub's quirk: bos_token_id is 50257 in both families (<|startoftranscript|> for .en,
        # <|endoftext|> for multilingual). Nothing in generation reads it.
        "bos_token_id": ids.eot if multilingual else ids.sot,
        "decoder_start_token_id": ids.sot,
        "eos_token_id": ids.eot,
        "pad_token_id": ids.eot,
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": MAX_INITIAL_TIMESTAMP_INDEX,
        "max_length": dims.max_target_positions,
        "no_timestamps_token_id": ids.no_timestamps,
        "prev_sot_token_id": ids.start_of_prev,
        "return_timestamps": False,
        "suppress_tokens": list(ct2_config.get("suppress_ids") or []),
    }
    if multilingual:
        fields["lang_to_id"] = dict(ids.languages)
        fields["task_to_id"] = {"transcribe": ids.transcribe, "translate": ids.translate}
        fields["task"] = "transcribe"
    return fields


# --------------------------------------------------------------------------------------------------
# The conversion


@dataclass(frozen=True)
class ConversionReport:
    source: Path
    output: Path
    spec_revision: int
    variables: int  # CTranslate2 weight variables converted (aliases not counted)
    tensors: int  # tensors written to model.safetensors
    parameters: int  # parameters of the HF model (the tied projection counted once)
    dtype: str
    dims: WhisperDims
    multilingual: bool
    languages: int
    tied_embeddings: bool

    def summary(self) -> str:
        d = self.dims
        family = f"multilingual ({self.languages} languages)" if self.multilingual else "English-only"
        return (
            f"Converted {self.source} (CTranslate2 {SPEC_NAME} revision {self.spec_revision}) into a Hugging Face "
            f"WhisperForConditionalGeneration at {self.output}: {self.variables} CTranslate2 variables became "
            f"{self.tensors} {self.dtype} tensors ({self.parameters / 1e6:.1f}M parameters) with every bit kept; "
            f"d_model {d.d_model}, {d.encoder_layers} encoder and {d.decoder_layers} decoder layers, "
            f"{d.encoder_attention_heads}/{d.decoder_attention_heads} heads, {d.num_mel_bins} mel bins, "
            f"vocabulary {d.vocab_size}, {family}, "
            f"{'tied' if self.tied_embeddings else 'separate'} output projection. "
            "config.json, generation_config.json, the tokenizer and the feature extractor are saved alongside; "
            "load the folder offline with from_pretrained."
        )


def _to_torch(array: np.ndarray, dtype: str) -> Any:
    import torch

    tensor = torch.from_numpy(np.array(array, copy=True))  # own storage: safetensors refuses shared memory
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def convert_ct2_whisper(ct2_dir: Path, out_dir: Path) -> ConversionReport:
    """Turn a CTranslate2 Whisper folder into a Hugging Face WhisperForConditionalGeneration folder.

    Weights keep their dtype and bits. Raises ExportError naming the problem for anything that is not a
    CTranslate2 Whisper model (or one that cannot be expressed losslessly, such as an int8 one).
    """
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if not ct2_dir.is_dir():
        raise ExportError(f"{ct2_dir} is not a folder")
    if out_dir.resolve() == ct2_dir.resolve():
        raise ExportError(
            f"{out_dir} is the CTranslate2 folder itself; write the checkpoint to another folder"
        )
    model_bin = ct2_dir / "model.bin"
    if not model_bin.is_file():
        raise ExportError(f"{ct2_dir} has no model.bin: not a CTranslate2 model folder")
    model = read_ct2_model_bin(model_bin)
    if model.spec_name != SPEC_NAME:
        raise ExportError(
            f"{model_bin} is a CTranslate2 {model.spec_name!r} model, not a Whisper model ({SPEC_NAME!r})"
        )
    weight_dtypes = {model.dtypes[name] for name in model.tensor_names}
    if not weight_dtypes <= set(FLOAT_DTYPES):
        raise ExportError(
            f"{model_bin} holds quantized weights ({', '.join(sorted(weight_dtypes - set(FLOAT_DTYPES)))}); "
            "only float32, float16 and bfloat16 models convert losslessly"
        )
    if len(weight_dtypes) != 1:
        raise ExportError(f"{model_bin} mixes weight dtypes {sorted(weight_dtypes)}")
    (dtype,) = weight_dtypes
    _check_scalars(model)
    dims = read_dims(model)

    mapper = _Mapper(model, dims)
    mapper.encoder()
    tied = mapper.decoder()
    unused = sorted(set(model.tensor_names) - mapper.used)
    if unused:
        raise ExportError(
            f"{model_bin} has {len(unused)} variables this converter does not map (not a plain Whisper model): "
            f"{', '.join(unused[:5])}"
        )

    vocabulary = _read_vocabulary(ct2_dir)
    if len(vocabulary) != dims.vocab_size:
        raise ExportError(
            f"{ct2_dir}: the vocabulary has {len(vocabulary)} tokens, the embedding {dims.vocab_size} rows"
        )
    ids = _special_ids(vocabulary, ct2_dir)
    multilingual = dims.vocab_size >= MULTILINGUAL_MIN_VOCAB
    tokenizer = _build_tokenizer(ct2_dir, vocabulary, ids, dims)
    ct2_config = _ct2_config(ct2_dir)
    generation = _generation_fields(ct2_config, ids, dims, multilingual)

    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperProcessor

    config = WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        pad_token_id=generation["pad_token_id"],
        bos_token_id=generation["bos_token_id"],
        eos_token_id=generation["eos_token_id"],
        decoder_start_token_id=ids.sot,
        # Generation settings live in generation_config.json only.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        tie_word_embeddings=tied,
        architectures=["WhisperForConditionalGeneration"],
        dtype=dtype,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    GenerationConfig(**generation).save_pretrained(out_dir)
    save_file(
        {name: _to_torch(array, dtype) for name, array in mapper.tensors.items()},
        str(out_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    # safetensors creates its file owner-only (0600); give it the mode the other files got.
    (out_dir / "model.safetensors").chmod((out_dir / "config.json").stat().st_mode & 0o777)
    feature_extractor = WhisperFeatureExtractor(feature_size=dims.num_mel_bins)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)

    return ConversionReport(
        source=ct2_dir,
        output=out_dir,
        spec_revision=model.revision,
        variables=len(mapper.used),
        tensors=len(mapper.tensors),
        parameters=sum(array.size for array in mapper.tensors.values()),
        dtype=dtype,
        dims=dims,
        multilingual=multilingual,
        languages=len(ids.languages) if multilingual else 0,
        tied_embeddings=tied,
    )
