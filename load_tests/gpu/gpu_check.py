"""The prepared GPU check: the emotion stack on one GPU against PyTorch, side by side in one run.

    python -m load_tests.gpu.gpu_check --out DIR [--wheels .whl] [--smoke]

On a machine without SAMO's serving packages (the lent GPU machine has PyTorch, transformers and
numpy 2 but no Triton server, FastAPI or tritonclient, and no network), `--wheels` names a folder of
carried wheels: they are installed with pip into a temporary virtualenv that also sees the machine's
own packages, and the check runs again with that virtualenv's python. Then, for a BERT-base-sized classifier (random weights from a config,
28 labels; nothing downloaded) and optionally a MiniLM-sized one:

(a) the naive service: FastAPI + PyTorch on the GPU, one forward per request;
(b) in-process batched PyTorch in fp16 on the GPU: batch 1 latency and batch 32 / 256 throughput
    (the compute limit);
(c) gateway + Triton, the model exported with `--target gpu-torch` (PyTorch fp16 inside Triton's
    Python backend, tensors through DLPack),
each driven by the light closed-loop load generator at every concurrency asked for. Written to DIR:
`results.md` (tables), `triton_stats.json` (Triton's queue and compute statistics), `nvidia_smi.csv`
(readings every second), `throughput.png` and `latency.png`. On a CPU-only machine the same run uses
the CPU in fp32 (the rehearsal).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

logger = logging.getLogger("load_tests.gpu")

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_ENV = "SAMO_GPU_CHECK_ENV"
COLUMNS = ("model", "system", "load", "throughput_per_s", "p50_ms", "p99_ms", "errors")
NAIVE = "(a) FastAPI + PyTorch, per request"
IN_PROCESS = "(b) PyTorch batched, in-process"
STACK = "(c) gateway + Triton (gpu-torch)"
# The stack is measured, not its overload answers: one text is one unit of the admission budget, so this
# admits every text of the largest load (1,024 requests) with room to spare.
ADMISSION_BUDGET = 1 << 20
SHAPES = {
    # BertConfig's defaults are BERT-base: 12 layers, hidden 768, 12 heads.
    "bert-base": {},
    "minilm": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
}


@dataclass(frozen=True)
class CheckOptions:
    out: Path
    models: tuple[str, ...] = ("bert-base",)
    concurrency: tuple[int, ...] = (1, 32, 256, 1024)
    duration_s: float = 10.0
    warmup_s: float = 3.0
    batches: tuple[int, ...] = (1, 32, 256)
    gateway_workers: tuple[int, ...] = (1,)
    baselines: bool = True
    """(a) and (b) as well as (c); off to rerun the stack alone in a short GPU window."""


def make_environment(wheels: Path) -> Path:
    """A virtualenv holding the carried wheels that also sees this interpreter's packages (PyTorch) and
    the checkout, through a `.pth` file; its python. Triton's Python-backend stub takes its packages
    from the `python3` first on PATH, not from PYTHONPATH, so a plain `pip install --target` folder would
    reach this process but not the models inside Triton."""
    import sysconfig
    import venv

    files = sorted(str(w) for w in wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"no wheels in {wheels}")
    root = Path(tempfile.mkdtemp(prefix="samo-gpu-env-"))
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--target",
            str(site),
            *files,
        ],
        check=True,
    )
    parents = dict.fromkeys((sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), str(REPO_ROOT)))
    (site / "samo_gpu_check.pth").write_text("".join(f"{path}\n" for path in parents))
    return python


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_checkpoint(name: str, folder: Path) -> Path:
    """A classifier of the named size with random weights, and a WordPiece tokenizer trained on journal
    texts (realistic token counts; the vocabulary does not change the speed)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from exporters.emotion.zero_shot import load_prototype_phrases
    from load_tests.texts import journal_texts

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        journal_texts(4096, seed=1), trainers.WordPieceTrainer(vocab_size=8000, special_tokens=special)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    labels = list(load_prototype_phrases())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification",
        **SHAPES[name],
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    BertTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=512,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)
    return folder


