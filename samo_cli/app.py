"""The root `samo` command: export, convert and tune; run Triton and the gateway; benchmark and evaluate."""

from __future__ import annotations

import typer

from samo_cli import bench, convert, engines, export, loadtest, serve, settings_doc, soak

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SAMO serving on NVIDIA Triton.")
app.add_typer(export.app, name="export")
app.add_typer(bench.bench_app, name="bench")
app.add_typer(bench.eval_app, name="eval")
app.add_typer(
    convert.app, name="convert", help="Convert model formats (CTranslate2 Whisper to Hugging Face)."
)
app.command("tune-thresholds")(export.tune_thresholds_command)
app.command("triton")(serve.triton_command)
app.command("gateway")(serve.gateway_command)
app.command("serve")(serve.serve_command)
app.command("worker")(serve.worker_command)
app.command("build-engines")(engines.build_engines_command)
app.command("loadtest")(loadtest.loadtest_command)
app.command("soak")(soak.soak_command)
app.command("settings")(settings_doc.settings_command)

if __name__ == "__main__":
    app()
