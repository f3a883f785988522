"""The summarizer benchmark's cheap parts: its tokenizer and texts, options, and the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.bench_summarizer import (
    ORT,
    STACK,
    TORCH,
    Cell,
    SummarizerBenchOptions,
    bench_texts,
    build_tokenizer,
    check_tokens,
    report,
    table_rows,
    target_lines,
    write_plots,
)


def test_texts_are_400_tokens_ending_in_eos_and_all_different() -> None:
    tokenizer = build_tokenizer()
    texts = bench_texts(5, 400)
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    assert [len(ids) for ids in encoded] == [400] * 5
    assert all(ids[-1] == tokenizer.eos_token_id == 1 for ids in encoded)
    assert all(2 not in ids for ids in encoded)  # no <unk>: every word is in the vocabulary
    assert len(set(texts)) == 5
    assert bench_texts(5, 400) == texts  # seeded


def test_tokenizer_round_trips_words_and_pads_with_zero() -> None:
    tokenizer = build_tokenizer()
    assert tokenizer("w0 w32099")["input_ids"] == [3, 32102, 1]
    assert tokenizer.pad_token_id == 0
    assert tokenizer.decode([3, 32102, 1], skip_special_tokens=True) == "w0 w32099"


def _cell(system: str, beams: int, concurrency: int, tokens_per_s: float) -> Cell:
    return Cell(system, beams, concurrency, (1.0, 2.0, 3.0, 4.0), (64,) * 4, 256 / tokens_per_s)


CELLS = [
    _cell(TORCH, 1, 1, 20.0),
    _cell(ORT, 1, 1, 40.0),
    _cell(STACK, 1, 1, 50.0),
    _cell(TORCH, 1, 8, 20.0),
    _cell(ORT, 1, 8, 40.0),
    Cell(STACK, 1, 8, (1.0, 2.0, 3.0, 4.0), (64,) * 4, 256 / 50.0, executions=2),
]


def test_rows_carry_ratios_and_batches_for_the_stack_only() -> None:
    rows = table_rows(CELLS)
    assert rows[0] == {
        "system": TORCH,
        "decoding": "greedy",
        "concurrency": 1,
        "requests": 4,
        "tokens_per_s": pytest.approx(20.0),
        "p50_s": 2.5,
        "p95_s": pytest.approx(3.85),
        "mean_batch": None,
        "triton_queue_ms": None,
        "triton_compute_ms": None,
    }
    assert (rows[2]["vs_a"], rows[2]["vs_b"]) == ("2.50x", "1.25x")
    assert rows[5]["mean_batch"] == 2.0


def test_plots_are_written(tmp_path: Path) -> None:
    paths = write_plots(CELLS, tmp_path)
    assert [p.name for p in paths] == ["summarizer-throughput.png", "summarizer-latency.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_targets_name_the_ratio_and_verdict() -> None:
    assert target_lines(CELLS) == [
        "- greedy, c=8: (c) = 2.50x (a) (target 3x: missed)",
        "- greedy, c=1: (c) = 1.25x (b) (target 1x: met)",
    ]


def test_report_is_a_markdown_table() -> None:
    text = report(CELLS, SummarizerBenchOptions(), wall_s=60.0)
    lines = text.splitlines()
    assert lines[0] == "# Summarizer benchmark"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(CELLS)
    assert "6 at c=1, 16 at c=8" in text


def test_a_row_with_other_token_counts_fails_loudly() -> None:
    cell = Cell(ORT, 4, 8, (1.0, 1.0), (64, 63), 2.0)
    with pytest.raises(
        RuntimeError, match=r"\(b\) optimum ONNX Runtime beam 4 c=8: requests generated \[63\]"
    ):
        check_tokens(cell, 64)


def test_options_check_their_ranges() -> None:
    assert SummarizerBenchOptions().requests(1) == 6
    assert SummarizerBenchOptions().requests(8) == 16
    assert SummarizerBenchOptions(min_requests=4, rounds=1).requests(8) == 8
    with pytest.raises(ValueError, match="`input_tokens` must be between 2 and 512"):
        SummarizerBenchOptions(input_tokens=600)
