"""Live transcription over `WS /v1/realtime?intent=transcription`, against the real gateway and Triton:
real speech streamed at real-time pace and faster, OpenAI's own SDK as a client, bad events, floods,
disconnects, several sessions at once, keys and limits.

Word error rates are compared with the file route on the same audio in the same test (another CPU
decodes other tokens); a sentence counts as heard when most of its words are in the turns that
overlap it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from faster_whisper.vad import get_speech_timestamps
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from gateway.transcription.windows import vad_options
from load_tests.live_client import (
    COMPLETED,
    PARTIAL,
    LiveRun,
    append,
    pcm_at,
    realtime_url,
    receive_all,
    session_update,
    stream_speech,
)
from samo.evaluation.journal_speech import JournalRecording, journal_recording
from samo.evaluation.wer import word_error_rate, word_recall
from samo.settings import GatewaySettings, QuotaSettings
from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, Gateway, gateway_settings, running_gateway
from tests.speech import JFK_TEXT, RATE, jfk_samples, wav_bytes

# Live decodes hear at most 28 s (the turn and the turns before it) and confirm words before the turn
# ends: a little worse than the file route, which sees 30 s windows (the target is +0.02 on
# the same audio; journal speech measured +0.02 to +0.03 on 2 cores, another CPU decodes other tokens).
MAX_EXTRA_WER = 0.05
MIN_RECALL = 0.5


def jfk() -> np.ndarray:
    return jfk_samples().astype(np.float32) / 32768


@cache
def journal_audio() -> JournalRecording:
    return journal_recording(45, seed=3)  # with a run-on sentence longer than a Whisper window


@cache
def short_sentences() -> JournalRecording:
    return journal_recording(30, seed=5, long_sentences=0)


@cache
def file_text(gateway_url: str, name: str) -> str:
    samples = {
        "jfk": jfk,
        "journal": lambda: journal_audio().samples,
        "short": lambda: short_sentences().samples,
    }[name]()
    response = httpx.post(
        f"{gateway_url}/v1/transcribe", files={"file": ("a.wav", wav_bytes(samples))}, timeout=300
    )
    assert response.status_code == 200, response.text
    return response.json()["text"]


def live_decodes(url: str) -> dict[str, float]:
    """`samo_live_decodes_total` by kind, from the gateway's metrics."""
    counts: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("samo_live_decodes_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            counts[kind] = float(line.rsplit(" ", 1)[1])
    return counts


def assert_deltas_make_each_completed(run: LiveRun) -> None:
    items = run.items()
    assert items, [event["type"] for _, event in run.events]
    for item in items:
        assert item.text == item.completed, (item.deltas, item.completed)


def test_jfk_at_real_time_pace_confirms_words_while_the_user_speaks(gateway: Gateway) -> None:
    file_wer = word_error_rate(JFK_TEXT, file_text(gateway.http_url, "jfk"))  # Whisper warm, too
    # Two seconds of silence end a turn: JFK's pauses are shorter, so the clip is one turn of 11 s, with
    # about ten partial decodes on an idle machine and several on a loaded one.
    turns = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 2000}
    run = asyncio.run(
        stream_speech(
            realtime_url(gateway.http_url),
            jfk(),
            rate=24000,
            speed=1.0,
            turn_detection=turns,
            trailing_silence_s=2.5,
        )
    )
    assert run.close_code == 1000
    kinds = [event["type"] for _, event in run.events]
    assert kinds[0] == "session.created" and kinds[-1] == "session.closed"
    assert "input_audio_buffer.speech_started" in kinds and "input_audio_buffer.committed" in kinds
    assert_deltas_make_each_completed(run)
    items = run.items()
    # Text is confirmed while speech goes on, not only at the pause: a turn's first delta comes before
    # its speech stops, and the tail shows what is being said meanwhile.
    assert any(
        item.first_delta_at is not None
        and item.stopped_at is not None
        and item.first_delta_at < item.stopped_at
        for item in items
    )
    assert any(event["tail"] for event in run.of_type(PARTIAL))
    for item in items:
        assert item.completed_at is not None and item.stopped_at is not None
    live_wer = word_error_rate(JFK_TEXT, run.transcript)
    turns = [(item.start_ms, item.end_ms, item.deltas) for item in items]
    assert live_wer <= file_wer + MAX_EXTRA_WER, turns


