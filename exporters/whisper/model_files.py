"""Python code that Whisper's Triton models import besides their own model.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import samo
import samo.generation

# Triton's Python backend appends the model version folder to sys.path: a copy of the package there
# lets model.py import it in a container where SAMO is not installed (NVIDIA's Triton image). Where
# SAMO is installed (the local server), the installed package comes first and is the same code.
PACKAGE_DIR = "samo"


def copy_generation_package(version_dir: Path) -> None:
    """Copy `samo.generation` (numpy-only; ONNX Runtime for `onnx_seq2seq`) into `version_dir/samo/`."""
    target = version_dir / PACKAGE_DIR
    if target.exists():
        shutil.rmtree(target)
    (target / "generation").mkdir(parents=True)
    shutil.copyfile(Path(samo.__file__), target / "__init__.py")
    for module in Path(samo.generation.__file__).parent.glob("*.py"):
        shutil.copyfile(module, target / "generation" / module.name)
