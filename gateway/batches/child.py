"""The embedded store's batch lines in a process of their own, at a lower OS priority.

With SQLite (no `database_url`) and `batch_runner_process` on, `run_gateway` runs batch lines in one
`samo worker` process beside the gateway's processes, niced by `batch_runner_nice`, and the gateway
processes run none (`batch_worker` off for them). Why: a line's CPU in the gateway (tokenizing, SQLite
writes, sealing, JSON) competed with interactive requests for the same cores (docs/api/batches.md,
Measured interference). In a process of its own at nice 10 the kernel gives it about a tenth of a
contended core against the gateway's nice 0 (CFS weights 110 and 1024) and all of an idle one: spare
capacity only, while Triton's priority levels order its model work. It runs `batch_runner_concurrency`
lines at once (1): Triton runs a batch line's model work at the same OS priority as an interactive
one, so more lines in flight take model time that interactive requests then wait for.

The child starts once the store exists (the first batch request creates it; a gateway with no batch
never pays for it), is restarted with backoff when it exits, and is killed with the gateway: it is in
the gateway's process group and asks the kernel for SIGKILL when its parent dies
(`PR_SET_PDEATHSIG`). Nothing-lost is unchanged: the child is one more runner that takes the store's
runner lock; killed, its lines are still pending and the next child runs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "batches.db"
PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_GRACE_S = 10.0


class RunnerProcess:
    """Supervises the child from a thread of the gateway's main process."""

    def __init__(self, batch_dir: Path, nice: int, concurrency: int, environment: Mapping[str, str]) -> None:
        self.database = batch_dir / EMBEDDED_DATABASE
        self.nice = nice
        self.environment = {
            **environment,
            "SAMO_BATCH_WORKER": "true",
            "SAMO_BATCH_CONCURRENCY": str(concurrency),
        }
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="samo-batch-runner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # `samo worker` stops on SIGTERM; a line in flight runs again later
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=STOP_GRACE_S)

    def _supervise(self) -> None:
        while not self.database.exists():
            if self._stop.wait(1.0):
                return
        failures = 0
        while not self._stop.is_set():
            command = [sys.executable, "-m", "gateway.worker", str(os.getpid()), str(self.nice)]
            self._process = subprocess.Popen(command, env=self.environment)
            logger.info("batch runner: lines run in process %d at nice %d", self._process.pid, self.nice)
            code = self._process.wait()
            if self._stop.is_set():
                return
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            logger.warning("batch runner exited with code %d; started again in %.0f s", code, delay)
            if self._stop.wait(delay):
                return


@contextlib.contextmanager
def runner_process(
    batch_dir: Path, nice: int, concurrency: int, environment: Mapping[str, str]
) -> Iterator[RunnerProcess]:
    runner = RunnerProcess(batch_dir, nice, concurrency, environment)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def die_with_parent(parent: int) -> None:
    """In the child: SIGKILL when the gateway process that started it dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)
