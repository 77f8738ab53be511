"""Time keyword synthesis: clips per second for N words x M clips, at each job count.

    .venv/bin/python bench/synth.py --words 10 --per-word 20 --jobs 1 2

The time covers everything ``sanas data synth`` does (espeak-ng/flite runs, resampling,
trimming, writing, split lists) except the background noise, which is switched off here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sanas.kws.data.speech_commands import WANTED_WORDS
from sanas.kws.data.synth import synthesize_keywords


def main() -> None:
    """Parse the arguments, synthesise once per job count, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=10, help="keywords (from the ten standard)")
    parser.add_argument("--per-word", type=int, default=20, help="clips per keyword")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="job counts to time")
    args = parser.parse_args()
    words = WANTED_WORDS[: args.words]
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = synthesize_keywords(
                Path(tmp) / "synth",
                words,
                args.per_word,
                unknown_words=(),
                noise_seconds=0,
                jobs=jobs,
            )
            seconds = time.perf_counter() - start
        print(
            f"jobs={jobs}: {summary.clips} clips ({len(words)} words x {args.per_word}) "
            f"in {seconds:.2f} s = {summary.clips / seconds:.1f} clips/s "
            f"[{', '.join(summary.engines)}]"
        )


if __name__ == "__main__":
    main()
