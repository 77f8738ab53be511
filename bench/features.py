"""Time the MFCC frontend and check it against the librosa reference on real clips.

    .venv/bin/python bench/features.py --clips 100 --batches 1 64

Throughput is seconds of 16 kHz audio turned into (frames, 40) MFCC per second of wall
time, on one-second clips. Parity is the largest absolute difference from the reference
(librosa mel spectrogram, log of positive values, orthonormal DCT-II) over clips spread
evenly across the real Speech Commands subset.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import librosa
import numpy as np
import scipy.fftpack
import torch

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.features import MFCC
from sanas.kws.data.speech_commands import SPLITS, SpeechCommands

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech_commands_subset"


def reference_mfcc(x: np.ndarray) -> np.ndarray:
    """The reference's MFCC of one clip, (frames, 40)."""
    mel = librosa.feature.melspectrogram(
        y=x, sr=SAMPLE_RATE, n_fft=480, hop_length=160, n_mels=40, fmin=20, fmax=4000,
        pad_mode="constant",
    )  # fmt: skip
    mel[mel > 0] = np.log(mel[mel > 0])
    return scipy.fftpack.dct(mel, axis=0, type=2, norm="ortho").T


def throughput(frontend: MFCC, batch: int, device: torch.device, min_seconds: float) -> float:
    """Seconds of audio per second of wall time at this batch size."""
    waves = (0.1 * torch.randn(batch, SAMPLE_RATE)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.no_grad():
        frontend(waves)  # warm-up
        sync()
        runs, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds:
            frontend(waves)
            sync()
            runs += 1
    return runs * batch / elapsed


def parity(frontend: MFCC, data: Path, n_clips: int) -> tuple[float, float, int]:
    """(max, median) absolute error against the reference over ``n_clips`` real clips."""
    dataset = SpeechCommands(data)
    paths = sorted(clip.path for split in SPLITS for clip in dataset.clips(split))
    chosen = [
        paths[i] for i in np.linspace(0, len(paths) - 1, min(n_clips, len(paths))).astype(int)
    ]
    errors = []
    with torch.no_grad():
        for path in chosen:
            x = read_wav(path)
            ours = frontend(torch.from_numpy(x)).numpy()
            errors.append(float(np.abs(ours - reference_mfcc(x)).max()))
    return max(errors), float(np.median(errors)), len(chosen)


def main() -> None:
    """Parse the arguments, print the throughput and parity table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100, help="real clips for the parity check")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="batch sizes")
    parser.add_argument("--device", default="cpu", help="torch device for the throughput")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per batch size")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SANAS_SPEECH_COMMANDS", DEFAULT_DATA)),
        help="Speech Commands folder for the parity check",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    frontend = MFCC().to(device)
    print(f"MFCC (40 x 101 frames per 1 s clip) on {device}, {torch.get_num_threads()} threads")
    print("| batch | ms per batch | audio s per s |")
    print("|---|---|---|")
    for batch in args.batches:
        rate = throughput(frontend, batch, device, args.seconds)
        print(f"| {batch} | {1000 * batch / rate:.2f} | {rate:,.0f} |")
    worst, median, n = parity(MFCC(), args.data, args.clips)
    print(f"\nparity vs librosa on {n} real clips: max abs error {worst:.2e}, median {median:.2e}")


if __name__ == "__main__":
    main()
