"""Whisper on ONNX decoded by the shared engine: token for token equal to transformers' `generate`
(greedy and beam 4, with and without timestamps) on a tiny random Whisper, greedy without timestamps and
beam 4 with them on the real tiny.en, with an initial prompt on tiny.en, language detection and given language and task on a tiny random
multilingual Whisper, the exporter's checks, and the served model through the real gateway and Triton."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tokenizers
import torch
from faster_whisper.feature_extractor import FeatureExtractor
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)
from typer.testing import CliRunner

from exporters.onnx_tools import ExportError
from exporters.whisper import ct2_convert
from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx
from load_tests.bench_features import SECTION, keep_section, write_section
from samo.contracts.whisper import DecodeOptions
from samo.generation.onnx_seq2seq import OnnxSeq2Seq
from samo.generation.whisper import (
    WhisperGenerator,
    WhisperVocabulary,
    WindowDecode,
    log_mel_windows,
    prompt_tokens,
    read_window,
    split_by_timestamps,
)
from samo_cli.app import app
from tests.conftest import multilingual_base_parts
from tests.speech import JFK_TEXT, RATE, jfk_samples, wav_bytes, word_error_rate

# Tokenizer, feature extractor and generation config of tiny.en, reused by the random model.
SHARED_FILES = (
    "added_tokens.json",
    "generation_config.json",
    "merges.txt",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
)
RANDOM_MAX_NEW_TOKENS = 40
# The random models' shape: 2+2 layers, d_model 64 (every `WhisperDims` field but the vocabulary).
TINY_DIMS = {
    "num_mel_bins": 80,
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
SEARCHES = [(1, False), (1, True), (4, False), (4, True)]  # (beams, timestamps)
# An initial prompt changes what the decoder starts from, not how it searches: greedy without timestamps
# and beam search with them cover both searches and both prompt layouts.
PROMPT_SEARCHES = [(1, False), (4, True)]
# The real tiny.en, whose windows end on their own, gets the same two: transformers' beam search on it
# is the slowest part of this module, and the random model covers all four searches.
TINY_EN_SEARCHES = PROMPT_SEARCHES
FEATURES = "features"


def speech_clips() -> list[np.ndarray]:
    """The JFK clip (11 s) and a 5 s slice of it, as float32 in [-1, 1]."""
    speech = jfk_samples().astype(np.float32) / 32768.0
    return [speech, speech[2 * RATE : 7 * RATE]]


def build_tiny_random_whisper(folder: Path, source: Path, *, seed: int = 0, std: float = 0.3) -> Path:
    """A 2+2-layer Whisper (d_model 64) with tiny.en's vocabulary, weights redrawn with a large std:
    the default 0.02 makes every input decode to one constant token."""
    torch.manual_seed(seed)
    reference = json.loads((source / "config.json").read_text())
    config = WhisperConfig(
        vocab_size=reference["vocab_size"],
        **TINY_DIMS,
        **{key: reference[key] for key in ("pad_token_id", "bos_token_id", "eos_token_id")},
        decoder_start_token_id=reference["decoder_start_token_id"],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and "encoder.embed_positions" not in name:  # keep the sinusoids
                parameter.normal_(0.0, std)
    model.save_pretrained(folder)
    for name in SHARED_FILES:
        shutil.copyfile(source / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_en_onnx(serving_repository: Path) -> Path:
    return serving_repository / "whisper_onnx" / "1"


@pytest.fixture(scope="module")
def tiny_random_whisper(
    tmp_path_factory: pytest.TempPathFactory, whisper_tiny_en_hf: Path
) -> tuple[Path, Path]:
    """(Hugging Face folder, exported ONNX version folder) of the random model."""
    hf_dir = build_tiny_random_whisper(tmp_path_factory.mktemp("tiny-random-whisper"), whisper_tiny_en_hf)
    repository = tmp_path_factory.mktemp("random-whisper-repository")
    report = export_whisper_onnx(WhisperOnnxExportOptions(model=hf_dir, name="random", repository=repository))
    return hf_dir, report.model_dir / "1"


def _strip(tokens: list[int], eot: int) -> list[int]:
    """transformers pads finished rows with (and may drop) the end-of-text token; compare without it."""
    while tokens and tokens[-1] == eot:
        tokens = tokens[:-1]
    return tokens


def _first_pass(segments: list[dict], prompt: list[int]) -> torch.Tensor:
    """The new tokens of the first segment's pass; its sequence starts with the whole prompt (for an
    English-only model: [<|startofprev|> text] <|startoftranscript|>)."""
    sequence = segments[0]["result"]["sequences"]
    assert sequence[: len(prompt)].tolist() == prompt
    return sequence[len(prompt) :]


def _onnx_generator(onnx_dir: Path) -> tuple[WhisperGenerator, OnnxSeq2Seq]:
    """SAMO's decoding of an exported version folder, as the Triton model builds it."""
    tokenizer = tokenizers.Tokenizer.from_file(str(onnx_dir / "tokenizer.json"))
    model = OnnxSeq2Seq(onnx_dir)
    return WhisperGenerator(model, WhisperVocabulary.from_folder(onnx_dir, tokenizer), tokenizer), model


