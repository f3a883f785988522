"""`samo loadtest`: the Locust file headless against a gateway, then CSV, HTML, plots and tables in one folder."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from load_tests.locust_mix import DEFAULT_MIX, OPERATIONS
from samo_cli.common import fail

RESULTS = Path("load_tests/results")
STOP_TIMEOUT_S = 120  # the Locust file's request timeout


def loadtest_command(
    host: Annotated[str, typer.Option(help="Gateway HTTP base URL, e.g. http://127.0.0.1:8080.")],
    grpc: Annotated[
        str, typer.Option("--grpc", help="Gateway gRPC HOST:PORT; half the users then speak gRPC.")
    ] = "",
    users: Annotated[int, typer.Option(min=1, help="Concurrent users (closed loop unless paced).")] = 8,
    spawn_rate: Annotated[float, typer.Option(min=0.1, help="Users started per second.")] = 4.0,
    duration: Annotated[str, typer.Option(help="Run time: 90, 90s, 2m, 1h30m.")] = "60s",
    api_key: Annotated[
        str,
        typer.Option(envvar="SAMO_LOADTEST_API_KEY", show_default=False, help="Sent as a Bearer token."),
    ] = "",
    mix: Annotated[
        str, typer.Option(help=f"Operation weights `name=weight,...`; names: {', '.join(OPERATIONS)}.")
    ] = DEFAULT_MIX,
    rate_per_user: Annotated[
        float, typer.Option(min=0.0, help="Requests/s per user (Locust's constant_throughput); 0: no pause.")
    ] = 0.0,
    slo_p99_ms: Annotated[
        float | None,
        typer.Option(help="Step load instead of --users: raise the rate until p99 passes this (ms)."),
    ] = None,
    step_rate: Annotated[float, typer.Option(min=0.1, help="Step load: requests/s added per step.")] = 5.0,
    step_duration: Annotated[float, typer.Option(min=5.0, help="Step load: seconds per step.")] = 20.0,
    max_rate: Annotated[float, typer.Option(min=0.1, help="Step load: the last step's requests/s.")] = 200.0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default load_tests/results/<timestamp>/.")
    ] = None,
) -> None:
    """Locust against any gateway (a URL): the product's mix over HTTP and gRPC, plots and tables.

    Writes Locust's CSV (locust_stats.csv, locust_stats_history.csv, locust_failures.csv) and HTML (report.html), every request's latency (requests.csv), throughput.png, latency.png (p50/p95/p99 over time per transport), latency-distribution.png and summary.md.

    With --slo-p99-ms: step load, and step-load.md / step-load.json with the highest rate whose p99 stayed under the SLO.
    """
    from locust.util.timespan import parse_timespan

    from load_tests.locust_mix import parse_mix

    if not host.startswith(("http://", "https://")):
        raise fail(f"--host: `{host}` is not an http:// or https:// URL")
    try:
        parse_mix(mix)
        seconds = parse_timespan(duration)
    except ValueError as error:
        raise fail(str(error)) from None
    out = out or RESULTS / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    command = _locust_command(
        host=host,
        grpc=grpc,
        mix=mix,
        rate_per_user=rate_per_user,
        out=out,
        step_load=slo_p99_ms is not None,
    )
    if slo_p99_ms is None:
        command += ["--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", f"{seconds}s"]
    else:
        command += [
            "--rate-per-user", str(rate_per_user or 1.0),
            "--step-rate", str(step_rate),
            "--step-duration", str(step_duration),
            "--step-max-rate", str(max_rate),
            "--slo-p99-ms", str(slo_p99_ms),
            "--step-report", str(out / "step-load.json"),
        ]  # fmt: skip
    # The key travels in the environment, not on the command line that `ps` shows.
    env = {**os.environ, "SAMO_LOADTEST_API_KEY": api_key} if api_key else dict(os.environ)
    typer.echo(f"locust: {'step load' if slo_p99_ms is not None else f'{users} users, {seconds} s'} -> {out}")
    returncode = subprocess.run(command, env=env, check=False).returncode
    if (out / "requests.csv").exists():
        _report(out, slo_p99_ms is not None)
    if returncode:
        typer.secho(f"locust exited with {returncode} (failed requests: {out}/locust_failures.csv)", err=True)
        raise typer.Exit(code=returncode)


def _locustfile(name: str) -> Path:
    import load_tests

    return Path(load_tests.__file__).parent / name


def _locust_command(
    *, host: str, grpc: str, mix: str, rate_per_user: float, out: Path, step_load: bool
) -> list[str]:
    classes = ["HttpJournalUser", "GrpcJournalUser"] if grpc else ["HttpJournalUser"]
    # The step shape lives in its own file: Locust obeys any shape class it finds, ignoring --users.
    files = [_locustfile("locustfile.py"), *([_locustfile("locust_step_load.py")] if step_load else [])]
    return [
        sys.executable, "-m", "locust",
        "-f", ",".join(str(file) for file in files),
        "--headless", "--only-summary",
        "--host", host,
        "--grpc-target", grpc,
        "--mix", mix,
        "--rate-per-user", str(rate_per_user),
        "--request-log", str(out / "requests.csv"),
        "--csv", str(out / "locust"), "--csv-full-history",
        "--html", str(out / "report.html"),
        # Requests still running at the end finish and count: cutting them off would drop the slowest.
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--exit-code-on-error", "1",
        *classes,
    ]  # fmt: skip


def _report(out: Path, step_load: bool) -> None:
    from load_tests.locust_report import write_report

    written = write_report(out / "requests.csv", out)
    summary = out / "summary.md"
    if summary.exists():
        typer.echo("\n" + summary.read_text())
    if step_load and (out / "step-load.json").exists():
        from load_tests.locust_slo import read_steps, steps_markdown

        slo, steps = read_steps(out / "step-load.json")
        table = steps_markdown(steps, slo)
        (out / "step-load.md").write_text(table + "\n")
        written.append(out / "step-load.md")
        typer.echo("\n" + table)
    typer.echo("\nwritten: " + ", ".join(str(path) for path in written))
