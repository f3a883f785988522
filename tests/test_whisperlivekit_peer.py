"""WhisperLiveKit as a peer of `samo bench live` (load_tests/whisperlivekit_peer.py): its messages read into
commits, finalize latencies and the transcript, from a session its 0.2.26 server sent (shortened), and, where
`make peers-livekit-env` installed it, one real session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from load_tests.whisperlive_peer import PeerPace
from load_tests.whisperlivekit_peer import (
    WHISPERLIVEKIT_VENV,
    LiveKitRun,
    pcm16,
    seconds,
    server_command,
    stream_to_whisperlivekit,
    whisperlivekit_server,
)
from tests.speech import jfk_samples


def _state(lines: list[tuple[int, str, str, str]], buffer: str) -> dict:
    """A message as its `FrontData.to_dict()` writes it in `mode=full`."""
    return {
        "status": "active_transcription",
        "lines": [{"speaker": s, "text": t, "start": a, "end": b} for s, t, a, b in lines],
        "buffer_transcription": buffer,
        "buffer_diarization": "",
        "buffer_translation": "",
        "remaining_time_transcription": 0.7,
        "remaining_time_transcription_processing": 0.7,
        "remaining_time_transcription_policy": 0.9,
        "remaining_time_diarization": 0,
    }


START = "0:00:00.00"
SESSION = [  # (seconds after speech started, message)
    (0.0, {"type": "config", "useAudioWorklet": True, "mode": "full"}),
    (0.0, {**_state([], ""), "status": "no_audio_detected", "remaining_time_transcription": 0}),
    (2.05, _state([], " The concept.")),
    (2.63, _state([(1, " The", START, "0:00:00.30")], " concert wasn't amazing.")),
    (3.26, _state([(1, " The concert wasn't amazing.", START, "0:00:01.34")], "")),
    (3.31, _state([(1, " The concert wasn't amazing.", START, "0:00:01.34")], "")),  # only times changed
    (3.83, _state([(1, " The concert wasn't amazing.", START, "0:00:01.34")], " and the drummer")),
    (
        4.46,
        _state(
            [(1, " The concert wasn't amazing. and the drummer played the", START, "0:00:02.92")],
            " solo that went on.",
        ),
    ),
    (
        11.45,  # after a pause over --pause-segmentation-seconds: a silence line, then a new line
        _state(
            [
                (1, " The concert wasn't amazing. and the drummer played the solo", START, "0:00:03.18"),
                (-2, "", "0:00:03.18", "0:00:09.20"),
                (1, " The first good thing", "0:00:09.20", "0:00:10.16"),
            ],
            " today was",
        ),
    ),
    (12.23, {"type": "ready_to_stop"}),
]


def _run(session: list[tuple[float, dict]]) -> LiveKitRun:
    run = LiveKitRun(speech_sent_at=100.0)
    for at, body in session:
        run.observe(json.loads(json.dumps(body)), 100.0 + at)
    return run


def test_times_are_read_from_its_hours_minutes_seconds() -> None:
    assert seconds("0:00:01.34") == pytest.approx(1.34)
    assert seconds("1:02:03.50") == pytest.approx(3723.5)


def test_each_message_that_adds_committed_words_is_one_commit_at_the_end_of_its_last_word() -> None:
    run = _run(SESSION)

    assert [(c.text, c.end_s) for c in run.commits] == [
        ("The", 0.30),
        ("concert wasn't amazing.", 1.34),
        ("and the drummer played the", 2.92),
        ("solo The first good thing", 10.16),
    ]
    assert run.finalize_latencies() == pytest.approx([2.33, 1.92, 1.54, 1.29])


def test_the_transcript_is_the_committed_lines_then_the_buffer_left_at_the_end() -> None:
    run = _run(SESSION)

    assert run.stopped
    assert run.transcript == (
        "The concert wasn't amazing. and the drummer played the solo The first good thing today was"
    )
    assert run.never_completed == 1


def test_a_session_whose_buffer_emptied_left_nothing_uncommitted() -> None:
    last = _state([(1, " The concert wasn't amazing.", START, "0:00:01.34")], "")
    run = _run([*SESSION[:4], (3.26, last), (4.0, {"type": "ready_to_stop"})])

    assert run.never_completed == 0
    assert run.transcript == "The concert wasn't amazing."
    assert run.errors == []


def test_an_error_message_is_kept_and_adds_no_text() -> None:
    run = _run([(0.0, {"type": "error", "error": "Language 'xx' is not supported"})])

    assert run.errors == ["Language 'xx' is not supported"]
    assert run.transcript == ""


def test_samples_go_as_16_bit_pcm_clipped_to_full_scale() -> None:
    data = pcm16(np.array([0.0, 0.5, -1.0, 2.0], np.float32))

    assert np.frombuffer(data, "<i2").tolist() == [0, 16383, -32767, 32767]


def test_its_server_runs_faster_whisper_with_local_agreement_on_the_given_folder_in_english() -> None:
    command = server_command(Path("venv"), Path("/models/tiny.en"), 8123)

    pairs = {
        flag: value
        for flag, value in zip(command, [*command[1:], ""], strict=True)
        if flag.startswith("--") and not value.startswith("--")
    }
    assert command[0] == "venv/bin/whisperlivekit-server"
    assert pairs["--backend"] == "faster-whisper"
    assert pairs["--backend-policy"] == "localagreement"
    assert pairs["--model_dir"] == "/models/tiny.en"
    assert pairs["--language"] == "en"
    assert "--pcm-input" in command
    assert pairs["--warmup-file"].endswith("tests/data/jfk.wav")


@pytest.fixture(scope="module")
def whisperlivekit_url() -> Iterator[str]:
    """A real WhisperLiveKit server (`make peers-livekit-env`) on the stack's tiny.en folder."""
    if not (WHISPERLIVEKIT_VENV / "bin" / "whisperlivekit-server").exists():
        pytest.skip("no WhisperLiveKit environment (`make peers-livekit-env`)")
    from exporters.whisper.ct2_export import embedded_model_dir

    with whisperlivekit_server(embedded_model_dir()) as url:
        yield url


def test_a_real_session_commits_the_speech_and_ends_with_ready_to_stop(whisperlivekit_url: str) -> None:
    clip = jfk_samples()[: 16000 * 6].astype(np.float32) / 32768
    run = asyncio.run(stream_to_whisperlivekit(whisperlivekit_url, clip, PeerPace(trailing_silence_s=1.0)))

    assert run.stopped
    assert run.errors == []
    assert run.commits
    assert "fellow americans" in run.transcript.lower().replace(",", "")
    ends = [commit.end_s for commit in run.commits]
    assert ends == sorted(ends)
    assert 0 < ends[-1] <= clip.size / 16000 + 0.5
