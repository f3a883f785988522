"""The peer rows' pure parts (load_tests/peers.py): each server's answer read into scores in the
stack's label order, the score check that must report a peer that disagrees, and the 3x target lines.
No peer server is started here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from load_tests.peers import (
    STACK,
    PeerOptions,
    compare_scores,
    infinity_body,
    infinity_scores,
    litserve_body,
    litserve_scores,
    measured_seconds,
    scores_by_label,
    stack_body,
    stack_scores,
    target_lines,
)

LABELS = ("admiration", "anger", "joy")


def test_each_answer_is_read_in_the_stacks_label_order() -> None:
    # Infinity sorts a text's labels by score, highest first; LitServe and the stack keep model order.
    infinity = {
        "object": "classify",
        "data": [
            [
                {"score": 0.9, "label": "joy"},
                {"score": 0.3, "label": "anger"},
                {"score": 0.1, "label": "admiration"},
            ]
        ],
        "model": "emotion",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    litserve = {"scores": {"admiration": 0.1, "anger": 0.3, "joy": 0.9}}
    stack = {"results": [{"labels": [], "scores": {"admiration": 0.1, "anger": 0.3, "joy": 0.9}}]}
    for scores in (infinity_scores(infinity), litserve_scores(litserve), stack_scores(stack)):
        np.testing.assert_array_equal(scores_by_label(scores, LABELS), [0.1, 0.3, 0.9])


def test_a_request_carries_one_text_on_one_line() -> None:
    text = "I cried.\nThen I laughed."
    bodies = (infinity_body(text), litserve_body(text), stack_body(text))
    assert [json.loads(json.dumps(body)) for body in bodies] == [
        {"input": [text], "model": "emotion", "raw_scores": True},
        {"text": text},
        {"texts": [text]},
    ]
    assert all(b"\n" not in json.dumps(body).encode() for body in bodies)  # wrk sends one body per line


def test_a_label_missing_from_an_answer_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="no score for joy"):
        scores_by_label({"admiration": 0.1, "anger": 0.3}, LABELS)


def test_the_score_check_reports_a_peer_that_disagrees() -> None:
    reference = np.random.default_rng(0).random((4, len(LABELS)))
    close = compare_scores("bert-base", "LitServe", reference, reference + 5e-5)
    assert close.agrees and "LitServe agrees" in close.line()

    off = reference.copy()
    off[2, 1] += 3e-4
    far = compare_scores("bert-base", "Infinity torch", reference, off)
    assert not far.agrees
    assert far.max_abs_diff == pytest.approx(3e-4)
    assert (
        "Infinity torch DISAGREES with the stack on 4 journal texts: max |score difference| 3.00e-04"
        in far.line()
    )

    off[0, 0] = np.nan
    assert not compare_scores("bert-base", "Infinity torch", reference, off).agrees
    with pytest.raises(ValueError, match="shape"):
        compare_scores("bert-base", "LitServe", reference, reference[:3])


def _row(system: str, load: str, throughput: float) -> dict:
    return {"model": "bert-base", "system": system, "load": load, "throughput_per_s": throughput}


def test_the_target_compares_the_stack_with_infinitys_better_engine_and_with_litserve() -> None:
    rows = [
        _row(STACK, "c=32", 100.0),
        _row("Infinity optimum", "c=32", 40.0),
        _row("Infinity torch", "c=32", 20.0),
        _row("LitServe", "c=32", 30.0),
        _row(STACK, "c=256", 90.0),
        _row("Infinity optimum", "c=256", 25.0),
        _row("Infinity torch", "c=256", 45.0),
        _row("LitServe", "c=256", 10.0),
    ]
    assert target_lines("bert-base", rows, (32, 256)) == [
        "- bert-base at c=32: the stack 100.0 texts/s = 2.50x Infinity optimum (40.0) (target 3x: missed)",
        "- bert-base at c=32: the stack 100.0 texts/s = 3.33x LitServe (30.0) (target 3x: met)",
        "- bert-base at c=256: the stack 90.0 texts/s = 2.00x Infinity torch (45.0) (target 3x: missed)",
        "- bert-base at c=256: the stack 90.0 texts/s = 9.00x LitServe (10.0) (target 3x: met)",
    ]


def test_a_row_lasts_three_turns_of_every_connection_within_its_bounds() -> None:
    options = PeerOptions(duration_s=8.0, max_duration_s=40.0)
    assert measured_seconds(32, 1000.0, options) == 8.0  # fast: the shortest row
    assert measured_seconds(256, 25.6, options) == pytest.approx(30.0)  # 10 s per turn
    assert measured_seconds(256, 0.0, options) == 40.0  # nothing answered in the warm-up
