"""The images' Python environments, checked without a container engine or a GPU.

- Every Python-backend model (samo/triton/backends/*.py and the samo modules they import) compiles and
  imports under the Triton image's Python (deploy/versions.toml): with that interpreter when this
  machine has it (third-party modules stubbed, the standard library real), else by parsing with that
  grammar and checking standard-library names against the versions that added them.
- The Triton image's lock has onnxruntime-gpu and no CPU onnxruntime, CUDA-12 wheels for a CUDA-12
  container, and every module the backends import; every lock pins hashes; the Dockerfiles install
  from the locks and name their versions as deploy/versions.toml does.
- A GPU instance whose ONNX Runtime session, CTranslate2 or PyTorch is not on the GPU fails to load.
(hadolint runs over both Dockerfiles in tests/test_deploy_manifests.py.)
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from samo.generation.onnx_seq2seq import instance_providers
from samo.triton.devices import (
    DeviceUnavailable,
    Instance,
    require_cpu_instance,
    require_cuda_devices,
    require_cuda_provider,
)

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = tomllib.loads((ROOT / "deploy" / "versions.toml").read_text())
TRITON_PYTHON = VERSIONS["triton"]["python"]
BACKENDS = sorted((ROOT / "samo" / "triton" / "backends").glob("[!_]*.py"))
# gpu-torch models need PyTorch with CUDA in the image; this one serves `--target gpu` encoders on
# NVIDIA's ONNX Runtime backend, so torch_encoder is checked for syntax but not for its packages.
NOT_IN_TRITON_IMAGE = {"torch_encoder"}
PROVIDED_BY_TRITON = {"triton_python_backend_utils"}
# Standard-library names and the Python version that added them, for the check without an interpreter.
STDLIB_ADDED = {
    ("enum", "StrEnum"): (3, 11),
    ("typing", "Self"): (3, 11),
    ("typing", "assert_never"): (3, 11),
    ("typing", "Never"): (3, 11),
    ("typing", "override"): (3, 12),
    ("datetime", "UTC"): (3, 11),
    ("tomllib", None): (3, 11),
    ("asyncio", "TaskGroup"): (3, 11),
    ("itertools", "batched"): (3, 12),
}


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


# --- the modules the Python backends run ------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


Imports = list[tuple[str, str | None, bool]]

# Parses files in a fresh interpreter and prints, per file, its imports as (module, imported name or
# None, guarded by `except ImportError`), or the SyntaxError under the grammar of `--feature-version`.
# Not in this process: CPython 3.11's `ast.parse` late in a long process (the whole suite) raised
# `SystemError: AST constructor recursion depth mismatch` on files that parse alone.
_PARSE_IMPORTS = r"""
import ast, json, sys
args = sys.argv[1:]
feature_version = None
if args[0] == "--feature-version":
    feature_version = tuple(int(part) for part in args[1].split("."))
    args = args[2:]
answers = {}
for path in args:
    try:
        tree = ast.parse(open(path).read(), path, feature_version=feature_version)
    except SyntaxError as exc:
        answers[path] = {"error": str(exc)}
        continue
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
            for h in node.handlers
        ):
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, id(node) in guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.module, alias.name, id(node) in guarded) for alias in node.names)
    answers[path] = {"imports": found}
print(json.dumps(answers))
"""


def _parse(paths: list[Path], feature_version: tuple[int, int] | None = None) -> dict[Path, dict]:
    """`_PARSE_IMPORTS`'s answer for each path, from one fresh interpreter."""
    version = ["--feature-version", ".".join(map(str, feature_version))] if feature_version else []
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PARSE_IMPORTS, *version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {Path(path): answer for path, answer in json.loads(result.stdout).items()}