def measure_in_process(name: str, checkpoint: Path, texts: list[str], options: CheckOptions) -> list[dict]:
    """The compute limit: the same model in PyTorch, fp16 on a GPU (fp32 on CPU), pre-tokenized batches."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    where = device()
    dtype = torch.float16 if where == "cuda" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=dtype).to(where).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = []
    for batch in options.batches:
        feeds = [
            tokenizer(texts[i : i + batch], padding=True, truncation=True, return_tensors="pt").to(where)
            for i in range(0, len(texts) - batch + 1, batch)
        ]
        latencies: list[float] = []
        with torch.inference_mode():
            for feed in feeds[:3]:
                model(**feed)
            _synchronize(where)
            start = time.perf_counter()
            while time.perf_counter() - start < options.duration_s:
                began = time.perf_counter()
                model(**feeds[len(latencies) % len(feeds)]).logits.float().cpu()
                latencies.append((time.perf_counter() - began) * 1000)
        wall = time.perf_counter() - start
        rows.append(
            {
                "model": name,
                "system": IN_PROCESS,
                "load": f"batch {batch}",
                "throughput_per_s": len(latencies) * batch / wall,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "errors": 0,
            }
        )
        logger.info("%s in-process batch %d: %.0f texts/s", name, batch, rows[-1]["throughput_per_s"])
    del model
    if where == "cuda":
        torch.cuda.empty_cache()
    return rows


def _synchronize(where: str) -> None:
    if where == "cuda":
        import torch

        torch.cuda.synchronize()


def measure_naive(name: str, checkpoint: Path, texts: list[str], options: CheckOptions) -> list[dict]:
    from load_tests.bench_emotion import load_rows
    from load_tests.processes import free_port, server_process

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "load_tests.naive_service",
        "--model",
        str(checkpoint),
        "--port",
        str(port),
    ]
    command += ["--device", device()]
    with server_process(command, ready_url=f"http://127.0.0.1:{port}/health", timeout_s=300):
        return load_rows(name, NAIVE, f"http://127.0.0.1:{port}/v1/emotions", texts, options)


def measure_stack(
    name: str, repository: Path, texts: list[str], options: CheckOptions, workers: int
) -> tuple[list[dict], dict]:
    from load_tests.bench_emotion import load_rows
    from load_tests.processes import gateway_stack

    settings = {"SAMO_WORKERS": str(workers), "SAMO_ADMISSION_BUDGET": str(ADMISSION_BUDGET)}
    system = STACK if workers == 1 else STACK.replace("gateway", f"gateway x{workers}")
    with gateway_stack(repository, settings=settings) as stack:
        rows = load_rows(name, system, f"{stack.gateway_url}/v1/emotions", texts, options)
        # Triton's addresses are host:port (as tritonclient takes them).
        with urllib.request.urlopen(
            f"http://{stack.triton_http_url}/v2/models/stats", timeout=30
        ) as response:
            stats = json.loads(response.read())
    return rows, stats


@contextmanager
def nvidia_smi(path: Path) -> Iterator[None]:
    """GPU readings every second into a CSV while the block runs (nothing on a machine without one)."""
    query = "timestamp,name,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm"
    try:
        process = subprocess.Popen(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv", "-l", "1"],
            stdout=path.open("w"),
            stderr=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        path.write_text("no nvidia-smi on this machine\n")
        yield
        return
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def stats_summary(stats: dict) -> list[str]:
    """Per model: executions, inferences, and average queue / compute time per request from Triton."""
    lines = []
    for model in stats.get("model_stats", []):
        inference = model.get("inference_stats", {})
        count = max(int(inference.get("success", {}).get("count", 0)), 1)
        per = {
            key: int(inference.get(key, {}).get("ns", 0)) / count / 1000
            for key in ("queue", "compute_input", "compute_infer", "compute_output")
        }
        lines.append(
            f"- Triton `{model['name']}`: {model.get('inference_count', 0)} inferences in "
            f"{model.get('execution_count', 0)} executions; per request: queue {per['queue']:.0f} us, "
            f"input {per['compute_input']:.0f} us, infer {per['compute_infer']:.0f} us, output {per['compute_output']:.0f} us"
        )
    return lines


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric, file, label in (
        ("throughput_per_s", "throughput.png", "texts per second"),
        ("p50_ms", "latency.png", "p50 latency, ms"),
    ):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for (model, system), points in _series(rows).items():
            if system == IN_PROCESS:
                continue
            answered = [
                r for r in points if r["throughput_per_s"] > 0
            ]  # a point that failed has no place on a log axis
            xs = [int(r["load"].removeprefix("c=")) for r in answered]
            axis.plot(xs, [r[metric] for r in answered], marker="o", label=f"{model}: {system}")
        for row in rows:
            if row["system"] == IN_PROCESS and metric == "throughput_per_s":
                axis.axhline(
                    row[metric], linestyle="--", linewidth=0.8, label=f"{row['model']}: (b) {row['load']}"
                )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent clients (closed loop)")
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
        axis.grid(True, which="both", linewidth=0.3)
        figure.tight_layout()
        figure.savefig(out / file, dpi=120)
        plt.close(figure)


def _series(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    series: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        series.setdefault((row["model"], row["system"]), []).append(row)
    return series


def run_check(options: CheckOptions) -> str:
    import torch

    from exporters.emotion.export import EmotionExportOptions, export_emotion
    from load_tests.loadgen import format_table
    from load_tests.texts import journal_texts

    options.out.mkdir(parents=True, exist_ok=True)
    texts = journal_texts(1024)
    where = device()
    machine = torch.cuda.get_device_name(0) if where == "cuda" else platform.processor() or platform.machine()
    rows: list[dict] = []
    stats: dict[str, dict] = {}
    with (
        tempfile.TemporaryDirectory(prefix="samo-gpu-check-") as workdir,
        nvidia_smi(options.out / "nvidia_smi.csv"),
    ):
        for name in options.models:
            checkpoint = build_checkpoint(name, Path(workdir) / name / "checkpoint")
            repository = Path(workdir) / name / "repository"
            export_emotion(
                EmotionExportOptions(model=str(checkpoint), repository=repository, target="gpu-torch")
            )
            # The stack first: it is what the check is for, and the part most likely to fail.
            stack_rows = []
            for workers in options.gateway_workers:
                more, stats[f"{name}, {workers} gateway workers"] = measure_stack(
                    name, repository, texts, options, workers
                )
                stack_rows += more
            if options.baselines:
                rows += measure_in_process(name, checkpoint, texts, options)
                rows += measure_naive(name, checkpoint, texts, options)
            rows += stack_rows
    (options.out / "triton_stats.json").write_text(json.dumps(stats, indent=2))
    plot(rows, options.out)
    lines = [f"{key}:\n" + "\n".join(stats_summary(value)) for key, value in stats.items()]
    report = (
        f"# GPU check\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, numpy {np.__version__}; closed loop, {options.duration_s:.0f} s per point "
        f"after {options.warmup_s:.0f} s warm-up; one journal text per request.\n\n"
        + format_table(rows, COLUMNS)
        + "\n"
        + "\n".join(lines)
        + "\n"
    )
    (options.out / "results.md").write_text(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for tables, statistics and plots")
    parser.add_argument("--wheels", type=Path, help="folder of carried wheels to install first")
    parser.add_argument("--models", default="bert-base", help="comma-separated: bert-base, minilm")
    parser.add_argument("--concurrency", default="1,32,256,1024")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument(
        "--gateway-workers", default="1", help="comma-separated gateway process counts for (c)"
    )
    parser.add_argument("--stack-only", action="store_true", help="measure (c) alone")
    parser.add_argument("--smoke", action="store_true", help="one short point per system (about a minute)")
    args = parser.parse_args()
    from load_tests.loadgen import allow_connections

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.wheels and not os.environ.get(SITE_ENV):
        python = make_environment(args.wheels)
        env = {**os.environ, SITE_ENV: str(python)}
        os.execve(python, [str(python), "-m", "load_tests.gpu.gpu_check", *sys.argv[1:]], env)
    options = CheckOptions(
        out=args.out,
        models=tuple(m.strip() for m in args.models.split(",")),
        concurrency=(1, 32) if args.smoke else tuple(int(c) for c in args.concurrency.split(",")),
        duration_s=3.0 if args.smoke else args.duration,
        warmup_s=1.0 if args.smoke else min(3.0, args.duration / 2),
        batches=(1, 32) if args.smoke else (1, 32, 256),
        gateway_workers=tuple(int(w) for w in args.gateway_workers.split(",")),
        baselines=not args.stack_only,
    )
    allow_connections(max(options.concurrency) * 2)  # the servers started from here inherit the limit
    print(run_check(options))


if __name__ == "__main__":
    main()
