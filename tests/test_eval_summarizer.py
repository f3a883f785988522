"""samo eval summarizer on a few ACLSum papers, with the session's exported embedder."""

from __future__ import annotations

import re
from pathlib import Path

from load_tests.eval_summarizer import evaluate, load_aclsum


def test_aclsum_loads_with_three_aspect_references() -> None:
    papers = load_aclsum("test")
    assert len(papers) == 100
    assert all(len(p.sentences) > 5 and p.reference for p in papers)


def test_rouge_table_for_both_systems(serving_repository: Path, tmp_path: Path) -> None:
    table = evaluate(
        "val", sentences=3, output_dir=tmp_path, embedder_dir=serving_repository / "embedder", limit=4
    )
    rows = {
        line.split("|")[1].strip(): line
        for line in table.splitlines()
        if line.startswith("| ") and "rouge1" not in line and "---" not in line
    }
    assert set(rows) == {"extractive (MMR, MiniLM)", "lead-3"}
    for line in rows.values():
        values = [float(v) for v in re.findall(r"\d+\.\d+", line)]
        assert len(values) == 3 and all(0 < v < 100 for v in values)
    assert (tmp_path / "summarizer-aclsum-val.md").read_text() == table