def _closure(files: list[Path]) -> dict[Path, Imports]:
    """The files and every samo module they import, transitively, with their imports."""
    seen: dict[Path, Imports] = {}
    todo = set(files)
    while todo:
        for path, answer in _parse(sorted(todo)).items():
            assert "error" not in answer, f"{path.name}: {answer['error']}"
            seen[path] = [(module, name, guarded) for module, name, guarded in answer["imports"]]
        todo = set()
        for imports in seen.values():
            for module, name, _ in imports:
                if module.split(".")[0] == "samo":
                    for candidate in (module, f"{module}.{name}" if name else module):
                        found = _module_file(candidate)
                        if found and found not in seen:
                            todo.add(found)
    return seen


def _interpreter(version: str) -> str | None:
    """An interpreter of that version that runs (pyenv shims of versions not selected do not)."""
    candidates = [os.environ.get("SAMO_TRITON_PYTHON", "")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    candidates.append(shutil.which(f"python{version}") or "")
    check = f"import sys; assert sys.version_info[:2] == {_version(version)}"
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", check], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


# Imports the given modules under another interpreter: the standard library and samo real, every
# other top-level package (numpy, onnxruntime, Triton's utils ...) a permissive stub.
_IMPORT_CHECK = r"""
import importlib, importlib.abc, importlib.machinery, sys, types
root, modules = sys.argv[1], sys.argv[2:]
sys.path.insert(0, root)
class Stub:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return Stub()
    def __getattr__(self, name): return Stub()
    def __getitem__(self, key): return Stub()
    def __iter__(self): return iter(())
    def __or__(self, other): return Stub()
    __ror__ = __or__
    def __mro_entries__(self, bases): return (StubBase,)
class StubMeta(type):
    def __getattr__(cls, name): return Stub()
class StubBase(metaclass=StubMeta):
    def __init_subclass__(cls, **kw): pass
class StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"): raise AttributeError(name)
        return Stub()
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "samo": return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        module = StubModule(spec.name); module.__path__ = []; return module
    def exec_module(self, module): pass
sys.meta_path.insert(0, Finder())
failed = 0
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed += 1
        print(f"{name}: {type(exc).__name__}: {exc}")
sys.exit(1 if failed else 0)
"""


def check_python_compatibility(files: list[Path], version: str, root: Path = ROOT) -> list[str]:
    """Problems of `files` (and the samo modules they import) under Python `version`."""
    problems = []
    interpreter = _interpreter(version)
    closure = _closure(files)
    if interpreter:
        for path in closure:
            result = subprocess.run(
                [
                    interpreter,
                    "-I",
                    "-c",
                    "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')",
                    str(path),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode:
                problems.append(f"{path.name}: does not compile: {result.stderr.strip().splitlines()[-1]}")
        modules = [".".join(p.relative_to(root).with_suffix("").parts) for p in files]
        result = subprocess.run(
            [interpreter, "-I", "-c", _IMPORT_CHECK, str(root), *modules],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        problems.extend(line for line in result.stdout.splitlines() if line.strip())
        if result.returncode and not result.stdout.strip():
            problems.append(result.stderr.strip())
        return problems
    target = _version(version)
    parsed = _parse(list(closure), feature_version=target)
    for path, imports in closure.items():
        if "error" in parsed[path]:
            problems.append(f"{path.name}: does not parse as Python {version}: {parsed[path]['error']}")
        for module, name, guarded in imports:
            added = STDLIB_ADDED.get((module, name)) or STDLIB_ADDED.get((module, None))
            if added and added > target and not guarded:
                problems.append(
                    f"{path.name}: `{module}{'.' + name if name else ''}` needs Python {added[0]}.{added[1]}"
                )
    return problems


def test_python_backends_compile_and_import_under_the_triton_python() -> None:
    assert _version(TRITON_PYTHON) >= (3, 11), "samo needs Python 3.11+ (pyproject requires-python)"
    assert check_python_compatibility(BACKENDS, TRITON_PYTHON) == []


def _unguarded_strenum(tmp_path: Path) -> list[Path]:
    package = tmp_path / "samo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kinds.py").write_text("from enum import StrEnum\n\n\nclass Kind(StrEnum):\n    A = 'a'\n")
    return [package / "kinds.py"]


@pytest.mark.parametrize("with_interpreter", [True, False])
def test_the_check_catches_strenum_under_python_3_10(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_interpreter: bool
) -> None:
    """What the check would say had deploy/versions.toml pinned Triton 24.10's Python 3.10."""
    if with_interpreter and _interpreter("3.10") is None:
        pytest.skip("no Python 3.10 on this machine")
    if not with_interpreter:
        monkeypatch.setattr(sys.modules[__name__], "_interpreter", lambda version: None)
    files = _unguarded_strenum(tmp_path)
    problems = check_python_compatibility(files, "3.10", root=tmp_path)
    assert problems and "StrEnum" in " ".join(problems), problems
    assert check_python_compatibility(files, TRITON_PYTHON, root=tmp_path) == []


# --- the Triton image's requirements ---------------------------------------------------------------


def _lock(name: str) -> dict[str, str]:
    """package -> pinned version, from a uv/pip-compile lock with hashes."""
    text = (ROOT / "locks" / f"{name}.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, flags=re.MULTILINE))
    requirements = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert requirements and all(line.endswith("\\") for line in requirements), f"{name}: a pin without hashes"
    assert len(pins) == len(requirements)
    return {k.lower().replace("_", "-"): v for k, v in pins.items()}


def test_triton_lock_has_the_gpu_onnxruntime_only() -> None:
    pins = _lock("triton-python-backend")
    triton = VERSIONS["triton"]
    assert "onnxruntime" not in pins, (
        "the CPU onnxruntime shadows onnxruntime-gpu: models would run on the CPU"
    )
    assert pins["onnxruntime-gpu"] == triton["onnxruntime_gpu"]
    assert pins["ctranslate2"] == triton["ctranslate2"]
    assert _version(pins["numpy"]) < (2, 0), "the backend stubs return empty tensors under numpy 2"
    assert not {"torch", "transformers", "optimum"} & set(pins)


def test_every_module_the_triton_image_runs_is_in_its_lock() -> None:
    """The backends (and `samo build-engines`) import nothing the Triton image lacks."""
    pins = _lock("triton-python-backend")
    distributions = importlib.metadata.packages_distributions()
    files = [p for p in BACKENDS if p.stem not in NOT_IN_TRITON_IMAGE]
    files += [ROOT / "samo_cli" / "engines.py", ROOT / "samo" / "triton" / "engine_build.py"]
    missing = set()
    for imports in _closure(files).values():
        for module, _, guarded in imports:
            top = module.split(".")[0]
            if guarded or top in sys.stdlib_module_names or top in {"samo", "samo_cli"} | PROVIDED_BY_TRITON:
                continue
            # The `onnxruntime` module comes from onnxruntime-gpu in the image.
            names = ["onnxruntime-gpu"] if top == "onnxruntime" else distributions.get(top, [top])
            if not any(n.lower().replace("_", "-") in pins for n in names):
                missing.add(f"{top} ({', '.join(names)})")
    assert not missing, f"imported by the Triton image's code, absent from its lock: {sorted(missing)}"


def test_ctranslate2_wheel_is_built_for_the_containers_cuda_major() -> None:
    """The pinned CTranslate2's library loads libcublas of the CUDA major that the container has."""
    pinned = VERSIONS["triton"]["ctranslate2"]
    try:
        installed = importlib.metadata.version("ctranslate2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ctranslate2 is not installed here")
    if installed != pinned:
        pytest.skip(f"ctranslate2 {installed} installed, {pinned} pinned")
    libs = list(
        Path(importlib.metadata.distribution("ctranslate2").locate_file("ctranslate2.libs")).glob(
            "libctranslate2*"
        )
    )
    assert libs, "no libctranslate2 in the wheel"
    majors = set(re.findall(rb"libcublas\.so\.(\d+)", libs[0].read_bytes()))
    assert majors == {str(VERSIONS["triton"]["cuda_major"]).encode()}, majors


def test_triton_lock_resolves_fresh_without_the_cpu_onnxruntime(tmp_path: Path) -> None:
    """Resolve the requirement set again (uv, needs PyPI): the same pins as the lock, and no onnxruntime."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (test extra)")
    out = tmp_path / "lock.txt"
    result = subprocess.run(
        [
            uv,
            "pip",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--python-platform",
            "x86_64-manylinux_2_28",
            "--python-version",
            TRITON_PYTHON,
            "locks/triton-python-backend.in",
            "--override",
            "locks/triton-python-backend.overrides",
            "-o",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode:
        pytest.skip(f"cannot resolve here (PyPI unreachable?): {result.stderr.strip()[-300:]}")
    fresh = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", out.read_text(), flags=re.MULTILINE))
    assert "onnxruntime" not in fresh and "onnxruntime-gpu" in fresh
    # Only what the inputs pin exactly must match: newer releases of the rest mean `make lock` is due.
    for package in ("onnxruntime-gpu", "ctranslate2", "faster-whisper", "tritonclient"):
        assert fresh[package] == _lock("triton-python-backend")[package], package


def test_gateway_and_export_locks() -> None:
    gateway = _lock("gateway")
    assert not {"torch", "transformers", "optimum", "onnx"} & set(gateway), (
        "the gateway role has no export stack"
    )
    export = _lock("export")
    assert export["torch"] == VERSIONS["export"]["torch"], "the export stage installs torch's CPU build"
    assert "sentence-transformers" not in export


@pytest.mark.parametrize("role", ["gateway", "export"])
def test_every_requirement_of_a_role_is_in_its_lock(role: str) -> None:
    """A dependency added to pyproject.toml without `make lock` would be missing from the image."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {
        re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in extras[role]
    }
    missing = names - set(_lock(role))
    assert not missing, f"not in locks/{role}.txt: {sorted(missing)}; run `make lock`"


# --- the Dockerfiles --------------------------------------------------------------------------------


def _dockerfile(name: str) -> str:
    return re.sub(r"\\\n", " ", (ROOT / name).read_text())


def _arg_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))


def test_dockerfiles_name_the_versions_of_deploy_versions_toml() -> None:
    triton, gateway = _dockerfile("Dockerfile.triton"), _dockerfile("Dockerfile.gateway")
    assert _arg_defaults(triton) == {
        "TRITON_RELEASE": VERSIONS["triton"]["release"],
        "EXPORT_PYTHON": VERSIONS["export"]["python"],
    }
    assert _arg_defaults(gateway) == {
        "GATEWAY_PYTHON": VERSIONS["gateway"]["python"],
        "EXPORT_PYTHON": VERSIONS["export"]["python"],
    }
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_RELEASE\}-py3$", triton, re.MULTILINE)
    assert len(re.findall(r"^FROM python:\$\{GATEWAY_PYTHON\}-slim", gateway, re.MULTILINE)) == 2
    for text in (triton, gateway):
        assert re.findall(r"^FROM (\S+)", text, re.MULTILINE)[0] == "python:${EXPORT_PYTHON}-slim"


