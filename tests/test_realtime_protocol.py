"""The parts of live transcription that need no server: LocalAgreement-2, the server VAD's turn rule on
Silero's real probabilities, client events and their errors, PCM in."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from gateway.errors import SamoError
from gateway.realtime.agreement import Agreement, continuation, joined, normalized
from gateway.realtime.events import (
    Append,
    BadEvent,
    BetaSessionUpdate,
    LiveConfig,
    ServerVad,
    SessionUpdate,
    parse_client_event,
)
from gateway.realtime.pcm import ToWhisperRate, pcm16
from gateway.realtime.turns import FRAME, SpeechStart, SpeechStop, StreamingVad, TurnDetector
from tests.speech import RATE, jfk_samples


def words(text: str) -> list[str]:
    return text.split()


def test_two_decodes_that_agree_confirm_their_common_prefix_and_nothing_more() -> None:
    agreement = Agreement()
    assert agreement.hypothesis(words("And so my fel")) == ([], words("And so my fel"))
    confirmed, tail = agreement.hypothesis(words("And so, my fellow Americans"))
    assert confirmed == words("And so, my") and tail == words("fellow Americans")
    # "Americans" ended the decode before, at the edge of the audio it heard: the two agree on it, and
    # it is still not confirmed until a later decode has heard past it.
    confirmed, tail = agreement.hypothesis(words("And so my fellow Americans ask"))
    assert confirmed == words("fellow") and tail == words("Americans ask")
    # A later decode that rewrites confirmed text changes nothing already confirmed.
    confirmed, tail = agreement.hypothesis(words("In so my fellow Americans, ask not"))
    assert confirmed == words("Americans,") and tail == words("ask not")
    assert agreement.final(words("And so my fellow Americans, ask not what your country")) == words(
        "ask not what your country"
    )
    assert agreement.confirmed == words("And so, my fellow Americans, ask not what your country")


def test_the_final_decode_is_placed_after_confirmed_words_it_revised_or_dropped() -> None:
    confirmed = [normalized(w) for w in words("I went to the")]
    # Revised last word: counted as that word, not as a new one.
    assert continuation(confirmed, [normalized(w) for w in words("I want to the store")]) == 4
    # A dropped word: the rest still follows.
    assert continuation(confirmed, [normalized(w) for w in words("I went the store today")]) == 3
    # A decode of the turn's last seconds only starts inside the confirmed words.
    tail = [normalized(w) for w in words("to the store today")]
    assert continuation(confirmed, tail, from_start=False) == 2
    assert continuation([], tail) == 0


def test_deltas_join_into_the_completed_text() -> None:
    agreement = Agreement()
    deltas = []
    for hypothesis in ("ask not", "ask not what your", "ask not what your country can"):
        had = bool(agreement.confirmed)
        confirmed, _ = agreement.hypothesis(words(hypothesis))
        if confirmed:
            deltas.append(joined(confirmed, after=had))
    had = bool(agreement.confirmed)
    deltas.append(joined(agreement.final(words("ask not what your country can do for you.")), after=had))
    assert "".join(deltas) == " ".join(agreement.confirmed) == "ask not what your country can do for you."


def test_server_vad_opens_a_turn_with_its_prefix_and_closes_it_after_the_silence() -> None:
    detector = TurnDetector(ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500))
    probabilities = [0.1] * 20 + [0.9] * 30 + [0.4] * 5 + [0.9] * 5 + [0.1] * 20
    changes = [(i, c) for i, p in enumerate(probabilities) if (c := detector.frame(i * FRAME, p)) is not None]
    start, stop = changes
    assert start == (20, SpeechStart(20 * FRAME - 300 * RATE // 1000))
    # 0.4 is between threshold - 0.15 and threshold: neither speech nor the start of a silence.
    silence_from = 60 * FRAME
    assert stop[1] == SpeechStop(stop[1].at, silence_from)
    assert stop[1].at - silence_from >= 500 * RATE // 1000 > stop[1].at - FRAME - silence_from


def test_streaming_vad_gives_silero_the_same_probabilities_whatever_the_chunking() -> None:
    speech = jfk_samples().astype(np.float32)[: 4 * RATE] / 32768
    whole = StreamingVad().probabilities(speech)
    vad = StreamingVad()
    pieces = [vad.probabilities(speech[i : i + 700]) for i in range(0, speech.size, 700)]
    assert whole.size == speech.size // FRAME
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    # ...and the same as faster-whisper's own whole-file call, which file transcription's VAD makes
    # (but the last frame, whose last 64 samples that call zeroes in place).
    from faster_whisper.vad import get_vad_model

    reference = np.asarray(get_vad_model()(speech[: whole.size * FRAME].copy())).reshape(-1)
    np.testing.assert_allclose(reference[:-1], whole[:-1], atol=1e-5)
    assert whole.max() > 0.8 and whole[:5].max() < 0.5  # JFK starts with a breath of silence


def test_pcm_at_24_khz_comes_out_at_16_khz_with_its_pitch() -> None:
    rate = 24000
    tone = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 16000).astype("<i2")
    resample = ToWhisperRate(rate)
    out = np.concatenate([resample(tone[i : i + 960]) for i in range(0, tone.size, 960)])
    assert abs(out.size - RATE) < 64
    spectrum = np.abs(np.fft.rfft(out[1000:9000]))
    assert abs(np.argmax(spectrum) * RATE / 8000 - 440) < 4
    assert np.array_equal(pcm16(base64.b64encode(tone[:4].tobytes()).decode()), tone[:4])


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        ("not base64!", "audio: not valid base64"),
        (base64.b64encode(b"abc").decode(), "audio: 16-bit PCM needs"),
    ],
)
def test_bad_audio_is_refused_naming_the_field(audio: str, message: str) -> None:
    with pytest.raises(SamoError, match=message):
        pcm16(audio)


def test_session_updates_in_both_forms_change_only_what_they_name() -> None:
    ga = parse_client_event(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}
                    },
                },
            }
        )
    )
    assert isinstance(ga, SessionUpdate)
    config = ga.session.applied_to(LiveConfig())
    assert config.rate == 16000 and config.turn_detection is None
    beta = parse_client_event(
        json.dumps(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "pcm16",
                    "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                    "samo": {"journal": True},
                },
            }
        )
    )
    assert isinstance(beta, BetaSessionUpdate)
    updated = beta.session.applied_to(config)
    assert updated.rate == 16000 and updated.turn_detection is None and updated.journal
    assert updated.transcription.language == "en"
    assert isinstance(parse_client_event('{"type": "input_audio_buffer.append", "audio": ""}'), Append)


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ('{"type": "response.create", "event_id": "e1"}', "invalid_value", "type"),
        ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
        ('{"type": "input_audio_buffer.commit", "extra": 1}', "unknown_parameter", "extra"),
        (
            '{"type": "session.update", "session": {"type": "transcription", '
            '"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}}',
            "invalid_value",
            "session.audio.input.format.rate",
        ),
    ],
)
def test_bad_events_are_named_as_openai_names_them(text: str, code: str, param: str | None) -> None:
    with pytest.raises(BadEvent) as refused:
        parse_client_event(text)
    assert (refused.value.code, refused.value.param) == (code, param)
    if "e1" in text:
        assert refused.value.event_id == "e1"
