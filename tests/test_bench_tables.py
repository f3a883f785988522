"""The benchmark harness's pure parts: sweep settings and its recommendation, the profile summary,
the Whisper open loop's prebuilt upload bodies, the emotion targets, the live sessions' error attribution."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.testclient import TestClient

from exporters.encoder_serving import PREFERRED_BATCH_SIZES, QUEUE_DELAY_US
from load_tests.bench_emotion import BEST, NAIVE_UNTUNED, SORTED, STACK, naive_label, summarize
from load_tests.bench_profile import summarize as summarize_profile
from load_tests.bench_whisper import Clip, multipart_bodies, target_lines
from load_tests.live_client import COMPLETED, DELTA, LiveRun
from load_tests.live_wer import EARLY, FINAL, attributed_errors
from load_tests.sweep import (
    COALESCE_IN_FLIGHT,
    Setting,
    SweepOptions,
    cache_args,
    recommend,
    recommend_coalescing,
    settings_to_sweep,
)


def test_sweep_varies_one_setting_at_a_time_around_the_exporter_defaults() -> None:
    swept = settings_to_sweep(
        SweepOptions(
            queue_delays_us=(0, QUEUE_DELAY_US, 1000),
            preferred=((), PREFERRED_BATCH_SIZES),
            instances=((1, 2), (2, 1)),
            coalesce_in_flight=(0, COALESCE_IN_FLIGHT, 2 * COALESCE_IN_FLIGHT),
        )
    )
    assert swept[0] == ("default", Setting())
    assert Setting().queue_delay_us == QUEUE_DELAY_US and Setting().preferred == PREFERRED_BATCH_SIZES
    assert [(axis, s.queue_delay_us) for axis, s in swept if axis == "queue delay"] == [
        ("queue delay", 0),
        ("queue delay", 1000),
    ]
    assert [s.preferred for axis, s in swept if axis == "preferred"] == [()]
    assert [(s.instances, s.threads) for axis, s in swept if axis == "instances"] == [(2, 1)]
    assert [s.coalesce_in_flight for axis, s in swept if axis == "coalescing"] == [0, 2 * COALESCE_IN_FLIGHT]
    for _, setting in swept[1:]:  # exactly one field differs from the default
        differing = [
            f
            for f in ("queue_delay_us", "preferred", "instances", "coalesce_in_flight")
            if getattr(setting, f) != getattr(Setting(), f)
        ]
        assert len(differing) == 1
    assert Setting(preferred=()).describe()["preferred"] == "none"
    # The gateway gets each row's value, whatever the caller's environment says.
    assert Setting(coalesce_in_flight=0).gateway_environment() == {"SAMO_COALESCE_IN_FLIGHT": "0"}


def test_sweep_recommends_throughput_that_does_not_cost_a_lone_user() -> None:
    def row(
        delay: int, p50: float, throughput: float, cache: str = "off", in_flight: int = 2, axis: str = "x"
    ) -> dict:
        return {
            "model": "emotion",
            "axis": axis,
            "queue_delay_us": delay,
            "preferred": "none",
            "instances": "1x2 threads",
            "cache": cache,
            "coalesce_in_flight": in_flight,
            "c1_p50_ms": p50,
            "top_throughput_per_s": throughput,
            "top_p99_ms": 40.0,
            "texts_per_call": 3.5,
        }

    rows = [
        row(0, 10.0, 100.0),
        row(100, 10.5, 120.0),
        row(5000, 15.0, 150.0),
        row(100, 5.0, 900.0, cache="on"),
    ]
    line = recommend(rows, "emotion")
    assert "queue delay 100 us" in line and "120.0/s" in line  # 5000 us is faster but costs a lone user 50%
    assert recommend(rows, "embedder") == "- embedder: nothing measured"

    # Coalescing: the best among the default and the coalescing rows only, by the same rule.
    rows += [
        row(100, 10.0, 110.0, axis="default"),
        row(100, 10.2, 130.0, in_flight=4, axis="coalescing"),
        row(100, 12.0, 140.0, in_flight=0, axis="coalescing"),
    ]
    line = recommend_coalescing(rows, "emotion")
    assert line == (
        "- emotion, coalescing: coalesce_in_flight 4: 130.0/s at the top concurrency "
        "(p99 40.00 ms, 3.50 texts per Triton call), c=1 p50 10.20 ms"
    )
    assert recommend_coalescing(rows, "embedder") == "- embedder, coalescing: nothing measured"


def test_cache_flags_point_at_the_wheels_cache_library() -> None:
    directory, config = cache_args()
    assert directory.startswith("--cache-directory=") and config.startswith("--cache-config=local,size=")
    assert (Path(directory.partition("=")[2]) / "local" / "libtritoncache_local.so").is_file()


def test_profile_summary_counts_self_and_inclusive_samples() -> None:
    collapsed = (
        "main (app.py:10);handle (gateway/routes.py:5);tokenize (samo/tok.py:7) 6\n"
        "main (app.py:10);handle (gateway/routes.py:9);json (enc.py:2) 3\n"
        "main (app.py:11);poll (loop.py:1) 1\n"
        "garbage line\n"
    )
    by_self, project, total = summarize_profile(collapsed)
    assert total == 10
    assert [(r["function"], r["self_pct"]) for r in by_self] == [
        ("tokenize (samo/tok.py)", 60),
        ("json (enc.py)", 30),
        ("poll (loop.py)", 10),
    ]
    # The project's functions by inclusive samples; lines 5 and 9 of `handle` are one function.
    assert [(r["function"], r["inclusive_pct"]) for r in project] == [
        ("handle (gateway/routes.py)", 90),
        ("tokenize (samo/tok.py)", 60),
    ]


def test_whisper_upload_bodies_parse_as_the_gateways_form() -> None:
    app = FastAPI()

    @app.post("/v1/transcribe")
    async def transcribe(file: UploadFile = File(...), model: str = Form(...)) -> dict:
        return {"name": file.filename, "size": len(await file.read()), "model": model}

    clips = [Clip("a", b"RIFF" + bytes(range(256)) * 40, 1.0, None), Clip("b", b"\r\n--x\r\n" * 3, 2.0, None)]
    bodies, content_type = multipart_bodies(clips, "whisper")
    with TestClient(app) as client:
        for clip, body in zip(clips, bodies, strict=True):
            answer = client.post(
                "/v1/transcribe", content=body, headers={"content-type": content_type}
            ).json()
            assert answer == {"name": f"{clip.name}.wav", "size": len(clip.wav), "model": "whisper"}


def test_whisper_targets_compare_with_both_baselines() -> None:
    plain = {
        "system": "(a)",
        "load": "one at a time",
        "audio_s_per_s": 10.0,
        "wer_jfk": 0.0,
        "wer_journal": 0.05,
    }
    batched = {
        "system": "(a')",
        "load": "one at a time",
        "audio_s_per_s": 20.0,
        "wer_jfk": 0.0,
        "wer_journal": 0.04,
    }
    stack = {
        "system": "(b) gateway + Triton, CTranslate2",
        "load": "c=8",
        "audio_s_per_s": 25.0,
        "wer_jfk": 0.0,
        "wer_journal": 0.05,
    }
    (line,) = target_lines([plain, batched, stack], plain, batched, 8)
    assert "1.25x, met" in line and "2.50x, met" in line and "missed on wer_journal" in line


def test_emotion_targets_name_ratios_against_the_compute_limit_and_naive_services() -> None:
    def row(system: str, load: str, throughput: float, p50: float = 1.0) -> dict:
        return {"system": system, "load": load, "throughput_per_s": throughput, "p50_ms": p50, "p99_ms": p50}

    rows = [
        row(NAIVE_UNTUNED, "c=32", 10.0),
        row(naive_label(True, "none"), "c=32", 20.0),
        row("(b) ONNX Runtime in-process fp32", "batch 1", 50.0, p50=5.0),
        row("(b) ONNX Runtime in-process fp32", SORTED, 200.0),
        row("(b) ONNX Runtime in-process fp32", BEST, 250.0),
        row(STACK, "c=1", 40.0, p50=8.0),
        row(STACK, "c=32", 190.0),
        {**row(STACK, "open 90% (171.0/s)", 171.0, p50=30.0), "unfinished": 0},
    ]
    lines = summarize("bert-base", rows, (1, 32), "none", (0.9,))
    assert (
        "0.95x the compute limit" in lines[0]
        and "target 0.9x: met" in lines[0]
        and "0.76x the best" in lines[0]
    )
    assert "9.5x the tuned naive" in lines[1] and "target 5x: met" in lines[1]
    assert "19.0x the untuned" in lines[2]
    assert "+3.0 ms" in lines[3]
    assert "90% (171.0/s): p50 30.0 ms" in lines[4]
    with pytest.raises(StopIteration):
        next(line for line in summarize("minilm", rows, (1, 32)) if "target 5x" in line)


def test_live_errors_are_counted_by_the_decode_that_confirmed_the_word() -> None:
    def turn(item: str, start: float, early: str, final: str) -> list[tuple[float, dict]]:
        return [
            (start, {"type": DELTA, "item_id": item, "delta": early}),
            (start + 1, {"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": 0}),
            (start + 2, {"type": DELTA, "item_id": item, "delta": final}),
            (start + 2, {"type": COMPLETED, "item_id": item, "transcript": early + final}),
        ]

    # A partial confirmed "meeting" wrongly; the final left out "went" and added "then".
    events = turn("a", 0, "A meeting with", " my manager better then") + turn("b", 5, "I", " expected it")
    errors = attributed_errors(
        "the meeting with my manager went better I expected it", [LiveRun(events, 1000)]
    )
    assert errors.reference_words == 10
    assert errors.words == {EARLY: 4, FINAL: 6}
    assert errors.errors == {EARLY: 1, FINAL: 2}
    assert errors.columns()["wer_early"] == 0.1
