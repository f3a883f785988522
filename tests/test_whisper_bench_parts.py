"""The parts `samo bench whisper` measures with: the read-speech recording, the stage split of py-spy's
stacks, and the per-window speech spans the gateway sends to the Whisper model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.transcription.planner import Window
from gateway.transcription.service import _Payloads
from load_tests.whisper_split import GATEWAY_STAGES, OTHER, STUB_STAGES, split, stage_of
from samo.contracts.whisper import SAMPLE_RATE, DecodeOptions
from samo.evaluation.read_speech import read_speech_clips, read_speech_recording


def test_the_read_speech_recording_holds_every_clip_once_with_pauses_between() -> None:
    clips = read_speech_clips()
    recording = read_speech_recording(seed=3)
    assert sorted(u.text for u in recording.utterances) == sorted(text for text, _ in clips)
    assert len({text for text, _ in clips}) == len(clips) >= 12
    speech = sum(samples.size for _, samples in clips) / SAMPLE_RATE
    assert recording.duration >= 60 > speech
    for before, after in zip(recording.utterances, recording.utterances[1:], strict=False):
        assert 0.2 <= after.start - before.end <= 2.0 + 1e-3
    assert recording.utterances[-1].end == pytest.approx(recording.duration)
    assert read_speech_recording(seed=4).text != recording.text


def test_samples_go_to_the_innermost_stage_found_in_their_frames_or_source_lines(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(
        "def _decode(self):\n    encoded = self.model.encode(features)\n    self.model.generate(x)\n"
    )
    raw = "\n".join(
        [
            f"execute (base.py:10);run ({model}:1);_decode ({model}:2) 30",
            f"execute (base.py:10);run ({model}:1);_decode ({model}:3) 50",
            f"execute (base.py:10);_cover_gaps ({model}:3) 5",
            "execute (base.py:10);_mel (model.py:1);__call__ (faster_whisper/feature_extractor.py:9) 7",
            "execute (base.py:10);wait (threading.py:1) 2",
        ]
    )
    counts = split(raw, STUB_STAGES)
    assert counts == {
        "CTranslate2 encode": 30,
        "CTranslate2 generate": 50,
        "gaps decoded again (same encoder output)": 5,
        "log-mel features": 7,
        OTHER: 2,
    }
    vad = ["run (gateway/transcription/planner.py:1)", "speech_regions (gateway/transcription/windows.py:2)"]
    assert stage_of(vad, GATEWAY_STAGES) == "VAD (Silero)"


def test_a_window_carries_its_speech_in_seconds_from_its_start_unless_timestamps_are_off() -> None:
    start = 40 * SAMPLE_RATE
    window = Window(
        start, start + 20 * SAMPLE_RATE, np.zeros(20 * SAMPLE_RATE, np.float32), ((start, start + 8000),)
    )
    payloads = _Payloads(DecodeOptions(), b"")
    sent = DecodeOptions.model_validate_json(payloads.window(window))
    assert sent.speech == ((0.0, 0.5),)
    plain = _Payloads(DecodeOptions(without_timestamps=True), b"")
    assert DecodeOptions.model_validate_json(plain.window(window)).speech == ()


@pytest.mark.parametrize("spans", [((-1.0, 2.0),), ((3.0, 2.0),), ((0.0, 31.0),)])
def test_speech_spans_outside_a_window_are_refused(spans: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValidationError):
        DecodeOptions(speech=spans)
