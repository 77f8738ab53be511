"""The peer: PocketSphinx's keyphrase spotting on the same test stream.

The ``pocketsphinx`` 5.x wheel ships its English acoustic model and dictionary and runs
offline (the ``bench`` extra: ``pip install 'sanas[bench]'``). Its threshold
(``kws_threshold``) is swept in one decode: the phrase is spotted once per threshold,
under an alias of its own (the phrase's phones under another name), and each detection
names the alias, hence the threshold, that fired. Detections are timed at the phrase's
first frame and scored by :mod:`sanas.kws.wakeword.scoring`, as sanas's are.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sanas.kws.data.audio import SAMPLE_RATE
from sanas.kws.evaluation.metrics import Detection

POCKETSPHINX_THRESHOLDS: tuple[float, ...] = tuple(10.0**-e for e in range(50, -1, -2))
DEFAULT_POCKETSPHINX_THRESHOLD = 1e-20  # the middle of the range its tutorial suggests
FRAME_MS = 10.0  # PocketSphinx's frame rate: 100 frames per second
CHUNK_SAMPLES = SAMPLE_RATE  # audio fed per call, as a live microphone would


class PeerError(ValueError):
    """A peer that cannot run: not installed, or a phrase it cannot spell."""


def phrase_words(phrase: str) -> list[str]:
    """The words of a phrase label (``smart_mirror`` → ``smart``, ``mirror``)."""
    return phrase.replace("_", " ").replace("-", " ").split()


def pocketsphinx_detections(
    audio: np.ndarray,
    phrase: str,
    thresholds: Sequence[float] = POCKETSPHINX_THRESHOLDS,
    progress: bool = True,
) -> tuple[dict[float, list[Detection]], float]:
    """Spot ``phrase`` in 16 kHz ``audio`` at every threshold of ``thresholds`` in one
    decode; return the detections by threshold and the process CPU seconds it took."""
    try:
        from pocketsphinx import Config, Decoder
    except ImportError:
        raise PeerError(
            "the pocketsphinx peer needs the bench extra: pip install 'sanas[bench]'"
        ) from None
    decoder = Decoder(Config(lm=None, loglevel="FATAL"))
    phones = []
    for word in phrase_words(phrase):
        spelled = decoder.lookup_word(word)
        if spelled is None:
            raise PeerError(
                f"phrase {phrase!r}: PocketSphinx's English dictionary has no word {word!r}"
            )
        phones.append(spelled)
    aliases = {f"{phrase}__{k}": float(t) for k, t in enumerate(thresholds)}
    with tempfile.TemporaryDirectory() as folder:
        keyphrases = Path(folder) / "keyphrases.txt"
        keyphrases.write_text("".join(f"{alias} /{t:g}/\n" for alias, t in aliases.items()))
        for alias in aliases:
            decoder.add_word(alias, " ".join(phones), True)
        decoder.add_kws("wake", str(keyphrases))
    decoder.activate_search("wake")
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    start = time.process_time()
    decoder.start_utt()
    for begin in tqdm(
        range(0, len(pcm), CHUNK_SAMPLES),
        desc="pocketsphinx",
        unit="s",
        unit_scale=CHUNK_SAMPLES / SAMPLE_RATE,
        disable=not progress,
    ):
        decoder.process_raw(pcm[begin : begin + CHUNK_SAMPLES].tobytes(), False, False)
    decoder.end_utt()
    cpu = time.process_time() - start
    detections: dict[float, list[Detection]] = {t: [] for t in aliases.values()}
    for segment in decoder.seg() or ():  # None when nothing was spotted
        threshold = aliases.get(segment.word.strip())
        if threshold is not None:
            detections[threshold].append(
                Detection(phrase, segment.start_frame * FRAME_MS, float(segment.prob))
            )
    return detections, cpu


def cached_pocketsphinx_detections(
    audio: np.ndarray, phrase: str, cache: Path, stamp: str, progress: bool = True
) -> tuple[dict[float, list[Detection]], float]:
    """:func:`pocketsphinx_detections` at :data:`POCKETSPHINX_THRESHOLDS`, kept in the JSON
    file ``cache`` under ``stamp`` (what identifies the audio, e.g. its file's size and
    time): a stream is decoded once, however many runs are scored on it."""
    key = {"phrase": phrase, "stamp": stamp, "thresholds": list(POCKETSPHINX_THRESHOLDS)}
    try:
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            found = {
                float(t): [Detection(phrase, time_ms, score) for time_ms, score in hits]
                for t, hits in saved["detections"]
            }
            return found, float(saved["cpu_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: decode again
    detections, cpu = pocketsphinx_detections(audio, phrase, progress=progress)
    hits = [[t, [[d.time_ms, d.score] for d in found]] for t, found in detections.items()]
    cache.write_text(json.dumps({"key": key, "cpu_seconds": cpu, "detections": hits}))
    return detections, cpu
