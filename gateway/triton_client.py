"""The one place that talks to Triton: tritonclient's asyncio gRPC client and its exceptions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway.errors import ErrorType, SamoError

logger = logging.getLogger(__name__)

_STATUS_TO_ERROR = {
    "StatusCode.UNAVAILABLE": ErrorType.UNAVAILABLE,
    "StatusCode.DEADLINE_EXCEEDED": ErrorType.DEADLINE_EXCEEDED,
    "StatusCode.NOT_FOUND": ErrorType.NOT_FOUND,
    "StatusCode.RESOURCE_EXHAUSTED": ErrorType.OVERLOADED,
}
_DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32", np.dtype(np.object_): "BYTES"}


def _convert(exc: InferenceServerException, model: str) -> SamoError:
    status = str(exc.status() or "")
    error_type = _STATUS_TO_ERROR.get(status)
    if error_type is None and "Socket closed" in str(exc.message()):
        error_type = ErrorType.UNAVAILABLE
    if error_type is ErrorType.UNAVAILABLE:
        return SamoError(error_type, "the inference server is unavailable; retry shortly")
    if error_type is ErrorType.DEADLINE_EXCEEDED:
        return SamoError(error_type, f"model `{model}` did not answer in time")
    if error_type is ErrorType.NOT_FOUND:
        return SamoError(error_type, f"model `{model}` is not loaded in the inference server")
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


class TritonClient:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = InferenceServerClient(url=url)

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        try:
            result = await self._client.infer(
                model_name=model,
                inputs=_infer_inputs(inputs),
                outputs=[InferRequestedOutput(name) for name in outputs],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise _convert(exc, model) from None
        return {name: result.as_numpy(name) for name in outputs}

    async def stream(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> AsyncIterator[dict[str, np.ndarray]]:
        """One request to a decoupled model; yields each response until the final one."""
        finished = asyncio.Event()

        async def one_request():
            yield {
                "model_name": model,
                "inputs": _infer_inputs(inputs),
                "outputs": [InferRequestedOutput(n) for n in outputs],
            }
            await finished.wait()  # closing the request side early could end the stream

        responses = self._client.stream_infer(one_request(), stream_timeout=self.timeout_s)
        try:
            async for result, error in responses:
                if error is not None:
                    raise _convert(error, model)
                yield {name: result.as_numpy(name) for name in outputs}
                if result.get_response().parameters["triton_final_response"].bool_param:
                    return
        except grpc.RpcError as exc:
            raise _convert(
                InferenceServerException(str(exc.details()), status=str(exc.code())), model
            ) from None
        finally:
            finished.set()
            responses.cancel()

    async def is_model_ready(self, model: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()
