"""`samo soak`: a long mixed workload at 70 % of the highest sustainable rate against a running gateway,
with errors, latency and the memory of every serving process (logic: load_tests/soak.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from samo_cli.common import fail, setup_logging


def soak_command(
    host: Annotated[str, typer.Option(help="Gateway HTTP base URL, e.g. http://127.0.0.1:8080.")] = (
        "http://127.0.0.1:8080"
    ),
    grpc: Annotated[
        str, typer.Option("--grpc", help="Gateway gRPC HOST:PORT (part of the mix); empty: HTTP only.")
    ] = "127.0.0.1:50051",
    duration: Annotated[
        float, typer.Option(min=10.0, help="Soak length, seconds (after the rate search).")
    ] = 600.0,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="Soak at this rate (req/s) and skip the search.")
    ] = None,
    load_fraction: Annotated[
        float, typer.Option(min=0.05, max=1.0, help="Share of the sustainable rate the soak runs at.")
    ] = 0.7,
    warmup: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds at the soak rate before --duration; not counted in growth."),
    ] = 180.0,
    sample_every: Annotated[float, typer.Option(min=1.0, help="Seconds between samples.")] = 5.0,
    slo_p95_ms: Annotated[
        float, typer.Option(help="Rate search: a step is sustained while its p95 stays under this (ms).")
    ] = 2000.0,
    triton_pid: Annotated[
        int | None, typer.Option(help="tritonserver's PID when it is not the gateway's child (samo serve).")
    ] = None,
    api_key: Annotated[
        str, typer.Option(envvar="SAMO_LOADTEST_API_KEY", show_default=False, help="Sent as a Bearer token.")
    ] = "",
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default load_tests/results/soak-<timestamp>/.")
    ] = None,
) -> None:
    """Soak a running gateway (on this machine: its processes' memory is read): find the highest
    sustainable rate of a mixed HTTP + gRPC workload (or take --rate), warm up for --warmup seconds,
    run --duration seconds at --load-fraction of it, and report errors, latency percentiles and the RSS
    growth of the gateway, tritonserver and each Python-backend stub, first measured minute against
    last, with each one's trend (soak.md, samples.csv, rate-search.csv)."""
    from load_tests.soak import SoakOptions, run_soak

    setup_logging()
    if not host.startswith(("http://", "https://")):
        raise fail(f"--host must be an http(s) URL, got {host!r}")
    if duration < 120:
        typer.echo("note: growth compares the first and last 60 s, which overlap below 120 s")
    options = SoakOptions(
        http_url=host.rstrip("/"),
        grpc_target=grpc or None,
        duration_s=duration,
        rate=rate,
        load_fraction=load_fraction,
        warmup_s=warmup,
        sample_every_s=sample_every,
        slo_p95_ms=slo_p95_ms,
        api_key=api_key or None,
        triton_pid=triton_pid,
    )
    folder = out or Path("load_tests/results") / f"soak-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        report = run_soak(options, folder)
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    typer.echo(report.read_text())
    typer.echo(f"written to {folder}/")
