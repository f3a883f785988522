"""The one place that talks to Triton: tritonclient's asyncio gRPC client and its exceptions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Protocol, TypeVar

import grpc
import numpy as np
from tritonclient.grpc import (
    MAX_GRPC_MESSAGE_SIZE,
    InferInput,
    InferRequestedOutput,
    InferResult,
    KeepAliveOptions,
)
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.grpc.model_config_pb2 import (
    ModelConfig,  # pyright: ignore[reportAttributeAccessIssue]  # generated protobuf code: no stubs
)
from tritonclient.utils import InferenceServerException

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.observability.triton_calls import triton_call

logger = logging.getLogger(__name__)
Response = TypeVar("Response")

_STATUS_TO_ERROR = {
    "StatusCode.UNAVAILABLE": ErrorType.UNAVAILABLE,
    "StatusCode.DEADLINE_EXCEEDED": ErrorType.DEADLINE_EXCEEDED,
    "StatusCode.NOT_FOUND": ErrorType.NOT_FOUND,
    "StatusCode.RESOURCE_EXHAUSTED": ErrorType.OVERLOADED,
}
# What Triton says when a model's queue policy (config.pbtxt `default_queue_policy`) turns a request
# away, both with status UNAVAILABLE (seen from the tritonserver of nvidia-pytriton 0.7.0), which
# otherwise means the server is down.
QUEUE_FULL = "Exceeds maximum queue size"
QUEUE_TIMEOUT = "Request timeout expired"
_DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32", np.dtype(np.object_): "BYTES"}
# What Triton says when a model's Python stub died: the model still reports READY (measured).
STUB_DIED = "is not healthy"


class ModelStopped(SamoError):
    """The model's Triton instance is dead (its Python stub died): only a reload brings it back."""


class ModelNotLoaded(SamoError):
    """Triton has no loaded version of a model the gateway serves: unloaded, still loading (a reload by
    this or another gateway process), or failed to load. Upstream's fault, so 503, not the caller's 404."""


class ModelRefused(SamoError):
    """The gateway refuses a model whose card differs from what Triton serves (gateway/card_check.py)."""


# Model states in Triton's repository index (what `model_state` returns).
MODEL_READY = "READY"
MODEL_IN_TRANSITION = frozenset({"LOADING", "UNLOADING"})


class ModelGate(Protocol):
    """Told about every model call: may refuse one (a model being reloaded) and hears of failures."""

    def admit(self, model: str, *, probe: bool) -> int:
        """Raise SamoError when `model` must not be called now; else a token for `failed`. `probe`: the
        call is the monitor's own probe."""
        ...

    def failed(self, model: str, error: SamoError, admitted: int, *, probe: bool) -> None:
        """A call to `model`, admitted with the token `admitted`, failed with `error`."""
        ...

    def answered(self, model: str, admitted: int, *, probe: bool) -> None:
        """A call to `model`, admitted with the token `admitted`, was answered."""
        ...


