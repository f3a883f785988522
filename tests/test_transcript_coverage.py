"""Every spoken word of a long recording reaches the transcript, on both Whisper backends.

Recordings of many different journal sentences (espeak-ng, several voices, pauses of 0.2 to 2 s, a
run-on sentence longer than a 30 s window, speech to the last sample) of 45 s, 2 min and 5 min go
through the real gateway and Triton: all three on the default backend (CTranslate2), the first two on
the ONNX backend. faster-whisper decodes the 45 s and 2 min ones in the same test, on the same model
and machine, as the word error rate's reference: int8 kernels differ between CPUs, so absolute word
error rates would not hold elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from functools import cache

import grpc
import httpx
import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.vad import get_speech_timestamps
from tritonclient.grpc import InferInput, InferResult
from tritonclient.grpc.aio import InferenceServerClient

from exporters.whisper.ct2_export import embedded_model_dir
from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.transcription.coverage import MIN_UNCOVERED, clip
from gateway.transcription.windows import group_regions, speech_regions, vad_options
from samo.contracts.whisper import AUDIO, OPTIONS, RESULT
from samo.evaluation.journal_speech import SAMPLE_RATE, JournalRecording, journal_recording
from samo.evaluation.read_speech import read_speech_recording
from samo.evaluation.wer import word_error_rate, word_recall
from samo.generation.whisper_coverage import MIN_UNCOVERED_S, gaps
from samo.triton.local_server import LocalTriton
from tests.conftest import Gateway
from tests.speech import RATE, jfk_samples
from tests.triton_statistics import batching_since, model_statistics

# (seconds, seed): the seeds shuffle sentences, voices and pauses differently.
RECORDINGS = {"45s": (45, 3), "2min": (120, 1), "5min": (300, 2)}
# Each backend against faster-whisper at its own precision (the ONNX backend decodes in float32).
BACKENDS = {"whisper": "int8", "whisper_onnx": "float32"}
# The recordings each backend decodes. Windows, cuts and repairs are the gateway's, the same for both
# backends; what a backend adds is how it decodes a window, which 45 s and 2 min show. The 5 min
# recording (ten windows) on the ONNX backend too cost a minute and a half of both cores per run.
BACKEND_RECORDINGS = {"whisper": ("45s", "2min", "5min"), "whisper_onnx": ("45s", "2min")}
# The recordings whose word error rate is compared with faster-whisper's: 45 s and 2 min (five windows,
# four cuts) on both. faster-whisper's sequential decoding of the 5 min one cost half a minute of a core
# per run; its sentences are each checked where they were spoken (`MIN_RECALL`) on the default backend.
WER_RECORDINGS = ("45s", "2min")
# Over all recordings of a backend, SAMO may lose at most 2 points of word error rate against
# faster-whisper's sequential decoding; one recording alone varies more (about 120 words in 45 s:
# one word is 0.8 points), so each recording gets 5.
MAX_EXTRA_WER = 0.02
MAX_EXTRA_WER_ONE_RECORDING = 0.05
# Share of a sentence's words found where it was spoken; tiny.en on these voices: 0.54 to 1.0.
MIN_RECALL = 0.5


@cache
def recording(name: str) -> JournalRecording:
    seconds, seed = RECORDINGS[name]
    return journal_recording(seconds, seed=seed)


@cache
def faster_whisper_text(name: str, compute_type: str) -> str:
    """faster-whisper's own long-form decoding (30 s windows, seek, previous text): the reference."""
    model = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=1)
    segments, _ = model.transcribe(recording(name).samples, beam_size=5, language="en")
    return " ".join(segment.text.strip() for segment in segments)


@dataclass(frozen=True)
class Result:
    recording: JournalRecording
    body: dict
    reference_text: str


@cache
def transcribe(gateway_url: str, model: str, name: str, word_timestamps: bool = False) -> dict:
    audio = recording(name)
    response = httpx.post(
        f"{gateway_url}/v1/transcribe",
        files={"file": (f"{name}.wav", audio.wav_bytes())},
        data={"model": model, "word_timestamps": str(word_timestamps).lower()},
        timeout=900,
    )
    assert response.status_code == 200, response.text
    return response.json()


def uncovered_speech(audio: JournalRecording, segments: list[dict]) -> list[tuple[float, float]]:
    """Stretches of VAD speech (seconds) outside every segment, longer than the coverage slack."""
    regions = get_speech_timestamps(audio.samples, vad_options(), sampling_rate=SAMPLE_RATE)
    gaps = []
    for region in regions:
        pieces = [(region["start"] / SAMPLE_RATE, region["end"] / SAMPLE_RATE)]
        for segment in segments:
            pieces = [
                part
                for a, b in pieces
                for part in ((a, min(b, segment["start"])), (max(a, segment["end"]), b))
                if part[1] > part[0]
            ]
        gaps += [(round(a, 2), round(b, 2)) for a, b in pieces if b - a >= MIN_UNCOVERED / SAMPLE_RATE]
    return gaps


