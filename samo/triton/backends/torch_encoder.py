"""Triton Python-backend model: a token-level encoder in PyTorch over whole dynamic batches (`gpu-torch`).

The same contract, inputs and outputs as `encoder.py` (ONNX Runtime), so the gateway serves either
unchanged: ragged token ids in, one vector per text out (logits, zero-shot scores or an embedding).
The version folder holds the Hugging Face checkpoint the exporter validated (`save_pretrained`); the
head it had in ONNX is rebuilt by `samo.torch_encoding` (parameter `head`).

On a GPU instance (`model_instance_kind` GPU, the config's `KIND_AUTO` on a machine with GPUs) the
model runs on `cuda:<model_instance_device_id>` in `precision` (fp16 or bf16); on a CPU instance it
runs in fp32. Rows are sorted by length and run in sub-batches padded to a multiple of
`bucket_multiple` tokens. `compile` (GPU only, off by default) compiles the model per bucket shape with
`torch.compile` (`reduce-overhead` captures CUDA graphs); it has not been measured yet.

Tensors come in and go out through DLPack, never numpy: with numpy 2 in the stub's environment the
numpy path (`as_numpy`, `pb_utils.Tensor(name, array)`) returned empty tensors.
"""

import json
from collections.abc import Sequence
from typing import TypeVar

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import (
    from_dlpack,
    to_dlpack,  # pyright: ignore[reportPrivateImportUsage]  # documented; not in torch's __all__
)

from samo.torch_encoding import (
    COMPILE_MODES,
    HEADS,
    PRECISIONS,
    BucketedRunner,
    Bucketing,
    load_torch_encoder,
)
from samo.triton.backends.base import Backend
from samo.triton.devices import require_cuda_devices

Choice = TypeVar("Choice", bound=str)


class TritonPythonModel(Backend):
    def setup(self):
        self.output_name = self.output_names[0]
        self.padding_mask = self.parameters["padding_mask_input"]
        head = self.choice("head", "logits", HEADS)
        precision = self.choice("precision", "fp16", tuple(PRECISIONS))
        compile_mode = self.choice("compile", "off", COMPILE_MODES)
        on_gpu = self.instance.on_gpu
        if on_gpu:
            # A CPU-only PyTorch, or no visible GPU: fail the load instead of running on the CPU.
            require_cuda_devices(self.instance, "PyTorch", torch.cuda.device_count())
            device = torch.device("cuda", int(self.args.get("model_instance_device_id", 0)))
            torch.cuda.set_device(device)
            dtype = PRECISIONS[precision]
        else:
            device, dtype, compile_mode = torch.device("cpu"), torch.float32, "off"
            torch.set_num_threads(int(self.parameter("intra_op_threads", "2")))
        bucketing = Bucketing(
            multiple=int(self.parameter("bucket_multiple", "16")),
            max_rows=int(self.parameter("sub_batch_rows", "64")),
            max_tokens=int(self.parameter("sub_batch_tokens", "16384")),
            max_length=int(self.parameter("max_length", "512")),
            static_rows=compile_mode != "off",
        )
        self.runner = BucketedRunner(
            load_torch_encoder(self.version_dir, head),
            input_names=self.input_names,
            padding_mask=self.padding_mask,
            pad_values=json.loads(self.parameter("pad_values", "{}")),
            device=device,
            dtype=dtype,
            bucketing=bucketing,
            compile_mode=compile_mode,
        )

    def choice(self, name: str, default: Choice, allowed: Sequence[Choice]) -> Choice:
        """Parameter `name`, which must be one of `allowed`."""
        value = self.parameter(name, default)
        for option in allowed:
            if option == value:
                return option
        raise pb_utils.TritonModelException(
            f"config.pbtxt of `{self.name}`: parameter `{name}` must be one of "
            f"{', '.join(allowed)}, got {value!r}"
        )

    def tensor(self, request, name):
        """A request's input as a torch tensor over Triton's own buffer (DLPack, no copy, no numpy)."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"input `{name}` is missing")
        return from_dlpack(tensor.to_dlpack())

    def read(self, request):
        """The request's rows without their padding: {input name: [1-D tensors]}."""
        return self.runner.rows_of({name: self.tensor(request, name) for name in self.input_names})

    def run(self, items, senders=None):
        rows = {name: [row for item in items for row in item[name]] for name in self.input_names}
        outputs = self.runner.run(rows)
        responses = []
        offset = 0
        for item in items:
            count = len(item[self.padding_mask])
            piece = outputs[offset : offset + count]
            output = pb_utils.Tensor.from_dlpack(self.output_name, to_dlpack(piece))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            offset += count
        return responses
