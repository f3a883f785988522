"""Whisper on the shared seq2seq engine: prompts, timestamp rules, language detection, no-speech
probability, and segments from the generated tokens.

It follows transformers' `WhisperForConditionalGeneration.generate` for one window (at most 30 s):
the prompt `[<|startofprev|> previous text] <|startoftranscript|> [language task] [<|notimestamps|>]`,
`suppress_tokens` and `begin_suppress_tokens` from the generation config, then Whisper's timestamp
rules (`WhisperTimeStampLogitsProcessor`) as a per-row hook. Nothing here imports Triton or torch, so
the Triton model and the tests share it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from samo.contracts.whisper import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
    DecodeOptions,
    max_prompt_tokens,
)
from samo.generation.processors import RowHook
from samo.generation.search import Request, generate
from samo.generation.settings import GenerationSettings, SpecialTokens

TIME_PRECISION = 0.02  # seconds per timestamp token
FRAMES = 3000  # mel frames per 30 s window
NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")  # multilingual, English-only


def read_window(audio: np.ndarray, raw_options: np.ndarray) -> tuple[np.ndarray, DecodeOptions]:
    """One Triton request of the Whisper contract: its audio as float32 samples (at most 30 s) and its
    options, checked against the gateway's `DecodeOptions` (empty options mean the defaults);
    ValueError (pydantic's ValidationError is one) when either is malformed."""
    samples = audio.reshape(-1).astype(np.float32)
    if samples.size > WINDOW_SAMPLES:
        raise ValueError(
            f"audio window is {samples.size / SAMPLE_RATE:.1f} s; at most {WINDOW_SECONDS:.0f} s"
        )
    raw = raw_options.reshape(-1)
    text = raw[0].decode() if raw.size and isinstance(raw[0], bytes) else ""
    options = json.loads(text) if text else {}
    if not isinstance(options, dict):
        raise ValueError("options must be a JSON object")
    return samples, DecodeOptions.model_validate(options)


class MelExtractor(Protocol):
    """faster-whisper's `FeatureExtractor`."""

    def __call__(self, waveform: np.ndarray, padding: int = ...) -> np.ndarray: ...


def log_mel_windows(extractor: MelExtractor, windows: Sequence[np.ndarray]) -> np.ndarray:
    """Log-mel features [windows, mels, 3000] with transformers' `WhisperFeatureExtractor` semantics
    (audio zero-padded to 30 s, then the STFT), computed by faster-whisper's numpy extractor: within
    1.1e-5 of transformers' features, about 25 ms a window, and no torch in the Triton stub (torch's
    STFT takes 9 ms on idle cores but 110 ms when they are shared; load_tests/results/whisper.md).
    faster-whisper's own padding (zero frames after the clip) gives different features, and sometimes
    different text, from what transformers' `generate` sees."""
    return np.stack(
        [
            extractor(np.pad(audio, (0, WINDOW_SAMPLES - audio.size)), padding=0)[:, :FRAMES]
            for audio in windows
        ]
    )


class TextTokenizer(Protocol):
    """What is used of a `tokenizers.Tokenizer` (the model folder's tokenizer.json)."""

    def encode(self, sequence: str, *, add_special_tokens: bool = True) -> Any: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_to_id(self, token: str) -> int | None: ...


@dataclass(frozen=True)
class WhisperVocabulary:
    """The token ids Whisper's decoding needs, read from a Hugging Face Whisper folder."""

    sot: int
    eot: int
    sot_prev: int | None
    no_timestamps: int
    no_speech: int | None
    transcribe: int | None
    translate: int | None
    languages: dict[str, int]
    """ISO code -> language token id; empty for English-only models."""
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_initial_timestamp_index: int | None
    max_target_positions: int

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    @classmethod
    def from_folder(cls, folder: Path, tokenizer: TextTokenizer) -> WhisperVocabulary:
        generation = json.loads((folder / "generation_config.json").read_text())
        config = json.loads((folder / "config.json").read_text())
        no_speech = next((i for i in map(tokenizer.token_to_id, NO_SPEECH_TOKENS) if i is not None), None)
        multilingual = generation.get("is_multilingual", bool(generation.get("lang_to_id")))
        tasks = generation.get("task_to_id") or {}
        eos = generation["eos_token_id"]
        return cls(
            sot=generation["decoder_start_token_id"],
            eot=eos[0] if isinstance(eos, list) else eos,
            sot_prev=generation.get("prev_sot_token_id") or tokenizer.token_to_id("<|startofprev|>"),
            no_timestamps=generation["no_timestamps_token_id"],
            no_speech=no_speech,
            transcribe=tasks.get("transcribe"),
            translate=tasks.get("translate"),
            languages={
                token[2:-2]: token_id for token, token_id in (generation.get("lang_to_id") or {}).items()
            }
            if multilingual
            else {},
            suppress_tokens=tuple(generation.get("suppress_tokens") or ()),
            begin_suppress_tokens=tuple(generation.get("begin_suppress_tokens") or ()),
            max_initial_timestamp_index=generation.get("max_initial_timestamp_index"),
            max_target_positions=config["max_target_positions"],
        )

    @property
    def special(self) -> SpecialTokens:
        return SpecialTokens(decoder_start=self.sot, eos=(self.eot,), pad=self.eot)


@dataclass(frozen=True)
class WindowDecode:
    """How to decode one window (the Triton options JSON, parsed)."""

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    beam_size: int = 5
    initial_prompt: str | None = None
    without_timestamps: bool = False


@dataclass(frozen=True)
class WindowTokens:
    """What decoding one window produced: new tokens (end of text included when reached)."""

    tokens: tuple[int, ...]
    logprob: float
    no_speech_prob: float
    language: str
    language_probability: float

    @property
    def avg_logprob(self) -> float:
        return self.logprob / max(1, len(self.tokens))


def prompt_tokens(
    vocabulary: WhisperVocabulary, options: WindowDecode, language: str, previous: Sequence[int] = ()
) -> tuple[tuple[int, ...], int]:
    """The decoder prompt and the position of <|startoftranscript|> in it."""
    prompt: list[int] = []
    if previous and vocabulary.sot_prev is not None:
        prompt = [vocabulary.sot_prev, *previous[-max_prompt_tokens(vocabulary.max_target_positions) :]]
    sot_index = len(prompt)
    prompt.append(vocabulary.sot)
    if vocabulary.multilingual:
        task = vocabulary.translate if options.task == "translate" else vocabulary.transcribe
        prompt.append(vocabulary.languages[language])
        if task is not None:
            prompt.append(task)
    if options.without_timestamps:
        prompt.append(vocabulary.no_timestamps)
    return tuple(prompt), sot_index


def timestamp_rules(vocabulary: WhisperVocabulary, begin_index: int) -> RowHook:
    """transformers' `WhisperTimeStampLogitsProcessor` for one row; `begin_index` is the prompt length.

    Timestamps come in pairs (except right before the end of text), never decrease, the first token
    is a timestamp of at most `max_initial_timestamp_index`, and when the timestamps together are more
    likely than any single text token, a timestamp is forced.
    """
    first = vocabulary.timestamp_begin
    eot = vocabulary.eot
    no_timestamps = vocabulary.no_timestamps
    max_initial = vocabulary.max_initial_timestamp_index

    def hook(tokens: np.ndarray, scores: np.ndarray) -> None:
        scores[no_timestamps] = -np.inf
        sampled = tokens[begin_index:]
        last_was_timestamp = len(sampled) >= 1 and sampled[-1] >= first
        penultimate_was_timestamp = len(sampled) < 2 or sampled[-2] >= first
        if last_was_timestamp:
            if penultimate_was_timestamp:
                scores[first:] = -np.inf
            else:
                scores[:eot] = -np.inf
        timestamps = sampled[sampled >= first]
        if timestamps.size:
            # Never decrease; after a closed pair, never repeat the last time either.
            closing = last_was_timestamp and not penultimate_was_timestamp
            scores[first : int(timestamps[-1]) + (0 if closing else 1)] = -np.inf
        if len(tokens) == begin_index:
            scores[:first] = -np.inf
            if max_initial is not None:
                scores[first + max_initial + 1 :] = -np.inf
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            top = scores.max()
            logprobs = scores - (top + np.log(np.exp(scores - top).sum()))
            timestamp_top = logprobs[first:].max()
            timestamp_logprob = timestamp_top + np.log(np.exp(logprobs[first:] - timestamp_top).sum())
        if timestamp_logprob > logprobs[:first].max():
            scores[:first] = -np.inf

    return hook


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class _SotLogits:
    """A model adapter that records, per request, the first pass's logits at <|startoftranscript|>:
    the no-speech probability is read there (as transformers and CTranslate2 do)."""

    def __init__(self, model: object, sot_index: Sequence[int]) -> None:
        self.model = model
        self.sot_index = sot_index
        self.logits: dict[int, np.ndarray] = {}

    def decoder(self, encoded: object, items: np.ndarray) -> _SotLogitsSession:
        return _SotLogitsSession(self, self.model.decoder(encoded, items), items)  # type: ignore[attr-defined]


class _SotLogitsSession:
    def __init__(self, owner: _SotLogits, session: object, items: np.ndarray) -> None:
        self.owner = owner
        self.session = session
        self.items = items

    def start(self, prompt: np.ndarray) -> np.ndarray:
        logits = self.session.start_all(prompt)  # type: ignore[attr-defined]
        for row, item in enumerate(self.items.tolist()):
            self.owner.logits.setdefault(item, logits[row, self.owner.sot_index[item]])
        return logits[:, -1, :]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self.session.step(tokens)  # type: ignore[attr-defined]

    def keep(self, rows: np.ndarray) -> None:
        self.session.keep(rows)  # type: ignore[attr-defined]

    def reorder_beams(self, rows: np.ndarray) -> None:
        self.session.reorder_beams(rows)  # type: ignore[attr-defined]


class WhisperGenerator:
    """Decodes encoded windows with the shared engine; one `generate` call for the whole batch."""

    def __init__(self, model: object, vocabulary: WhisperVocabulary, tokenizer: TextTokenizer) -> None:
        self.model = model
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer

    def detect_languages(self, encoded: object, rows: Sequence[int]) -> list[tuple[str, float]]:
        """The most likely language token after <|startoftranscript|>, and its probability among languages."""
        if not rows:
            return []
        codes = list(self.vocabulary.languages)
        ids = np.asarray([self.vocabulary.languages[code] for code in codes])
        session = self.model.decoder(encoded, np.asarray(rows))  # type: ignore[attr-defined]
        logits = session.start(np.full((len(rows), 1), self.vocabulary.sot, dtype=np.int64))
        probabilities = _softmax(logits[:, ids].astype(np.float64))
        best = probabilities.argmax(axis=-1)
        return [(codes[b], float(probabilities[row, b])) for row, b in enumerate(best)]

    def previous_tokens(self, text: str | None) -> tuple[int, ...]:
        if not text or not text.strip():
            return ()
        return tuple(self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def generate(
        self,
        encoded: object,
        windows: Sequence[WindowDecode],
        max_new_tokens: int | None = None,
    ) -> list[WindowTokens]:
        """Window i reads row i of `encoded`. `max_new_tokens` defaults to the rest of the decoder context."""
        vocabulary = self.vocabulary
        languages: list[tuple[str, float]] = [
            (window.language or "en", 1.0) if not vocabulary.multilingual or window.language else ("", 0.0)
            for window in windows
        ]
        unknown = [i for i, (language, _) in enumerate(languages) if not language]
        for row, detected in zip(unknown, self.detect_languages(encoded, unknown), strict=True):
            languages[row] = detected
        for language, _ in languages:
            if vocabulary.multilingual and language not in vocabulary.languages:
                raise ValueError(f"language `{language}` is not supported by this model")
        requests = []
        sot_index = []
        for window, (language, _) in zip(windows, languages, strict=True):
            prompt, sot = prompt_tokens(
                vocabulary, window, language, self.previous_tokens(window.initial_prompt)
            )
            sot_index.append(sot)
            limit = vocabulary.max_target_positions - len(prompt)
            settings = GenerationSettings(
                max_new_tokens=min(limit, max_new_tokens or limit),
                num_beams=window.beam_size,
                suppress_tokens=vocabulary.suppress_tokens,
                begin_suppress_tokens=vocabulary.begin_suppress_tokens,
            )
            hook = None if window.without_timestamps else timestamp_rules(vocabulary, len(prompt))
            requests.append(Request(prompt, settings, hook))
        recorder = _SotLogits(self.model, sot_index)
        generated = generate(recorder, encoded, requests, vocabulary.special)
        results = []
        for index, (result, (language, probability)) in enumerate(zip(generated, languages, strict=True)):
            no_speech = 0.0
            if vocabulary.no_speech is not None:
                no_speech = float(_softmax(recorder.logits[index].astype(np.float64))[vocabulary.no_speech])
            results.append(WindowTokens(result.tokens, result.logprob, no_speech, language, probability))
        return results

    def transcript(self, tokens: WindowTokens, duration: float) -> dict:
        """The Triton model's result for one window (`WindowTranscript` in samo/contracts/whisper.py)."""
        segments = [
            {
                "start": round(start, 3),
                "end": round(end, 3),
                "text": text,
                "avg_logprob": tokens.avg_logprob,
                "no_speech_prob": tokens.no_speech_prob,
            }
            for start, end, text in split_by_timestamps(
                tokens.tokens,
                self.vocabulary.timestamp_begin,
                self.vocabulary.eot,
                self.tokenizer.decode,
                duration,
            )
        ]
        return {
            "language": tokens.language,
            "language_probability": tokens.language_probability,
            "segments": segments,
        }


def split_by_timestamps(
    tokens: Sequence[int],
    timestamp_begin: int,
    eot: int,
    decode: Callable[[list[int]], str],
    duration: float,
) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment from Whisper's `<|t0|> text <|t1|>` pattern, window-relative.

    Shared by both Whisper backends (CTranslate2 and ONNX), so their segments agree.
    """
    return [
        (start, end, text)
        for start, end, text, _ in segments_with_tokens(tokens, timestamp_begin, eot, decode, duration)
    ]


def segments_with_tokens(
    tokens: Sequence[int],
    timestamp_begin: int,
    eot: int,
    decode: Callable[[list[int]], str],
    duration: float,
) -> list[tuple[float, float, str, list[int]]]:
    """`split_by_timestamps` with each segment's text tokens (what word alignment needs)."""
    segments: list[tuple[float, float, list[int]]] = []
    start: float | None = None
    text: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            time = min((token - timestamp_begin) * TIME_PRECISION, duration)
            if start is not None and text:
                segments.append((start, time, text))
                text, start = [], None
            else:
                start = time
        elif token < eot:
            text.append(token)
    if text:
        segments.append((start if start is not None else 0.0, duration, text))
    decoded = [(s, max(s, e), decode(t).strip(), t) for s, e, t in segments]
    return [segment for segment in decoded if segment[2]]
