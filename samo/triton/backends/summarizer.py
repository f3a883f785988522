"""Triton Python-backend model: abstractive summarization on the shared seq2seq engine.

Copied into the model repository as `<name>/1/model.py` beside the three ONNX files, and as
`<name>_stream/1/model.py` for the decoupled variant (which reads the weights of `<name>`, named by
its `weights_model` parameter). Every request of a dynamic batch is encoded in one call and
generated together, whatever its settings; only the beam width splits a batch. The streaming variant
sends each greedy token as it is chosen (beam search sends its answer at the end) and then an empty
final response.
"""

import numpy as np

from samo.contracts.summarizer import (
    OPTIONS,
    OUTPUT_IDS,
    GenerationOptions,
    SummarizerContract,
    SummarizerModelCard,
)
from samo.contracts.text import INPUT_IDS
from samo.generation import generate
from samo.generation.onnx_seq2seq import OnnxSeq2Seq, instance_providers
from samo.generation.search import Request
from samo.triton.backends.base import Backend, read_json_option
from samo.triton.devices import require_cuda_provider


class TritonPythonModel(Backend):
    contract = SummarizerContract().model

    def setup(self):
        model_dir = self.model_dir
        if self.parameters.get("weights_model"):
            model_dir = model_dir.parent / self.parameters["weights_model"]
        self.card = SummarizerModelCard.read(model_dir)
        self.model = OnnxSeq2Seq(
            model_dir / self.args["model_version"],
            threads=int(self.parameter("intra_op_threads", "2")),
            providers=instance_providers(self.args),
        )
        # ONNX Runtime falls back to the CPU silently; a GPU instance must not load that way.
        sessions = (self.model.encoder, self.model.first, self.model.next)
        require_cuda_provider(self.instance, [session.get_providers() for session in sessions])

    def read(self, request):
        ids = self.input(request, INPUT_IDS).reshape(-1).astype(np.int64)
        if ids.size == 0:
            raise ValueError(f"{INPUT_IDS} is empty")
        if ids.size > self.card.max_input_tokens:
            raise ValueError(f"{ids.size} input tokens; the model reads at most {self.card.max_input_tokens}")
        options = GenerationOptions.model_validate_json(
            read_json_option(self.input(request, OPTIONS)) or "{}"
        )
        return ids, self.card.settings(options)

    def run(self, items, senders=None):
        encoded = self.model.encode_tokens([ids for ids, _ in items], self.card.pad_token_id)
        start = (self.card.decoder_start_token_id,)
        requests = [Request(start, settings) for _, settings in items]

        on_token = None
        if senders is not None:

            def send_token(row, token):
                senders[row].send(self._tokens([token]))

            on_token = send_token

        results = generate(self.model, encoded, requests, self.card.special_tokens, on_token=on_token)
        responses = []
        for (_, settings), result in zip(items, results, strict=True):
            streamed = senders is not None and settings.num_beams == 1
            responses.append(self._tokens([] if streamed else list(result.tokens)))
        return responses

    def _tokens(self, tokens):
        return self.response({OUTPUT_IDS: np.asarray(tokens, dtype=np.int64).reshape(1, -1)})
