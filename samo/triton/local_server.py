"""Runs the real `tritonserver` that the nvidia-pytriton wheel ships, against a model repository.

The wheel's server needs a backend folder holding the Python backend and the stub built for the
running interpreter, `python3` of this environment first on PATH (the stub finds its packages
through it) and this interpreter's libpython first on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)
server_log = logging.getLogger("samo.triton.server")

INSTALL_HINT = (
    "install it with `pip install nvidia-pytriton==0.7.0` (Linux x86_64, glibc 2.35+), or run `make install`"
)


class TritonStartError(RuntimeError):
    """tritonserver is missing or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path
    stub: Path
    libs: Path

    @classmethod
    def locate(cls) -> TritonInstall:
        # Found, not imported: only the binary is used, not pytriton's Python API and its dependencies.
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonStartError(
                f"tritonserver not found: nvidia-pytriton is not installed; {INSTALL_HINT}"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        root = package / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=package.parent / "nvidia_pytriton.libs",
        )
        for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub):
            if not path.exists():
                raise TritonStartError(
                    f"tritonserver is incomplete: {path} is missing (Python {version} needs its stub); "
                    f"{INSTALL_HINT}"
                )
        return install

    def backend_directory(self, into: Path) -> Path:
        """A backend folder with the Python backend and the stub for this interpreter side by side."""
        python_dir = into / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (
            self.python_backend / "libtriton_python.so",
            self.python_backend / "triton_python_backend_utils.py",
            self.stub,
        ):
            link = python_dir / source.name
            if not link.exists():
                link.symlink_to(source)
        return into


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


class LocalTriton:
    """A tritonserver process in its own process group; a context manager that stops it on exit."""

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        ports: TritonPorts = TritonPorts(),
        log_verbose: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        self.host = host
        self.ports = ports
        self.log_verbose = log_verbose
        self.extra_args = extra_args
        self._process: subprocess.Popen[str] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._recent_log: collections.deque[str] = collections.deque(maxlen=40)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def command(self, backend_directory: Path, binary: Path) -> list[str]:
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            # Configs are generated complete; auto-complete costs ~1.3 s of start-up per model.
            "--disable-auto-complete-config",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        libdirs = [
            sysconfig.get_config_var("LIBDIR") or "",
            str(install.libs),
            env.get("LD_LIBRARY_PATH", ""),
        ]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
        return env

    def start(self, timeout_s: float = 120.0) -> None:
        if not self.repository.is_dir():
            raise TritonStartError(
                f"model repository {self.repository} does not exist; build it with `samo export`"
            )
        install = TritonInstall.locate()
        self._workdir = tempfile.TemporaryDirectory(prefix="samo-triton-")
        backends = install.backend_directory(Path(self._workdir.name) / "backends")
        command = self.command(backends, install.binary)
        logger.info("starting tritonserver: %s", " ".join(command))
        try:
            self._process = subprocess.Popen(
                command,
                env=self._environment(install),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise TritonStartError(f"cannot run {install.binary}: {exc}; {INSTALL_HINT}") from exc
        threading.Thread(target=self._forward_log, name="tritonserver-log", daemon=True).start()
        self._wait_ready(timeout_s)

    def _forward_log(self) -> None:
        assert self._process and self._process.stdout
        for line in self._process.stdout:
            line = line.rstrip()
            self._recent_log.append(line)
            server_log.info("%s", line)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process
            if self._process.poll() is not None:
                self._process.wait()
                time.sleep(0.1)  # let the log thread drain
                tail = "\n".join(self._recent_log)
                self._cleanup()
                raise TritonStartError(f"tritonserver exited with code {self._process.returncode}:\n{tail}")
            if self.is_ready():
                logger.info("tritonserver ready: http %s, grpc %s", self.http_url, self.grpc_url)
                return
            time.sleep(0.1)
        tail = "\n".join(self._recent_log)
        self.stop()
        raise TritonStartError(f"tritonserver not ready after {timeout_s:.0f} s:\n{tail}")

    def wait(self) -> int:
        assert self._process
        return self._process.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        process = self._process
        if process and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "tritonserver ignored SIGTERM for %.0f s; killing its process group", timeout_s
                )
        if process:
            # Python-backend stubs live in the same process group; none may outlive the server.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._workdir:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LocalTriton:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