def _parity(
    hf_dir: Path,
    onnx_dir: Path,
    max_new_tokens: int | None,
    initial_prompt: str | None = None,
    searches: list[tuple[int, bool]] = SEARCHES,
) -> dict:
    """transformers' `generate` (with `prompt_ids` for an initial prompt) against SAMO's decoding, for
    each of `searches`; and, under the first, SAMO's decoding of transformers' own features (key
    `FEATURES`: the extractor is the same whatever the search)."""
    # The features the served model computes; transformers' own extractor is checked below.
    features = log_mel_windows(FeatureExtractor(feature_size=80), speech_clips())
    transformers_features = WhisperFeatureExtractor.from_pretrained(hf_dir)(
        speech_clips(), sampling_rate=RATE, return_tensors="np"
    ).input_features
    reference = WhisperForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    generator, model = _onnx_generator(onnx_dir)
    vocabulary = generator.vocabulary
    encoded = model.encode_features(features)
    encoded_transformers = model.encode_features(transformers_features)
    options: dict[str, object] = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    prompt = [vocabulary.sot]
    if initial_prompt:
        options["prompt_ids"] = WhisperProcessor.from_pretrained(hf_dir).get_prompt_ids(
            initial_prompt, return_tensors="pt"
        )
        # The same prompt: <|startofprev|> and " " + the stripped text.
        prompt = [vocabulary.sot_prev, *generator.previous_tokens(initial_prompt), vocabulary.sot]
        assert options["prompt_ids"].tolist() == prompt[:-1]
    results = {}
    for beams, timestamps in searches:
        with torch.no_grad():
            expected = reference.generate(
                torch.from_numpy(features),
                num_beams=beams,
                return_timestamps=timestamps,
                return_dict_in_generate=timestamps,
                **options,
            )
        if timestamps:
            # With timestamps, transformers goes on like long-form transcription: when a window's
            # tokens do not end on a single timestamp, it drops the text after the last timestamp
            # pair and decodes again from there. That loop is not Whisper's decoding of one window
            # (CTranslate2 does not do it; the gateway cuts windows itself); compare the window's
            # decoding pass, which transformers returns as the first segment's result.
            expected = [_first_pass(segments, prompt) for segments in expected["segments"]]
        # Without timestamps transformers returns the new tokens only (a `prompt_ids` prompt stripped).
        windows = [
            WindowDecode(beam_size=beams, without_timestamps=not timestamps, initial_prompt=initial_prompt)
        ] * len(features)
        ours = generator.generate(encoded, windows, max_new_tokens=max_new_tokens)
        if not results:
            from_features = generator.generate(encoded_transformers, windows, max_new_tokens=max_new_tokens)
            results[FEATURES] = ([w.tokens for w in from_features], [w.tokens for w in ours])
        results[(beams, timestamps)] = (
            [_strip(row.tolist(), vocabulary.eot) for row in expected],
            [_strip(list(window.tokens), vocabulary.eot) for window in ours],
            ours,
        )
    return results


