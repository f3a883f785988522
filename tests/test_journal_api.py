"""POST /v1/journal: text and audio entries, JSON and Server-Sent Events, through real Triton."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from gateway.summarization.sentences import split_sentences
from tests.conftest import LABELS
from tests.speech import JFK_WAV, RATE, long_speech, wav_bytes, word_error_rate

ENTRY = (
    "I finally finished the project and I feel so proud of us. "
    "Then my sister called with bad news about dad's health. "
    "I am scared and I cannot sleep. "
    "Tomorrow I will visit him."
)


def events(response: httpx.Response) -> list[tuple[str, dict]]:
    parsed = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


def test_text_entry_gets_emotions_per_sentence_and_a_summary(http: httpx.Client) -> None:
    response = http.post("/v1/journal", json={"text": ENTRY, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "text" and body["transcript"] is None
    assert list(body["emotions"]["scores"]) == list(LABELS)
    assert len(body["emotions"]["labels"]) <= 3
    assert [s["text"] for s in body["sentences"]] == split_sentences(ENTRY)
    assert body["sentences"][0]["emotions"]["labels"][0]["label"] == "pride"
    assert body["summary"]["method"] == "extractive" and body["summary"]["summary"]
    assert body["models"]["emotion"]["name"] == "emotion"
    assert body["models"]["summarization"]["name"] == "extractive"
    assert body["models"]["transcription"] is None


def test_audio_entry_is_transcribed_then_analyzed(http: httpx.Client) -> None:
    response = http.post("/v1/journal", files={"file": ("entry.wav", JFK_WAV.read_bytes())}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "audio"
    text = body["transcript"]["text"]
    assert (
        word_error_rate(
            "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
            text,
        )
        <= 0.05
    )
    assert body["emotions"] is not None
    assert " ".join(s["text"] for s in body["sentences"]) == " ".join(split_sentences(text))
    assert body["models"]["transcription"]["backend"] == "ctranslate2"


def test_audio_stream_sends_segments_in_order_then_the_analysis(http: httpx.Client) -> None:
    audio = wav_bytes(long_speech(repeats=3))
    response = http.post(
        "/v1/journal",
        files={"file": ("entry.wav", audio)},
        headers={"accept": "text/event-stream"},
        timeout=120,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response)
    kinds = [kind for kind, _ in stream]
    assert kinds[-1] == "analysis" and set(kinds[:-1]) == {"segment"} and len(kinds) > 2
    segments = [data for kind, data in stream if kind == "segment"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    analysis = stream[-1][1]
    assert [s["text"] for s in analysis["transcript"]["segments"]] == [s["text"] for s in segments]


def test_text_stream_is_one_analysis_event(http: httpx.Client) -> None:
    response = http.post("/v1/journal", json={"text": ENTRY}, headers={"accept": "text/event-stream"})
    assert [kind for kind, _ in events(response)] == ["analysis"]


def test_silent_audio_gives_an_empty_analysis(http: httpx.Client) -> None:
    silence = wav_bytes(np.zeros(2 * RATE, dtype=np.int16))
    body = http.post("/v1/journal", files={"file": ("quiet.wav", silence)}).json()
    assert body["emotions"] is None and body["summary"] is None and body["sentences"] == []


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"json": {"text": "  "}}, 422, "text: the entry is empty or whitespace only"),
        ({"json": {"text": 5}}, 422, "text: Input should be a valid string"),
        (
            {"json": ["secret entry"]},
            422,
            "body: send a JSON object with `text`, or multipart audio with `file`",
        ),
        (
            {"content": b"{", "headers": {"content-type": "application/json"}},
            422,
            "request body is not valid JSON",
        ),
        (
            {"files": {"file": ("a.wav", b"secret entry " * 50)}},
            415,
            "file is not audio in a supported format (wav, flac, mp3, ogg/opus, webm, m4a)",
        ),
        ({"files": {"other": ("a.wav", b"x")}, "data": {"language": "en"}}, 422, "file: field required"),
        (
            {"files": {"file": ("a.wav", JFK_WAV.read_bytes())}, "data": {"beam_size": "0"}},
            422,
            "beam_size: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_journal_requests(http: httpx.Client, request_kwargs: dict, status: int, message: str) -> None:
    response = http.post("/v1/journal", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"] == message
    assert "secret" not in response.text
