"""The Locust file runs headless against the real gateway, with no failures."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LOCUSTFILE = Path(__file__).parents[1] / "load_tests" / "locustfile.py"


def test_locust_headless_run_has_no_failures(gateway_url: str, tmp_path: Path) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    assert locust, "locust is installed by `make install` (the `load` extra)"
    result = subprocess.run(
        [
            locust,
            "-f",
            str(LOCUSTFILE),
            "--host",
            gateway_url,
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "4s",
            "--csv",
            str(tmp_path / "run"),
            "--only-summary",
            "--exit-code-on-error",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=LOCUSTFILE.parents[1],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stats = (tmp_path / "run_stats.csv").read_text().splitlines()
    aggregated = next(line for line in stats if ",Aggregated," in line).split(",")
    requests, failures = int(aggregated[2]), int(aggregated[3])
    assert requests > 10
    assert failures == 0
