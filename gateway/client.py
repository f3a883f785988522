"""Typed Python clients for SAMO over HTTP and gRPC, returning the same result objects.

    with HttpClient("http://127.0.0.1:8080") as samo:
        result = samo.detect_emotions(["I feel great today."], top_k=3)
    with GrpcClient("127.0.0.1:50051") as samo:
        result = samo.detect_emotions(["I feel great today."], top_k=3)

Failures raise `SamoError` with the same `ErrorType` and message from either transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import grpc
import httpx

from gateway.emotions.service import EmotionOptions, EmotionResult
from gateway.errors import GRPC_ERROR_TYPE_KEY, ErrorType, SamoError
from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from gateway.grpc_api.convert import emotion_result, journal_result, summary_result, transcript
from gateway.http.emotions import result_from_body
from gateway.http.journal import analysis_from_body
from gateway.http.summarization import summary_from_body
from gateway.http.transcription import transcript_from_body
from gateway.journal.service import JournalAnalysis
from gateway.summarization.abstractive import LongInput
from gateway.summarization.service import SummaryOptions, SummaryResult
from gateway.transcription.service import Transcript
from samo.contracts.whisper import DecodeOptions


class SamoClient(Protocol):
    def detect_emotions(
        self,
        texts: Sequence[str],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        model: str | None = None,
    ) -> EmotionResult: ...

    def transcribe(
        self,
        audio: bytes,
        *,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int = 5,
        model: str | None = None,
        word_timestamps: bool = False,
    ) -> Transcript: ...

    def summarize(
        self,
        texts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        model: str | None = None,
        long_input: LongInput = "truncate",
    ) -> SummaryResult: ...

    def analyze_journal(
        self,
        *,
        text: str | None = None,
        audio: bytes | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
        language: str | None = None,
        beam_size: int = 5,
    ) -> JournalAnalysis: ...

    def close(self) -> None: ...


class _ClosingContext:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class HttpClient(_ClosingContext):
    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def detect_emotions(
        self,
        texts: Sequence[str],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        model: str | None = None,
    ) -> EmotionResult:
        body = {"texts": list(texts), "threshold": threshold, "top_k": top_k, "model": model}
        return result_from_body(self._post("/v1/emotions", json=body).json())

    def transcribe(
        self,
        audio: bytes,
        *,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int = 5,
        model: str | None = None,
        word_timestamps: bool = False,
    ) -> Transcript:
        form = {"task": task, "beam_size": str(beam_size), "word_timestamps": str(word_timestamps).lower()}
        form |= {key: value for key, value in {"language": language, "model": model}.items() if value}
        response = self._post("/v1/transcribe", files={"file": ("audio", audio)}, data=form)
        options = DecodeOptions(
            language=language,
            task=task,  # type: ignore[arg-type]
            beam_size=beam_size,
            word_timestamps=word_timestamps,
        )
        return transcript_from_body(response.json(), options)

    def summarize(
        self,
        texts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        model: str | None = None,
        long_input: LongInput = "truncate",
    ) -> SummaryResult:
        body = {
            "texts": list(texts),
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
            "num_beams": num_beams,
            "model": model,
            "long_input": long_input,
        }
        options = SummaryOptions(max_new_tokens, min_new_tokens, num_beams, model, long_input)
        return summary_from_body(self._post("/v1/summarize", json=body).json(), options)

    def analyze_journal(
        self,
        *,
        text: str | None = None,
        audio: bytes | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
        language: str | None = None,
        beam_size: int = 5,
    ) -> JournalAnalysis:
        emotion, decode = _journal_options(text, audio, threshold, top_k, language, beam_size)
        if audio is not None:
            form = {"threshold": threshold, "top_k": top_k, "language": language, "beam_size": beam_size}
            data = {key: str(value) for key, value in form.items() if value is not None}
            response = self._post("/v1/journal", files={"file": ("entry", audio)}, data=data)
        else:
            response = self._post("/v1/journal", json={"text": text, "threshold": threshold, "top_k": top_k})
        return analysis_from_body(response.json(), emotion, decode)

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.post(path, **kwargs)
        except httpx.TransportError as exc:
            raise SamoError(ErrorType.UNAVAILABLE, f"gateway unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            error = response.json().get("error", {})
            raise SamoError(ErrorType(error.get("type", "internal")), error.get("message", response.text))
        return response

    def close(self) -> None:
        self._http.close()


class GrpcClient(_ClosingContext):
    def __init__(self, target: str, *, timeout_s: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = samo_v1_pb2_grpc.SamoStub(self._channel)
        self.timeout_s = timeout_s

    def detect_emotions(
        self,
        texts: Sequence[str],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        model: str | None = None,
    ) -> EmotionResult:
        request = pb.DetectEmotionsRequest(
            texts=list(texts), threshold=threshold, top_k=top_k, model=model or ""
        )
        try:
            return emotion_result(self._stub.DetectEmotions(request, timeout=self.timeout_s))
        except grpc.RpcError as exc:
            raise _samo_error(exc) from None

    def transcribe(
        self,
        audio: bytes,
        *,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int = 5,
        model: str | None = None,
        word_timestamps: bool = False,
    ) -> Transcript:
        request = pb.TranscribeRequest(
            audio=audio,
            language=language or "",
            task=task,
            beam_size=beam_size,
            model=model or "",
            word_timestamps=word_timestamps,
        )
        try:
            response = self._stub.Transcribe(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _samo_error(exc) from None
        options = DecodeOptions(
            language=language,
            task=task,  # type: ignore[arg-type]
            beam_size=beam_size,
            word_timestamps=word_timestamps,
        )
        return transcript(response, options)

    def summarize(
        self,
        texts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        model: str | None = None,
        long_input: LongInput = "truncate",
    ) -> SummaryResult:
        request = pb.SummarizeRequest(
            texts=list(texts),
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
            model=model or "",
            long_input=long_input,
        )
        try:
            response = self._stub.Summarize(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _samo_error(exc) from None
        options = SummaryOptions(max_new_tokens, min_new_tokens, num_beams, model, long_input)
        return summary_result(response, options)

    def analyze_journal(
        self,
        *,
        text: str | None = None,
        audio: bytes | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
        language: str | None = None,
        beam_size: int = 5,
    ) -> JournalAnalysis:
        emotion, decode = _journal_options(text, audio, threshold, top_k, language, beam_size)
        common = {"threshold": threshold, "top_k": top_k}
        if audio is not None:
            request = pb.AnalyzeJournalRequest(
                audio=audio, language=language or "", beam_size=beam_size, **common
            )
        else:
            request = pb.AnalyzeJournalRequest(text=text, **common)
        try:
            response = self._stub.AnalyzeJournal(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _samo_error(exc) from None
        return journal_result(response, emotion, decode)

    def close(self) -> None:
        self._channel.close()


def _journal_options(
    text: str | None,
    audio: bytes | None,
    threshold: float | None,
    top_k: int | None,
    language: str | None,
    beam_size: int,
) -> tuple[EmotionOptions, DecodeOptions]:
    if (text is None) == (audio is None):
        raise ValueError("pass exactly one of `text` and `audio`")
    return EmotionOptions(threshold=threshold, top_k=top_k), DecodeOptions(
        language=language, beam_size=beam_size
    )


def _samo_error(exc: grpc.RpcError) -> SamoError:
    metadata = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    code = exc.code()  # type: ignore[attr-defined]
    if GRPC_ERROR_TYPE_KEY in metadata:
        return SamoError(ErrorType(metadata[GRPC_ERROR_TYPE_KEY]), exc.details())  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        return SamoError(ErrorType.UNAVAILABLE, "gateway unreachable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return SamoError(ErrorType.DEADLINE_EXCEEDED, "the gateway did not answer in time")
    return SamoError(ErrorType.INTERNAL, exc.details() or code.name)  # type: ignore[attr-defined]
