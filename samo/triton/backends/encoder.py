"""Triton Python-backend model: a token-level encoder in ONNX Runtime over whole dynamic batches.

Serves any graph that maps token ids to one vector per text: the emotion classifiers (scores per
label) and the sentence embedder (an embedding per text). Runs in the stub process on numpy and
onnxruntime. Inputs are ragged: each request brings its own [n, length] token ids, padded within the
request. The batch's rows are stripped of padding, sorted by length and run in sub-batches that pad
only to their own longest row, then the outputs go back to their requests.
"""

import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from samo.triton.backends.base import Backend
from samo.triton.devices import require_cpu_instance


class TritonPythonModel(Backend):
    def setup(self):
        # ONNX Runtime on the CPU only; `--target gpu` serves these models on NVIDIA's backend.
        require_cpu_instance(self.instance, "encoder")
        self.output_name = self.output_names[0]
        self.output_width = int(self.config["output"][0]["dims"][0])
        self.padding_mask = self.parameters["padding_mask_input"]
        self.pad_values = json.loads(self.parameter("pad_values", "{}"))
        # Padding cost grows with rows x longest row; cap both per ONNX Runtime call.
        self.max_rows = int(self.parameter("sub_batch_rows", "32"))
        self.max_tokens = int(self.parameter("sub_batch_tokens", "4096"))

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.parameter("intra_op_threads", "2"))
        options.inter_op_num_threads = 1
        # Spinning threads steal the shared cores from the gateway and the other stubs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_path = self.version_dir / self.parameters["onnx_file"]
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        graph_inputs = {i.name for i in self.session.get_inputs()}
        missing = graph_inputs - set(self.input_names)
        if missing:
            raise pb_utils.TritonModelException(f"config.pbtxt lacks graph inputs: {sorted(missing)}")

    def read(self, request):
        """The request's rows without their padding: {input name: [row arrays]}."""
        arrays = {name: self.input(request, name) for name in self.input_names}
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) != 1 or len(shape := next(iter(shapes))) != 2 or 0 in shape:
            raise ValueError(
                f"inputs {', '.join(self.input_names)} must share one non-empty [texts, tokens] shape, "
                f"got {sorted(shapes)}"
            )
        mask = arrays[self.padding_mask]
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"`{self.padding_mask}` must hold only 0 and 1")
        lengths = np.maximum(mask.sum(axis=1), 1)
        return {
            name: [array[row, :length] for row, length in enumerate(lengths)]
            for name, array in arrays.items()
        }

    def run(self, items, senders=None):
        rows = {name: [row for item in items for row in item[name]] for name in self.input_names}
        lengths_arr = np.asarray([row.size for row in rows[self.padding_mask]])
        total = len(lengths_arr)
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
        for item in items:
            count = len(item[self.padding_mask])
            responses.append(self.response({self.output_name: scores[offset : offset + count]}))
            offset += count
        return responses
