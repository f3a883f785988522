"""Every model that runs inside Triton's Python backend, on one base (`base.py`).

Exporters copy a module from here into `<name>/1/model.py`; the module imports the rest of SAMO,
which the Triton image and `samo.triton.local_server` put on the stub's PYTHONPATH.
"""

from pathlib import Path

BACKENDS_DIR = Path(__file__).parent


def backend_file(name: str) -> Path:
    """The module an exporter copies as `model.py`: `encoder`, `torch_encoder`, `summarizer`, `whisper_ct2`,
    `whisper_onnx`."""
    return BACKENDS_DIR / f"{name}.py"
