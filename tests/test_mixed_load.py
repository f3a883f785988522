"""Correctness under mixed concurrent load: 400 requests over every endpoint, HTTP and gRPC mixed,
48 at a time, each compared with the answer the same request got alone beforehand (scores within 1e-5,
texts and transcripts equal). Requests batched together by Triton must not see each other's inputs.

`MIXED_LOAD_REQUESTS` (default 400) sets how many are sent under load; more for a longer run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
from google.protobuf.json_format import MessageToDict

from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from tests.conftest import Gateway, journal_corpus
from tests.speech import RATE, jfk_samples, wav_bytes

REQUESTS = int(os.environ.get("MIXED_LOAD_REQUESTS", "400"))
CONCURRENCY = 48
AUDIO_SHARE = 0.025
"""Share of requests that carry audio (each costs Whisper a 30 s window, 100x an emotion request)."""
AUDIO_CONCURRENCY = 4
"""Audio requests in flight at once, of the 48: more only queue behind Whisper's windows on 2 cores."""
TOLERANCE = 1e-5
TIMEOUT_S = 300
RETRIES = 8


@dataclass
class Clients:
    http: httpx.AsyncClient
    grpc: samo_v1_pb2_grpc.SamoStub


@dataclass(frozen=True)
class Job:
    name: str
    audio: bool
    run: Callable[[Clients], Awaitable[Any]]
    """The request, sent once; its result as plain JSON-like data."""


class Overloaded(Exception):
    """429 / RESOURCE_EXHAUSTED `overloaded`, or 504 / DEADLINE_EXCEEDED: the stack refused or gave up
    for load, which says nothing about the answer's correctness; sent again, and counted."""


def _http_result(response: httpx.Response) -> Any:
    if response.status_code in (429, 504):
        raise Overloaded
    assert response.status_code == 200, response.text[:300]
    return response.json()


def _grpc_result(message: Any) -> Any:
    return MessageToDict(message, preserving_proto_field_name=True)


def _overloaded(error: grpc.RpcError) -> bool:
    return error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)


def http_post(route: str, **kwargs: Any) -> Callable[[Clients], Awaitable[Any]]:
    async def run(clients: Clients) -> Any:
        return _http_result(await clients.http.post(route, **kwargs))

    return run


def grpc_unary(method: str, request: Any) -> Callable[[Clients], Awaitable[Any]]:
    async def run(clients: Clients) -> Any:
        try:
            return _grpc_result(await getattr(clients.grpc, method)(request, timeout=TIMEOUT_S))
        except grpc.RpcError as error:
            if _overloaded(error):
                raise Overloaded from None
            raise

    return run


def grpc_streamed(method: str, request: Callable[[], Any]) -> Callable[[Clients], Awaitable[Any]]:
    """`request()`: the request, or a fresh iterator of them for a client stream (sent once per call)."""

    async def run(clients: Clients) -> Any:
        try:
            call = getattr(clients.grpc, method)(request(), timeout=TIMEOUT_S)
            return [_grpc_result(event) async for event in call]
        except grpc.RpcError as error:
            if _overloaded(error):
                raise Overloaded from None
            raise

    return run


def clips() -> list[bytes]:
    """Four different pieces of real speech, 2 to 11 s."""
    samples = jfk_samples()
    cuts = [(0.0, 3.0), (3.0, 6.5), (6.5, 11.0), (0.0, 11.0)]
    return [wav_bytes(samples[int(a * RATE) : int(b * RATE)]) for a, b in cuts]


