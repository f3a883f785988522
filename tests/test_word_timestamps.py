"""Word timestamps through the real gateway and Triton: CTranslate2 computes them, ONNX refuses them."""

from __future__ import annotations

import asyncio
import itertools
import re

import httpx
import numpy as np
import pytest

from gateway.client import GrpcClient, HttpClient
from gateway.errors import ErrorType, SamoError
from tests.conftest import Gateway
from tests.speech import JFK_TEXT, JFK_WAV, RATE, jfk_samples, long_speech, wav_bytes, word_error_rate

JFK_SECONDS = 11.0
ONNX_REFUSAL = (
    "word_timestamps: model `whisper_onnx` (onnx backend) does not compute word timestamps; "
    "use a CTranslate2 model"
)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _transcribe(http: httpx.Client, data: bytes, **form: str) -> httpx.Response:
    return http.post("/v1/transcribe", files={"file": ("entry.wav", data)}, data=form, timeout=120)


def assert_words_fit_segments(segments: list[dict]) -> list[dict]:
    """Words in order, not overlapping, inside their segment, and spelling out its text; all words."""
    words = []
    for segment in segments:
        assert segment["words"], segment
        for word in segment["words"]:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"], (word, segment)
            assert 0.0 <= word["probability"] <= 1.0
        assert _squash("".join(w["word"] for w in segment["words"])) == _squash(segment["text"])
        words.extend(segment["words"])
    for before, after in itertools.pairwise(words):
        assert before["end"] <= after["start"], (before, after)
    return words


def test_jfk_words_are_ordered_inside_segments_and_spell_the_text(http: httpx.Client) -> None:
    response = _transcribe(http, JFK_WAV.read_bytes(), word_timestamps="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert word_error_rate(JFK_TEXT, body["text"]) <= 0.05, body["text"]
    words = assert_words_fit_segments(body["segments"])
    assert len(words) >= 20
    assert words[0]["start"] < 1.0  # the speech starts at once
    assert words[-1]["end"] < JFK_SECONDS
    assert any(w["word"].strip() == "country." for w in words)  # punctuation stays with its word


def test_words_are_in_audio_time_across_windows(http: httpx.Client) -> None:
    audio = long_speech(repeats=3)  # about 36 s: two windows or more
    body = _transcribe(http, wav_bytes(audio), word_timestamps="true").json()
    words = assert_words_fit_segments(body["segments"])
    assert words[-1]["end"] <= audio.size / RATE
    assert words[-1]["start"] > 2 * JFK_SECONDS  # the third repetition, not window-relative times
    assert body["segments"][-1]["start"] > 2 * JFK_SECONDS


def test_without_word_timestamps_segments_have_no_words(http: httpx.Client) -> None:
    body = _transcribe(http, JFK_WAV.read_bytes()).json()
    assert body["segments"] and all(s["words"] == [] for s in body["segments"])


PROBABILITY_TOLERANCE = 0.02
"""Between a request alone and batched: int8 kernels give batch-dependent numerics (0.9929 against 0.9923
seen on an AVX-512 machine), far less than what another clip's words would differ by."""
TIMESTAMP_FRAME_S = 0.02
"""Whisper's timestamp resolution."""
TIME_TOLERANCE_FRAMES = 2
"""Compared in whole frames: 2.4 - 2.36 is 0.04000000000000004 in floats, two frames apart."""


def _mismatch(first: dict, second: dict) -> str | None:
    """How `second` is not the answer `first` gave for the same clip and options; None if it is.

    Text and words must be equal; each word's start and end within `TIME_TOLERANCE_FRAMES` and its
    probability within `PROBABILITY_TOLERANCE`."""
    if second["text"] != first["text"]:
        return f"text {second['text']!r} != {first['text']!r}"
    words = [[w for s in answer["segments"] for w in s["words"]] for answer in (first, second)]
    if [w["word"] for w in words[1]] != [w["word"] for w in words[0]]:
        return f"words {[w['word'] for w in words[1]]} != {[w['word'] for w in words[0]]}"
    for expected, got in zip(*words, strict=True):
        for key in ("start", "end"):
            frames = round(abs(got[key] - expected[key]) / TIMESTAMP_FRAME_S)
            if frames > TIME_TOLERANCE_FRAMES:
                return f"{got['word']!r}: {key} {got[key]} != {expected[key]} ({frames} frames apart)"
        if abs(got["probability"] - expected["probability"]) > PROBABILITY_TOLERANCE:
            return (
                f"{got['word']!r}: probability {got['probability']} != {expected['probability']}"
                f" (tolerance {PROBABILITY_TOLERANCE})"
            )
    return None


def test_concurrent_requests_with_and_without_words_each_get_their_own(gateway_url: str) -> None:
    """Six clips sent together, with and without words, each answered as when it was sent alone:
    its own text and words, timestamps within two frames and probabilities within 0.02 (batched int8
    kernels round differently; another clip's answer is far outside these bounds)."""
    speech = jfk_samples()
    jobs = [
        (speech, True),
        (speech, False),
        (speech[: 5 * RATE], True),
        (speech[3 * RATE :], False),
        (speech[2 * RATE : 9 * RATE], True),
        (speech[6 * RATE :], True),
    ]

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with httpx.AsyncClient(base_url=gateway_url, timeout=180) as client:

            async def one(clip: np.ndarray, words: bool) -> dict:
                response = await client.post(
                    "/v1/transcribe",
                    files={"file": ("c.wav", wav_bytes(clip))},
                    data={"word_timestamps": str(words).lower()},
                )
                assert response.status_code == 200, response.text
                return response.json()

            alone = [await one(clip, words) for clip, words in jobs]
            together = await asyncio.gather(*(one(clip, words) for clip, words in jobs))
            return alone, list(together)

    alone, together = asyncio.run(scenario())
    # The comparison tells every job's answer from every other's: an answer swapped between two
    # requests would fail it.
    for (i, first), (j, other) in itertools.permutations(enumerate(alone), 2):
        assert _mismatch(first, other), (
            f"jobs {i} and {j} have the same answer: the test could not see a swap"
        )
    for (_, words), first, second in zip(jobs, alone, together, strict=True):
        assert _mismatch(first, second) is None, _mismatch(first, second)
        if words:
            assert_words_fit_segments(second["segments"])
        else:
            assert all(s["words"] == [] for s in second["segments"])


def test_onnx_model_refuses_word_timestamps_with_422(http: httpx.Client) -> None:
    clip = wav_bytes(jfk_samples()[: 2 * RATE])
    response = _transcribe(http, clip, word_timestamps="true", model="whisper_onnx")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == ONNX_REFUSAL
    openai = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("entry.wav", clip)},
        data={
            "model": "whisper_onnx",
            "response_format": "verbose_json",
            "timestamp_granularities[]": "word",
        },
        timeout=60,
    )
    assert openai.status_code == 422, openai.text
    assert openai.json()["error"]["message"] == ONNX_REFUSAL


