"""Triton Python-backend model: Whisper on CTranslate2 with cross-request batching.

Copied into the model repository as `<name>/1/model.py`, beside the CTranslate2 model in `1/ct2/`.
Every window that the dynamic batcher hands to one `execute` call is decoded in one batched
`generate` call per group of equal generate settings (beam size, temperature, timestamps); prompts
(language, task, initial prompt) may differ inside a group. Log-mel features are computed here, next
to the model, with faster-whisper's extractor. Segments come from `segments_with_tokens`, shared with
the ONNX backend (`samo/generation/whisper.py`). Windows that ask for word timestamps are aligned
after decoding (`samo/generation/whisper_words.py`: faster-whisper's alignment, one `align` call per
start sequence); a group with such a window is encoded once and both `generate` and `align` read the
encoder output. The decoder context (`context_tokens`, from the model's position table) is written
into config.pbtxt by the exporter.
"""

import math

import ctranslate2
import numpy as np
import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer

from samo.contracts.whisper import (
    AUDIO,
    CT2_DIR,
    OPTIONS,
    RESULT,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    WhisperContract,
    max_prompt_tokens,
)
from samo.generation.whisper import TIME_PRECISION, read_window, segments_with_tokens
from samo.generation.whisper_coverage import MIN_UNCOVERED_S, gaps
from samo.generation.whisper_words import add_words
from samo.triton.backends.base import Backend
from samo.triton.devices import require_cuda_devices


