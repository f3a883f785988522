"""Triton Python-backend model: abstractive summarization on the shared seq2seq engine.

Copied into the model repository as `<name>/1/model.py` beside the three ONNX files, and as
`<name>_stream/1/model.py` for the decoupled variant (which reads the weights of `<name>`, named by
its `weights_model` parameter). Every request of a dynamic batch is encoded in one call and
generated together, whatever its settings; only the beam width splits a batch. The streaming variant
sends each greedy token as it is chosen (beam search sends its answer at the end) and then an empty
final response.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from pydantic import ValidationError

from samo.contracts.summarizer import GenerationOptions, SummarizerModelCard
from samo.generation import generate
from samo.generation.onnx_seq2seq import OnnxSeq2Seq, instance_providers
from samo.generation.search import Request


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.ids_name = config["input"][0]["name"]
        self.options_name = config["input"][1]["name"]
        self.output_name = config["output"][0]["name"]
        model_dir = Path(args["model_repository"])
        if params.get("weights_model"):
            model_dir = model_dir.parent / params["weights_model"]
        self.card = SummarizerModelCard.read(model_dir)
        self.model = OnnxSeq2Seq(
            model_dir / args["model_version"],
            threads=int(params.get("intra_op_threads", "2")),
            providers=instance_providers(args),
        )

    def execute(self, requests):
        responses = [None] * len(requests)
        accepted = []
        for index, request in enumerate(requests):
            try:
                accepted.append((index, *self._read(request)))
            except (ValueError, TypeError, UnicodeDecodeError, ValidationError) as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"bad request: {exc}")
                )
        senders = [request.get_response_sender() for request in requests] if self.decoupled else None
        if accepted:
            try:
                self._generate(accepted, responses, senders)
            except Exception as exc:  # one failed batch must still answer each of its requests
                for index, *_ in accepted:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"generation failed: {type(exc).__name__}: {exc}")
                    )
        if not self.decoupled:
            return responses
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for sender, response in zip(senders, responses, strict=True):
            sender.send(response if response is not None else self._tokens([]), flags=final)
        return None

    def _read(self, request):
        ids = (
            pb_utils.get_input_tensor_by_name(request, self.ids_name).as_numpy().reshape(-1).astype(np.int64)
        )
        raw = pb_utils.get_input_tensor_by_name(request, self.options_name).as_numpy().reshape(-1)
        if ids.size == 0:
            raise ValueError("input_ids is empty")
        if ids.size > self.card.max_input_tokens:
            raise ValueError(f"{ids.size} input tokens; the model reads at most {self.card.max_input_tokens}")
        text = raw[0].decode() if raw.size and isinstance(raw[0], bytes) else ""
        options = GenerationOptions.model_validate_json(text or "{}")
        return ids, self.card.settings(options)

    def _generate(self, accepted, responses, senders):
        encoded = self.model.encode_tokens([ids for _, ids, _ in accepted], self.card.pad_token_id)
        start = (self.card.decoder_start_token_id,)
        requests = [Request(start, settings) for _, _, settings in accepted]

        on_token = None
        if senders is not None:
            streams = [senders[index] for index, _, _ in accepted]

            def on_token(row, token):
                streams[row].send(self._tokens([token]))

        results = generate(self.model, encoded, requests, self.card.special_tokens, on_token=on_token)
        for (index, _, settings), result in zip(accepted, results, strict=True):
            streamed = senders is not None and settings.num_beams == 1
            responses[index] = self._tokens([] if streamed else list(result.tokens))

    def _tokens(self, tokens):
        array = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, array)])
