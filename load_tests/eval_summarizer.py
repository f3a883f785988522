"""`samo eval summarizer --data aclsum`: ROUGE of the extractive default against a lead-k baseline.

ACLSum (package `aclsum`, MIT): ACL papers with expert one-sentence summaries of the challenge,
approach and outcome; the reference is the three joined. Each paper's sentences (abstract,
introduction, conclusion, as the data set splits them) are embedded with the exported MiniLM graph in
ONNX Runtime (the same graph and tokenization Triton serves) and selected with the service's own MMR
code; lead-k takes the first k sentences, k the same, so both summaries have k sentences.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from exporters.embedder import EmbedderExportOptions, export_embedder
from exporters.encoder_serving import MODEL_VERSION, ONNX_FILE
from exporters.onnx_tools import cpu_session
from gateway.summarization.extractive import SelectionBudget, lead, select_sentences
from gateway.summarization.service import Embedder
from load_tests.loadgen import format_table
from samo.contracts.embedding import EMBEDDINGS

ASPECTS = ("challenge", "approach", "outcome")
SECTIONS = ("abstract", "introduction", "conclusion")
METRICS = ("rouge1", "rouge2", "rougeL")
BATCH = 32


@dataclass(frozen=True)
class Paper:
    sentences: tuple[str, ...]
    reference: str


def load_aclsum(split: str = "test") -> list[Paper]:
    import aclsum

    path = Path(aclsum.__file__).parent / "dataset" / f"{split}.jsonl"
    papers = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        sentences = tuple(s for section in SECTIONS for s in record["sentences"][section])
        papers.append(Paper(sentences, " ".join(record["summary"][aspect] for aspect in ASPECTS)))
    return papers


def _embed(
    embedder: Embedder, session: ort.InferenceSession, sentences: tuple[str, ...]
) -> tuple[np.ndarray, tuple[int, ...]]:
    vectors, tokens = [], []
    for start in range(0, len(sentences), BATCH):
        encoded = embedder.encoder.encode(sentences[start : start + BATCH])
        vectors.append(session.run([EMBEDDINGS], encoded.inputs)[0])
        tokens += encoded.token_counts
    return np.concatenate(vectors).astype(np.float64), tuple(tokens)


def evaluate(
    split: str = "test",
    sentences: int = 3,
    output_dir: Path | None = None,
    embedder_dir: Path | None = None,
    limit: int | None = None,
) -> str:
    """The ROUGE table; `embedder_dir` reuses an exported embedder instead of exporting one."""
    from rouge_score import rouge_scorer

    papers = load_aclsum(split)[:limit]
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    scores: dict[str, dict[str, list[float]]] = {"extractive (MMR, MiniLM)": {}, f"lead-{sentences}": {}}
    with tempfile.TemporaryDirectory(prefix="samo-eval-") as workdir:
        model_dir = embedder_dir or export_embedder(EmbedderExportOptions(repository=Path(workdir))).model_dir
        embedder = Embedder.load(model_dir)
        session = cpu_session(model_dir / MODEL_VERSION / ONNX_FILE)
        budget = SelectionBudget(max_sentences=sentences)
        for paper in papers:
            vectors, tokens = _embed(embedder, session, paper.sentences)
            picks = {
                "extractive (MMR, MiniLM)": select_sentences(vectors, tokens, budget),
                f"lead-{sentences}": lead(tokens, sentences),
            }
            for system, chosen in picks.items():
                summary = " ".join(paper.sentences[i] for i in chosen)
                result = scorer.score(paper.reference, summary)
                for metric in METRICS:
                    scores[system].setdefault(metric, []).append(result[metric].fmeasure)
    rows = [
        {"system": system, **{metric: 100 * statistics.mean(values[metric]) for metric in METRICS}}
        for system, values in scores.items()
    ]
    table = (
        f"# Summarizer evaluation: ACLSum {split} ({len(papers)} papers)\n\n"
        f"ROUGE F1 x 100 against the three expert summaries joined; {sentences} sentences per summary.\n\n"
        + format_table(rows, ("system", *METRICS))
    )
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / f"summarizer-aclsum-{split}.md").write_text(table)
    return table
