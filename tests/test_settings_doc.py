"""Every gateway setting is documented on the docs' settings page, as `samo settings` writes it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from samo.settings import GatewaySettings
from samo_cli.app import app
from samo_cli.settings_doc import SETTINGS_PAGE, TABLE_END, TABLE_START, settings_table, with_table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / SETTINGS_PAGE


def test_settings_page_documents_every_setting_as_samo_settings_prints_it() -> None:
    page = PAGE.read_text()
    assert with_table(page) == page, (
        f"{SETTINGS_PAGE} settings table is stale: run `samo settings --write {SETTINGS_PAGE}`"
    )
    block = page[page.index(TABLE_START) : page.index(TABLE_END)]
    for name in GatewaySettings.model_fields:
        assert f"`SAMO_{name.upper()}`" in block


def test_a_stale_table_is_seen_and_rewritten(tmp_path: Path) -> None:
    page = PAGE.read_text()
    stale = page.replace("| `SAMO_PORT` |", "| `SAMO_PORT_OLD` |")
    assert with_table(stale) != stale
    target = tmp_path / "settings.md"
    target.write_text(stale)
    result = CliRunner().invoke(app, ["settings", "--write", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == page


def test_writing_to_a_page_without_markers_names_the_settings_page(tmp_path: Path) -> None:
    target = tmp_path / "README.md"
    target.write_text("# no table here\n")
    result = CliRunner().invoke(app, ["settings", "--write", str(target)])
    assert result.exit_code == 2
    compact = "".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert f"thetablelivesin{SETTINGS_PAGE}" in compact
    assert target.read_text() == "# no table here\n"


def test_samo_settings_prints_the_table_and_hides_secrets() -> None:
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == settings_table()
    assert "| `SAMO_TRITON_RESTRICTED_KEY` |  |" in result.output