def assert_every_spoken_stretch_is_transcribed(audio: JournalRecording, run: LiveRun) -> None:
    assert run.close_code == 1000
    assert_deltas_make_each_completed(run)
    items = run.items()
    assert all(item.start_ms is not None and item.end_ms is not None for item in items)
    turns = [((item.start_ms or 0) / 1000, (item.end_ms or 0) / 1000, item.completed or "") for item in items]
    # Every stretch the VAD hears as speech lies in a committed turn: none is left untranscribed.
    for region in get_speech_timestamps(audio.samples, vad_options(), sampling_rate=RATE):
        a, b = region["start"] / RATE + 0.2, region["end"] / RATE - 0.2  # the VAD's padding
        inside = sum(min(b, end) - max(a, start) for start, end, _ in turns if min(b, end) > max(a, start))
        assert inside >= (b - a) - 0.05, (a, b, turns)
    # ...and its words are in the turns' completed text.
    for utterance in audio.utterances:
        heard = " ".join(
            text for start, end, text in turns if start < utterance.end and end > utterance.start
        )
        assert word_recall(utterance.text, heard) >= MIN_RECALL, (utterance.start, heard)


def test_journal_speech_faster_than_real_time_keeps_every_sentence(gateway: Gateway) -> None:
    """Two sessions at five times real time: 45 s with a run-on sentence longer than a Whisper window
    (its partials decode the turn's last 28 s, its final decode cuts it into windows), and 30 s of
    short sentences. The word error rate is over both, against the file route on the same audio."""
    recordings = {"journal": journal_audio(), "short": short_sentences()}
    url = realtime_url(gateway.http_url)

    async def both() -> list[LiveRun]:
        return await asyncio.gather(
            *(stream_speech(url, r.samples, rate=RATE, chunk_s=0.1, speed=5.0) for r in recordings.values())
        )

    decodes_before = live_decodes(gateway.http_url)
    runs = asyncio.run(both())
    decodes = live_decodes(gateway.http_url)
    for audio, run in zip(recordings.values(), runs, strict=True):
        assert_every_spoken_stretch_is_transcribed(audio, run)
    # Finals start when silence begins (speculatively), and hear the turns before them: journal speech with
    # pauses of 0.2 to 2 s has turns after turns, and pauses shorter than the VAD's 500 ms.
    started = {kind: decodes.get(kind, 0) - decodes_before.get(kind, 0) for kind in decodes}
    assert started.get("speculative", 0) >= started.get("final", 0) - 2, started
    reference = " ".join(audio.text for audio in recordings.values())
    file_wer = word_error_rate(reference, " ".join(file_text(gateway.http_url, name) for name in recordings))
    live_wer = word_error_rate(reference, " ".join(run.transcript for run in runs))
    assert live_wer <= file_wer + MAX_EXTRA_WER, (live_wer, file_wer)


def test_openai_sdk_realtime_client_commits_by_hand(gateway: Gateway) -> None:
    openai = pytest.importorskip("openai")
    from openai.types.realtime import (
        ConversationItemInputAudioTranscriptionCompletedEvent,
        ConversationItemInputAudioTranscriptionDeltaEvent,
        InputAudioBufferCommittedEvent,
        SessionUpdatedEvent,
    )

    async def transcribe() -> list[object]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.http_url}/v1", api_key="unused")
        received: list[object] = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": None,
                        }
                    },
                }
            )
            pcm = pcm_at(jfk(), 24000)
            for offset in range(0, len(pcm), 48000):
                await connection.input_audio_buffer.append(
                    audio=base64.b64encode(pcm[offset : offset + 48000]).decode()
                )
            await connection.input_audio_buffer.commit()
            while True:
                event = await connection.recv()
                received.append(event)
                if isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
                    return received

    events = asyncio.run(asyncio.wait_for(transcribe(), 120))
    assert any(isinstance(e, SessionUpdatedEvent) for e in events)
    committed = [e for e in events if isinstance(e, InputAudioBufferCommittedEvent)]
    completed = events[-1]
    assert isinstance(completed, ConversationItemInputAudioTranscriptionCompletedEvent)
    assert len(committed) == 1 and committed[0].item_id == completed.item_id
    deltas = [
        e.delta or "" for e in events if isinstance(e, ConversationItemInputAudioTranscriptionDeltaEvent)
    ]
    assert "".join(deltas) == completed.transcript
    assert completed.usage.type == "duration" and completed.usage.seconds == pytest.approx(11.0, abs=0.1)
    assert word_error_rate(JFK_TEXT, completed.transcript) <= 0.1


