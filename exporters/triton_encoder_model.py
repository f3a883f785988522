"""Triton Python-backend model: a token-level encoder in ONNX Runtime over whole dynamic batches.

Serves any graph that maps token ids to one vector per text: the emotion classifiers (scores per
label) and the sentence embedder (an embedding per text). Copied into the model repository as
`<name>/1/model.py`. Runs in the stub process, so it depends on numpy and onnxruntime only. Inputs
are ragged: each request brings its own [n, length] token ids, padded within the request. The batch's
rows are stripped of padding, sorted by length and run in sub-batches that pad only to their own
longest row, then the outputs go back to their requests.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_name = config["output"][0]["name"]
        self.output_width = int(config["output"][0]["dims"][0])
        self.padding_mask = params["padding_mask_input"]
        self.pad_values = json.loads(params.get("pad_values", "{}"))
        # Padding cost grows with rows x longest row; cap both per ONNX Runtime call.
        self.max_rows = int(params.get("sub_batch_rows", "32"))
        self.max_tokens = int(params.get("sub_batch_tokens", "4096"))

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "2"))
        options.inter_op_num_threads = 1
        # Spinning threads steal the shared cores from the gateway and the other stubs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_path = Path(args["model_repository"]) / args["model_version"] / params["onnx_file"]
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        graph_inputs = {i.name for i in self.session.get_inputs()}
        missing = graph_inputs - set(self.input_names)
        if missing:
            raise pb_utils.TritonModelException(f"config.pbtxt lacks graph inputs: {sorted(missing)}")

    def execute(self, requests):
        rows = {name: [] for name in self.input_names}
        lengths = []
        counts = []
        for request in requests:
            arrays = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names
            }
            mask = arrays[self.padding_mask]
            row_lengths = np.maximum(mask.sum(axis=1), 1)
            counts.append(len(mask))
            for row, length in enumerate(row_lengths):
                lengths.append(int(length))
                for name in self.input_names:
                    rows[name].append(arrays[name][row, :length])

        total = len(lengths)
        lengths_arr = np.asarray(lengths)
        order = np.argsort(lengths_arr, kind="stable")
        scores = np.empty((total, self.output_width), dtype=np.float32)
        start = 0
        while start < total:
            stop = start + 1
            while (
                stop < total
                and stop - start < self.max_rows
                and (stop - start + 1) * lengths_arr[order[stop]] <= self.max_tokens
            ):
                stop += 1
            chunk = order[start:stop]
            width = int(lengths_arr[chunk].max())
            feed = {}
            for name in self.input_names:
                batch = np.full((len(chunk), width), self.pad_values.get(name, 0), dtype=np.int64)
                for i, row in enumerate(chunk):
                    values = rows[name][row]
                    batch[i, : len(values)] = values
                feed[name] = batch
            scores[chunk] = self.session.run([self.output_name], feed)[0]
            start = stop

        responses = []
        offset = 0
        for count in counts:
            tensor = pb_utils.Tensor(self.output_name, scores[offset : offset + count])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += count
        return responses
