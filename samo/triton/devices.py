"""Where a Python-backend model instance runs, and the check that a GPU instance really runs on its GPU.

ONNX Runtime silently falls back to the CPU when the CUDA provider cannot load (the CPU `onnxruntime`
shadowing onnxruntime-gpu, a CUDA library missing); a GPU model would then serve, slowly, on the CPU.
Every GPU check here raises `DeviceUnavailable` at `initialize`, so the model fails to load with the
reason in Triton's log and readiness, never quietly on the wrong device. The checks take plain values
(no `triton_python_backend_utils`), so they are tested on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CUDA_PROVIDER = "CUDAExecutionProvider"


class DeviceUnavailable(RuntimeError):
    """A GPU model instance cannot run on its GPU."""


@dataclass(frozen=True)
class Instance:
    """A model instance as Triton describes it in `initialize`'s arguments."""

    model: str
    on_gpu: bool
    device_id: int = 0

    @classmethod
    def from_args(cls, model: str, args: Mapping[str, str]) -> Instance:
        on_gpu = args.get("model_instance_kind") == "GPU"
        return cls(model, on_gpu, int(args.get("model_instance_device_id", 0)) if on_gpu else 0)

    @property
    def where(self) -> str:
        return f"model `{self.model}` (instance on GPU {self.device_id})"


def require_cuda_provider(instance: Instance, session_providers: Iterable[Iterable[str]]) -> None:
    """Each ONNX Runtime session of a GPU instance must have the CUDA provider
    (`session.get_providers()`, one list per session)."""
    if not instance.on_gpu:
        return
    for providers in session_providers:
        providers = list(providers)
        if CUDA_PROVIDER not in providers:
            raise DeviceUnavailable(
                f"{instance.where}: ONNX Runtime would run it on {providers}, not {CUDA_PROVIDER}. "
                "Install onnxruntime-gpu built for the container's CUDA and no CPU `onnxruntime` "
                "(locks/triton-python-backend.txt), or serve the model with KIND_CPU"
            )


def require_cpu_instance(instance: Instance, backend: str) -> None:
    """Backends that compute on the CPU only must not be given a GPU instance (it would idle)."""
    if instance.on_gpu:
        raise DeviceUnavailable(
            f"{instance.where}: the `{backend}` backend computes on the CPU only; export the model with "
            "`--target gpu` (or `gpu-torch`) for a GPU, or set its instance group to KIND_CPU"
        )


def require_cuda_devices(instance: Instance, library: str, device_count: int) -> None:
    """A GPU instance needs its device among those `library` sees (CTranslate2, PyTorch)."""
    if instance.on_gpu and device_count <= instance.device_id:
        raise DeviceUnavailable(
            f"{instance.where}: {library} sees {device_count} CUDA device(s). Install {library} built for "
            "the container's CUDA (deploy/versions.toml) and give the pod a GPU, or serve the model with "
            "KIND_CPU"
        )
