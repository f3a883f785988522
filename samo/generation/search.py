"""Greedy and beam search over any encoder-decoder with a KV cache, batched across requests.

Requests are grouped by beam width and prompt length; each group is decoded in lockstep, one
decoder call per step for all its rows. A row (or a beam-search item) leaves the batch the step it
finishes, so short answers stop costing compute. Each row's result equals what transformers'
`generate` gives for that request alone.

Finished rows leave the batch in bulk, once they are half of it: dropping rows copies the whole KV
cache, cross-attention included (1,500 frames per Whisper window), which costs more on a CPU than
carrying a few finished rows that nobody reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from samo.generation.processors import Row, RowHook, process
from samo.generation.settings import GenerationSettings, SpecialTokens

_NEG = np.float32(-1.0e9)  # transformers' mask value for beams that must not be picked


def _compact(alive: np.ndarray) -> bool:
    """Whether finished rows are now worth dropping from the batch."""
    return 2 * int((~alive).sum()) >= len(alive)


class DecoderSession(Protocol):
    """A decoder bound to some encoder outputs; it keeps its own KV cache between calls."""

    def start(self, prompt: np.ndarray) -> np.ndarray:
        """Run the prompt [rows, length]; return the last position's logits [rows, vocab]."""
        ...

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [rows]; return logits [rows, vocab]."""
        ...

    def keep(self, rows: np.ndarray) -> None:
        """Keep these rows of the cache, in this order (finished rows leave)."""
        ...

    def reorder_beams(self, rows: np.ndarray) -> None:
        """Reorder rows among the beams of each item (beam search); rows never move between items,
        so what is equal across an item's beams (the cross-attention cache) need not move."""
        ...


# What a model's encoder returned (`OnnxSeq2Seq`'s `Encoded`); the search only hands it back to the model.
EncodedT = TypeVar("EncodedT")
EncodedT_contra = TypeVar("EncodedT_contra", contravariant=True)


class Seq2SeqModel(Protocol[EncodedT_contra]):
    def decoder(self, encoded: EncodedT_contra, items: np.ndarray) -> DecoderSession:
        """A session over encoder outputs `encoded`, one row per entry of `items` (repeats allowed)."""
        ...


@dataclass(frozen=True)
class Request:
    prompt: tuple[int, ...]
    settings: GenerationSettings
    hook: RowHook | None = None


@dataclass(frozen=True)
class Generated:
    """New tokens (the end-of-sequence token included when one was produced) and their log-probability."""

    tokens: tuple[int, ...]
    logprob: float
    finished: bool


# Called with (request index, token) as greedy rows produce tokens; beam search reports nothing early.
TokenCallback = Callable[[int, int], None]


def generate(
    model: Seq2SeqModel[EncodedT],
    encoded: EncodedT,
    requests: Sequence[Request],
    special: SpecialTokens,
    on_token: TokenCallback | None = None,
) -> list[Generated]:
    """Generate for every request; request i reads row i of `encoded`."""
    results: list[Generated | None] = [None] * len(requests)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        groups[(request.settings.num_beams, len(request.prompt))].append(index)
    for (num_beams, _), members in groups.items():
        search = _greedy if num_beams == 1 else _beam
        for index, generated in zip(
            members, search(model, encoded, requests, members, special, on_token), strict=True
        ):
            results[index] = generated
    return results  # type: ignore[return-value]


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _greedy(model, encoded, requests, members, special, on_token) -> list[Generated]:
    rows = [Row(requests[i].settings, len(requests[i].prompt), requests[i].hook) for i in members]
    session = model.decoder(encoded, np.asarray(members))
    sequences = np.asarray([requests[i].prompt for i in members], dtype=np.int64)
    logits = session.start(sequences)
    active = np.arange(len(members))
    alive = np.ones(len(members), dtype=bool)
    logprobs = np.zeros(len(members), dtype=np.float64)
    results: list[Generated | None] = [None] * len(members)
    eos = np.asarray(special.eos)
    while True:
        scores = process(sequences, logits.astype(np.float32, copy=True), [rows[i] for i in active], special)
        tokens = scores.argmax(axis=-1)
        picked = scores[np.arange(len(tokens)), tokens]
        logprobs[active] += picked - _logsumexp(scores)
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
        ended = np.isin(tokens, eos)
        stop = ended | (sequences.shape[1] >= np.asarray([rows[i].max_length for i in active]))
        for position in np.flatnonzero(alive):
            row = active[position]
            if on_token is not None:
                on_token(members[row], int(tokens[position]))
            if stop[position]:
                new = sequences[position, rows[row].prompt_length :]
                results[row] = Generated(tuple(new.tolist()), float(logprobs[row]), bool(ended[position]))
        alive &= ~stop
        if not alive.any():
            return results  # type: ignore[return-value]
        if _compact(alive):
            kept = np.flatnonzero(alive)
            session.keep(kept)
            sequences, tokens, active, alive = sequences[kept], tokens[kept], active[kept], alive[kept]
        logits = session.step(tokens)


def _logsumexp(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1)
    return top + np.log(np.exp(scores - top[:, None]).sum(axis=-1))


