"""Generates the Python gRPC code for `samo_v1.proto` with grpcio-tools (run at install time)."""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = Path(__file__).with_name("samo_v1.proto")
ROOT = Path(__file__).parents[2]


def generate() -> None:
    from grpc_tools import protoc

    proto = PROTO.relative_to(ROOT)
    # Paths relative to the project root make the generated imports `from gateway.grpc_api import ...`.
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(proto),
    ]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate()