def test_bad_events_get_openai_error_events_the_session_goes_on_and_its_journal_comes_at_the_end(
    gateway: Gateway,
) -> None:
    oversize = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (1 << 20)})
    bad = [
        "{not json",
        json.dumps({"type": "response.create", "event_id": "client-1"}),
        json.dumps({"type": "input_audio_buffer.append", "audio": "@@@", "event_id": "client-2"}),
        session_update(rate=44100),
        json.dumps({"type": "input_audio_buffer.commit", "event_id": "client-3"}),  # nothing to commit
        oversize,
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "nope"}}},
                },
            }
        ),
        json.dumps(
            {"type": "session.update", "session": {"type": "transcription", "samo": {"journal": True}}}
        ),
    ]
    run = asyncio.run(stream_speech(realtime_url(gateway.http_url), jfk(), before=bad, speed=0))
    errors = [event["error"] for event in run.of_type("error")]
    assert [(e["code"], e["param"], e["event_id"]) for e in errors] == [
        ("invalid_json", None, None),
        ("invalid_value", "type", "client-1"),
        ("invalid_value", "audio", "client-2"),
        ("invalid_value", "session.audio.input.format.rate", None),
        ("input_audio_buffer_commit_empty", None, "client-3"),
        ("message_too_large", None, None),
        ("not_found", None, None),
    ]
    assert all(e["type"] == "invalid_request_error" and e["message"] for e in errors)
    assert "nope" in errors[-1]["message"]
    # The session lived on: the speech after the bad events is transcribed...
    assert_deltas_make_each_completed(run)
    assert word_error_rate(JFK_TEXT, run.transcript) <= 0.2
    # ...and, with the journal option, analysed as a journal entry once the client closes it.
    kinds = [event["type"] for _, event in run.events]
    assert kinds[-2:] == ["samo.journal.completed", "session.closed"] and run.close_code == 1000
    analysis = run.of_type("samo.journal.completed")[0]["analysis"]
    assert analysis["source"] == "text" and analysis["text"] == run.transcript
    # Labels above threshold depend on the model; every label has a score.
    assert analysis["emotions"]["scores"] and analysis["sentences"] and analysis["summary"]["summary"]