def _top(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest values per row, largest first (ties: lower index first)."""
    if count < values.shape[1]:
        part = np.argpartition(-values, count - 1, axis=1)[:, :count]
    else:
        part = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    order = np.argsort(-np.take_along_axis(values, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _beam(model, encoded, requests, members, special, on_token) -> list[Generated]:
    """transformers' vectorized beam search (4.57), item by item equivalent, with done items dropped."""
    del on_token  # beams are not final until the search ends
    beams = requests[members[0]].settings.num_beams
    prompt_length = len(requests[members[0]].prompt)
    items = len(members)
    settings = [requests[i].settings for i in members]
    hooks = [requests[i].hook for i in members]
    max_length = np.asarray([prompt_length + s.max_new_tokens for s in settings])
    penalty = np.asarray([s.length_penalty for s in settings], dtype=np.float64)
    early_true = np.asarray([s.early_stopping is True for s in settings])
    early_never = np.asarray([s.early_stopping == "never" for s in settings])
    eos = np.asarray(special.eos)
    keep_count = max(2, 1 + len(special.eos)) * beams
    first_beams = np.arange(keep_count) < beams

    session = model.decoder(encoded, np.repeat(np.asarray(members), beams))
    running = np.repeat(
        np.asarray([requests[i].prompt for i in members], dtype=np.int64)[:, None, :], beams, axis=1
    )
    running_scores = np.zeros((items, beams), dtype=np.float32)
    running_scores[:, 1:] = _NEG
    finished_scores = np.full((items, beams), _NEG, dtype=np.float32)
    finished_tokens: list[list[tuple[int, ...]]] = [[()] * beams for _ in range(items)]
    is_finished = np.zeros((items, beams), dtype=bool)
    improvable = np.ones(items, dtype=bool)
    active = np.arange(items)
    alive = np.ones(items, dtype=bool)
    results: list[Generated | None] = [None] * items

    logits = session.start(running.reshape(items * beams, -1))
    while True:
        count, length = len(active), running.shape[2]
        rows = [Row(settings[i], prompt_length, hooks[i]) for i in active for _ in range(beams)]
        log_probs = process(
            running.reshape(count * beams, length), _log_softmax(logits.astype(np.float32)), rows, special
        )
        vocab = log_probs.shape[1]
        totals = (log_probs.reshape(count, beams, vocab) + running_scores[:, :, None]).reshape(
            count, beams * vocab
        )
        picked = _top(totals, keep_count)
        candidate_scores = np.take_along_axis(totals, picked, axis=1)
        candidate_beams, candidate_tokens = picked // vocab, picked % vocab
        item_max = max_length[active]
        hits = np.isin(candidate_tokens, eos) | (length + 1 >= item_max)[:, None]

        # Running beams for the next step: the best candidates that did not just stop.
        running_candidates = candidate_scores + hits.astype(np.float32) * _NEG
        chosen = _top(running_candidates, beams)
        chosen_beams = np.take_along_axis(candidate_beams, chosen, axis=1)
        next_running = np.concatenate(
            [
                np.take_along_axis(running, chosen_beams[:, :, None], axis=1),
                np.take_along_axis(candidate_tokens, chosen, axis=1)[:, :, None],
            ],
            axis=2,
        )
        running_scores = np.take_along_axis(running_candidates, chosen, axis=1)

        # Finished beams: the stopping candidates among the top `beams`, if they beat what is kept.
        just_finished = hits & first_beams[None, :]
        denominator = ((length + 1 - prompt_length) ** penalty[active]).astype(np.float32)
        finish_scores = candidate_scores / denominator[:, None]
        full = is_finished.all(axis=1) & early_true[active]
        finish_scores += (full.astype(np.float32) * _NEG)[:, None]
        finish_scores += ((~improvable[active]).astype(np.float32) * _NEG)[:, None]
        finish_scores += (~just_finished).astype(np.float32) * _NEG
        merged = np.concatenate([finished_scores, finish_scores], axis=1)
        best = _top(merged, beams)
        merged_finished = np.concatenate([is_finished, just_finished], axis=1)
        for position, item in enumerate(active):
            previous = finished_tokens[item]
            slots = []
            for slot in best[position]:
                if slot < beams:
                    slots.append(previous[slot])
                else:
                    candidate = slot - beams
                    beam = candidate_beams[position, candidate]
                    tokens = [
                        *running[position, beam, prompt_length:].tolist(),
                        int(candidate_tokens[position, candidate]),
                    ]
                    slots.append(tuple(tokens))
            finished_tokens[item] = slots
        finished_scores = np.take_along_axis(merged, best, axis=1)
        is_finished = np.take_along_axis(merged_finished, best, axis=1)

        length += 1
        if_never = early_never[active] & (penalty[active] > 0)
        hypothetical = np.where(if_never, item_max - prompt_length, length - prompt_length)
        best_running = running_scores[:, 0] / (hypothetical ** penalty[active]).astype(np.float32)
        worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), _NEG)
        improvable_now = improvable[active] & (best_running[:, None] > worst_finished).any(axis=1)
        done = ~improvable_now | (is_finished.all(axis=1) & early_true[active]) | hits.all(axis=1)
        improvable[active] = improvable_now

        for position in np.flatnonzero(done & alive):
            item = active[position]
            tokens = finished_tokens[item][0]
            score = float(finished_scores[position, 0])
            generated_length = len(tokens)
            results[item] = Generated(
                tokens=tokens,
                logprob=score * generated_length ** float(penalty[item]),
                finished=bool(tokens) and tokens[-1] in special.eos,
            )
        alive &= ~done
        if not alive.any():
            return results  # type: ignore[return-value]
        rows_next = np.arange(count)[:, None] * beams + chosen_beams
        if _compact(alive):
            keep = np.flatnonzero(alive)
            session.keep(rows_next[keep].reshape(-1))
            next_running, running_scores = next_running[keep], running_scores[keep]
            finished_scores, is_finished = finished_scores[keep], is_finished[keep]
            active, alive = active[keep], alive[keep]
        else:
            session.reorder_beams(rows_next.reshape(-1))
        running = next_running
        logits = session.step(running[:, :, -1].reshape(-1))
