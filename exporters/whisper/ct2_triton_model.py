"""Triton Python-backend model: Whisper on CTranslate2 with cross-request batching.

Copied into the model repository as `<name>/1/model.py`, beside the CTranslate2 model in `1/ct2/`.
Every window that the dynamic batcher hands to one `execute` call is decoded in one batched
`generate` call per group of equal generate settings (beam size, temperature); prompts (language,
task, initial prompt, timestamps) may differ inside a group. Log-mel features are computed here,
next to the model, with faster-whisper's extractor. Segments come from `segments_with_tokens`, shared
with the ONNX backend (`samo/generation/whisper.py`; the Triton image has SAMO on its PYTHONPATH).
Windows that ask for word timestamps are aligned after decoding (`samo/generation/whisper_words.py`:
faster-whisper's alignment, one `align` call per start sequence); a group with such a window is
encoded once and both `generate` and `align` read the encoder output.
"""

import json
from pathlib import Path

import ctranslate2
import numpy as np
import tokenizers
import triton_python_backend_utils as pb_utils
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer

from samo.generation.whisper import read_window, segments_with_tokens
from samo.generation.whisper_words import add_words

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
MAX_PROMPT_TOKENS = 223  # Whisper's limit: half the 448-token context


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.audio_name = config["input"][0]["name"]
        self.options_name = config["input"][1]["name"]
        self.result_name = config["output"][0]["name"]
        model_dir = Path(args["model_repository"]) / args["model_version"] / "ct2"
        on_gpu = args.get("model_instance_kind") == "GPU"
        self.model = ctranslate2.models.Whisper(
            str(model_dir),
            device="cuda" if on_gpu else "cpu",
            device_index=int(args.get("model_instance_device_id", 0)) if on_gpu else 0,
            compute_type=params.get("compute_type", "default"),
            intra_threads=int(params.get("intra_threads", "2")),
            inter_threads=1,
        )
        self.hf_tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.features = FeatureExtractor(feature_size=self.model.n_mels)

    def execute(self, requests):
        responses = [None] * len(requests)
        windows = []
        for index, request in enumerate(requests):
            try:
                windows.append((index, *self._read(request)))
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"bad request: {exc}")
                )
        if windows:
            mel = np.stack([self._mel(audio) for _, audio, _ in windows])
            languages = self._languages(mel, windows)
            groups = {}
            for position, (_, _, options) in enumerate(windows):
                # CTranslate2 decodes a batch together only when its prompts have the same number of
                # tokens after <|startoftranscript|>: <|notimestamps|> is one of them.
                key = (
                    int(options.get("beam_size", 5)),
                    float(options.get("temperature", 0.0)),
                    bool(options.get("without_timestamps")),
                )
                groups.setdefault(key, []).append(position)
            for (beam_size, temperature, _), positions in groups.items():
                self._decode(mel, windows, languages, positions, beam_size, temperature, responses)
        return responses

    def _read(self, request):
        audio, options = read_window(
            pb_utils.get_input_tensor_by_name(request, self.audio_name).as_numpy(),
            pb_utils.get_input_tensor_by_name(request, self.options_name).as_numpy(),
        )
        return audio, options

    def _mel(self, audio):
        features = self.features(audio)
        frames = WINDOW_SAMPLES // self.features.hop_length
        if features.shape[-1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[-1])))
        return features[:, :frames]

    def _languages(self, mel, windows):
        """Requested language, or the detected one with its probability (multilingual models)."""
        if not self.model.is_multilingual:
            return [("en", 1.0)] * len(windows)
        languages = [(options.get("language"), 1.0) for _, _, options in windows]
        unknown = [i for i, (language, _) in enumerate(languages) if not language]
        if unknown:
            detected = self.model.detect_language(ctranslate2.StorageView.from_array(mel[unknown]))
            for i, candidates in zip(unknown, detected, strict=True):
                token, probability = candidates[0]
                languages[i] = (token[2:-2], float(probability))
        return languages

    def _tokenizer(self, options, language):
        return Tokenizer(
            self.hf_tokenizer,
            self.model.is_multilingual,
            task=options.get("task", "transcribe"),
            language=language,
        )

    def _prompt(self, tokenizer, options):
        prompt = []
        if options.get("initial_prompt"):
            previous = tokenizer.encode(" " + options["initial_prompt"].strip())
            prompt = [tokenizer.sot_prev, *previous[-MAX_PROMPT_TOKENS:]]
        prompt.extend(tokenizer.sot_sequence)
        if options.get("without_timestamps"):
            prompt.append(tokenizer.no_timestamps)
        return prompt

    def _decode(self, mel, windows, languages, positions, beam_size, temperature, responses):
        tokenizers_ = [self._tokenizer(windows[p][2], languages[p][0]) for p in positions]
        prompts = [self._prompt(tok, windows[p][2]) for tok, p in zip(tokenizers_, positions, strict=True)]
        sampling = {"sampling_temperature": temperature, "sampling_topk": 0} if temperature > 0 else {}
        wants_words = [bool(windows[p][2].get("word_timestamps")) for p in positions]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[positions]))
        encoded = None
        if any(wants_words):  # encode once: generate and align both read the encoder output
            features = self.model.encode(features, to_cpu=True)
            encoded = np.asarray(features)
        results = self.model.generate(
            features,
            prompts,
            beam_size=1 if temperature > 0 else beam_size,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            max_length=448,
            **sampling,
        )
        bodies = []
        for tokenizer, position, result in zip(tokenizers_, positions, results, strict=True):
            _, audio, _ = windows[position]
            duration = audio.size / SAMPLE_RATE
            score = float(result.scores[0]) if result.scores else 0.0
            segments = [
                {
                    "start": start,
                    "end": end,
                    "text": text,
                    "avg_logprob": score,
                    "no_speech_prob": float(result.no_speech_prob),
                    "tokens": tokens,
                }
                for start, end, text, tokens in segments_with_tokens(
                    result.sequences_ids[0],
                    tokenizer.timestamp_begin,
                    tokenizer.eot,
                    tokenizer.decode,
                    duration,
                )
            ]
            language, probability = languages[position]
            bodies.append({"language": language, "language_probability": probability, "segments": segments})
        if encoded is not None:
            self._add_words(encoded, windows, positions, tokenizers_, wants_words, bodies)
        for position, body in zip(positions, bodies, strict=True):
            for segment in body["segments"]:
                del segment["tokens"]
                segment["start"], segment["end"] = round(segment["start"], 3), round(segment["end"], 3)
            tensor = pb_utils.Tensor(
                self.result_name, np.array([[json.dumps(body).encode()]], dtype=np.object_)
            )
            responses[windows[position][0]] = pb_utils.InferenceResponse(output_tensors=[tensor])

    def _add_words(self, encoded, windows, positions, tokenizers_, wants_words, bodies):
        """Word timestamps for the windows that ask for them: one `align` call per start sequence."""
        by_start = {}
        for row, (tokenizer, wanted) in enumerate(zip(tokenizers_, wants_words, strict=True)):
            if wanted:
                by_start.setdefault(tuple(tokenizer.sot_sequence), []).append(row)
        hop = self.features.hop_length
        for rows in by_start.values():
            add_words(
                self.model,
                tokenizers_[rows[0]],
                encoded[rows],
                [bodies[row]["segments"] for row in rows],
                [min(windows[positions[row]][1].size // hop, WINDOW_SAMPLES // hop) for row in rows],
                hop,
                self.features.sampling_rate,
            )
            for row in rows:
                for segment in bodies[row]["segments"]:
                    segment.setdefault("words", [])
