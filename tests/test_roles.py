"""Each role installs on its own: `'.[gateway]'` and `'.[client]'` into fresh virtualenvs.

uv resolves and installs them from PyPI (from its cache after the first run): the same metadata pip
reads, in seconds where pip took half a minute to a minute per role.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("samo", "samo_cli", "gateway", "exporters", "load_tests")
EXPORT_STACK = ("torch", "optimum", "onnx", "transformers")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's sources (with the generated gRPC code) copied, so pip builds outside the checkout."""
    source = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "pyproject.toml", source)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    return source


UV = Path(sys.executable).with_name("uv")


def install(project: Path, python: Path, extra: str) -> Path:
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(python), f"{project}[{extra}]"],
        check=True,
        timeout=900,
    )
    return python


def run(python: Path, code: str) -> str:
    """`code` in isolated mode (-I), from outside the project, so only the installed packages count."""
    result = subprocess.run(
        [str(python), "-I", "-c", code], cwd=python.parents[2], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def absent(python: Path, modules: tuple[str, ...]) -> list[str]:
    code = f"import importlib.util as u; print(*[m for m in {modules!r} if u.find_spec(m) is None])"
    return run(python, code).split()


def test_gateway_installs_without_the_export_stack(
    project: Path, tmp_path: Path, fresh_virtualenv: Path
) -> None:
    python = install(project, fresh_virtualenv, "gateway")
    assert absent(python, EXPORT_STACK) == list(EXPORT_STACK)
    # As Dockerfile.gateway does: the gRPC code generated into the installed package.
    subprocess.run([str(python), "-I", "-m", "gateway.grpc_api.codegen"], check=True, cwd=tmp_path)
    run(python, "from gateway.http.app import create_app; create_app")
    subprocess.run([str(python.with_name("samo")), "gateway", "--help"], check=True, capture_output=True)


def test_client_installs_with_its_transports_only(project: Path, fresh_virtualenv: Path) -> None:
    python = install(project, fresh_virtualenv, "client")
    assert absent(python, ("fastapi", "tritonclient", "av", "faster_whisper", *EXPORT_STACK)) == [
        "fastapi",
        "tritonclient",
        "av",
        "faster_whisper",
        *EXPORT_STACK,
    ]
    run(python, "from gateway.client import GrpcClient, HttpClient; GrpcClient, HttpClient")
