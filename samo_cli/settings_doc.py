"""`samo settings`: the gateway's settings as the README's table, written from `GatewaySettings` itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic_core import PydanticUndefined

README_START = "<!-- settings:start (samo settings --write README.md) -->"
README_END = "<!-- settings:end -->"


def settings_table() -> str:
    """One row per `SAMO_*` variable: name, default, and the field's description."""
    from samo.settings import GatewaySettings

    prefix = GatewaySettings.model_config["env_prefix"]
    rows = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for name, field in GatewaySettings.model_fields.items():
        default = field.default
        shown = "" if default in (None, PydanticUndefined, ()) else f"`{default}`"
        if field.json_schema_extra and field.json_schema_extra.get("secret"):
            shown = ""
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    """The README with the block between the markers replaced by the current table."""
    start, end = readme.index(README_START), readme.index(README_END)
    return readme[: start + len(README_START)] + "\n" + settings_table() + "\n" + readme[end:]


def settings_command(
    write: Annotated[
        Path | None, typer.Option(help="Rewrite the settings table in this README instead of printing it.")
    ] = None,
) -> None:
    """Print the gateway's settings (`SAMO_*` variables) as a Markdown table."""
    if write is None:
        typer.echo(settings_table())
        return
    write.write_text(with_table(write.read_text()))
