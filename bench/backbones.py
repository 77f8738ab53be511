"""Every keyword-spotting family, static and adaptive, on the same streams (issue 17).

Scores each family's static run and its adaptive run (SANAS by imitation or by search) on a
validation stream (to choose on), a test stream (to report), a stream of background noise
alone and the test list's clips; chooses each adaptive point on validation (the most
Correct at <= 1/3 of the static network's MACs per step and <= 1 more false alarm per
hour); writes table.md, table.csv and
cost_accuracy.png into --out (sanas.lab.backbones). Scores are cached: a rerun resumes.

Usage:
  sanas data stream --data DIR --split validation --minutes 60 --out valstream
  sanas data stream --data DIR --split testing --minutes 60 --out teststream
  .venv/bin/python bench/backbones.py --out docs/results/backbones \\
      --valstream valstream --teststream teststream --noisestream noisestream \\
      --family TC-ResNet8=runs/tc-resnet8,runs/tc-resnet8-sanas --family res8=runs/res8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sanas.lab.backbones import Family, run_backbone_experiment


def _family(text: str) -> Family:
    """``NAME=STATIC_RUN[,ADAPTIVE_RUN]``."""
    name, sep, runs = text.partition("=")
    if not sep or not runs:
        raise argparse.ArgumentTypeError(f"expected NAME=STATIC_RUN[,ADAPTIVE_RUN], got {text!r}")
    static, _, adaptive = runs.partition(",")
    return Family(name, Path(static), Path(adaptive) if adaptive else None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--valstream", type=Path, required=True)
    parser.add_argument("--teststream", type=Path, required=True)
    parser.add_argument("--noisestream", type=Path)
    parser.add_argument("--family", type=_family, action="append", required=True)
    parser.add_argument("--thresholds", default="0.5,0.3,0.1,0.05")
    parser.add_argument("--reuse-steps", default="", help="e.g. 0,1,2 (default: the run's)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one stream, one thread: as sanas evaluate streams
    streams = {"validation": args.valstream, "test": args.teststream}
    if args.noisestream is not None:
        streams["noise"] = args.noisestream
    thresholds = tuple(float(t) for t in args.thresholds.split(",") if t)
    reuse_steps = tuple(int(r) for r in args.reuse_steps.split(",") if r)
    run_backbone_experiment(args.family, streams, args.out, thresholds, reuse_steps)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
