"""The base of the Triton Python-backend models (`samo/triton/backends/`): one bad request in a dynamic
batch is answered with its own error while its neighbours get their answers, through the real Triton
and, for failures inside the batched run, against the base class itself."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psutil
import pytest
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from samo.contracts.emotion import LOGITS
from samo.contracts.text import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from samo.contracts.whisper import AUDIO, OPTIONS, RESULT
from samo.triton.local_server import LocalTriton
from tests.speech import RATE, jfk_samples
from tests.triton_statistics import batching_since, model_statistics


def _window(clip: np.ndarray, options: dict | str) -> list[InferInput]:
    audio = InferInput(AUDIO, [1, clip.size], "FP32")
    audio.set_data_from_numpy(clip.reshape(1, -1).astype(np.float32))
    text = options if isinstance(options, str) else json.dumps(options)
    encoded = InferInput(OPTIONS, [1, 1], "BYTES")
    encoded.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
    return [audio, encoded]


BAD_WINDOWS = {
    "beam_size out of range": ({"beam_size": 0}, "beam_size"),
    "unknown option": ({"beam_size": 1, "beams": 2}, "beams"),
    "not JSON": ("{beam_size: 1", "bad request"),
    "over 30 s": ({"beam_size": 1}, r"audio window is 31\.0 s"),
}


@pytest.mark.parametrize("model", ["whisper", "whisper_onnx"])
def test_a_bad_window_fails_alone_in_its_batch(triton: LocalTriton, model: str) -> None:
    speech = jfk_samples().astype(np.float32) / 32768
    good = [speech[: 4 * RATE], speech[3 * RATE : 8 * RATE], speech[6 * RATE :], speech[2 * RATE : 6 * RATE]]
    option = {"beam_size": 1}
    bad = [
        (np.zeros(31 * RATE) if name == "over 30 s" else speech[: 2 * RATE], options)
        for name, (options, _) in BAD_WINDOWS.items()
    ]

    async def run() -> tuple[list, list, int, int]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            alone = [await client.infer(model, _window(clip, option)) for clip in good]
            before = await model_statistics(client, model)
            mixed = [_window(clip, option) for clip in good[:2]]
            mixed += [_window(clip, options) for clip, options in bad]
            mixed += [_window(clip, option) for clip in good[2:]]
            together = await asyncio.gather(*(client.infer(model, i) for i in mixed), return_exceptions=True)
            executions, inferences = await batching_since(client, model, before, len(good))
        finally:
            await client.close()
        return alone, together, executions, inferences

    alone, together, executions, inferences = asyncio.run(run())
    good_answers = [*together[:2], *together[-2:]]
    errors = together[2:-2]
    assert executions < inferences, "the windows should have shared dynamic batches"
    for answer, reference in zip(good_answers, alone, strict=True):
        assert not isinstance(answer, Exception), answer
        assert json.loads(answer.as_numpy(RESULT).reshape(-1)[0]) == json.loads(
            reference.as_numpy(RESULT).reshape(-1)[0]
        )
    for error, (name, (_, message)) in zip(errors, BAD_WINDOWS.items(), strict=True):
        assert isinstance(error, InferenceServerException), name
        assert error.message().startswith("bad request: "), error.message()
        assert re.search(message, error.message()), name


def _tokens(ids: list[int], mask: list[int] | None = None) -> list[InferInput]:
    arrays = {
        INPUT_IDS: np.array([ids], dtype=np.int64),
        ATTENTION_MASK: np.array([mask if mask is not None else [1] * len(ids)], dtype=np.int64),
        TOKEN_TYPE_IDS: np.zeros((1, len(ids)), dtype=np.int64),
    }
    inputs = []
    for name, array in arrays.items():
        tensor = InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_a_malformed_text_fails_alone_in_its_batch(triton: LocalTriton) -> None:
    rng = np.random.default_rng(0)
    good = [[101, *rng.integers(1000, 20000, size=n).tolist(), 102] for n in (3, 9, 5, 14, 7, 2)]
    bad = {
        "mask longer than ids": _tokens([101, 2000, 2001, 102], [1, 1, 1, 1, 1, 1]),
        "mask not 0/1": _tokens([101, 2000, 102], [1, 2, 1]),
    }

    async def run() -> tuple[list, list]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            alone = [await client.infer("emotion", _tokens(ids)) for ids in good]
            mixed = (
                [_tokens(ids) for ids in good[:3]] + list(bad.values()) + [_tokens(ids) for ids in good[3:]]
            )
            together = await asyncio.gather(
                *(client.infer("emotion", inputs) for inputs in mixed), return_exceptions=True
            )
        finally:
            await client.close()
        return alone, together

    alone, together = asyncio.run(run())
    for answer, reference in zip([*together[:3], *together[-3:]], alone, strict=True):
        assert not isinstance(answer, Exception), answer
        np.testing.assert_allclose(answer.as_numpy(LOGITS), reference.as_numpy(LOGITS), atol=1e-5)
    for error, name in zip(together[3:-3], bad, strict=True):
        assert isinstance(error, InferenceServerException), name
        assert error.message().startswith("bad request: "), error.message()


# --------------------------------------------------------------------------------------------------
# Failures inside the batched run, against the base class with a stand-in for Triton's utilities


@dataclass
class _Error:
    message: str


@dataclass
class _Response:
    output_tensors: list | None = None
    error: _Error | None = None


@pytest.fixture()
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    utils = types.ModuleType("triton_python_backend_utils")
    utils.InferenceResponse = _Response
    utils.TritonError = _Error
    utils.Tensor = lambda name, array: (name, array)
    utils.TritonModelException = RuntimeError
    utils.using_decoupled_model_transaction_policy = lambda config: False
    utils.get_input_tensor_by_name = lambda request, name: None
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    sys.modules.pop("samo.triton.backends.base", None)
    yield importlib.import_module("samo.triton.backends.base")
    sys.modules.pop("samo.triton.backends.base", None)


def _doubler(base: types.ModuleType) -> object:
    class Doubler(base.Backend):
        """Doubles numbers; a negative number is malformed, 13 breaks the model, 7 is refused by it."""

        def setup(self) -> None:
            self.runs: list[list[int]] = []

        def read(self, request: int) -> int:
            if request < 0:
                raise ValueError(f"{request} is negative")
            return request

        def run(self, items, senders=None):
            self.runs.append(list(items))
            if 13 in items:
                raise RuntimeError("secret journal text")
            if 7 in items:
                raise ValueError("7 is not supported")
            return [self.response({"y": np.array([2 * item])}) for item in items]

    model = Doubler()
    model.initialize(
        {
            "model_config": json.dumps(
                {"name": "doubler", "input": [{"name": "x"}], "output": [{"name": "y"}]}
            ),
            "model_repository": "/models/doubler",
            "model_version": "1",
        }
    )
    return model


def test_a_request_that_breaks_the_batch_fails_alone(
    base: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    model = _doubler(base)
    with caplog.at_level(logging.ERROR):
        responses = model.execute([1, -2, 13, 3, 7])
    answers = [r.output_tensors[0][1].tolist() if r.error is None else r.error.message for r in responses]
    assert answers == [
        [2],
        "bad request: -2 is negative",
        "model `doubler` failed on this request; the server log has the details",
        [6],
        "bad request: 7 is not supported",
    ]
    assert model.runs == [[1, 13, 3, 7], [1], [13], [3], [7]]
    assert "secret journal text" in caplog.text  # logged on the server, never answered


def test_a_batch_that_runs_is_run_once(base: types.ModuleType) -> None:
    model = _doubler(base)
    responses = model.execute([1, 2, -1, 3])
    assert [r.error.message if r.error else r.output_tensors[0][1].tolist() for r in responses] == [
        [2],
        [4],
        "bad request: -1 is negative",
        [6],
    ]
    assert model.runs == [[1, 2, 3]]


def test_config_must_match_the_contract(base: types.ModuleType) -> None:
    from samo.contracts.whisper import WhisperContract

    class Whisperish(base.Backend):
        contract = WhisperContract().model

        def setup(self) -> None:
            pass

    config = {"name": "w", "input": [{"name": "audio"}], "output": [{"name": "result"}]}
    with pytest.raises(RuntimeError, match=r"config.pbtxt of `w` has inputs \['audio'\] and outputs"):
        Whisperish().initialize(
            {"model_config": json.dumps(config), "model_repository": "/models/w", "model_version": "1"}
        )


# A stub's way out when its tritonserver dies: a process standing in for tritonserver starts one standing
# in for the stub, which runs `watch_server` as a stub does; killing the first must end the second.
_STUB = """
import sys, time, types
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
from samo.triton.backends.base import watch_server
watch_server()
print("watching", flush=True)
time.sleep(120)
"""
_SERVER = """
import subprocess, sys, time
stub = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert stub.stdout.readline().strip() == "watching"
print(stub.pid, flush=True)
time.sleep(120)
"""


def test_a_stub_ends_when_its_tritonserver_is_killed() -> None:
    server = subprocess.Popen([sys.executable, "-c", _SERVER, _STUB], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        stub = int(server.stdout.readline())
        assert psutil.pid_exists(stub)
        server.kill()
        server.wait()
        deadline = time.monotonic() + 10  # a bound, not a speed: the stub checks every 0.5 s
        while psutil.pid_exists(stub) and psutil.Process(stub).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the stub outlived its tritonserver"
            time.sleep(0.05)
    finally:
        server.kill()
