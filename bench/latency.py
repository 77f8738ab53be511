"""How well does a per-node latency table predict end-to-end times of sub-architectures?

Measures a latency table for a model on this machine (batch size 1 by default), then times
random sub-architectures with the skipping executor and prints the share predicted within
±10%. Usage: .venv/bin/python bench/latency.py [--model cnn-trad-fpool3-shortcuts] [--json OUT]
"""

from __future__ import annotations

import argparse
import json

import torch

from sanas.kws.model.networks import build_model
from sanas.supernet.costs import latency_fit, measure_latency_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="cnn-trad-fpool3-shortcuts")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--architectures", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = build_model(args.model).eval()
    table = measure_latency_table(net, batch_size=args.batch_size, repeats=30)
    fit = latency_fit(net, table, architectures=args.architectures, repeats=30)
    print(f"latency table: {args.model}, batch {args.batch_size}, {table.device}")
    print(f"threads: {args.threads}")
    print(f"{'node':<12} {'ms':>8}")
    for name, seconds in table.per_node_s.items():
        print(f"{name:<12} {seconds * 1e3:>8.3f}")
    print(
        f"calibration: {table.base_s * 1e3:.3f} ms + {table.scale:.2f} × Σ node times "
        f"+ {table.overhead_s * 1e3:.3f} ms per used node"
    )
    print(
        f"{fit['architectures']:.0f} random sub-architectures: "
        f"{fit['within_10pct']:.0%} predicted within ±10%, "
        f"median relative error {fit['median_relative_error']:.1%}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": table.__dict__, "fit": fit}, f, indent=2)


if __name__ == "__main__":
    main()
