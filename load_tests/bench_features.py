"""Where to compute Whisper's log-mel features: time per window for each extractor, and bytes on the wire.

    python -m load_tests.bench_features [--repeats 20] [--output load_tests/results/whisper.md]

Extractors, on real speech cut from the JFK clip (looped for longer windows):
- transformers' `WhisperFeatureExtractor` as `generate` is fed (pads audio to 30 s first), with its
  torch STFT (used whenever torch is importable) and with its numpy STFT;
- faster-whisper's `FeatureExtractor` as the CTranslate2 model uses it (features of the clip only,
  then zero frames up to 3000), and the same extractor on audio padded to 30 s (transformers'
  semantics without torch), with its largest difference from transformers' features.
Bytes: what one window costs between gateway and Triton as raw audio (16 kHz float32) or as features
(80 x 3000 float32).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from load_tests.loadgen import format_table
from samo.contracts.whisper import SAMPLE_RATE as RATE
from samo.contracts.whisper import WINDOW_SAMPLES

FRAMES = 3000
MELS = 80
SECONDS = (1, 5, 10, 20, 30)
SECTION = "## Where to compute log-mel features"
COLUMNS = ("clip_s", "hf_torch_ms", "hf_numpy_ms", "fw_clip_ms", "fw_padded_ms", "audio_kb", "features_kb")


def _speech(jfk: Path, seconds: int) -> np.ndarray:
    import wave

    with wave.open(str(jfk)) as clip:
        speech = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return np.resize(speech, seconds * RATE)


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: first calls build windows and filters
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        timings.append(time.perf_counter() - began)
    return 1000 * statistics.median(timings)


def measure(jfk: Path, repeats: int) -> tuple[list[dict], float]:
    """Rows per clip length, and the largest difference of faster-whisper-on-padded-audio from transformers."""
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    hf = WhisperFeatureExtractor(feature_size=MELS)
    fw = FeatureExtractor(feature_size=MELS)
    rows = []
    worst = 0.0
    for seconds in SECONDS:
        audio = _speech(jfk, seconds)
        padded = np.pad(audio, (0, WINDOW_SAMPLES - audio.size))[None]

        def fw_clip(audio: np.ndarray = audio) -> np.ndarray:
            features = fw(audio)[:, :FRAMES]
            return np.pad(features, ((0, 0), (0, FRAMES - features.shape[1])))

        def fw_padded(padded: np.ndarray = padded) -> np.ndarray:
            return fw(padded[0], padding=0)[:, :FRAMES]

        reference = hf._torch_extract_fbank_features(padded, "cpu")[0]
        worst = max(worst, float(np.abs(fw_padded() - reference).max()))
        rows.append(
            {
                "clip_s": seconds,
                "hf_torch_ms": _median_ms(
                    lambda p=padded: hf._torch_extract_fbank_features(p, "cpu"), repeats
                ),
                "hf_numpy_ms": _median_ms(lambda p=padded: hf._np_extract_fbank_features(p, "cpu"), repeats),
                "fw_clip_ms": _median_ms(fw_clip, repeats),
                "fw_padded_ms": _median_ms(fw_padded, repeats),
                "audio_kb": audio.size * 4 / 1000,
                "features_kb": MELS * FRAMES * 4 / 1000,
            }
        )
    return rows, worst


def keep_section(old_report: str, new_report: str) -> str:
    """`new_report` followed by the features section of `old_report`, if it has one: the Whisper
    benchmark rewrites whisper.md, and this section is measured separately."""
    start = old_report.find(SECTION)
    return new_report if start < 0 else new_report.rstrip("\n") + "\n\n" + old_report[start:]


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the features section of `path`; it runs to the end of the file."""
    text = path.read_text() if path.exists() else ""
    start = text.find(SECTION)
    head = (text if start < 0 else text[:start]).rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + section)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jfk", type=Path, default=Path("tests/data/jfk.wav"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=None, help="Write the table into this file's section.")
    args = parser.parse_args()
    rows, worst = measure(args.jfk, args.repeats)
    section = (
        f"{SECTION}\n\n`python -m load_tests.bench_features`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}: median ms per window over {args.repeats} runs; bytes per window between "
        "gateway and Triton.\n\n"
        + format_table(rows, COLUMNS)
        + f"\nfaster-whisper on audio padded to 30 s against transformers (torch): max difference {worst:.2e}.\n"
    )
    print(section)
    if args.output:
        write_section(args.output, section)


if __name__ == "__main__":
    main()
