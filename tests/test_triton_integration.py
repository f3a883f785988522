"""A real tritonserver (from the nvidia-pytriton wheel) serving the exported models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc.aio import InferenceServerClient

from exporters.onnx_tools import cpu_session
from gateway.emotions.model import EmotionModel
from gateway.triton_client import TritonClient
from samo.triton.local_server import LocalTriton, TritonStartError
from tests.conftest import journal_corpus
from tests.triton_statistics import batching_since, model_statistics


def _infer_inputs(inputs: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def test_all_exported_models_are_ready(triton: LocalTriton) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    assert client.is_server_ready()
    for name in ("emotion", "tiny_bert", "tiny_distilbert"):
        assert client.is_model_ready(name), name


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert", "emotion"])
def test_triton_matches_onnx_runtime_in_process(
    triton: LocalTriton, serving_repository: Path, model: str
) -> None:
    """One request with rows of very different lengths: the model's own sorting and re-padding
    must hand every row back in place."""
    model_dir = serving_repository / model
    texts = [journal_corpus()[3], " ".join(journal_corpus()[10:30]), "ok", journal_corpus()[100]]
    encoded = EmotionModel.load(model_dir).encode(texts)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    served = client.infer(model, _infer_inputs(encoded.inputs)).as_numpy("logits")
    session = cpu_session(model_dir / "1" / "model.onnx")
    for row, text in enumerate(texts):
        alone = EmotionModel.load(model_dir).encode([text]).inputs
        expected = session.run(["logits"], alone)[0][0]
        np.testing.assert_allclose(served[row], expected, atol=1e-5, err_msg=f"row {row}")


def test_dynamic_batching_runs_fewer_executions_than_inferences(
    triton: LocalTriton, serving_repository: Path
) -> None:
    model = EmotionModel.load(serving_repository / "tiny_bert")
    texts = journal_corpus()[:64]

    async def scenario() -> tuple[int, int]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            before = await model_statistics(client, "tiny_bert")
            await asyncio.gather(
                *(client.infer("tiny_bert", _infer_inputs(model.encode([text]).inputs)) for text in texts)
            )
            executions, inferences = await batching_since(client, "tiny_bert", before, len(texts))
        finally:
            await client.close()
        return inferences, executions

    inferences, executions = asyncio.run(scenario())
    # The session gateway probes every model with one inference every few seconds; one may land here.
    assert 64 <= inferences <= 66
    assert executions < inferences, f"{executions} executions for {inferences} inferences: no batching"


def test_unreachable_triton_maps_to_unavailable() -> None:
    from gateway.context import RequestContext
    from gateway.errors import ErrorType, SamoError

    async def scenario() -> SamoError:
        client = TritonClient("127.0.0.1:1", timeout_s=5)
        try:
            inputs = {"input_ids": np.zeros((1, 3), np.int64)}
            await client.infer(RequestContext(), "emotion", inputs, ["logits"])
        except SamoError as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("no error")

    error = asyncio.run(scenario())
    assert error.type is ErrorType.UNAVAILABLE
    assert error.message == "the inference server is unavailable; retry shortly"


def test_missing_repository_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="does not exist; build it with `samo export`"):
        LocalTriton(tmp_path / "missing").start()


def test_broken_model_makes_start_fail_with_the_log(tmp_path: Path, local_triton) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
    )
    (tmp_path / "broken" / "1" / "model.py").write_text("raise RuntimeError('cannot load')\n")
    with (
        pytest.raises(TritonStartError, match="tritonserver exited with code"),
        local_triton(tmp_path, start_timeout_s=60),
    ):
        pass
