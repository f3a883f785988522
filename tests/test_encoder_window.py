"""Short encoder windows (`DecodeOptions.window_s`, what live decodes use) on the real tiny.en in Triton:
journal sentences decode as well as in Whisper's 30 s window, a window never cuts its audio, and a
window's answer is its own whatever the encoder length of the windows it is batched with."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from samo.contracts.whisper import AUDIO, OPTIONS, RESULT, DecodeOptions
from samo.evaluation.journal_speech import journal_recording
from samo.evaluation.wer import word_error_rate
from samo.triton.local_server import LocalTriton
from tests.speech import RATE
from tests.triton_statistics import batching_since, model_statistics

# Journal sentences decoded alone with 10 s windows measured fewer word errors than 30 s ones (tiny.en:
# 0.085 against 0.109 over 58 sentences); a few sentences here may tip either way on another CPU.
MAX_EXTRA_WER = 0.05
FULL = {"beam_size": 5, "without_timestamps": True}
SHORT = {**FULL, "window_s": 10.0}


def _window(clip: np.ndarray, options: dict) -> list[InferInput]:
    audio = InferInput(AUDIO, [1, clip.size], "FP32")
    audio.set_data_from_numpy(clip.reshape(1, -1).astype(np.float32))
    encoded = InferInput(OPTIONS, [1, 1], "BYTES")
    encoded.set_data_from_numpy(np.array([[json.dumps(options).encode()]], dtype=np.object_))
    return [audio, encoded]


def _text(answer: object) -> str:
    body = json.loads(answer.as_numpy(RESULT).reshape(-1)[0])  # type: ignore[attr-defined]
    return " ".join(segment["text"].strip() for segment in body["segments"])


def test_short_encoder_windows_decode_journal_sentences_and_batch_only_with_their_length(
    triton: LocalTriton,
) -> None:
    recording = journal_recording(30, seed=21, long_sentences=0)
    clips = [
        (u.text, recording.samples[int(max(0.0, u.start - 0.2) * RATE) : int((u.end + 0.2) * RATE)])
        for u in recording.utterances
    ]
    # Three sentences in one window: 12 s or more of audio, longer than the 10 s asked for.
    first, last = recording.utterances[0], recording.utterances[2]
    long_clip = recording.samples[int(first.start * RATE) : int((last.end + 0.2) * RATE)]
    long_text = " ".join(u.text for u in recording.utterances[:3])
    assert long_clip.size > 11 * RATE

    async def run() -> tuple[list, list, list, list, int, int]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            full = [await client.infer("whisper", _window(clip, FULL)) for _, clip in clips]
            short = [await client.infer("whisper", _window(clip, SHORT)) for _, clip in clips]
            long = [await client.infer("whisper", _window(long_clip, options)) for options in (FULL, SHORT)]
            before = await model_statistics(client, "whisper")
            mixed = [_window(clip, options) for _, clip in clips for options in (SHORT, FULL)]
            together = await asyncio.gather(*(client.infer("whisper", window) for window in mixed))
            executions, inferences = await batching_since(client, "whisper", before, len(mixed))
        finally:
            await client.close()
        return full, short, long, together, executions, inferences

    full, short, long, together, executions, inferences = asyncio.run(run())
    reference = " ".join(text for text, _ in clips)
    full_wer = word_error_rate(reference, " ".join(_text(a) for a in full))
    short_wer = word_error_rate(reference, " ".join(_text(a) for a in short))
    assert short_wer <= full_wer + MAX_EXTRA_WER, (short_wer, full_wer)
    # The window is never shorter than its audio: the last sentence is heard too.
    long_full, long_short = (word_error_rate(long_text, _text(a)) for a in long)
    assert long_short <= long_full + MAX_EXTRA_WER, (_text(long[1]), long_text)
    # Batched with windows of another length, each answer is the one it gets alone.
    assert executions < inferences, "the windows should have shared dynamic batches"
    alone = [answer for pair in zip(short, full, strict=True) for answer in pair]
    assert [_text(a) for a in together] == [_text(a) for a in alone]


@pytest.fixture()
def ct2_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The CTranslate2 backend module, importable outside Triton (its utilities are not called here)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("utils"))
    for name in ("samo.triton.backends.base", "samo.triton.backends.whisper_ct2"):
        sys.modules.pop(name, None)
    yield importlib.import_module("samo.triton.backends.whisper_ct2")
    for name in ("samo.triton.backends.base", "samo.triton.backends.whisper_ct2"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("audio_s", "window_s", "frames"),
    [(4.0, None, 3000), (4.0, 10.0, 1000), (4.0, 12.5, 1300), (14.2, 10.0, 1500), (29.0, 30.0, 3000)],
)
def test_the_encoder_hears_the_window_asked_for_and_never_less_than_the_audio(
    ct2_backend: types.ModuleType, audio_s: float, window_s: float | None, frames: int
) -> None:
    backend = object.__new__(ct2_backend.TritonPythonModel)
    backend.features = FeatureExtractor(feature_size=80)
    audio = np.random.default_rng(0).normal(0, 0.1, int(audio_s * RATE)).astype(np.float32)
    mel = backend._mel(audio, DecodeOptions(window_s=window_s))
    assert mel.shape == (80, frames)


@pytest.mark.parametrize(("backend", "refused"), [("onnx", True), ("ctranslate2", False)])
def test_a_short_encoder_window_is_refused_for_models_that_encode_30_s_only(
    backend: str, refused: bool
) -> None:
    from gateway.errors import SamoError
    from gateway.transcription.model import WhisperModel
    from gateway.transcription.service import TranscriptionService
    from samo.contracts.whisper import WhisperModelCard

    card = WhisperModelCard(
        backend=backend, source="test", multilingual=False, languages=("en",), compute_type="int8"
    )
    service = object.__new__(TranscriptionService)
    check = lambda: service.check_options(WhisperModel("w", "1", card), DecodeOptions(window_s=10.0))  # noqa: E731
    if refused:
        with pytest.raises(SamoError, match="window_s: model `w` \\(onnx backend\\)"):
            check()
    else:
        check()
