"""The documentation site builds with no broken link, and the README stays short with working links."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 260
# Inline Markdown links and images: [text](target) and ![alt](target), an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def test_mkdocs_builds_the_site_in_strict_mode(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "settings" / "index.html").is_file()


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference material to docs/"
    )


def relative_links(markdown: str) -> list[str]:
    """Link targets that name a file in the repository (no URL scheme, not a bare #anchor)."""
    without_code = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    targets = (match.group(1) for match in LINK.finditer(without_code))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_are_found_in_markdown() -> None:
    text = '[a](docs/a.md) ![b](docs/b.png "plot") [c](https://x.org) [d](#top) [e](docs/e.md#part)'
    assert relative_links(text) == ["docs/a.md", "docs/b.png", "docs/e.md#part"]


def test_every_relative_link_in_the_readme_names_an_existing_file() -> None:
    links = relative_links(README.read_text())
    assert links, "README.md links into docs/"
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_benchmark_plots_in_the_docs_equal_their_originals() -> None:
    copies = sorted((ROOT / "docs" / "benchmarks").glob("*.png"))
    assert copies
    plots = ROOT / "load_tests" / "results" / "plots"
    stale = [copy.name for copy in copies if copy.read_bytes() != (plots / copy.name).read_bytes()]
    assert not stale, f"copy these again from load_tests/results/plots/ to docs/benchmarks/: {stale}"
