"""The `samo` command's error paths."""

from pathlib import Path

from typer.testing import CliRunner

from samo_cli.app import app


def test_triton_without_repository_exits_2_with_the_reason(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["triton", "--repository", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist; build it with `samo export`" in result.output


def test_help_lists_the_subcommands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    for command in ("export", "triton", "gateway", "serve", "tune-thresholds", "bench"):
        assert command in result.output