@pytest.fixture(scope="module")
def tiny_en_parity(whisper_tiny_en_hf: Path, tiny_en_onnx: Path) -> dict:
    return _parity(whisper_tiny_en_hf, tiny_en_onnx, None, searches=TINY_EN_SEARCHES)


@pytest.fixture(scope="module")
def random_parity(tiny_random_whisper: tuple[Path, Path]) -> dict:
    return _parity(*tiny_random_whisper, RANDOM_MAX_NEW_TOKENS)


@pytest.mark.parametrize(("beams", "timestamps"), TINY_EN_SEARCHES)
def test_tiny_en_tokens_equal_transformers_generate(
    tiny_en_parity: dict, beams: int, timestamps: bool
) -> None:
    expected, ours, windows = tiny_en_parity[(beams, timestamps)]
    assert ours == expected
    assert all(window.tokens[-1] == 50256 for window in windows)  # both ended on their own
    assert all(0.0 < window.no_speech_prob < 0.5 and window.avg_logprob < 0 for window in windows)


@pytest.mark.usefixtures("tiny_en_onnx")  # both parities decode the served tiny.en (fetched by name below)
@pytest.mark.parametrize("parity", ["tiny_en_parity", "tiny_en_prompt_parity"])
def test_transformers_features_decode_to_the_same_tokens(parity: str, request: pytest.FixtureRequest) -> None:
    """faster-whisper's extractor on padded audio (served) and transformers' give the same tokens here."""
    from_transformers_features, ours = request.getfixturevalue(parity)[FEATURES]
    assert from_transformers_features == ours


def test_tiny_en_timestamps_make_segments(tiny_en_parity: dict, tiny_en_onnx: Path) -> None:
    tokenizer = tokenizers.Tokenizer.from_file(str(tiny_en_onnx / "tokenizer.json"))
    vocabulary = WhisperVocabulary.from_folder(tiny_en_onnx, tokenizer)
    generator = WhisperGenerator(None, vocabulary, tokenizer)
    _, _, windows = tiny_en_parity[(4, True)]
    body = generator.transcript(windows[0], 11.0)
    assert word_error_rate(JFK_TEXT, " ".join(s["text"] for s in body["segments"])) <= 0.05
    assert len(body["segments"]) >= 2
    assert body["segments"][0]["start"] == 0.0 and body["segments"][-1]["end"] <= 11.0


@pytest.mark.parametrize(("beams", "timestamps"), SEARCHES)
def test_random_whisper_tokens_equal_transformers_generate(
    random_parity: dict, beams: int, timestamps: bool
) -> None:
    expected, ours, _ = random_parity[(beams, timestamps)]
    assert ours == expected
    # The random model's answers depend on the input and are not one repeated token.
    assert ours[0] != ours[1]
    assert all(len(set(tokens)) > 3 for tokens in ours)


# Steers tiny.en to capitals: the answer shows the prompt was read.
INITIAL_PROMPT = "AND SO MY FELLOW AMERICANS"


@pytest.fixture(scope="module")
def tiny_en_prompt_parity(whisper_tiny_en_hf: Path, tiny_en_onnx: Path) -> dict:
    return _parity(whisper_tiny_en_hf, tiny_en_onnx, None, INITIAL_PROMPT, PROMPT_SEARCHES)


@pytest.mark.parametrize(("beams", "timestamps"), PROMPT_SEARCHES)
def test_tiny_en_initial_prompt_equals_transformers_prompt_ids(
    tiny_en_prompt_parity: dict, tiny_en_onnx: Path, beams: int, timestamps: bool
) -> None:
    expected, ours, windows = tiny_en_prompt_parity[(beams, timestamps)]
    assert ours == expected
    # The prompt took effect: without it tiny.en writes "And so my fellow Americans ask not ...".
    tokenizer = tokenizers.Tokenizer.from_file(str(tiny_en_onnx / "tokenizer.json"))
    text = tokenizer.decode(list(windows[0].tokens))
    assert "AMERICANS ASK NOT WHAT YOUR COUNTRY" in text, text