def test_sessions_at_once_get_their_own_words_and_a_flood_closes_only_its_own(gateway: Gateway) -> None:
    audio = short_sentences()
    # Two different stretches of journal speech and the JFK clip, at once, with a flooding client beside.
    half = len(audio.utterances) // 2
    first = audio.samples[: int(audio.utterances[half - 1].end * RATE)]
    second = audio.samples[int(audio.utterances[half].start * RATE) - RATE // 4 :]
    url = realtime_url(gateway.http_url)

    async def flood() -> int | None:
        async with connect(url) as websocket:
            events: list[tuple[float, dict]] = []
            receiver = asyncio.create_task(receive_all(websocket, events, time.monotonic()))
            with contextlib.suppress(ConnectionClosed):  # closed part-way through, as it should be
                for _ in range(40):
                    await websocket.send("not an event")
            return await asyncio.wait_for(receiver, 30)

    async def together() -> list[object]:
        return await asyncio.gather(
            stream_speech(url, first, rate=RATE, chunk_s=0.1, speed=3.0),
            stream_speech(url, second, rate=RATE, chunk_s=0.1, speed=3.0),
            stream_speech(url, jfk(), rate=24000, chunk_s=0.05, speed=3.0),
            flood(),
        )

    first_run, second_run, jfk_run, flood_code = asyncio.run(together())
    assert flood_code == 1008
    runs = {"first": first_run, "second": second_run, "jfk": jfk_run}
    references = {
        "first": " ".join(u.text for u in audio.utterances[:half]),
        "second": " ".join(u.text for u in audio.utterances[half:]),
        "jfk": JFK_TEXT,
    }
    for name, run in runs.items():
        assert isinstance(run, LiveRun) and run.close_code == 1000
        assert_deltas_make_each_completed(run)
        own = word_recall(references[name], run.transcript)
        assert own >= 0.7, (name, run.transcript)
        for other, reference in references.items():
            if other != name:  # nothing of another session's speech
                assert word_recall(reference, run.transcript) < 0.4, (name, other)
    item_ids = [item.item_id for run in runs.values() for item in run.items()]
    assert len(item_ids) == len(set(item_ids))


def test_grpc_transcribe_live_answers_the_websockets_events(gateway: Gateway) -> None:
    speech = jfk()
    websocket_run = asyncio.run(stream_speech(realtime_url(gateway.http_url), speech, rate=RATE, speed=0))
    pcm = pcm_at(np.concatenate([speech, np.zeros(RATE, np.float32)]), RATE)
    update = pb.LiveSessionUpdate(rate=RATE, server_vad=pb.LiveTurnDetection(silence_duration_ms=500))
    requests = [pb.LiveClientEvent(session_update=update)]
    requests += [
        pb.LiveClientEvent(audio=pcm[i : i + 3200], event_id=f"a{i}") for i in range(0, len(pcm), 3200)
    ]
    requests.append(pb.LiveClientEvent(event_id="bad"))  # sets no event: an error, and the session goes on
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        events = list(samo_v1_pb2_grpc.SamoStub(channel).TranscribeLive(iter(requests), timeout=120))
    kinds = [event.type for event in events]
    assert kinds[0] == "session.created" and kinds[-1] == "session.closed"
    [error] = [event.error for event in events if event.type == "error"]
    assert (error.code, error.param, error.event_id) == ("invalid_value", "event", "bad")

    def turns(pairs: list[tuple[str, str, int]]) -> list[tuple[str, int]]:
        return [(kind, ms) for kind, _, ms in pairs]

    grpc_marks = [(e.type, e.item_id, e.audio_ms) for e in events if e.WhichOneof("event") == "audio_ms"]
    websocket_marks = [
        (e["type"], e["item_id"], e.get("audio_start_ms", e.get("audio_end_ms")))
        for _, e in websocket_run.events
        if e["type"].startswith("input_audio_buffer.speech_")
    ]
    assert turns(grpc_marks) == turns(websocket_marks)  # the same VAD on the same audio
    completed = {e.item_id: e.completed.transcript for e in events if e.WhichOneof("event") == "completed"}
    deltas: dict[str, str] = {}
    for event in events:
        if event.WhichOneof("event") == "delta":
            deltas[event.item_id] = deltas.get(event.item_id, "") + event.delta
    assert deltas == completed
    grpc_text = " ".join(completed.values())
    assert word_error_rate(websocket_run.transcript, grpc_text) <= 0.1


def test_a_client_gone_mid_turn_frees_its_session(gateway: Gateway) -> None:
    assert gateway.app is not None
    admission = gateway.app.state.operations.admission
    url = realtime_url(gateway.http_url)

    async def leave_mid_turn() -> list[str]:
        async with connect(url) as websocket:
            await websocket.send(session_update(RATE))
            pcm = pcm_at(jfk()[: 5 * RATE], RATE)
            for offset in range(0, len(pcm), 3200):
                await websocket.send(append(pcm[offset : offset + 3200]))
            kinds = []
            while "input_audio_buffer.speech_started" not in kinds:
                kinds.append(json.loads(await websocket.recv())["type"])
            return kinds

    asyncio.run(leave_mid_turn())
    deadline = time.monotonic() + 10
    while admission.in_use and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admission.in_use == 0
    run = asyncio.run(stream_speech(url, jfk()[: 4 * RATE], rate=RATE, speed=0))
    assert run.of_type(COMPLETED)


# --- keys and limits, on a gateway of their own (over the session's Triton, Whisper only) ----------


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def limited(
    triton: LocalTriton,
    serving_repository: Path,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, GatewaySettings]]:
    folder = tmp_path_factory.mktemp("live-limits")
    (folder / "keys").write_text("".join(f"{name}:{key}\n" for name, key in keys.items()))
    repository = folder / "repository"
    repository.mkdir()
    (repository / "whisper").symlink_to(serving_repository / "whisper")  # the gateway knows Whisper only
    settings = gateway_settings(
        triton,
        model_repository=repository,
        health_probe_interval_s=QUIET_PROBES_S,
        api_keys_file=folder / "keys",
        admission_budget=1000,  # two sessions of 480 units: a third is refused
        realtime_max_sessions_per_key=1,
        realtime_idle_timeout_s=1.5,
        audio_rate_limit="6/minute",  # live audio counts as it arrives
    )
    with running_gateway(settings) as running:
        yield running, settings