class TritonPythonModel(Backend):
    contract = WhisperContract().model

    def setup(self):
        model_dir = self.version_dir / CT2_DIR
        on_gpu = self.instance.on_gpu
        # A CTranslate2 without CUDA support, or no visible GPU: fail the load with the reason.
        require_cuda_devices(
            self.instance, "CTranslate2", ctranslate2.get_cuda_device_count() if on_gpu else 0
        )
        self.model = ctranslate2.models.Whisper(
            str(model_dir),
            device="cuda" if on_gpu else "cpu",
            device_index=int(self.args.get("model_instance_device_id", 0)) if on_gpu else 0,
            compute_type=self.parameter("compute_type", "default"),
            intra_threads=self.threads("intra_threads", "2"),
            inter_threads=1,
        )
        self.context_tokens = int(self.parameters["context_tokens"])
        self.hf_tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.features = FeatureExtractor(feature_size=self.model.n_mels)

    def read(self, request):
        return read_window(self.input(request, AUDIO), self.input(request, OPTIONS))

    def run(self, items, senders=None):
        responses = [None] * len(items)
        mel = [self._mel(audio, options) for audio, options in items]
        languages = self._languages(mel, items)
        groups = {}
        for position, (_, options) in enumerate(items):
            # CTranslate2 decodes a batch together only when its prompts have the same number of
            # tokens after <|startoftranscript|>: <|notimestamps|> is one of them. Windows of one
            # encoder length only (`window_s`): padded to a neighbour's length, a window would decode
            # differently from alone.
            key = (
                options.beam_size,
                options.temperature,
                options.without_timestamps,
                mel[position].shape[-1],
            )
            groups.setdefault(key, []).append(position)
        for (beam_size, temperature, _, _), positions in groups.items():
            self._decode(mel, items, languages, positions, beam_size, temperature, responses)
        return responses

    @property
    def _window_frames(self):
        """Log-mel frames of Whisper's 30 s window."""
        return WINDOW_SAMPLES // self.features.hop_length

    def _mel(self, audio, options):
        """The window's log-mel frames: its audio padded to the 30 s window, or to `window_s` (whole
        seconds, never less than the audio)."""
        features = self.features(audio)
        frames = self._window_frames
        if options.window_s is not None:
            seconds = math.ceil(max(options.window_s, audio.size / SAMPLE_RATE))
            frames = min(frames, seconds * SAMPLE_RATE // self.features.hop_length)
        if features.shape[-1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[-1])))
        return features[:, :frames]

    def _languages(self, mel, items):
        """Requested language, or the detected one with its probability (multilingual models)."""
        if not self.model.is_multilingual:
            return [("en", 1.0)] * len(items)
        languages = [(options.language, 1.0) for _, options in items]
        unknown = [i for i, (language, _) in enumerate(languages) if not language]
        if unknown:
            # From the 30 s window, whatever `window_s` the decode uses: as faster-whisper detects.
            window = self._window_frames
            whole = [np.pad(mel[i], ((0, 0), (0, window - mel[i].shape[-1]))) for i in unknown]
            detected = self.model.detect_language(ctranslate2.StorageView.from_array(np.stack(whole)))
            for i, candidates in zip(unknown, detected, strict=True):
                token, probability = candidates[0]
                languages[i] = (token[2:-2], float(probability))
        return languages

    def _tokenizer(self, options, language):
        return Tokenizer(self.hf_tokenizer, self.model.is_multilingual, task=options.task, language=language)

    def _prompt(self, tokenizer, options):
        prompt = []
        if options.initial_prompt:
            previous = tokenizer.encode(" " + options.initial_prompt.strip())
            prompt = [tokenizer.sot_prev, *previous[-max_prompt_tokens(self.context_tokens) :]]
        prompt.extend(tokenizer.sot_sequence)
        if options.without_timestamps:
            prompt.append(tokenizer.no_timestamps)
        return prompt + prefix_tokens(tokenizer, options)

    def _decode(self, mel, items, languages, positions, beam_size, temperature, responses):
        tokenizers_ = [self._tokenizer(items[p][1], languages[p][0]) for p in positions]
        prompts = [self._prompt(tok, items[p][1]) for tok, p in zip(tokenizers_, positions, strict=True)]
        sampling = {"sampling_temperature": temperature, "sampling_topk": 0} if temperature > 0 else {}
        wants_words = [items[p][1].word_timestamps for p in positions]
        wants_cover = [bool(items[p][1].speech) and not items[p][1].without_timestamps for p in positions]
        features = ctranslate2.StorageView.from_array(np.stack([mel[p] for p in positions]))
        encoded = None
        if any(wants_words) or any(wants_cover):
            # Encode once: generate, the gaps' second decode and align all read the encoder output.
            features = self.model.encode(features, to_cpu=True)
            encoded = np.asarray(features)
        generate = {
            "beam_size": 1 if temperature > 0 else beam_size,
            "return_scores": True,
            "return_no_speech_prob": True,
            "suppress_blank": True,
            "suppress_tokens": [-1],
            "max_length": self.context_tokens,
            **sampling,
        }
        results = self.model.generate(features, prompts, **generate)
        bodies = []
        for tokenizer, position, result in zip(tokenizers_, positions, results, strict=True):
            audio, options = items[position]
            # CTranslate2 answers the forced prefix's tokens too: the caller knows them.
            tokens = result.sequences_ids[0][len(prefix_tokens(tokenizer, options)) :]
            segments = _segments(result, tokens, tokenizer, audio.size / SAMPLE_RATE)
            language, probability = languages[position]
            bodies.append({"language": language, "language_probability": probability, "segments": segments})
        if any(wants_cover):
            self._cover_gaps(encoded, items, positions, tokenizers_, prompts, wants_cover, bodies, generate)
        if encoded is not None and any(wants_words):
            self._add_words(encoded, items, positions, tokenizers_, wants_words, bodies)
        for position, body in zip(positions, bodies, strict=True):
            for segment in body["segments"]:
                del segment["tokens"]
                segment["start"], segment["end"] = round(segment["start"], 3), round(segment["end"], 3)
            responses[position] = self.json_response(RESULT, body)

    def _cover_gaps(self, encoded, items, positions, tokenizers_, prompts, wants_cover, bodies, generate):
        """Speech the VAD heard that no segment covers, decoded once more from the same encoder output
        with the decoder started at the gap (its timestamp as the last prompt token), all gaps of the
        batch in one `generate` call: a skipped sentence costs a few decoder steps instead of a window of
        its own. Segments that start inside their gap join the window's, in order."""
        rows, gap_prompts, spans = [], [], []
        for row, position in enumerate(positions):
            if not wants_cover[row]:
                continue
            audio, options = items[position]
            duration = audio.size / SAMPLE_RATE
            covered = [(segment["start"], segment["end"]) for segment in bodies[row]["segments"]]
            for pieces in gaps(options.speech, covered, 0.0, duration, MIN_UNCOVERED_S):
                start, end = pieces[0][0], pieces[-1][1]
                timestamp = tokenizers_[row].timestamp_begin + round(start / TIME_PRECISION)
                rows.append(row)
                gap_prompts.append([*prompts[row], timestamp])
                spans.append((end, timestamp))
        if not rows:
            return
        results = self.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[rows])), gap_prompts, **generate
        )
        changed = set()
        for row, (end, timestamp), result in zip(rows, spans, results, strict=True):
            duration = items[positions[row]][0].size / SAMPLE_RATE
            tokens = [timestamp, *result.sequences_ids[0]]
            for segment in _segments(result, tokens, tokenizers_[row], duration):
                if segment["start"] < end:  # past the gap, the decoder goes over covered speech again
                    bodies[row]["segments"].append(segment)
                    changed.add(row)
        for row in changed:
            bodies[row]["segments"].sort(key=lambda segment: (segment["start"], segment["end"]))

    def _add_words(self, encoded, items, positions, tokenizers_, wants_words, bodies):
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
                [min(items[positions[row]][0].size // hop, WINDOW_SAMPLES // hop) for row in rows],
                hop,
                self.features.sampling_rate,
            )
            for row in rows:
                for segment in bodies[row]["segments"]:
                    segment.setdefault("words", [])


def prefix_tokens(tokenizer, options):
    """The forced prefix's tokens (`DecodeOptions.prefix`), which CTranslate2 answers again before the rest."""
    return tokenizer.encode(" " + options.prefix.strip()) if options.prefix else []


def _segments(result, tokens, tokenizer, duration):
    """A generate result's segments (their text tokens kept for word alignment), scored as a whole."""
    score = float(result.scores[0]) if result.scores else 0.0
    return [
        {
            "start": start,
            "end": end,
            "text": text,
            "avg_logprob": score,
            "no_speech_prob": float(result.no_speech_prob),
            "tokens": text_tokens,
        }
        for start, end, text, text_tokens in segments_with_tokens(
            tokens, tokenizer.timestamp_begin, tokenizer.eot, tokenizer.decode, duration
        )
    ]
