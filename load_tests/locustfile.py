"""Locust load test of the whole product over both transports: one statistics table for HTTP and gRPC.

    samo loadtest --host http://127.0.0.1:8080 --grpc 127.0.0.1:50051 --users 16 --duration 2m
    locust -f load_tests/locustfile.py --host http://GATEWAY:8080 --grpc-target GATEWAY:50051 \
        --headless -u 16 -r 4 -t 2m --mix emotions=5,transcribe=1

Each user is an app back end calling the gateway: emotions of an entry (or of 8), a summary, the journal
analysis of a written or spoken entry, a transcription, in a random order that keeps the `--mix`
weights (load_tests/locust_mix.py). `HttpJournalUser` speaks HTTP/1.1 keep-alive on Locust's FastHttpUser,
`GrpcJournalUser` speaks `samo.v1` and reports each call as a Locust request of type `grpc`. Without
`--grpc-target` only HTTP users run. `--api-key` (or SAMO_LOADTEST_API_KEY) sends
`Authorization: Bearer <key>` on both. `--rate-per-user R` paces each user at R requests/s (Locust's
constant_throughput); without it users send again as soon as an answer arrives. `--request-log FILE`
writes one CSV row per request (load_tests/locust_request_log.py) for plots over time.

Locust costs about a millisecond of CPU per request, more than the gateway's own work on short texts:
on a small box it takes CPU from the server it measures (README, "Load testing with Locust").
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
import grpc
from grpc.experimental import gevent as grpc_gevent
from locust import FastHttpUser, User, events, task
from locust.env import Environment
from locust.user.wait_time import constant_throughput

from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from load_tests import locust_payloads as payloads
from load_tests.locust_mix import BATCH_ENTRIES, DEFAULT_MIX, REQUEST_NAMES, parse_mix
from load_tests.locust_request_log import GRPC_REQUEST_TYPE, RequestLog

# Locust's users are gevent greenlets; without this, a gRPC call blocks every user in the process.
grpc_gevent.init_gevent()

TIMEOUT_S = 120.0
_mix: dict[str, int] = parse_mix(DEFAULT_MIX)
_request_log: RequestLog | None = None
_users_started: Counter[type] = Counter()


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    parser.add_argument("--grpc-target", default="", help="Gateway gRPC address HOST:PORT; empty: HTTP only.")
    parser.add_argument(
        "--api-key",
        default="",
        env_var="SAMO_LOADTEST_API_KEY",
        is_secret=True,
        help="Sent as `Authorization: Bearer <key>` (also SAMO_LOADTEST_API_KEY).",
    )
    parser.add_argument("--mix", default=DEFAULT_MIX, help="Operation weights, `name=weight,...`.")
    parser.add_argument(
        "--rate-per-user", type=float, default=0.0, help="Requests/s per user (0: no pause between requests)."
    )
    parser.add_argument("--request-log", default="", help="CSV file with one row per request.")


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    global _mix, _request_log
    options = environment.parsed_options
    assert options is not None  # locust parses the command line before `init`
    _mix = parse_mix(options.mix)
    if not options.grpc_target and GrpcJournalUser in environment.user_classes:
        if len(environment.user_classes) == 1:
            raise SystemExit("GrpcJournalUser needs --grpc-target HOST:PORT")
        environment.user_classes[:] = [u for u in environment.user_classes if u is not GrpcJournalUser]
    # Speech is synthesized and cut here, once, rather than inside the first requests' timings.
    payloads.entries()
    payloads.long_entries()
    if {"transcribe", "journal_audio"} & _mix.keys():
        payloads.clips()
        payloads.spoken_entries()
    if options.request_log:
        _request_log = RequestLog(options.request_log)
        environment.events.request.add_listener(_request_log.on_request)


@events.test_start.add_listener
def on_test_start(**_: Any) -> None:
    if _request_log is not None:
        _request_log.restart_clock()


@events.quitting.add_listener
def on_quitting(**_: Any) -> None:
    if _request_log is not None:
        _request_log.close()


class JournalAppUser(User):
    """What both transports share: pacing, the API key, one operation per task run."""

    abstract = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        rate = options.rate_per_user
        self._pacing: Callable[[User], float] | None = constant_throughput(rate) if rate > 0 else None
        # Paced users started together would send in lockstep bursts; a random phase spreads them.
        self._phase_s = random.uniform(0.0, 1.0 / rate) if rate > 0 else 0.0
        self.api_key: str = options.api_key
        self._deck = self._shuffled_deck()
        # The n-th user of a transport starts on the n-th operation: with as many users per transport
        # as operations, even a run of a few seconds (and --stop-timeout) covers the whole mix.
        first = list(_mix)[_users_started[type(self)] % len(_mix)]
        _users_started[type(self)] += 1
        self._deck.remove(first)
        self._deck.append(first)

    def wait_time(self) -> float:
        return self._pacing(self) if self._pacing else 0.0

    @task
    def one_operation(self) -> None:
        if self._phase_s:
            # Inside the task, not in on_start: a user stopped meanwhile still makes its first request
            # (Locust lets a running task finish within --stop-timeout).
            gevent.sleep(self._phase_s)
            self._phase_s = 0.0
        getattr(self, self._next_operation())()

    def _next_operation(self) -> str:
        if not self._deck:
            self._deck = self._shuffled_deck()
        return self._deck.pop()

    @staticmethod
    def _shuffled_deck() -> list[str]:
        # A shuffled deck rather than independent draws: every `sum(weights)` requests of a user hold
        # each operation exactly its weight times, so short runs keep the mix's proportions.
        deck = [name for name, weight in _mix.items() for _ in range(weight)]
        random.shuffle(deck)
        return deck


class HttpJournalUser(FastHttpUser, JournalAppUser):
    """The product over HTTP/1.1 keep-alive (geventhttpclient)."""

    network_timeout = TIMEOUT_S
    connection_timeout = 10.0

    def on_start(self) -> None:
        JournalAppUser.on_start(self)
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def emotions(self) -> None:
        self._json("emotions", "/v1/emotions", {"texts": [random.choice(payloads.entries())]})

    def emotions_batch(self) -> None:
        texts = random.sample(payloads.entries(), BATCH_ENTRIES)
        self._json("emotions_batch", "/v1/emotions", {"texts": texts, "top_k": 3})

    def summarize(self) -> None:
        self._json("summarize", "/v1/summarize", {"texts": [random.choice(payloads.long_entries())]})

    def journal_text(self) -> None:
        self._json("journal_text", "/v1/journal", {"text": random.choice(payloads.long_entries())})

    def transcribe(self) -> None:
        self._audio("transcribe", "/v1/transcribe", random.choice(payloads.clips()))

    def journal_audio(self) -> None:
        self._audio("journal_audio", "/v1/journal", random.choice(payloads.spoken_entries()))

    def _json(self, operation: str, path: str, body: dict[str, Any]) -> None:
        self.client.post(path, json=body, headers=self.headers, name=REQUEST_NAMES[operation][0])

    def _audio(self, operation: str, path: str, clip: payloads.SpeechClip) -> None:
        files = {"file": (f"{clip.name}.wav", clip.wav, "audio/wav")}
        self.client.post(path, files=files, headers=self.headers, name=REQUEST_NAMES[operation][0])


class GrpcCallError(Exception):
    """A failed gRPC call as Locust's statistics show it: the status code and the gateway's message."""


class GrpcJournalUser(JournalAppUser):
    """The product over gRPC (`samo.v1`), each call reported to Locust as a request of type `grpc`."""

    def on_start(self) -> None:
        super().on_start()
        self._channel = grpc.insecure_channel(self.environment.parsed_options.grpc_target)
        self._stub = samo_v1_pb2_grpc.SamoStub(self._channel)
        self._metadata = (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def on_stop(self) -> None:
        self._channel.close()

    def emotions(self) -> None:
        request = pb.DetectEmotionsRequest(texts=[random.choice(payloads.entries())])
        self._call("emotions", self._stub.DetectEmotions, request)

    def emotions_batch(self) -> None:
        request = pb.DetectEmotionsRequest(texts=random.sample(payloads.entries(), BATCH_ENTRIES), top_k=3)
        self._call("emotions_batch", self._stub.DetectEmotions, request)

    def summarize(self) -> None:
        request = pb.SummarizeRequest(texts=[random.choice(payloads.long_entries())])
        self._call("summarize", self._stub.Summarize, request)

    def journal_text(self) -> None:
        request = pb.AnalyzeJournalRequest(text=random.choice(payloads.long_entries()))
        self._call("journal_text", self._stub.AnalyzeJournal, request)

    def transcribe(self) -> None:
        request = pb.TranscribeRequest(audio=random.choice(payloads.clips()).wav)
        self._call("transcribe", self._stub.Transcribe, request)

    def journal_audio(self) -> None:
        request = pb.AnalyzeJournalRequest(audio=random.choice(payloads.spoken_entries()).wav)
        self._call("journal_audio", self._stub.AnalyzeJournal, request)

    def _call(self, operation: str, method: Callable[..., Any], request: Any) -> None:
        started_at = time.time()
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            length = method(request, timeout=TIMEOUT_S, metadata=self._metadata).ByteSize()
        except grpc.RpcError as error:
            # The status and the gateway's message only: never the request (an entry or audio).
            exception = GrpcCallError(f"{error.code().name}: {error.details()}")  # type: ignore[attr-defined]
        self.environment.events.request.fire(
            request_type=GRPC_REQUEST_TYPE,
            name=REQUEST_NAMES[operation][1],
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exception,
            context={},
            start_time=started_at,
            url=None,
            response=None,
        )
