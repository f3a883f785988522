"""The service SAMO replaces, for benchmarks: FastAPI with PyTorch in-process, one forward per request.

`python -m load_tests.naive_service --model DIR --port N`: a fine-tuned checkpoint runs through a
transformers text-classification pipeline; `--model zero-shot` runs the embedded MiniLM prototype
model in PyTorch. Sync endpoints, so FastAPI runs forwards in its thread pool, as such services do.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

ZERO_SHOT = "zero-shot"


class Texts(BaseModel):
    texts: list[str]


def _classifier(model: str, device: str = "cpu") -> Callable[[list[str]], list[dict[str, float]]]:
    if model == ZERO_SHOT:
        from exporters.emotion.zero_shot import build_zero_shot_model

        built = build_zero_shot_model()

        def zero_shot(texts: list[str]) -> list[dict[str, float]]:
            encoded = built.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                scores = built.module(
                    encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]
                )
            return [dict(zip(built.labels, row.tolist(), strict=True)) for row in scores]

        return zero_shot

    from transformers import pipeline

    classify = pipeline(
        "text-classification", model=model, top_k=None, function_to_apply="sigmoid", device=device
    )

    def fine_tuned(texts: list[str]) -> list[dict[str, float]]:
        return [{item["label"]: item["score"] for item in result} for result in classify(texts)]

    return fine_tuned


def create_naive_app(model: str, device: str = "cpu") -> FastAPI:
    classify = _classifier(model, device)
    app = FastAPI()

    @app.post("/v1/emotions")
    def emotions(body: Texts) -> dict[str, list[dict[str, dict[str, float]]]]:
        return {"results": [{"scores": scores} for scores in classify(body.texts)]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help=f"checkpoint folder, or `{ZERO_SHOT}`")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a fine-tuned checkpoint on the GPU")
    args = parser.parse_args()
    uvicorn.run(
        create_naive_app(args.model, args.device),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
