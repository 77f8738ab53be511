"""How much could input adaptivity gain with these trained weights? (sanas.kws.oracle)

For each run: every fixed cost tier of its super network (cheap 0.52M path, conv_0 tier,
full network) scored on a stream, and each expensive tier gated by the ground truth (on
steps whose window overlaps a word, the cheap path elsewhere). If "oracle full/cheap"
scores no better than "cheap", no controller can gain by spending more on speech.

Usage: .venv/bin/python bench/oracle.py RUN [RUN ...] --stream out/valstream \
           [--min-overlaps-ms 0,600,800]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sanas.kws.data.speech_commands import kws_task
from sanas.kws.oracle import oracle_gating
from sanas.kws.train import load_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="training run folders (sanas or bsn models)")
    parser.add_argument("--stream", required=True, help="folder with stream.wav and labels.txt")
    parser.add_argument(
        "--min-overlaps-ms",
        default="0",
        help="gates: a step is speech when its window overlaps a word by more than this "
        "(comma-separated; 0: at all, 800: the three best aligned steps)",
    )
    args = parser.parse_args()
    overlaps = [float(v) for v in args.min_overlaps_ms.split(",") if v]
    torch.set_num_threads(1)
    stream = Path(args.stream)
    print(f"{'run':<24} {'policy':<30} {'Matched':>8} {'Correct':>8} {'MACs/step':>10}")
    for run in args.runs:
        model, config = load_run(run)
        for score in oracle_gating(
            model,
            kws_task(config.task).labels,
            stream / "stream.wav",
            stream / "labels.txt",
            min_overlaps_ms=overlaps,
        ):
            print(
                f"{Path(run).name:<24} {score.policy:<30} {score.matched:>8.1f} "
                f"{score.correct:>8.1f} {score.macs_per_step / 1e6:>9.2f}M"
            )


if __name__ == "__main__":
    main()
