"""Runs the real `tritonserver` that the nvidia-pytriton wheel ships, against a model repository.

The wheel's server needs a backend folder holding the Python backend and the stub built for the
running interpreter, `python3` of this environment first on PATH (the stub finds its packages
through it) and this interpreter's libpython first on LD_LIBRARY_PATH.

The server runs with explicit model control (every model loaded at start) so that the gateway can
reload a model whose Python stub died, dies with the process that started it (no orphan keeps the
ports), and can be supervised: restarted with backoff when it exits on its own.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import itertools
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


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
SHARED_MEMORY = Path("/dev/shm")
_instances = itertools.count()


class TritonStartError(RuntimeError):
    """tritonserver is missing or did not become ready."""


def _die_with_parent(parent_pid: int, libc: ctypes.CDLL) -> None:
    """Runs in the child between fork and exec: SIGKILL it when the thread that started it ends.

    Linux ties the signal to the forking thread, so the server must be started by a thread that
    lives as long as the server (the main thread, or the supervisor's thread).
    """
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


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


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervised server is restarted after it exits on its own."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    """A server that ran this long before exiting is restarted after `first_delay_s` again."""

    def next_delay(self, previous_s: float, ran_s: float) -> float:
        if previous_s == 0.0 or ran_s >= self.stable_after_s:
            return self.first_delay_s
        return min(previous_s * 2, self.max_delay_s)


def response_cache_args(size_bytes: int) -> tuple[str, ...]:
    """tritonserver flags for its local response cache of `size_bytes`; the wheel keeps the cache library
    next to its backends, not in /opt/tritonserver/caches where the server looks by default."""
    caches = TritonInstall.locate().binary.parent.parent / "caches"
    return (f"--cache-directory={caches}", f"--cache-config=local,size={size_bytes}")


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
        self.restarts = 0
        self._process: subprocess.Popen[str] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._recent_log: collections.deque[str] = collections.deque(maxlen=40)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        # The Python backend's shared-memory regions carry this server's own prefix, so that those of a
        # server that died can be told from other servers' and removed (`_remove_shared_memory`).
        self.shm_prefix = f"samo_triton_{os.getpid()}_{next(_instances)}_"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int | None:
        """The running server's process id (it changes when a supervised server restarts)."""
        return self._process.pid if self._process else None

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
            # Explicit control, every model loaded at start: the gateway can then reload one model
            # (a Python stub that dies is not restarted by Triton, and the model still reports READY).
            "--model-control-mode=explicit",
            "--load-model=*",
            # Configs are generated complete; auto-complete costs ~1.3 s of start-up per model.
            "--disable-auto-complete-config",
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
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
        self._stopping.clear()
        self._spawn()
        try:
            self._wait_ready(timeout_s)
        except TritonStartError:
            self.stop()
            raise

    def _spawn(self) -> None:
        install = TritonInstall.locate()
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="samo-triton-")
        backends = install.backend_directory(Path(self._workdir.name) / "backends")
        command = self.command(backends, install.binary)
        logger.info("starting tritonserver: %s", " ".join(command))
        libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls into it
        parent_pid = os.getpid()
        try:
            self._process = subprocess.Popen(
                command,
                env=self._environment(install),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent_pid, libc),
            )
        except OSError as exc:
            raise TritonStartError(f"cannot run {install.binary}: {exc}; {INSTALL_HINT}") from exc
        threading.Thread(
            target=self._forward_log, args=(self._process,), name="tritonserver-log", daemon=True
        ).start()

    def _forward_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout
        for line in process.stdout:
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
        assert self._process
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                time.sleep(0.1)  # let the log thread drain
                tail = "\n".join(self._recent_log)
                raise TritonStartError(f"tritonserver exited with code {self._process.returncode}:\n{tail}")
            if self.is_ready():
                logger.info("tritonserver ready: http %s, grpc %s", self.http_url, self.grpc_url)
                return
            time.sleep(0.1)
        tail = "\n".join(self._recent_log)
        raise TritonStartError(f"tritonserver not ready after {timeout_s:.0f} s:\n{tail}")

    def wait(self) -> int:
        """Until the server exits; a supervised server only exits when stopped (or restarts fail)."""
        if self._supervisor is not None:
            self._supervisor.join()
        assert self._process
        return self._process.wait()

    def supervise(self, policy: RestartPolicy = RestartPolicy(), timeout_s: float = 120.0) -> None:
        """Start the server, then restart it whenever it exits on its own, until `stop()`.

        The server is started from the supervisor's thread, which lives as long as supervision does:
        the kernel kills the server when the thread that forked it ends.
        """
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.start(timeout_s)
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)
                return
            finally:
                started.set()
            self._restart_while_running(policy, timeout_s)

        self._supervisor = threading.Thread(target=run, name="tritonserver-supervisor", daemon=True)
        self._supervisor.start()
        started.wait()
        if failure:
            self._supervisor = None
            raise failure[0]

    def _restart_while_running(self, policy: RestartPolicy, timeout_s: float) -> None:
        delay = 0.0
        while True:
            assert self._process
            began = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            self._kill_group(self._process)  # stubs of the dead server, if any are left
            self._remove_shared_memory()
            delay = policy.next_delay(delay, time.monotonic() - began)
            logger.error("tritonserver exited with code %s; restarting in %.0f s", code, delay)
            if self._stopping.wait(delay):
                return
            try:
                self._spawn()
                self._wait_ready(timeout_s)
            except TritonStartError as exc:
                logger.error("tritonserver restart failed: %s", exc)
                if self._process and self._process.poll() is None:
                    self._process.kill()  # then the loop sees it exit and tries again, later
                continue
            self.restarts += 1
            logger.info("tritonserver restarted (%d restarts so far)", self.restarts)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
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
            self._kill_group(process)
            process.wait()
            self._remove_shared_memory()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=timeout_s)
        self._cleanup()

    def _remove_shared_memory(self) -> None:
        """A server that is killed or crashes leaves its stubs' regions in /dev/shm (megabytes of RAM
        each, until the machine restarts; measured: 244 MB after a few days of tests here); one that
        exits cleanly leaves none. Called once the server and its stubs are gone."""
        for region in SHARED_MEMORY.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(FileNotFoundError):
                region.unlink()

    @staticmethod
    def _kill_group(process: subprocess.Popen[str]) -> None:
        # Python-backend stubs live in the server's process group; none may outlive the server.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

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
