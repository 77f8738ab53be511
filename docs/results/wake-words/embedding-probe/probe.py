"""Probe: a frozen pretrained speech embedding with a small head, trained on a sanas
wake-word corpus (synthetic positives only), scored on that phrase's `sanas wakeword eval`
stream with the same matching as the report (miss rate at false alarms per hour).

The embedding is openWakeWord's (its PyPI wheel 0.5.1 ships `melspectrogram.onnx` and
Google's `embedding_model.onnx`): 96 values per 80 ms from a 775 ms window; the head reads
16 of them (1.96 s of audio), as openWakeWord's own models do. Not part of sanas: it asks
whether such features close the synthetic-to-real gap that the report measures.

Usage: python probe.py PHRASE RUN STREAM OUT
  RUN: a `sanas wakeword train` run (its corpus/ and trainstream/)
  STREAM: the stream folder of a `sanas wakeword eval` report (stream.wav, stream.json)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from openwakeword.utils import AudioFeatures

from sanas.kws.wakeword.scoring import det_curve, fire_phrase, miss_rate_at

SAMPLES = 35200  # 2.2 s per training example: 16 embeddings need 1.96 s
HISTORY = 16  # embeddings the head reads
STEP_SAMPLES = 1280  # 80 ms between embeddings
SUPPRESSION_MS = 1000.0


def embed_long(features: AudioFeatures, wav: Path) -> np.ndarray:
    """(N, 1 + 96): each embedding's end (samples) and its values, over a long recording
    embedded in 60 s chunks with 2 s of context before each."""
    chunk, lead, parts = 60 * 16000, 2 * 16000, []
    with sf.SoundFile(wav) as f:
        for start in range(0, f.frames, chunk):
            first = max(0, start - lead)
            f.seek(first)
            x = f.read(start + chunk - first, dtype="int16")
            if len(x) < 16000:
                break
            e = features.embed_clips(x[None], batch_size=1)[0]
            ends = first + (8 * np.arange(len(e)) + 76) * 160
            keep = (ends >= start) & (ends < start + chunk)
            parts.append(np.concatenate([ends[keep, None].astype(np.float32), e[keep]], axis=1))
    return np.concatenate(parts)


def windows(embedded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run of 16 embeddings (N - 15, 16, 96) and its end time in ms."""
    w = np.lib.stride_tricks.sliding_window_view(embedded[:, 1:], HISTORY, axis=0)
    return w.transpose(0, 2, 1).astype(np.float32), embedded[HISTORY - 1 :, 0] / 16.0


def corpus_examples(features: AudioFeatures, corpus: Path, label: str, rng) -> tuple:
    """Every training clip of the corpus, ending 0-250 ms before the end of 2.2 s of faint
    background noise, embedded: (N, 16, 96), labels (1: the phrase), and 1500 noise-only
    examples."""
    held = set((corpus / "validation_list.txt").read_text().split())
    held |= set((corpus / "testing_list.txt").read_text().split())
    noise = [
        sf.read(p, dtype="float32")[0]
        for p in sorted((corpus / "_background_noise_").glob("*.wav"))
    ]

    def noise_segment() -> np.ndarray:
        x = noise[rng.integers(len(noise))]
        x = np.tile(x, SAMPLES // len(x) + 1) if len(x) < SAMPLES else x
        s = rng.integers(len(x) - SAMPLES + 1)
        seg = x[s : s + SAMPLES]
        return seg / (np.abs(seg).max() + 1e-9) * 10 ** (rng.uniform(-50, -20) / 20)

    audio, labels = [], []
    for folder in sorted(
        p for p in corpus.iterdir() if p.is_dir() and p.name != "_background_noise_"
    ):
        for wav in sorted(folder.glob("*.wav")):
            if f"{folder.name}/{wav.name}" in held:
                continue
            clip = sf.read(wav, dtype="float32")[0]
            x = noise_segment().copy()
            end = SAMPLES - rng.integers(0, 4000)
            clip = clip[: min(len(clip), end)]
            x[end - len(clip) : end] += clip
            audio.append(np.clip(x, -1, 1))
            labels.append(float(folder.name == label))
    for _ in range(1500):
        audio.append(noise_segment() * rng.uniform(1, 30))
        labels.append(0.0)
    embedded = features.embed_clips((np.stack(audio) * 32767).astype(np.int16), batch_size=64)
    return embedded[:, -HISTORY:].astype(np.float32), np.array(labels, np.float32)


def main() -> None:
    phrase, run, stream, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    label = phrase.replace(" ", "_")
    features = AudioFeatures(inference_framework="onnx", ncpu=1)
    started = time.time()
    x_clips, y_clips = corpus_examples(features, run / "corpus", label, rng)
    # negatives: the run's training stream (training speakers), away from its phrases
    train_windows, train_times = windows(embed_long(features, run / "trainstream" / "stream.wav"))
    onsets = np.array(
        [
            float(line.split(",")[1])
            for line in (run / "trainstream" / "labels.txt").read_text().splitlines()
            if line.split(",")[0].strip() == label
        ]
    )
    near = np.array([np.any((t - onsets > -500) & (t - onsets < 2500)) for t in train_times])
    x = np.concatenate([x_clips, train_windows[~near]])
    y = np.concatenate([y_clips, np.zeros(int((~near).sum()), np.float32)])
    torch.manual_seed(0)
    nn = torch.nn
    head = nn.Sequential(
        nn.Flatten(), nn.Linear(HISTORY * 96, 128), nn.LayerNorm(128), nn.ReLU(),
        nn.Linear(128, 128), nn.LayerNorm(128), nn.ReLU(), nn.Linear(128, 1),
    )  # fmt: skip
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(3000):  # batches of 64 positives and 192 negatives
        i = np.concatenate([rng.choice(positives, 64), rng.choice(negatives, 192)])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(xt[i]).squeeze(1), yt[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = time.time() - started
    # the test stream
    started = time.time()
    test_windows, times = windows(embed_long(features, stream / "stream.wav"))
    head.eval()
    with torch.no_grad():
        score = torch.cat(
            [
                head(torch.tensor(test_windows[b : b + 4096])).squeeze(1)
                for b in range(0, len(test_windows), 4096)
            ]
        ).numpy()
    cpu_ms_per_s = 1000 * (time.time() - started) / (len(times) * 0.08)
    meta = json.loads((stream / "stream.json").read_text())
    truth = [(phrase, float(t)) for t in meta["phrase_times_ms"]]
    thresholds = list(np.quantile(score, np.linspace(0.9, 0.99999, 300)))
    reliable = np.ones(len(score), bool)
    fired = {t: fire_phrase(times, score, reliable, phrase, t, SUPPRESSION_MS) for t in thresholds}
    curve = det_curve(fired, truth, meta["duration_ms"])
    result = {
        "phrase": phrase,
        "positives_in_stream": len(truth),
        "training_examples": {"positive": int(y.sum()), "negative": int(len(y) - y.sum())},
        "miss_rate": {f"{r:g}": miss_rate_at(curve, r) for r in (0.1, 0.5, 1.0, 2.0, 5.0)},
        "train_seconds": trained,
        "wall_ms_per_audio_s": cpu_ms_per_s,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