# --------------------------------------------------------------------------------------------------
# A tiny random multilingual Whisper: the multilingual vocabulary, special tokens and generation config.


def multilingual_vocabulary_files(folder: Path) -> Path:
    """The tokenizer, feature extractor and generation config the converter writes for Whisper base
    (multilingual), and a config.json with its vocabulary's ids, without converting base's weights:
    the same converter functions, on base's tokenizer.json, vocabulary and config.json."""
    base = multilingual_base_parts()[0].parent
    vocabulary = ct2_convert._read_vocabulary(base)
    ids = ct2_convert._special_ids(vocabulary, base)
    dims = ct2_convert.WhisperDims(vocab_size=len(vocabulary), **TINY_DIMS)
    assert len(vocabulary) >= ct2_convert.MULTILINGUAL_MIN_VOCAB
    tokenizer = ct2_convert._build_tokenizer(base, vocabulary, ids, dims)
    generation = ct2_convert._generation_fields(ct2_convert._ct2_config(base), ids, dims, True)
    GenerationConfig(**generation).save_pretrained(folder)
    WhisperConfig(
        vocab_size=len(vocabulary),
        pad_token_id=generation["pad_token_id"],
        bos_token_id=generation["bos_token_id"],
        eos_token_id=generation["eos_token_id"],
        decoder_start_token_id=ids.sot,
    ).save_pretrained(folder)
    feature_extractor = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_random_multilingual_whisper(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(Hugging Face folder, exported ONNX version folder) of the random multilingual model."""
    source = multilingual_vocabulary_files(tmp_path_factory.mktemp("multilingual-vocabulary"))
    hf_dir = build_tiny_random_whisper(tmp_path_factory.mktemp("tiny-random-multilingual"), source)
    repository = tmp_path_factory.mktemp("random-multilingual-repository")
    report = export_whisper_onnx(
        WhisperOnnxExportOptions(model=hf_dir, name="random_multilingual", repository=repository)
    )
    return hf_dir, report.model_dir / "1"


@dataclass
class Multilingual:
    reference: WhisperForConditionalGeneration
    features: np.ndarray
    vocabulary: WhisperVocabulary
    generator: WhisperGenerator
    encoded: object


@pytest.fixture(scope="module")
def multilingual(tiny_random_multilingual_whisper: tuple[Path, Path]) -> Multilingual:
    hf_dir, onnx_dir = tiny_random_multilingual_whisper
    features = log_mel_windows(FeatureExtractor(feature_size=80), speech_clips())
    generator, model = _onnx_generator(onnx_dir)
    assert generator.vocabulary.multilingual and len(generator.vocabulary.languages) == 99
    return Multilingual(
        WhisperForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval(),
        features,
        generator.vocabulary,
        generator,
        model.encode_features(features),
    )


def _one_pass(
    multilingual: Multilingual, prompts: list[tuple[int, ...]], **options: object
) -> list[list[int]]:
    """transformers' `generate` as one decoding pass, new tokens only.

    The random model writes timestamp tokens even after <|notimestamps|> (nothing suppresses them
    there, in either backend); on two timestamps in a row transformers would cut the window there and
    decode again from that time, as in long-form transcription (see `_parity`).
    `force_unique_generate_call` keeps it to the window's one pass."""
    with torch.no_grad():
        output = multilingual.reference.generate(
            torch.from_numpy(multilingual.features),
            max_new_tokens=RANDOM_MAX_NEW_TOKENS,
            force_unique_generate_call=True,
            return_dict_in_generate=True,
            **options,
        )
    rows = output["sequences"].tolist()
    assert [tuple(row[: len(prompt)]) for row, prompt in zip(rows, prompts, strict=True)] == prompts
    return [
        _strip(row[len(prompt) :], multilingual.vocabulary.eot)
        for row, prompt in zip(rows, prompts, strict=True)
    ]


def test_multilingual_language_detection_equals_transformers(multilingual: Multilingual) -> None:
    with torch.no_grad():
        expected = multilingual.reference.detect_language(torch.from_numpy(multilingual.features))
    codes = {token_id: code for code, token_id in multilingual.vocabulary.languages.items()}
    expected_codes = [codes[token_id] for token_id in expected.view(-1).tolist()]
    detected = multilingual.generator.detect_languages(multilingual.encoded, [0, 1])
    assert [code for code, _ in detected] == expected_codes
    assert expected_codes[0] != expected_codes[1]  # the answer depends on the input
    assert all(0.0 < probability < 1.0 for _, probability in detected)
    # Without a language, both detect it and decode with it.
    windows = [WindowDecode(beam_size=1, without_timestamps=True)] * 2
    ours = multilingual.generator.generate(
        multilingual.encoded, windows, max_new_tokens=RANDOM_MAX_NEW_TOKENS
    )
    assert [window.language for window in ours] == expected_codes
    prompts = [prompt_tokens(multilingual.vocabulary, windows[0], code)[0] for code in expected_codes]
    assert _one_pass(multilingual, prompts, num_beams=1) == [
        _strip(list(window.tokens), multilingual.vocabulary.eot) for window in ours
    ]


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("task", ["transcribe", "translate"])
def test_multilingual_language_and_task_equal_transformers(
    multilingual: Multilingual, task: str, beams: int
) -> None:
    vocabulary = multilingual.vocabulary
    for language in ("de", "ja"):
        window = WindowDecode(language=language, task=task, beam_size=beams, without_timestamps=True)
        prompt, _ = prompt_tokens(vocabulary, window, language)
        assert prompt == (
            vocabulary.sot,
            vocabulary.languages[language],
            vocabulary.translate if task == "translate" else vocabulary.transcribe,
            vocabulary.no_timestamps,
        )
        ours = multilingual.generator.generate(
            multilingual.encoded, [window] * 2, max_new_tokens=RANDOM_MAX_NEW_TOKENS
        )
        ours_tokens = [_strip(list(w.tokens), vocabulary.eot) for w in ours]
        assert ours_tokens == _one_pass(
            multilingual, [prompt] * 2, language=language, task=task, num_beams=beams
        )
        assert ours_tokens[0] != ours_tokens[1] and all(len(set(tokens)) > 3 for tokens in ours_tokens)


def test_split_by_timestamps_pairs_times_with_text() -> None:
    begin, eot = 100, 50

    def decode(ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids)

    tokens = [begin, 1, 2, begin + 50, begin + 50, 3, begin + 400, eot]
    assert split_by_timestamps(tokens, begin, eot, decode, duration=5.0) == [
        (0.0, 1.0, "w1 w2"),
        (1.0, 5.0, "w3"),  # 8.0 s is past the window: clipped to its duration
    ]
    assert split_by_timestamps([4, 5, eot], begin, eot, decode, duration=3.0) == [(0.0, 3.0, "w4 w5")]


def test_export_refuses_a_model_that_is_not_whisper(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="holds a `bert` model, not Whisper"):
        export_whisper_onnx(WhisperOnnxExportOptions(model=tiny_bert, repository=tmp_path))
    result = CliRunner().invoke(
        app, ["export", "whisper", "--model", str(tmp_path / "absent"), "--repository", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "whisper_onnx").exists()


def test_served_folder_has_the_card_and_config(tiny_en_onnx: Path) -> None:
    model_dir = tiny_en_onnx.parent
    card = json.loads((model_dir / "samo.json").read_text())
    assert card["backend"] == "onnx" and card["languages"] == ["en"] and not card["multilingual"]
    assert 'backend: "python"' in (model_dir / "config.pbtxt").read_text()
    assert (tiny_en_onnx / "model.py").is_file()


def _transcribe(http: httpx.Client, data: bytes, **form: str) -> httpx.Response:
    return http.post(
        "/v1/transcribe",
        files={"file": ("entry.wav", data)},
        data={"model": "whisper_onnx", **form},
        timeout=120,
    )


def test_jfk_through_gateway_and_triton(http: httpx.Client) -> None:
    response = _transcribe(http, wav_bytes(jfk_samples()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert word_error_rate(JFK_TEXT, body["text"]) <= 0.05, body["text"]
    assert body["model"]["backend"] == "onnx" and body["model"]["name"] == "whisper_onnx"
    assert body["segments"] and all(0.0 <= s["start"] <= s["end"] <= 11.0 for s in body["segments"])
    greedy = _transcribe(http, wav_bytes(jfk_samples()), beam_size="1").json()
    assert word_error_rate(JFK_TEXT, greedy["text"]) <= 0.05, greedy["text"]


def test_sampling_is_refused_with_a_clear_error(http: httpx.Client) -> None:
    response = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("entry.wav", wav_bytes(jfk_samples()[: 2 * RATE]))},
        data={"model": "whisper_onnx", "temperature": "0.4"},
        timeout=60,
    )
    assert response.status_code == 422, response.text
    assert "does not sample" in response.json()["error"]["message"]


def test_concurrent_requests_of_different_lengths_equal_alone(gateway_url: str) -> None:
    speech = jfk_samples()
    clips = [speech, speech[: 4 * RATE], speech[3 * RATE :], speech[6 * RATE :], speech[2 * RATE : 9 * RATE]]

    async def scenario() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(base_url=gateway_url, timeout=180) as client:

            async def one(clip: np.ndarray) -> list[dict]:
                response = await client.post(
                    "/v1/transcribe",
                    files={"file": ("c.wav", wav_bytes(clip))},
                    data={"model": "whisper_onnx"},
                )
                assert response.status_code == 200, response.text
                return response.json()["segments"]

            alone = [await one(clip) for clip in clips]
            together = await asyncio.gather(*(one(clip) for clip in clips))
            return alone, list(together)

    alone, together = asyncio.run(scenario())
    assert len({json.dumps([s["text"] for s in segments]) for segments in alone}) == len(clips)
    for single, batched in zip(alone, together, strict=True):
        # Same tokens, so the same text and times; scores may move in the last float bits with the batch.
        assert [(s["start"], s["end"], s["text"]) for s in batched] == [
            (s["start"], s["end"], s["text"]) for s in single
        ]
        for a, b in zip(single, batched, strict=True):
            assert b["avg_logprob"] == pytest.approx(a["avg_logprob"], abs=1e-4)
            assert b["no_speech_prob"] == pytest.approx(a["no_speech_prob"], abs=1e-4)


def test_read_window_checks_length_and_options() -> None:
    no_options = np.array([[b""]], dtype=np.object_)
    samples, options = read_window(np.zeros((1, 16000), dtype=np.float32), no_options)
    assert samples.shape == (16000,) and options == DecodeOptions()
    with pytest.raises(ValueError, match=r"audio window is 31\.0 s; at most 30 s"):
        read_window(np.zeros(31 * RATE, dtype=np.float32), no_options)
    with pytest.raises(ValueError, match="options must be a JSON object"):
        read_window(np.zeros(RATE, dtype=np.float32), np.array([[b"[1]"]], dtype=np.object_))


def test_features_section_survives_the_benchmark_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "whisper.md"
    write_section(path, f"{SECTION}\n\nfirst\n")
    assert path.read_text() == f"{SECTION}\n\nfirst\n"
    path.write_text(keep_section(path.read_text(), "# Whisper benchmark\n\ntable\n"))
    write_section(path, f"{SECTION}\n\nsecond\n")
    assert path.read_text() == f"# Whisper benchmark\n\ntable\n\n{SECTION}\n\nsecond\n"
