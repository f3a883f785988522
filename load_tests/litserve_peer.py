"""LitServe serving the emotion checkpoint, a peer row of `samo bench emotion` (load_tests/peers.py).

`python -m load_tests.litserve_peer --checkpoint DIR --graph model.onnx --port N`: one text per
request (`{"text": ...}` -> `{"scores": {label: score}}`), joined by LitServe's own batching
(`max_batch_size`, `batch_timeout`) in one inference worker. The worker runs what a LitServe user
would write for this checkpoint on a CPU: its tokenizer (transformers, padded to the batch's longest
text) and ONNX Runtime on the fp32 graph Triton serves, threads = usable cores, sigmoid per label.
The same graph as the stack, so the two differ in how they serve, not in the model's compute.
ZeroMQ between the HTTP server and the worker (`fast_queue`): LitServe's setting for hundreds of
requests per second.
"""

# No `from __future__ import annotations`: LitServe builds its FastAPI route from `decode_request`'s
# annotation, and a string annotation made every request a 422.
import argparse
import json
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

from exporters.onnx_tools import cpu_session
from load_tests.peers import LITSERVE_ROUTE
from samo.contracts.emotion import LOGITS
from samo.cpus import usable_cores


class EmotionAPI(ls.LitAPI):
    def __init__(self, checkpoint: Path, graph: Path, *, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=LITSERVE_ROUTE)
        self.checkpoint = checkpoint
        self.graph = graph

    def setup(self, device: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.checkpoint))
        config = json.loads((self.checkpoint / "config.json").read_text())
        self.labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        self.session = cpu_session(self.graph, threads=usable_cores())
        self.input_names = [i.name for i in self.session.get_inputs()]

    def decode_request(self, request: dict[str, Any], **kwargs: Any) -> str:
        return request["text"]

    def predict(self, x: list[str], **kwargs: Any) -> np.ndarray:
        encoded = self.tokenizer(x, padding=True, truncation=True, return_tensors="np")
        feed = {name: np.asarray(encoded[name], dtype=np.int64) for name in self.input_names}
        logits = np.asarray(self.session.run([LOGITS], feed)[0], dtype=np.float32)
        return 1.0 / (1.0 + np.exp(-logits))

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray, **kwargs: Any) -> dict[str, dict[str, float]]:
        return {"scores": dict(zip(self.labels, output.tolist(), strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="the checkpoint folder (tokenizer, labels)"
    )
    parser.add_argument("--graph", type=Path, required=True, help="the fp32 ONNX graph Triton serves")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    args = parser.parse_args()
    api = EmotionAPI(
        args.checkpoint, args.graph, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60, fast_queue=True)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