def _pip_installs(text: str) -> list[str]:
    return [" ".join(line.split()) for line in re.findall(r"pip3? install[^&\n]*", text)]


@pytest.mark.parametrize(
    ("dockerfile", "locks"),
    [
        ("Dockerfile.triton", {"export", "triton-python-backend"}),
        ("Dockerfile.gateway", {"export", "gateway"}),
    ],
)
def test_images_install_from_their_locks_with_hashes(dockerfile: str, locks: set[str]) -> None:
    installs = _pip_installs(_dockerfile(dockerfile))
    from_locks = {m.group(1) for i in installs if (m := re.search(r"-r \S*/([\w-]+)\.txt", i))}
    assert from_locks == locks
    for install in installs:
        assert "--no-deps" in install and "--no-cache-dir" in install, install
        # Either a whole lock with hashes, or the project itself (its dependencies come from the lock).
        assert ("--require-hashes" in install and " -r " in install) or install.endswith(" ."), install


def test_triton_image_checks_its_python_and_gateway_image_builds_nothing() -> None:
    triton = _dockerfile("Dockerfile.triton")
    assert "check_triton_python.py /tmp/samo/versions.toml" in triton
    assert "COPY deploy/samo.sh /usr/local/bin/samo" in triton
    final_gateway = re.split(r"^FROM\s", _dockerfile("Dockerfile.gateway"), flags=re.MULTILINE)[-1]
    assert "pip install" not in final_gateway and "apt-get" not in final_gateway
    assert "pip uninstall --yes grpcio-tools pip" in _dockerfile("Dockerfile.gateway")


