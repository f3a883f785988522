"""Build-time check of the Triton image's Python environment (run by Dockerfile.triton; needs no GPU).

Fails the build, with the reason, when the environment would make a GPU model run on the CPU or not
load: the CPU `onnxruntime` installed (it shadows onnxruntime-gpu's module of the same name), ONNX
Runtime without its CUDA or TensorRT provider, the container's CUDA runtime of another major version
than the one the onnxruntime-gpu and CTranslate2 wheels link, or another Python than the pinned one.

    python3 check_triton_python.py deploy/versions.toml
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import sys
import tomllib
from pathlib import Path


def problems(versions: dict) -> list[str]:
    triton = versions["triton"]
    found = []
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python != triton["python"]:
        found.append(f"Python {python}; deploy/versions.toml pins {triton['python']}")
    try:
        cpu = importlib.metadata.version("onnxruntime")
        found.append(f"the CPU onnxruntime {cpu} is installed next to onnxruntime-gpu: uninstall it")
    except importlib.metadata.PackageNotFoundError:
        pass
    for package, key in (("onnxruntime-gpu", "onnxruntime_gpu"), ("ctranslate2", "ctranslate2")):
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} is not installed")
            continue
        if installed != triton[key]:
            found.append(f"{package} {installed}; deploy/versions.toml pins {triton[key]}")
    # The wheels link these sonames; the container must provide them (no GPU needed to load them).
    for library in (f"libcudart.so.{triton['cuda_major']}", f"libcublas.so.{triton['cuda_major']}"):
        try:
            ctypes.CDLL(library)
        except OSError as exc:
            found.append(f"{library} does not load ({exc}): the container's CUDA major is not the wheels'")
    try:
        import onnxruntime

        providers = set(onnxruntime.get_available_providers())
        for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
            if provider not in providers:
                found.append(f"onnxruntime offers no {provider} (has {sorted(providers)})")
    except ImportError as exc:
        found.append(f"onnxruntime does not import: {exc}")
    return found


def main() -> int:
    versions = tomllib.loads(Path(sys.argv[1]).read_text())
    found = problems(versions)
    for problem in found:
        print(f"check_triton_python: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