def spoken_within(segments: list[dict], start: float, end: float) -> str:
    return " ".join(s["text"] for s in segments if s["end"] > start and s["start"] < end)


CASES = [(model, name) for model in BACKENDS for name in BACKEND_RECORDINGS[model]]


@pytest.mark.parametrize(("model", "name"), CASES, ids=[f"{m}-{n}" for m, n in CASES])
def test_every_stretch_of_speech_is_in_the_transcript(gateway: Gateway, model: str, name: str) -> None:
    audio = recording(name)
    body = transcribe(gateway.http_url, model, name)
    segments = body["segments"]
    assert body["duration"] == pytest.approx(audio.duration, abs=0.01)
    for before, after in itertools.pairwise(segments):
        assert before["start"] <= before["end"] <= after["start"] <= after["end"]
    assert segments[0]["start"] >= 0 and segments[-1]["end"] <= audio.duration + 0.01
    assert uncovered_speech(audio, segments) == []
    # No sentence vanishes: most of its words are where it was spoken (a lost sentence scores about
    # 0.15 from common words of its neighbours); the final one runs to the last sample.
    for utterance in audio.utterances:
        heard = spoken_within(segments, utterance.start, utterance.end)
        assert word_recall(utterance.text, heard) >= MIN_RECALL, f"{utterance.start:.1f} s: {heard!r}"
    assert segments[-1]["end"] >= audio.utterances[-1].end - 1.0


@pytest.mark.parametrize("model", list(BACKENDS))
def test_word_error_rate_is_that_of_faster_whisper(gateway: Gateway, model: str) -> None:
    compute_type = BACKENDS[model]
    references, ours, theirs = [], [], []
    for name in WER_RECORDINGS:
        text = recording(name).text
        samo = transcribe(gateway.http_url, model, name)["text"]
        reference = faster_whisper_text(name, compute_type)
        assert word_error_rate(text, samo) <= word_error_rate(text, reference) + MAX_EXTRA_WER_ONE_RECORDING
        references.append(text)
        ours.append(samo)
        theirs.append(reference)
    everything = " ".join(references)
    samo_wer = word_error_rate(everything, " ".join(ours))
    faster_whisper_wer = word_error_rate(everything, " ".join(theirs))
    assert samo_wer <= faster_whisper_wer + MAX_EXTRA_WER, (samo_wer, faster_whisper_wer)


def test_word_timestamps_stay_ordered_and_inside_the_audio_across_window_cuts(gateway: Gateway) -> None:
    audio = recording("2min")
    body = transcribe(gateway.http_url, "whisper", "2min", word_timestamps=True)
    segments = body["segments"]
    assert uncovered_speech(audio, segments) == []
    previous = 0.0
    for segment in segments:
        assert segment["words"], segment["text"]
        for word in segment["words"]:
            assert previous <= word["start"] <= word["end"] <= audio.duration + 0.01
            assert segment["start"] <= word["start"] and word["end"] <= segment["end"]
            previous = word["end"]
    # Segment bounds snap to their words, so repairs may start a few samples elsewhere: a word or two.
    assert word_error_rate(transcribe(gateway.http_url, "whisper", "2min")["text"], body["text"]) <= 0.02


def test_grpc_stream_openai_route_and_journal_keep_every_sentence(gateway: Gateway) -> None:
    audio = recording("45s")
    wav = audio.wav_bytes()
    expected = transcribe(gateway.http_url, "whisper", "45s")["text"]
    chunks = [wav[i : i + 256_000] for i in range(0, len(wav), 256_000)]
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        events = list(
            stub.TranscribeStream(iter(samo_v1_pb2.AudioChunk(data=c) for c in chunks), timeout=300)
        )
        unary = stub.Transcribe(samo_v1_pb2.TranscribeRequest(audio=wav), timeout=300)
    assert events[-1].transcript.text == unary.text == expected
    with httpx.Client(base_url=gateway.http_url, timeout=300) as http:
        openai = http.post(
            "/v1/audio/transcriptions", files={"file": ("n.wav", wav)}, data={"model": "whisper-1"}
        )
        journal = http.post("/v1/journal", files={"file": ("entry.wav", wav)})
    assert openai.status_code == 200 and journal.status_code == 200, (openai.text, journal.text)
    assert openai.json()["text"] == expected
    assert journal.json()["transcript"]["text"] == expected


