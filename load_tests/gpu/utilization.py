"""How busy the GPU was during one row of the GPU check: `nvidia-smi` sampled every 200 ms while the
row runs, averaged. The issue behind the check (20) is a GPU that sits idle while the stack is saturated,
so every row says how busy it kept the GPU, not only the run's CSV of readings."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_MS = 200
QUERY = (
    "nvidia-smi",
    "--id=0",
    "--query-gpu=utilization.gpu",
    "--format=csv,noheader,nounits",
    f"-lms={SAMPLE_MS}",
)


@dataclass
class Utilization:
    """Percent busy readings of the first GPU while the block ran; none on a machine without one."""

    readings: list[float] = field(default_factory=list)

    @property
    def mean_percent(self) -> float | None:
        return sum(self.readings) / len(self.readings) if self.readings else None


def parse_readings(text: str) -> list[float]:
    """One reading per line (the first GPU's: the check uses one); lines that are not numbers (`[N/A]`,
    a line cut off when the sampler stopped) skipped."""
    readings = []
    for line in text.splitlines():
        try:
            readings.append(float(line.strip()))
        except ValueError:
            continue
    return readings


@contextmanager
def gpu_utilization() -> Iterator[Utilization]:
    utilization = Utilization()
    with tempfile.TemporaryDirectory(prefix="samo-gpu-util-") as folder:
        path = Path(folder) / "readings.csv"
        try:
            with path.open("w") as sink:
                process = subprocess.Popen(QUERY, stdout=sink, stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            yield utilization
            return
        try:
            yield utilization
        finally:
            process.terminate()
            process.wait(timeout=10)
            utilization.readings = parse_readings(path.read_text())
