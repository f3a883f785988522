"""One writer for Triton model folders: `<repository>/<name>/` with `config.pbtxt`, the model card,
the version folder `1/` (weights, and `model.py` copied from `samo/triton/backends/` for Python-backend
models) and, for text models, the tokenizer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from samo.contracts.tensors import ModelContract
from samo.contracts.text import TOKENIZER_DIR
from samo.triton.backends import backend_file
from samo.triton.model_config import (
    ServingOptions,
    build_model_config,
    write_model_config,
    write_warmup_files,
)

MODEL_VERSION = "1"
MODEL_FILE = "model.py"


class ModelCard(Protocol):
    def write(self, model_dir: Path) -> None: ...


@dataclass(frozen=True)
class ModelFolder:
    repository: Path
    name: str

    @property
    def path(self) -> Path:
        return self.repository / self.name

    @property
    def version_dir(self) -> Path:
        return self.path / MODEL_VERSION

    def create(self) -> ModelFolder:
        """An empty folder with its version folder; what an earlier export left there goes."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.version_dir.mkdir(parents=True)
        return self

    @contextmanager
    def removed_on_error(self) -> Iterator[ModelFolder]:
        """The folder is removed when the block raises, so a failed export leaves nothing to serve."""
        try:
            yield self
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def add(self, source: Path, name: str | None = None) -> Path:
        """Copies a file into the version folder."""
        target = self.version_dir / (name or source.name)
        shutil.copyfile(source, target)
        return target

    def finish(
        self,
        *,
        contract: ModelContract,
        serving: ServingOptions,
        card: ModelCard | None,
        backend: str,
        tokenizer: Any | None = None,
    ) -> Path:
        """Writes what serving reads: `model.py` (the `samo.triton.backends` module `backend`, for the
        Python backend), config.pbtxt from the contract, and the card and the tokenizer where given."""
        if serving.backend == "python":
            shutil.copyfile(backend_file(backend), self.version_dir / MODEL_FILE)
        write_model_config(self.path, build_model_config(self.name, contract, serving))
        write_warmup_files(self.path, serving)
        if card is not None:
            card.write(self.path)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(self.path / TOKENIZER_DIR))
        return self.path
