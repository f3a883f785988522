"""Triton Python-backend model: Whisper exported to ONNX, decoded by SAMO's shared seq2seq engine.

Copied into the model repository as `<name>/1/model.py`, beside optimum's `encoder_model.onnx`,
`decoder_model.onnx`, `decoder_with_past_model.onnx`, the tokenizer and the generation config. Every
window the dynamic batcher hands to one `execute` call is featurized and encoded in one batch, then
decoded in one `generate` call (the engine splits by beam width and prompt length). Log-mel features
are computed here as transformers' `WhisperFeatureExtractor` computes them for `generate` (audio
padded to 30 s), with faster-whisper's numpy extractor (`log_mel_windows`). Sampling (temperature > 0)
is refused: the engine does greedy and beam search only. So are word timestamps (no alignment heads
or DTW here; the CTranslate2 backend computes them).
"""

import json
from pathlib import Path

import numpy as np
import tokenizers
import triton_python_backend_utils as pb_utils
from faster_whisper.feature_extractor import FeatureExtractor

from samo.generation.onnx_seq2seq import OnnxSeq2Seq, instance_providers
from samo.generation.whisper import (
    SAMPLE_RATE,
    WhisperGenerator,
    WhisperVocabulary,
    WindowDecode,
    log_mel_windows,
    read_window,
)

MAX_BEAMS = 10


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.audio_name = config["input"][0]["name"]
        self.options_name = config["input"][1]["name"]
        self.result_name = config["output"][0]["name"]
        folder = Path(args["model_repository"]) / args["model_version"]
        threads = int(params.get("intra_threads", "2"))
        self.model = OnnxSeq2Seq(folder, threads=threads, providers=instance_providers(args))
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.generator = WhisperGenerator(
            self.model, WhisperVocabulary.from_folder(folder, tokenizer), tokenizer
        )
        mels = json.loads((folder / "preprocessor_config.json").read_text())["feature_size"]
        self.features = FeatureExtractor(feature_size=mels)

    def execute(self, requests):
        responses = [None] * len(requests)
        windows = []
        for index, request in enumerate(requests):
            try:
                windows.append((index, *self._read(request)))
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                responses[index] = _error(f"bad request: {exc}")
        if windows:
            try:
                self._decode(windows, responses)
            except ValueError as exc:  # an option the model cannot honour (an unknown language)
                for index, _, _ in windows:
                    responses[index] = _error(f"bad request: {exc}")
        return responses

    def _read(self, request):
        audio, options = read_window(
            pb_utils.get_input_tensor_by_name(request, self.audio_name).as_numpy(),
            pb_utils.get_input_tensor_by_name(request, self.options_name).as_numpy(),
        )
        if float(options.get("temperature") or 0.0) > 0:
            raise ValueError("temperature > 0 (sampling) is not supported by the ONNX backend; use 0")
        if options.get("word_timestamps"):
            raise ValueError("word timestamps are not supported by the ONNX backend")
        beam_size = int(options.get("beam_size", 5))
        if not 1 <= beam_size <= MAX_BEAMS:
            raise ValueError(f"beam_size must be between 1 and {MAX_BEAMS}")
        decode = WindowDecode(
            language=options.get("language") or None,
            task="translate" if options.get("task") == "translate" else "transcribe",
            beam_size=beam_size,
            initial_prompt=options.get("initial_prompt") or None,
            without_timestamps=bool(options.get("without_timestamps", False)),
        )
        return audio, decode

    def _decode(self, windows, responses):
        # One padded feature batch and one encoder run for every window of the dynamic batch.
        features = log_mel_windows(self.features, [audio for _, audio, _ in windows])
        encoded = self.model.encode_features(features)
        results = self.generator.generate(encoded, [decode for _, _, decode in windows])
        for (index, audio, _), tokens in zip(windows, results, strict=True):
            body = self.generator.transcript(tokens, audio.size / SAMPLE_RATE)
            tensor = pb_utils.Tensor(
                self.result_name, np.array([[json.dumps(body).encode()]], dtype=np.object_)
            )
            responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