class InferenceCalls(Protocol):
    """The model calls the services make: a `TritonClient`'s, or a `TritonRouter`'s, which sends each
    call to the client of the endpoint that serves its model."""

    async def infer(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> dict[str, np.ndarray]: ...

    def stream(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> AsyncIterator[dict[str, np.ndarray]]: ...


def _answered(response: Response | None, call: str) -> Response:
    """A tritonclient call's response. Its asyncio client returns None only from calls that raised (its
    error helpers always raise, but are not typed `NoReturn`), and its stream gives a result with every
    response that has no error: a None here is a tritonclient fault, not an answer from Triton."""
    if response is None:
        raise RuntimeError(f"tritonclient's `{call}` gave no response and no error")
    return response


def _outputs(result: InferResult, model: str, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The requested outputs of one response; an output the model did not send is its fault."""
    arrays = {}
    for name in outputs:
        array = result.as_numpy(name)
        if array is None:
            raise SamoError(ErrorType.INTERNAL, f"model `{model}` returned no `{name}` output")
        arrays[name] = array
    return arrays


def _convert(exc: InferenceServerException, model: str) -> SamoError:
    status = str(exc.status() or "")
    error_type = _STATUS_TO_ERROR.get(status)
    if QUEUE_FULL in str(exc.message()):
        return SamoError(ErrorType.OVERLOADED, f"model `{model}` has a full queue; retry shortly")
    if QUEUE_TIMEOUT in str(exc.message()):
        # Busy, not broken: overload (429), so that nothing takes the model for a failed one.
        return SamoError(
            ErrorType.OVERLOADED, f"model `{model}` could not start the request in time; retry shortly"
        )
    if STUB_DIED in str(exc.message()):
        # The gateway's model health monitor reloads the model (gateway/health/monitor.py).
        return ModelStopped(
            ErrorType.UNAVAILABLE, f"model `{model}` stopped and is being restarted; retry shortly"
        )
    if error_type is None and "Socket closed" in str(exc.message()):
        error_type = ErrorType.UNAVAILABLE
    if error_type is ErrorType.UNAVAILABLE:
        return SamoError(error_type, "the inference server is unavailable; retry shortly")
    if error_type is ErrorType.DEADLINE_EXCEEDED:
        return SamoError(error_type, f"model `{model}` did not answer in time")
    if error_type is ErrorType.NOT_FOUND:
        # "Request for unknown model: ... has no available versions", also while a reload runs.
        return ModelNotLoaded(
            ErrorType.UNAVAILABLE, f"model `{model}` is not loaded in the inference server; retry shortly"
        )
    if error_type is ErrorType.OVERLOADED:
        return SamoError(error_type, "the inference server is overloaded; retry shortly")
    # Triton rejected what the gateway built, or the model failed: a server-side fault, not the caller's.
    logger.error("triton error from model %s: %s %s", model, status, exc.message())
    return SamoError(ErrorType.INTERNAL, f"model `{model}` failed to run the request")


def _infer_inputs(inputs: Mapping[str, np.ndarray]) -> list[InferInput]:
    tensors = []
    for name, array in inputs.items():
        tensor = InferInput(name, list(array.shape), _DTYPES[array.dtype])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _server_timeout_us(seconds: float) -> int:
    """Triton's per-request queue timeout: a request still queued when its caller's deadline passes is
    dropped, not run. The exported models set no default timeout (`samo.triton.model_config.QueuePolicy`
    says why), so this is the only one; a model given one lets it shorten it, never lengthen it."""
    return max(1, int(seconds * 1_000_000))


BATCH_PRIORITY = 2
"""Triton's priority for batch lines: the exported models' dynamic batchers have two levels
(`samo.triton.model_config.DynamicBatching.priority_levels`) and run level 1, every interactive request
(priority 0 means the model's default, 1), before level 2."""


def priority_of(context: RequestContext) -> int:
    return BATCH_PRIORITY if context.background else 0


# The key of Triton's restricted protocols (`--grpc-restricted-protocol=<protocols>:samo-triton-key=<value>`);
# over gRPC, Triton expects it as metadata with its own prefix (its error names the expected header).
RESTRICTED_HEADER = "samo-triton-key"
RESTRICTED_METADATA = f"triton-grpc-protocol-{RESTRICTED_HEADER}"


def channel_args() -> list[tuple[str, int | str]]:
    """tritonclient's own channel defaults, plus round robin: a target that resolves to several Triton
    pods (a headless Service, `dns:///...`) gets one connection per pod and spreads calls over them;
    the default policy (pick_first) would pin every call of this process to one pod."""
    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.lb_policy_name", "round_robin"),
    ]


class TritonClient:
    """`timeout_s` bounds calls made outside a request; a request's calls end by its deadline
    (gateway.deadlines), both on the client and in Triton's queue."""

    def __init__(self, url: str, timeout_s: float, *, restricted_key: str | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = InferenceServerClient(url=url, channel_args=channel_args())
        self._control_headers = {RESTRICTED_METADATA: restricted_key} if restricted_key else None
        self.gate: ModelGate | None = None

    def _admit(self, model: str, context: RequestContext) -> int:
        return self.gate.admit(model, probe=context.probe) if self.gate is not None else 0

    def _failed(self, model: str, error: SamoError, admitted: int, context: RequestContext) -> SamoError:
        if self.gate is not None:
            self.gate.failed(model, error, admitted, probe=context.probe)
        return error

    async def infer(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> dict[str, np.ndarray]:
        admitted = self._admit(model, context)
        seconds = context.time_left(self.timeout_s)
        with triton_call(model, context.request_id) as call:
            try:
                result = await self._client.infer(
                    model_name=model,
                    inputs=_infer_inputs(inputs),
                    outputs=[InferRequestedOutput(name) for name in outputs],
                    request_id=call.request_id,
                    headers=call.headers,
                    timeout=_server_timeout_us(seconds),
                    client_timeout=seconds,
                    priority=priority_of(context),
                )
            except InferenceServerException as exc:
                raise self._failed(model, _convert(exc, model), admitted, context) from None
        answer = _outputs(_answered(result, "infer"), model, outputs)
        if self.gate is not None:
            self.gate.answered(model, admitted, probe=context.probe)
        return answer

    async def stream(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> AsyncGenerator[dict[str, np.ndarray], None]:
        """One request to a decoupled model; yields each response until the final one."""
        admitted = self._admit(model, context)
        finished = asyncio.Event()
        seconds = context.time_left(self.timeout_s)

        async def one_request():
            yield {
                "model_name": model,
                "inputs": _infer_inputs(inputs),
                "outputs": [InferRequestedOutput(n) for n in outputs],
                "request_id": call.request_id,
                "timeout": _server_timeout_us(seconds),
                "priority": priority_of(context),
            }
            await finished.wait()  # closing the request side early could end the stream

        with triton_call(model, context.request_id, "stream") as call:
            responses = _answered(
                self._client.stream_infer(one_request(), stream_timeout=seconds, headers=call.headers),
                "stream_infer",
            )
            try:
                async for response, error in responses:
                    if error is not None:
                        raise self._failed(model, _convert(error, model), admitted, context)
                    result = _answered(response, "stream_infer")
                    yield _outputs(result, model, outputs)
                    if result.get_response().parameters["triton_final_response"].bool_param:
                        return
            except grpc.RpcError as exc:
                raise self._failed(
                    model,
                    _convert(InferenceServerException(str(exc.details()), status=str(exc.code())), model),
                    admitted,
                    context,
                ) from None
            finally:
                finished.set()
                responses.cancel()

    async def model_config(self, model: str) -> ModelConfig:
        """The configuration Triton serves `model` with (as loaded, after any auto-completion)."""
        try:
            response = await self._client.get_model_config(model, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _convert(exc, model) from None
        return _answered(response, "get_model_config").config

    async def is_model_ready(self, model: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def is_server_live(self) -> bool:
        try:
            return bool(await self._client.is_server_live(client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def model_state(self, model: str) -> str | None:
        """`model`'s state in Triton's repository index (`READY`, `LOADING`, `UNLOADING`, `UNAVAILABLE`;
        "" when the index does not list it), or None when Triton does not answer."""
        try:
            index = await self._client.get_model_repository_index(
                headers=self._control_headers, client_timeout=self.timeout_s
            )
        except InferenceServerException:
            return None
        states = [
            entry.state
            for entry in _answered(index, "get_model_repository_index").models
            if entry.name == model
        ]
        return MODEL_READY if MODEL_READY in states else next(iter(states), "")

    async def reload_model(self, model: str) -> None:
        """Unload `model` and load it again, so Triton starts new instances (new Python stubs).

        A load alone does nothing to a loaded model whose files did not change (measured), so a model
        whose stub died stays dead. Needs tritonserver in explicit model control
        (`--model-control-mode=explicit`)."""
        try:
            await self._client.unload_model(
                model, headers=self._control_headers, unload_dependents=False, client_timeout=self.timeout_s
            )
            await self._client.load_model(model, headers=self._control_headers, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise SamoError(
                ErrorType.UNAVAILABLE, f"Triton did not reload model `{model}`: {exc.message()}"
            ) from None

    async def close(self) -> None:
        await self._client.close()