def test_build_context_keeps_what_the_dockerfiles_copy() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in ("Dockerfile.triton", "Dockerfile.gateway"):
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(name), flags=re.MULTILINE):
            for source in sources.split():
                assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
                assert not any(source == p or source.startswith(p.rstrip("*/") + "/") for p in ignored), (
                    source
                )


def test_samo_build_engines_imports_in_the_triton_image() -> None:
    """`python3 -m samo_cli.engines` with only the lock's packages: no gateway, exporters or torch."""
    blocked = ["gateway", "exporters", "load_tests", "torch", "transformers", "fastapi", "av"]
    code = (
        "import sys, importlib.abc\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED: raise ImportError(f'{name} is not in the Triton image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import samo_cli.engines, samo.triton.engine_build\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# --- GPU instances fail loudly on a machine without one ---------------------------------------------------


def _onnx_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_gpu_instance_whose_onnx_runtime_falls_back_to_the_cpu_fails_to_load(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing falls back")
    args = {"model_instance_kind": "GPU", "model_instance_device_id": "0"}
    # The providers the summarizer and ONNX Whisper backends ask for; ONNX Runtime quietly takes the CPU.
    session = ort.InferenceSession(str(_onnx_model(tmp_path / "m.onnx")), providers=instance_providers(args))
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(
        DeviceUnavailable,
        match=r"model `summarizer` \(instance on GPU 0\): ONNX Runtime would run it on \['CPUExecutionProvider'\], not CUDAExecutionProvider",
    ):
        require_cuda_provider(Instance.from_args("summarizer", args), [session.get_providers()])
    # The same session on a CPU instance is what the CPU target wants.
    require_cuda_provider(
        Instance.from_args("summarizer", {"model_instance_kind": "CPU"}), [session.get_providers()]
    )


@pytest.mark.parametrize("library", ["CTranslate2", "PyTorch"])
def test_gpu_instance_without_a_visible_gpu_fails_to_load(library: str) -> None:
    if library == "CTranslate2":
        ctranslate2 = pytest.importorskip("ctranslate2")
        count = ctranslate2.get_cuda_device_count()
    else:
        torch = pytest.importorskip("torch")
        count = torch.cuda.device_count()
    if count:
        pytest.skip(f"{library} sees a GPU here")
    instance = Instance.from_args("whisper", {"model_instance_kind": "GPU", "model_instance_device_id": "0"})
    with pytest.raises(
        DeviceUnavailable, match=rf"model `whisper` \(instance on GPU 0\): {library} sees 0 CUDA device"
    ):
        require_cuda_devices(instance, library, count)
    require_cuda_devices(Instance.from_args("whisper", {"model_instance_kind": "CPU"}), library, count)


def test_cpu_only_backend_refuses_a_gpu_instance() -> None:
    with pytest.raises(DeviceUnavailable, match="the `encoder` backend computes on the CPU only"):
        require_cpu_instance(Instance("emotion", on_gpu=True), "encoder")
    require_cpu_instance(Instance("emotion", on_gpu=False), "encoder")