def jobs() -> list[Job]:
    """Distinct requests over every endpoint and both transports."""
    rng = random.Random(7)
    corpus = journal_corpus()
    texts = [" ".join(rng.sample(corpus, rng.randint(1, 4))) for _ in range(40)]
    out: list[Job] = []
    for i, text in enumerate(texts):
        batch = rng.sample(texts, rng.randint(1, 6))
        model = ["emotion", "tiny_bert", "tiny_distilbert"][i % 3]
        out += [
            Job(
                f"http emotions {i}", False, http_post("/v1/emotions", json={"texts": batch, "model": model})
            ),
            Job(
                f"grpc emotions {i}",
                False,
                grpc_unary("DetectEmotions", pb.DetectEmotionsRequest(texts=batch, model=model, top_k=3)),
            ),
            Job(f"http journal text {i}", False, http_post("/v1/journal", json={"text": text})),
            Job(
                f"grpc journal text {i}",
                False,
                grpc_unary("AnalyzeJournal", pb.AnalyzeJournalRequest(text=text)),
            ),
        ]
        if i % 2 == 0:
            out += [
                Job(f"http extractive {i}", False, http_post("/v1/summarize", json={"texts": batch})),
                Job(f"grpc extractive {i}", False, grpc_unary("Summarize", pb.SummarizeRequest(texts=batch))),
            ]
        else:
            body = {"texts": [text], "model": "tiny_t5", "max_new_tokens": 8, "num_beams": 1}
            out += [
                Job(f"http abstractive {i}", False, http_post("/v1/summarize", json=body)),
                Job(
                    f"grpc abstractive {i}",
                    False,
                    grpc_unary(
                        "Summarize",
                        pb.SummarizeRequest(texts=[text], model="tiny_t5", max_new_tokens=8, num_beams=1),
                    ),
                ),
            ]
        if i % 10 == 0:
            request = pb.AnalyzeJournalRequest(text=text)
            out.append(
                Job(
                    f"grpc stream journal text {i}",
                    False,
                    grpc_streamed("StreamJournal", lambda r=request: r),
                )
            )
    for c, clip in enumerate(clips()):
        form = {"beam_size": "1"}
        out += [
            Job(
                f"http transcribe {c}",
                True,
                http_post("/v1/transcribe", files={"file": ("a.wav", clip)}, data=form),
            ),
            Job(
                f"http openai {c}",
                True,
                http_post(
                    "/v1/audio/transcriptions",
                    files={"file": ("a.wav", clip)},
                    data={"response_format": "verbose_json"},
                ),
            ),
            Job(
                f"http journal audio {c}",
                True,
                http_post("/v1/journal", files={"file": ("a.wav", clip)}, data=form),
            ),
            Job(
                f"grpc transcribe {c}",
                True,
                grpc_unary("Transcribe", pb.TranscribeRequest(audio=clip, beam_size=1)),
            ),
            Job(
                f"grpc stream journal audio {c}",
                True,
                grpc_streamed(
                    "StreamJournal", lambda clip=clip: pb.AnalyzeJournalRequest(audio=clip, beam_size=1)
                ),
            ),
            Job(
                f"grpc transcribe stream {c}",
                True,
                grpc_streamed(
                    "TranscribeStream",
                    lambda clip=clip: iter(
                        [pb.AudioChunk(data=clip[:20_000], beam_size=1), pb.AudioChunk(data=clip[20_000:])]
                    ),
                ),
            ),
        ]
    return out


def assert_same(alone: Any, loaded: Any, where: str = "") -> None:
    """Equal, floats within TOLERANCE; label lists compared by label (scores within the tolerance may
    swap places)."""
    if isinstance(alone, float) or isinstance(loaded, float):
        assert math.isclose(alone, loaded, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (where, alone, loaded)
    elif isinstance(alone, dict):
        assert isinstance(loaded, dict) and alone.keys() == loaded.keys(), (where, alone, loaded)
        for key in alone:
            assert_same(alone[key], loaded[key], f"{where}.{key}")
    elif isinstance(alone, list):
        assert isinstance(loaded, list) and len(alone) == len(loaded), (where, len(alone), len(loaded))
        if alone and all(isinstance(item, dict) and "label" in item for item in alone + loaded):
            alone, loaded = (sorted(items, key=lambda item: item["label"]) for items in (alone, loaded))
        for i, (a, b) in enumerate(zip(alone, loaded, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert alone == loaded, (where, alone, loaded)


async def run_with_retries(job: Job, clients: Clients, retried: Counter[str]) -> Any:
    for attempt in range(RETRIES):
        try:
            return await job.run(clients)
        except Overloaded:
            retried[job.name] += 1
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError(f"{job.name}: still overloaded after {RETRIES} tries")


def _plan(pool: list[Job], count: int) -> list[Job]:
    """`count` requests drawn from `pool`, AUDIO_SHARE of them with audio, in random order."""
    rng = np.random.default_rng(11)
    audio = [job for job in pool if job.audio]
    text = [job for job in pool if not job.audio]
    audio_count = max(len(audio), round(count * AUDIO_SHARE))
    chosen = [audio[i % len(audio)] for i in range(audio_count)]
    chosen += [text[i] for i in rng.integers(0, len(text), count - audio_count)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


async def mixed_load(gateway: Gateway) -> tuple[int, Counter[str], Counter[str]]:
    pool = jobs()
    retried: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with (
        httpx.AsyncClient(base_url=gateway.http_url, timeout=TIMEOUT_S, limits=limits) as http,
        grpc.aio.insecure_channel(gateway.grpc_target) as channel,
    ):
        clients = Clients(http, samo_v1_pb2_grpc.SamoStub(channel))
        alone = {job.name: await run_with_retries(job, clients, retried) for job in pool}
        plan = _plan(pool, REQUESTS)
        slots = asyncio.Semaphore(CONCURRENCY)
        audio_slots = asyncio.Semaphore(AUDIO_CONCURRENCY)

        async def checked(job: Job) -> None:
            async with slots, audio_slots if job.audio else contextlib.nullcontext():
                loaded = await run_with_retries(job, clients, retried)
            assert_same(alone[job.name], loaded, job.name)

        await asyncio.gather(*(checked(job) for job in plan))
        kinds = Counter(job.name.rsplit(" ", 1)[0] for job in plan)
    return len(plan), kinds, retried


def test_every_answer_under_mixed_load_equals_its_answer_alone(gateway: Gateway) -> None:
    sent, kinds, retried = asyncio.run(mixed_load(gateway))
    assert sent == REQUESTS
    assert len(kinds) >= 15  # every endpoint and transport took part
    # Shown with -s: what ran, and how often overload (429 or 504) made a request go again.
    print(json.dumps({"requests": sent, "by_kind": kinds, "retried_overloaded": retried}))
