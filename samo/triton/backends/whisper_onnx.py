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

import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor

from samo.contracts.whisper import AUDIO, OPTIONS, RESULT, SAMPLE_RATE, WhisperContract
from samo.generation.onnx_seq2seq import OnnxSeq2Seq, instance_providers
from samo.generation.whisper import (
    WhisperGenerator,
    WhisperVocabulary,
    WindowDecode,
    log_mel_windows,
    read_window,
)
from samo.triton.backends.base import Backend
from samo.triton.devices import require_cuda_provider


class TritonPythonModel(Backend):
    contract = WhisperContract().model

    def setup(self):
        folder = self.version_dir
        threads = self.threads("intra_threads", "2")
        self.model = OnnxSeq2Seq(folder, threads=threads, providers=instance_providers(self.args))
        # ONNX Runtime falls back to the CPU silently; a GPU instance must not load that way.
        sessions = (self.model.encoder, self.model.first, self.model.next)
        require_cuda_provider(self.instance, [session.get_providers() for session in sessions])
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.vocabulary = WhisperVocabulary.from_folder(folder, tokenizer)
        self.generator = WhisperGenerator(self.model, self.vocabulary, tokenizer)
        mels = json.loads((folder / "preprocessor_config.json").read_text())["feature_size"]
        self.features = FeatureExtractor(feature_size=mels)

    def read(self, request):
        audio, options = read_window(self.input(request, AUDIO), self.input(request, OPTIONS))
        if options.temperature > 0:
            raise ValueError("temperature > 0 (sampling) is not supported by the ONNX backend; use 0")
        if options.word_timestamps:
            raise ValueError("word timestamps are not supported by the ONNX backend")
        if (
            options.language
            and self.vocabulary.multilingual
            and options.language not in self.vocabulary.languages
        ):
            raise ValueError(f"language `{options.language}` is not supported by this model")
        decode = WindowDecode(
            language=options.language or None,
            task=options.task,
            beam_size=options.beam_size,
            initial_prompt=options.initial_prompt or None,
            without_timestamps=options.without_timestamps,
        )
        return audio, decode

    def run(self, items, senders=None):
        # One padded feature batch and one encoder run for every window of the dynamic batch.
        features = log_mel_windows(self.features, [audio for audio, _ in items])
        encoded = self.model.encode_features(features)
        results = self.generator.generate(encoded, [decode for _, decode in items])
        return [
            self.json_response(RESULT, self.generator.transcript(tokens, audio.size / SAMPLE_RATE))
            for (audio, _), tokens in zip(items, results, strict=True)
        ]