@pytest.fixture
def limited_gateway(limited: tuple[Gateway, GatewaySettings]) -> tuple[Gateway, GatewaySettings]:
    """`limited` once the sessions of the tests before have let go of their per-key slots: the server frees
    a session's slot when it has seen its client go, which on a loaded machine can come after that client's
    next handshake (a test of bob's audio limit was once refused for bob's session of the test before)."""
    app = limited[0].app
    assert app is not None
    slots = app.state.access.live_slots
    deadline = time.monotonic() + 10
    while slots.open_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slots.open_sessions == 0, "a live session of an earlier test still holds its slot after 10 s"
    return limited


def test_keys_in_a_header_or_the_browser_subprotocol_and_none_refused(
    limited_gateway: tuple[Gateway, GatewaySettings], keys: dict[str, str]
) -> None:
    url = realtime_url(limited_gateway[0].http_url)

    async def handshake(**options: object) -> str | None:
        # alice may open one session at a time: her previous one's slot is free once the server has seen
        # that client go, which on a loaded machine can come after her next handshake.
        for _ in range(50):
            async with connect(url, **options) as websocket:  # type: ignore[arg-type]
                event = json.loads(await websocket.recv())
                if event["type"] == "session.created":
                    return websocket.subprotocol
            assert event["error"]["code"] == "rate_limited", event
            await asyncio.sleep(0.1)
        raise AssertionError("the previous session's slot was not freed within 5 s")

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(handshake())
    assert refused.value.response.status_code == 401
    assert asyncio.run(handshake(additional_headers={"authorization": f"Bearer {keys['alice']}"})) is None
    offered = ["realtime", f"openai-insecure-api-key.{keys['alice']}", "openai-beta.realtime-v1"]
    assert asyncio.run(handshake(subprotocols=offered)) == "realtime"
    with pytest.raises(InvalidStatus):
        asyncio.run(handshake(subprotocols=["realtime", "openai-insecure-api-key.wrong-key-0123456789"]))
    # The demo page is served only where `realtime_demo` is on (the session's gateway has it).
    assert httpx.get(f"{limited_gateway[0].http_url}/demo/live").status_code == 404


def test_sessions_over_the_per_key_limit_or_the_budget_are_refused_and_idle_ones_closed(
    limited_gateway: tuple[Gateway, GatewaySettings], keys: dict[str, str]
) -> None:
    url = realtime_url(limited_gateway[0].http_url)

    def key(name: str) -> dict[str, object]:
        return {"additional_headers": {"authorization": f"Bearer {keys[name]}"}}

    async def refused(name: str) -> tuple[dict, int | None]:
        async with connect(url, **key(name)) as websocket:  # type: ignore[arg-type]
            event = json.loads(await websocket.recv())
            await websocket.wait_closed()
            return event, websocket.close_code

    async def scenario() -> tuple[tuple[dict, int | None], tuple[dict, int | None], list[dict], int | None]:
        async with connect(url, **key("alice")) as alice, connect(url, **key("bob")) as bob:  # type: ignore[arg-type]
            await alice.recv(), await bob.recv()
            per_key = await refused("alice")  # alice has her one session
            over_budget = await refused("carol")  # 960 of 1000 units are held: no room for 480 more
            events: list[tuple[float, dict]] = []
            idle_code = await receive_all(alice, events, time.monotonic())  # nothing sent: closed when idle
            return per_key, over_budget, [event for _, event in events], idle_code

    (per_key, per_key_code), (budget, budget_code), idle_events, idle_code = asyncio.run(scenario())
    assert per_key["type"] == "error" and per_key["error"]["code"] == "rate_limited"
    assert "at most 1 live sessions" in per_key["error"]["message"] and per_key_code == 1013
    assert budget["error"]["code"] == "overloaded" and "work budget" in budget["error"]["message"]
    assert budget_code == 1013
    assert [e["error"]["code"] for e in idle_events if e["type"] == "error"] == ["idle_timeout"]
    assert idle_code == 1000