def inputs(samples: np.ndarray, option: dict) -> list[InferInput]:
    """One request of the Whisper contract: a window's audio and its options."""
    audio = InferInput(AUDIO, [1, samples.size], "FP32")
    audio.set_data_from_numpy(samples.reshape(1, -1))
    encoded = InferInput(OPTIONS, [1, 1], "BYTES")
    encoded.set_data_from_numpy(np.array([[json.dumps(option).encode()]], dtype=np.object_))
    return [audio, encoded]


def parsed(result: InferResult | None) -> dict:
    """The window transcript a Whisper model answered."""
    assert result is not None
    answer = result.as_numpy(RESULT)
    assert answer is not None
    return json.loads(answer.reshape(-1)[0])


@pytest.mark.parametrize("model", list(BACKENDS))
def test_windows_with_and_without_timestamps_share_a_batch(triton: LocalTriton, model: str) -> None:
    """Repairs decode without timestamps while other windows decode with them: one dynamic batch
    must hold both, each window getting what it gets alone."""
    speech = jfk_samples().astype(np.float32) / 32768
    clips = [speech, speech[: 5 * RATE], speech[3 * RATE :], speech[2 * RATE : 9 * RATE]]
    options = [{"beam_size": 2, "without_timestamps": i % 2 == 1} for i in range(len(clips))]

    async def run() -> tuple[list[dict], list[dict], int, int]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            alone = [await client.infer(model, inputs(c, o)) for c, o in zip(clips, options, strict=True)]
            before = await model_statistics(client, model)
            together = await asyncio.gather(
                *(client.infer(model, inputs(c, o)) for c, o in zip(clips, options, strict=True))
            )
            executions, inferences = await batching_since(client, model, before, len(clips))
        finally:
            await client.close()
        parse = [parsed(r) for r in alone]
        parse_together = [parsed(r) for r in together]
        return parse, parse_together, executions, inferences

    alone, together, executions, inferences = asyncio.run(run())
    assert executions < inferences, "the windows should have shared dynamic batches"
    assert together == alone
    for option, result in zip(options, alone, strict=True):
        assert result["segments"], option
        if option["without_timestamps"]:
            assert len(result["segments"]) == 1


def test_the_ctranslate2_backend_decodes_the_speech_a_window_leaves_out_from_the_same_window(
    triton: LocalTriton,
) -> None:
    """A window sent with its speech spans comes back with the segments it gets alone, plus segments
    inside the speech those leave out, decoded again from the same encoder output; nothing else
    changes. The windows are real read speech whose last sentence tiny.en leaves out on the machines
    measured (speech runs to the window's end); where it does not, the two answers must be equal."""
    windows = []
    audio = read_speech_recording(seed=0).samples
    regions = speech_regions(audio)
    for start, end in group_regions(regions):
        spans = [((a - start) / RATE, (b - start) / RATE) for a, b in clip(regions, start, end)]
        windows.append((audio[start:end], spans))

    async def run() -> list[tuple[dict, dict]]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            answers = []
            for samples, spans in windows:
                plain = await client.infer("whisper", inputs(samples, {}))
                covered = await client.infer("whisper", inputs(samples, {"speech": spans}))
                answers.append((plain, covered))
        finally:
            await client.close()
        return [(parsed(plain), parsed(covered)) for plain, covered in answers]

    gaps_seen = 0
    for (samples, spans), (plain, covered) in zip(windows, asyncio.run(run()), strict=True):
        plain_spans = [(s["start"], s["end"]) for s in plain["segments"]]
        left_out = gaps(spans, plain_spans, 0.0, samples.size / RATE, MIN_UNCOVERED_S)
        added = [s for s in covered["segments"] if s not in plain["segments"]]
        assert [s for s in covered["segments"] if s in plain["segments"]] == plain["segments"]
        if not left_out:
            assert covered == plain
            continue
        gaps_seen += 1
        assert added, f"a gap of {left_out} was not decoded again"
        for segment in added:
            assert any(pieces[0][0] - 0.02 <= segment["start"] < pieces[-1][1] for pieces in left_out), (
                segment
            )
        all_spans = [(s["start"], s["end"]) for s in covered["segments"]]
        assert len(gaps(spans, all_spans, 0.0, samples.size / RATE, MIN_UNCOVERED_S)) < len(left_out)
    if not gaps_seen:
        pytest.skip("tiny.en left no speech out of these windows on this CPU: nothing to decode again")
