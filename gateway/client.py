"""Typed Python clients for SAMO over HTTP and gRPC, returning the same result objects.

    with HttpClient("http://127.0.0.1:8080") as samo:
        result = samo.detect_emotions(["I feel great today."], top_k=3)
    with GrpcClient("127.0.0.1:50051") as samo:
        result = samo.detect_emotions(["I feel great today."], top_k=3)
    with HttpClient("https://samo.example", api_key=key, ca_cert="ca.pem") as samo:  # TLS, API key
        ...

Failures raise `SamoError` with the same `ErrorType` and message from either transport. Imports no
server code: the results are `gateway.results`, the messages `samo.v1`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import grpc
import httpx

from gateway.errors import GRPC_ERROR_TYPE_KEY, GRPC_RETRY_AFTER_KEY, ErrorType, SamoError
from gateway.grpc_api import convert, samo_v1_pb2_grpc
from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.results import (
    EmotionOptions,
    EmotionResult,
    JournalAnalysis,
    LongInput,
    SummaryOptions,
    SummaryResult,
    Transcript,
)
from samo.contracts.whisper import DecodeOptions


class SamoClient:
    """Each method once: it gathers the options, a transport (`HttpClient`, `GrpcClient`) sends them.

    Options are not validated here (`model_construct`): the gateway does it, with the same message
    over either transport.
    """

    def detect_emotions(
        self,
        texts: Sequence[str],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        model: str | None = None,
    ) -> EmotionResult:
        options = EmotionOptions.model_construct(threshold=threshold, top_k=top_k, model=model)
        return self._detect_emotions(list(texts), options)

    def transcribe(
        self,
        audio: bytes,
        *,
        language: str | None = None,
        task: Literal["transcribe", "translate"] = "transcribe",
        beam_size: int = 5,
        model: str | None = None,
        word_timestamps: bool = False,
    ) -> Transcript:
        options = DecodeOptions.model_construct(
            language=language, task=task, beam_size=beam_size, word_timestamps=word_timestamps
        )
        return self._transcribe(audio, options, model)

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
        options = SummaryOptions.model_construct(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
            model=model,
            long_input=long_input,
        )
        return self._summarize(list(texts), options)

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
        if (text is None) == (audio is None):
            raise ValueError("pass exactly one of `text` and `audio`")
        emotion = EmotionOptions.model_construct(threshold=threshold, top_k=top_k)
        decode = DecodeOptions.model_construct(language=language, beam_size=beam_size)
        return self._analyze_journal(text, audio, emotion, decode)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # What a transport implements.

    def _detect_emotions(self, texts: list[str], options: EmotionOptions) -> EmotionResult:
        raise NotImplementedError

    def _transcribe(self, audio: bytes, options: DecodeOptions, model: str | None) -> Transcript:
        raise NotImplementedError

    def _summarize(self, texts: list[str], options: SummaryOptions) -> SummaryResult:
        raise NotImplementedError

    def _analyze_journal(
        self, text: str | None, audio: bytes | None, emotion: EmotionOptions, decode: DecodeOptions
    ) -> JournalAnalysis:
        raise NotImplementedError


class HttpClient(SamoClient):
    """`api_key`: sent as `Authorization: Bearer`; `ca_cert`: PEM file of the CA that signed the
    gateway's TLS certificate, when it is not one the system trusts."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        ca_cert: str | Path | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else True
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers, verify=verify)

    def _detect_emotions(self, texts: list[str], options: EmotionOptions) -> EmotionResult:
        body = {
            "texts": texts,
            "threshold": options.threshold,
            "top_k": options.top_k,
            "model": options.model,
        }
        return EmotionResult.model_validate(self._post("/v1/emotions", json=body) | {"options": options})

    def _transcribe(self, audio: bytes, options: DecodeOptions, model: str | None) -> Transcript:
        form = _form(
            task=options.task,
            beam_size=options.beam_size,
            word_timestamps=options.word_timestamps,
            language=options.language,
            model=model,
        )
        answer = self._post("/v1/transcribe", files={"file": ("audio", audio)}, data=form)
        return Transcript.model_validate(answer | {"options": options})

    def _summarize(self, texts: list[str], options: SummaryOptions) -> SummaryResult:
        body = {"texts": texts, **options.model_dump(), "model": options.model}
        return SummaryResult.model_validate(self._post("/v1/summarize", json=body) | {"options": options})

    def _analyze_journal(
        self, text: str | None, audio: bytes | None, emotion: EmotionOptions, decode: DecodeOptions
    ) -> JournalAnalysis:
        if audio is not None:
            form = _form(**emotion.model_dump(), language=decode.language, beam_size=decode.beam_size)
            answer = self._post("/v1/journal", files={"file": ("entry", audio)}, data=form)
        else:
            answer = self._post("/v1/journal", json={"text": text, **emotion.model_dump()})
        if answer.get("transcript"):
            answer["transcript"]["options"] = decode
        return JournalAnalysis.model_validate(answer)

    def _post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.post(path, **kwargs)
        except httpx.TransportError as exc:
            raise SamoError(ErrorType.UNAVAILABLE, f"gateway unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            error = response.json().get("error", {})
            retry_after = response.headers.get("retry-after")
            raise SamoError(
                ErrorType(error.get("type", "internal")),
                error.get("message", response.text),
                retry_after_s=int(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return response.json()

    def close(self) -> None:
        self._http.close()


class GrpcClient(SamoClient):
    """`api_key`: sent as `authorization: Bearer` metadata; `tls`: a TLS channel, trusting the system's
    CAs or, with `ca_cert`, the CA in that PEM file (which implies `tls`)."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        tls: bool = False,
        ca_cert: str | Path | None = None,
    ) -> None:
        if tls or ca_cert:
            root = Path(ca_cert).read_bytes() if ca_cert else None
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root))
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = samo_v1_pb2_grpc.SamoStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.timeout_s = timeout_s

    def _detect_emotions(self, texts: list[str], options: EmotionOptions) -> EmotionResult:
        request = pb.DetectEmotionsRequest(
            texts=texts, threshold=options.threshold, top_k=options.top_k, model=options.model or ""
        )
        return convert.emotion_result(self._call(self._stub.DetectEmotions, request), options)

    def _transcribe(self, audio: bytes, options: DecodeOptions, model: str | None) -> Transcript:
        request = pb.TranscribeRequest(
            audio=audio,
            language=options.language or "",
            task=options.task,
            beam_size=options.beam_size,
            model=model or "",
            word_timestamps=options.word_timestamps,
        )
        return convert.transcript(self._call(self._stub.Transcribe, request), options)

    def _summarize(self, texts: list[str], options: SummaryOptions) -> SummaryResult:
        request = pb.SummarizeRequest(texts=texts, **options.model_dump(), model=options.model or "")
        return convert.summary_result(self._call(self._stub.Summarize, request), options)

    def _analyze_journal(
        self, text: str | None, audio: bytes | None, emotion: EmotionOptions, decode: DecodeOptions
    ) -> JournalAnalysis:
        if audio is not None:
            request = pb.AnalyzeJournalRequest(
                audio=audio,
                language=decode.language or "",
                beam_size=decode.beam_size,
                **emotion.model_dump(),
            )
        else:
            request = pb.AnalyzeJournalRequest(text=text, **emotion.model_dump())
        return convert.journal_analysis(self._call(self._stub.AnalyzeJournal, request), decode)

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _samo_error(exc) from None

    def close(self) -> None:
        self._channel.close()


def _form(**fields: Any) -> dict[str, str]:
    """Multipart form fields: unset ones left out, booleans as `true`/`false`."""
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in fields.items()
        if value is not None and value != ""
    }


def _samo_error(exc: grpc.RpcError) -> SamoError:
    # Keys are str; values str, or bytes for binary (`-bin`) keys.
    metadata: dict[str, str | bytes] = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    code = exc.code()  # type: ignore[attr-defined]
    if GRPC_ERROR_TYPE_KEY in metadata:
        retry_after = metadata.get(GRPC_RETRY_AFTER_KEY)
        return SamoError(
            ErrorType(metadata[GRPC_ERROR_TYPE_KEY]),
            exc.details(),  # type: ignore[attr-defined]
            retry_after_s=int(retry_after) if retry_after else None,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return SamoError(ErrorType.UNAVAILABLE, "gateway unreachable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return SamoError(ErrorType.DEADLINE_EXCEEDED, "the gateway did not answer in time")
    return SamoError(ErrorType.INTERNAL, exc.details() or code.name)  # type: ignore[attr-defined]
