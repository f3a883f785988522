"""`add_words` on the embedded CTranslate2 tiny.en, without Triton: a batch of windows, one of them silent."""

from __future__ import annotations

import ctranslate2
import numpy as np
import pytest
import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer

from exporters.whisper.ct2_export import embedded_model_dir
from samo.generation.whisper import segments_with_tokens
from samo.generation.whisper_words import add_words
from tests.speech import RATE, jfk_samples

FRAMES = 3000


def _mel(extractor: FeatureExtractor, clip: np.ndarray) -> np.ndarray:
    """As the CTranslate2 Triton model computes them: the clip's frames, zero frames up to 30 s."""
    features = extractor(clip)
    return np.pad(features, ((0, 0), (0, max(0, FRAMES - features.shape[-1]))))[:, :FRAMES]


def test_a_batch_of_windows_gets_words_inside_segments_and_a_silent_one_none() -> None:
    folder = embedded_model_dir()
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8", intra_threads=2)
    tokenizer = Tokenizer(
        tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")), False, "transcribe", "en"
    )
    extractor = FeatureExtractor(feature_size=model.n_mels)
    speech = jfk_samples().astype(np.float32) / 32768
    clips = [speech, np.zeros(RATE, dtype=np.float32), speech[3 * RATE : 8 * RATE]]
    mel = np.stack([_mel(extractor, clip) for clip in clips])
    encoded = model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
    results = model.generate(encoded, [tokenizer.sot_sequence] * len(clips), beam_size=1)
    windows = [
        [
            {"start": start, "end": end, "text": text, "tokens": tokens}
            for start, end, text, tokens in segments_with_tokens(
                result.sequences_ids[0],
                tokenizer.timestamp_begin,
                tokenizer.eot,
                tokenizer.decode,
                clip.size / RATE,
            )
        ]
        for clip, result in zip(clips, results, strict=True)
    ]
    assert windows[0] and windows[2]
    windows[1] = []  # silence: nothing to align, and the rest of the batch still is
    add_words(
        model,
        tokenizer,
        np.asarray(encoded),
        windows,
        [c.size // extractor.hop_length for c in clips],
        extractor.hop_length,
        extractor.sampling_rate,
    )
    for clip, window in zip(clips, windows, strict=True):
        previous = 0.0
        for segment in window:
            assert "".join(w["word"] for w in segment["words"]).strip() == segment["text"]
            for word in segment["words"]:
                assert previous <= word["start"] <= word["end"] <= segment["end"] <= clip.size / RATE
                assert segment["start"] <= word["start"]
                previous = word["end"]
    assert windows[0][0]["words"][0]["word"] == " And"
    assert windows[0][0]["words"][0]["start"] == pytest.approx(0.0, abs=0.3)