def test_live_audio_counts_against_the_keys_audio_rate_limit(
    limited_gateway: tuple[Gateway, GatewaySettings], keys: dict[str, str]
) -> None:
    url = realtime_url(limited_gateway[0].http_url)
    headers = {"authorization": f"Bearer {keys['bob']}"}
    run = asyncio.run(stream_speech(url, jfk(), speed=0, headers=headers, trailing_silence_s=0.5))
    limited_chunks = [e["error"] for e in run.of_type("error") if e["error"]["code"] == "rate_limited"]
    # 6 s of the 11.5 s sent pass; every later chunk is refused, each with its own error event.
    assert limited_chunks and "audio rate limit of 6 per minute" in limited_chunks[0]["message"]
    assert run.close_code == 1008  # a client that keeps sending over its limit floods itself out


def test_live_audio_counts_against_the_live_limit_and_the_tenant_quota_and_each_turn_is_a_ledger_row(
    triton: LocalTriton, serving_repository: Path, tmp_path: Path
) -> None:
    """dave: the per-key live audio limit; erin: her tenant's audio quota; frank: speech, whose turns
    are usage rows that add up to the audio he sent (no text in the ledger)."""
    names = ("dave", "erin", "frank")
    keys = {name: secrets.token_urlsafe(24) for name in names}
    (tmp_path / "keys").write_text("".join(f"{name}:{key}\n" for name, key in keys.items()))
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "whisper").symlink_to(serving_repository / "whisper")
    settings = gateway_settings(
        triton,
        model_repository=repository,
        health_probe_interval_s=QUIET_PROBES_S,
        api_keys_file=tmp_path / "keys",
        database_url=f"sqlite:///{tmp_path / 'samo.db'}",
        realtime_audio_rate_limit="16/minute",
        tenant_quotas={"erin": QuotaSettings(audio_seconds="3/day")},
    )
    speech = jfk()
    with running_gateway(settings) as running:
        url = realtime_url(running.http_url)

        def stream(name: str, samples: np.ndarray, **options: object) -> LiveRun:
            headers = {"authorization": f"Bearer {keys[name]}"}
            return asyncio.run(
                stream_speech(url, samples, rate=RATE, speed=0, headers=headers, **options)  # type: ignore[arg-type]
            )

        silence = {"chunk_s": 0.5, "trailing_silence_s": 0.0}
        runs = {
            "dave": stream("dave", np.zeros(20 * RATE, np.float32), **silence),
            "erin": stream("erin", np.zeros(5 * RATE, np.float32), **silence),
            "frank": stream("frank", speech),
        }
        usage = httpx.get(
            running.http_url + "/v1/usage",
            params={"group_by": ["tenant", "operation", "status"]},
            headers={"authorization": f"Bearer {keys['frank']}"},  # a keys-file key: admin, every tenant
            timeout=30,
        )
    refused = {name: [e["error"] for e in run.of_type("error")] for name, run in runs.items()}
    # Whole seconds are charged as they arrive: 16 (or 3) pass, and every later chunk is refused.
    assert len(refused["dave"]) == 7 and len(refused["erin"]) == 3 and not refused["frank"]
    assert all(e["code"] == "rate_limited" for e in refused["dave"] + refused["erin"])
    assert "audio live rate limit of 16 per minute seconds reached" in refused["dave"][0]["message"]
    assert "audio tenant quota of 3 per day seconds reached" in refused["erin"][0]["message"]
    assert all(run.close_code == 1000 for run in runs.values())

    assert usage.status_code == 200, usage.text
    rows = {row["tenant"]: row for row in usage.json()["rows"]}
    assert {(row["operation"], row["status"]) for row in rows.values()} == {("live_transcription", "ok")}
    # What each session received, to the millisecond: refused chunks are neither kept nor billed.
    assert rows["dave"]["audio_seconds"] == pytest.approx(16.5, abs=0.002)
    assert rows["erin"]["audio_seconds"] == pytest.approx(3.5, abs=0.002)
    sent = (speech.size + 2 * RATE) / RATE
    assert rows["frank"]["audio_seconds"] == pytest.approx(sent, abs=0.002)
    turns = len(runs["frank"].of_type(COMPLETED))
    assert turns >= 2 and rows["frank"]["requests"] == turns + 1  # one per turn, one for the rest
    assert rows["dave"]["requests"] == rows["erin"]["requests"] == 1  # silence: no turn, the rest only
    stored = (tmp_path / "samo.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("samo.db-*")
    )
    assert runs["frank"].transcript and not any(
        word.encode() in stored for word in ("Americans", "country", "fellow")
    )
