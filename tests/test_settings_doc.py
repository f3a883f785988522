"""Every gateway setting is documented in the README, as `samo settings` writes it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from samo.settings import GatewaySettings
from samo_cli.app import app
from samo_cli.settings_doc import README_END, README_START, settings_table, with_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_documents_every_setting_as_samo_settings_prints_it() -> None:
    readme = README.read_text()
    assert with_table(readme) == readme, (
        "README settings table is stale: run `samo settings --write README.md`"
    )
    block = readme[readme.index(README_START) : readme.index(README_END)]
    for name in GatewaySettings.model_fields:
        assert f"`SAMO_{name.upper()}`" in block


def test_samo_settings_prints_the_table_and_hides_secrets() -> None:
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == settings_table()
    assert "| `SAMO_TRITON_RESTRICTED_KEY` |  |" in result.output
