"""The service SAMO replaces, for benchmarks: FastAPI with PyTorch in-process, one forward per request.

`python -m load_tests.naive_service --model DIR --port N`: a fine-tuned checkpoint runs through a
transformers text-classification pipeline; `--model zero-shot` runs the embedded MiniLM prototype
model in PyTorch. Sync endpoints, so FastAPI runs forwards in its thread pool, as such services do.

Untuned (the default) is how such a service usually ships: PyTorch's default threads in every one
of FastAPI's pool threads, so concurrent requests oversubscribe the cores. `--tuned` is what a
competent user does: PyTorch threads = the cores this process may use, and every forward on one
dedicated thread, so forwards never fight over cores. One thread, not a lock over FastAPI's pool:
OpenMP keeps a team of worker threads per calling thread, and teams left spinning by the pool thread
that ran the last forward took the cores from the next one (measured with a lock: BERT-base at c=8
8.0 requests/s against 15.1 at c=1). `--quantize int8` applies PyTorch's dynamic int8
quantization to the Linear layers, the int8 a PyTorch user reaches for first.
"""

from __future__ import annotations

import argparse
import asyncio
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from samo.cpus import usable_cores

ZERO_SHOT = "zero-shot"


class Texts(BaseModel):
    texts: list[str]


def _int8(module: Any) -> Any:
    """PyTorch dynamic int8 on the Linear layers (weights int8, activations quantized per batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; the API works in this torch
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def _classifier(
    model: str, device: str = "cpu", quantize: str = "none"
) -> Callable[[list[str]], list[dict[str, float]]]:
    if model == ZERO_SHOT:
        from exporters.emotion.zero_shot import build_zero_shot_model

        built = build_zero_shot_model()
        module = _int8(built.module) if quantize == "int8" else built.module

        def zero_shot(texts: list[str]) -> list[dict[str, float]]:
            encoded = built.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                scores = module(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"])
            return [dict(zip(built.labels, row.tolist(), strict=True)) for row in scores]

        return zero_shot

    from transformers import pipeline

    classify = pipeline(
        "text-classification", model=model, top_k=None, function_to_apply="sigmoid", device=device
    )
    if quantize == "int8":
        classify.model = _int8(classify.model)

    def fine_tuned(texts: list[str]) -> list[dict[str, float]]:
        # With top_k=None, a list of texts gives one list of labels per text; transformers hints one list.
        results: list[list[dict[str, Any]]] = classify(texts)  # pyright: ignore[reportAssignmentType]
        return [{item["label"]: item["score"] for item in result} for result in results]

    return fine_tuned


def create_naive_app(
    model: str, device: str = "cpu", *, tuned: bool = False, quantize: str = "none"
) -> FastAPI:
    """`tuned`: PyTorch threads = usable cores and every forward on one thread (see the module's doc)."""
    if tuned:
        torch.set_num_threads(usable_cores())
    classify = _classifier(model, device, quantize)
    app = FastAPI()

    def answer(texts: list[str]) -> dict[str, list[dict[str, dict[str, float]]]]:
        return {"results": [{"scores": row} for row in classify(texts)]}

    if tuned:
        forwards = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

        @app.post("/v1/emotions")
        async def emotions_tuned(body: Texts) -> dict[str, list[dict[str, dict[str, float]]]]:
            return await asyncio.get_running_loop().run_in_executor(forwards, answer, body.texts)
    else:

        @app.post("/v1/emotions")
        def emotions(body: Texts) -> dict[str, list[dict[str, dict[str, float]]]]:
            return answer(body.texts)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help=f"checkpoint folder, or `{ZERO_SHOT}`")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a fine-tuned checkpoint on the GPU")
    parser.add_argument(
        "--tuned", action="store_true", help="PyTorch threads = usable cores, every forward on one thread"
    )
    parser.add_argument("--quantize", choices=("none", "int8"), default="none", help="PyTorch dynamic int8")
    args = parser.parse_args()
    uvicorn.run(
        create_naive_app(args.model, args.device, tuned=args.tuned, quantize=args.quantize),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