def _openai(
    http: httpx.Client, granularities: list[str], response_format: str = "verbose_json"
) -> httpx.Response:
    return http.post(
        "/v1/audio/transcriptions",
        files={"file": ("jfk.wav", JFK_WAV.read_bytes())},
        data={
            "model": "whisper-1",
            "response_format": response_format,
            "timestamp_granularities[]": granularities,
        },
        timeout=120,
    )


def test_openai_verbose_json_with_word_granularity(http: httpx.Client) -> None:
    response = _openai(http, ["word", "segment"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"task", "language", "duration", "text", "words", "segments"}
    words = body["words"]
    assert set(words[0]) == {"word", "start", "end"}
    assert words[0]["word"] == words[0]["word"].strip() != ""
    assert _squash("".join(w["word"] for w in words)) == _squash(body["text"])
    for before, after in itertools.pairwise(words):
        assert before["start"] <= before["end"] <= after["start"]
    assert words[-1]["end"] < JFK_SECONDS
    assert body["segments"] and body["segments"][0]["id"] == 0

    only_words = _openai(http, ["word"]).json()
    assert "segments" not in only_words and only_words["words"] == words
    only_segments = _openai(http, ["segment"]).json()
    assert "words" not in only_segments
    # With words, segment bounds move to their first and last word (as faster-whisper does).
    assert [s["text"] for s in only_segments["segments"]] == [s["text"] for s in body["segments"]]


def test_openai_granularities_need_verbose_json(http: httpx.Client) -> None:
    response = _openai(http, ["word"], response_format="json")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == (
        "timestamp_granularities[]: needs `response_format=verbose_json`"
    )


@pytest.fixture()
def clients(gateway: Gateway):
    with HttpClient(gateway.http_url) as http, GrpcClient(gateway.grpc_target) as rpc:
        yield http, rpc


def test_word_timestamps_are_identical_over_http_and_grpc(clients) -> None:
    http, rpc = clients
    audio = JFK_WAV.read_bytes()
    via_http = http.transcribe(audio, beam_size=2, word_timestamps=True)
    via_grpc = rpc.transcribe(audio, beam_size=2, word_timestamps=True)
    assert via_grpc == via_http
    assert all(segment.words for segment in via_grpc.segments)
    assert via_grpc.options.word_timestamps


def test_onnx_refusal_matches_across_transports(clients) -> None:
    http, rpc = clients
    clip = wav_bytes(jfk_samples()[: 2 * RATE])
    with pytest.raises(SamoError) as over_http:
        http.transcribe(clip, model="whisper_onnx", word_timestamps=True)
    with pytest.raises(SamoError) as over_grpc:
        rpc.transcribe(clip, model="whisper_onnx", word_timestamps=True)
    assert over_http.value.type is over_grpc.value.type is ErrorType.INVALID_INPUT
    assert over_http.value.message == over_grpc.value.message == ONNX_REFUSAL
