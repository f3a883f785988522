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
    Python backend, tensors through DLPack), the coalescing gateway with one process and with as many
    as `samo serve` starts (half the cores), then with 2 and 4 model instances per GPU;
(d) Infinity (`--infinity-python`: a python with `infinity-emb` installed), its torch engine in fp16
    on the same GPU, at its default batch size, the peer of issue 20,
each driven by the light load generator closed loop at every concurrency asked for, then open loop at
half the system's best closed-loop rate. Every row has the GPU's mean utilization while it ran and the
load generator's CPU per answered request. Written to DIR: `results.md` (tables), `triton_stats.json`
(Triton's queue and compute statistics), `nvidia_smi.csv` (readings every second), `throughput.png` and
`latency.png`. On a CPU-only machine the same run uses the CPU in fp32 (the rehearsal).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.gpu.utilization import gpu_utilization
from samo.cpus import gateway_workers

logger = logging.getLogger("load_tests.gpu")

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_ENV = "SAMO_GPU_CHECK_ENV"
COLUMNS = (
    "model",
    "system",
    "load",
    "throughput_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "gpu_busy_pct",
    "client_cpu_ms",
)
NAIVE = "(a) FastAPI + PyTorch, per request"
IN_PROCESS = "(b) PyTorch batched, in-process"
STACK = "(c) gateway + Triton (gpu-torch)"
INFINITY = "(d) Infinity torch"
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
    models: tuple[str, ...] = ("bert-base", "minilm")
    concurrency: tuple[int, ...] = (1, 32, 256, 1024)
    duration_s: float = 10.0
    warmup_s: float = 3.0
    batches: tuple[int, ...] = (1, 32, 256)
    gateway_workers: tuple[int, ...] = (1,)
    instances: tuple[int, ...] = (1,)
    """Model instances per GPU, measured with the most gateway processes of `gateway_workers`."""
    open_loop_fraction: float = 0.5
    """The open-loop row's rate, as a fraction of the system's best closed-loop rate; 0 skips it."""
    baselines: bool = True
    """(a) and (b) as well as (c); off to rerun the stack alone in a short GPU window."""
    infinity_python: Path | None = None
    """A python with `infinity-emb` installed: the (d) rows; none without it."""


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
        return measure_rows(name, NAIVE, f"http://127.0.0.1:{port}/v1/emotions", texts, options)


def measure_rows(
    name: str,
    system: str,
    url: str,
    texts: list[str],
    options: CheckOptions,
    body: Callable[[str], dict[str, Any]] | None = None,
) -> list[dict]:
    """Closed loop at each concurrency, then open loop at `open_loop_fraction` of the best rate, one text
    per request (`body`: its JSON, the gateway's by default); each row with the GPU's mean utilization
    and the load generator's CPU per answer."""
    from load_tests.loadgen import LoadResult, run_load_sync, run_open_loop_sync
    from load_tests.peers import stack_body

    bodies = [json.dumps((body or stack_body)(text)).encode() for text in texts]

    def row(load: str, run: Callable[[], LoadResult]) -> dict:
        with gpu_utilization() as gpu:
            began = time.process_time()
            result = run()
            client_cpu_s = time.process_time() - began
        logger.info("%s %s %s: %.1f texts/s", name, system, load, result.throughput)
        return {
            "model": name,
            "system": system,
            "load": load,
            "throughput_per_s": result.throughput,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": result.errors,
            "gpu_busy_pct": gpu.mean_percent,
            # warm-up included on both sides of the division: the generator's cost per request it sent
            "client_cpu_ms": 1000 * client_cpu_s / max(result.requests, 1),
        }

    rows = [
        row(
            f"c={clients}",
            functools.partial(
                run_load_sync,
                url,
                bodies,
                concurrency=clients,
                duration_s=options.duration_s,
                warmup_s=options.warmup_s,
            ),
        )
        for clients in options.concurrency
    ]
    best = max((r["throughput_per_s"] for r in rows), default=0.0)
    if options.open_loop_fraction > 0 and best > 0:
        rate = best * options.open_loop_fraction
        rows.append(
            row(
                f"open {rate:.0f}/s",
                functools.partial(
                    run_open_loop_sync,
                    url,
                    bodies,
                    rate_per_s=rate,
                    duration_s=options.duration_s,
                    warmup_s=options.warmup_s,
                    max_connections=max(options.concurrency),
                ),
            )
        )
    return rows


def stack_system(workers: int, instances: int) -> str:
    system = STACK if workers == 1 else STACK.replace("gateway", f"gateway x{workers}")
    return system if instances == 1 else f"{system}, {instances} instances"


def set_instances(repository: Path, instances: int) -> None:
    """Every model of `repository` with `instances` copies per GPU (its export's other settings kept)."""
    from samo.triton.model_config import read_model_config, write_model_config

    for model_dir in sorted(p.parent for p in repository.glob("*/config.pbtxt")):
        config = read_model_config(model_dir)
        for group in config.instance_group:
            group.count = instances
        write_model_config(model_dir, config)


def measure_stack(
    name: str, repository: Path, texts: list[str], options: CheckOptions, workers: int, instances: int
) -> tuple[list[dict], dict]:
    from load_tests.processes import gateway_stack

    set_instances(repository, instances)
    settings = {"SAMO_WORKERS": str(workers), "SAMO_ADMISSION_BUDGET": str(ADMISSION_BUDGET)}
    with gateway_stack(repository, settings=settings) as stack:
        rows = measure_rows(
            name, stack_system(workers, instances), f"{stack.gateway_url}/v1/emotions", texts, options
        )
        # Triton's addresses are host:port (as tritonclient takes them).
        with urllib.request.urlopen(
            f"http://{stack.triton_http_url}/v2/models/stats", timeout=30
        ) as response:
            stats = json.loads(response.read())
    return rows, stats


def measure_infinity(
    name: str, checkpoint: Path, texts: list[str], options: CheckOptions, workdir: Path
) -> list[dict]:
    """(d): Infinity's torch engine on the checkpoint, fp16 on the GPU (fp32 in the CPU rehearsal), at
    its default batch size; a failure to start is logged and leaves its rows out."""
    from load_tests.peers import PEER_FAILURES, infinity_body, infinity_server, peer_checkpoint

    assert options.infinity_python is not None
    venv = options.infinity_python.parent.parent
    folder = peer_checkpoint(checkpoint, None, workdir / f"{name}-infinity-checkpoint")
    where = device()
    dtype = "float16" if where == "cuda" else "float32"
    system = f"{INFINITY} {'fp16' if where == 'cuda' else 'fp32'}"
    try:
        with infinity_server(
            folder, "torch", venv, workdir / f"{name}-hf-cache", device=where, dtype=dtype
        ) as peer:
            return measure_rows(name, system, peer.url, texts, options, infinity_body)
    except PEER_FAILURES as error:
        logger.warning("%s: Infinity failed: %s", name, error)
        return []


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
            # Closed-loop points only; a point that failed has no place on a log axis.
            answered = [r for r in points if r["load"].startswith("c=") and r["throughput_per_s"] > 0]
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


def stack_layouts(options: CheckOptions) -> list[tuple[int, int]]:
    """(gateway processes, instances): each process count with one instance, then each other instance
    count with the most processes."""
    most = max(options.gateway_workers)
    layouts = [(workers, 1) for workers in dict.fromkeys(options.gateway_workers)]
    return layouts + [(most, n) for n in options.instances if (most, n) not in layouts]


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
            for workers, instances in stack_layouts(options):
                more, stats[f"{name}, {workers} gateway workers, {instances} instances"] = measure_stack(
                    name, repository, texts, options, workers, instances
                )
                stack_rows += more
            if options.baselines:
                rows += measure_in_process(name, checkpoint, texts, options)
                rows += measure_naive(name, checkpoint, texts, options)
            rows += stack_rows
            if options.infinity_python is not None:
                rows += measure_infinity(name, checkpoint, texts, options, Path(workdir))
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
    parser.add_argument("--models", default="bert-base,minilm", help="comma-separated: bert-base, minilm")
    parser.add_argument("--concurrency", default="1,32,256,1024")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument(
        "--gateway-workers",
        default=f"1,{gateway_workers(beside_triton=True)}",
        help="comma-separated gateway process counts for (c); default 1 and as many as `samo serve` starts",
    )
    parser.add_argument(
        "--instances", default="1,2,4", help="comma-separated model instances per GPU for (c)"
    )
    parser.add_argument("--infinity-python", type=Path, help="a python with infinity-emb: the (d) rows")
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
        instances=(1,) if args.smoke else tuple(int(n) for n in args.instances.split(",")),
        baselines=not args.stack_only,
        infinity_python=args.infinity_python,
    )
    allow_connections(max(options.concurrency) * 2)  # the servers started from here inherit the limit
    print(run_check(options))


if __name__ == "__main__":
    main()
