"""`samo settings`: the gateway's settings as the docs' table, written from `GatewaySettings` itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic_core import PydanticUndefined

# The documentation page that holds the table, relative to the repository root.
SETTINGS_PAGE = Path("docs/api/settings.md")
TABLE_START = f"<!-- settings:start (samo settings --write {SETTINGS_PAGE}) -->"
TABLE_END = "<!-- settings:end -->"


def settings_table() -> str:
    """One row per `SAMO_*` variable: name, default, and the field's description."""
    from samo.settings import GatewaySettings

    prefix = GatewaySettings.model_config.get("env_prefix", "")
    rows = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for name, field in GatewaySettings.model_fields.items():
        default = field.default
        shown = "" if default in (None, PydanticUndefined, ()) else f"`{default}`"
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret"):
            shown = ""
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


def with_table(page: str) -> str:
    """The page with the block between the markers replaced by the current table."""
    start, end = page.index(TABLE_START), page.index(TABLE_END)
    return page[: start + len(TABLE_START)] + "\n" + settings_table() + "\n" + page[end:]


def settings_command(
    write: Annotated[
        Path | None,
        typer.Option(
            help=f"Rewrite the settings table in this page ({SETTINGS_PAGE}) instead of printing it."
        ),
    ] = None,
) -> None:
    """Print the gateway's settings (`SAMO_*` variables) as a Markdown table."""
    if write is None:
        typer.echo(settings_table())
        return
    page = write.read_text()
    if TABLE_START not in page or TABLE_END not in page:
        raise typer.BadParameter(
            f"{write} has no settings table between `{TABLE_START}` and `{TABLE_END}`; "
            f"the table lives in {SETTINGS_PAGE}",
            param_hint="--write",
        )
    write.write_text(with_table(page))
