"""Reproduce the paper's Table 1 on the real Speech Commands subset (issue 4).

Trains cnn-trad-fpool3, + shortcuts, a constrained BSN and SANAS at several λ and under
constrained budgets (each on the fpool3-sanas-improved recipe's training settings),
optionally SANAS searches of a trained network (--search-budgets, see default_specs), scores
them all on two streams of --minutes each (one from the validation list, to choose on; one
from the testing list, to report), writes table.csv/json/txt, cost_accuracy.png (Figure 5),
cost_per_class.png (Figure 6) and fa_fr_curve.png in --out, and says whether the SANAS point
chosen on validation matches + shortcuts on the test stream at <= 1/5 of its MACs. Each
SANAS run gives one point per --arch-thresholds operating point of its controller. The runs
are trials of a sweep on Ray Tune (the extra sanas[sweep]), --jobs at once.
--imitation-gates adds SANAS runs whose controller imitates a gate that knew the ground
truth (sanas.kws.training.imitation), on the network of the longest-trained + shortcuts run.

Usage: .venv/bin/python bench/experiment.py --out out/experiment [--epochs 20 --channels 16]
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from sanas.kws.model.registry import build_kws_model
from sanas.lab.experiment import format_table, run_experiment, target_verdict
from sanas.lab.experiment_specs import default_specs, reference_names

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/speech_commands_subset"


def _numbers(text: str, kind: type = float) -> tuple:
    """The comma-separated numbers of an option ("" gives none)."""
    return tuple(kind(v) for v in text.split(",") if v)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", default=os.environ.get("SANAS_SPEECH_COMMANDS", DEFAULT_DATA))
    parser.add_argument("--out", default="out/experiment")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--channels", type=int, default=16, help="64 is the paper's width")
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="length of each stream (paper: 60)"
    )
    parser.add_argument("--lambdas", default="1e-8,3e-8", help="SANAS runs with a linear λ")
    parser.add_argument(
        "--sanas-budgets", default="3e6", help="SANAS runs with a constrained budget (MACs)"
    )
    parser.add_argument(
        "--full-network-budgets",
        default="",
        help="constrained SANAS runs that also train the full network each batch",
    )
    parser.add_argument(
        "--search-budgets",
        default="",
        help="SANAS runs that search a trained + shortcuts network under these budgets; "
        "it trains on 90%% of the training speakers, the search is rewarded on the rest",
    )
    parser.add_argument(
        "--distilled-search-budgets",
        default="",
        help="the same searches, the cheapest network learning the full one's posteriors "
        "(distill_cheapest) instead of the labels",
    )
    parser.add_argument(
        "--conv-0-search-budgets",
        default="",
        help="the same searches, the conv_0 tier (conv_0 → shortcut_1, no conv_1) trained "
        "as a path of its own (train_paths), in the search and in its pretraining",
    )
    parser.add_argument(
        "--imitation-gates",
        default="",
        help="SANAS runs on the network of the longest-trained + shortcuts run whose "
        "controller imitates each of these gates on a stream of training speakers: "
        "'aligned' (the full network on the steps best aligned with each word) or "
        "'hindsight' (on the fewest that make the detector fire on it)",
    )
    parser.add_argument(
        "--reuse-steps",
        type=int,
        default=2,
        help="imitation runs: the cheap steps after a full one reuse its output",
    )
    parser.add_argument(
        "--imitation-streams",
        type=int,
        default=1,
        help="imitation runs learn from this many 2 x --minutes streams of the training list",
    )
    parser.add_argument(
        "--imitation-overlap-ms",
        type=float,
        default=800.0,
        help="the aligned gate: a step's window overlaps a word by more than this (800: two "
        "steps per word)",
    )
    parser.add_argument(
        "--search-epochs", type=int, default=8, help="epochs of each --search-budgets run"
    )
    parser.add_argument(
        "--arch-thresholds",
        default="0.5,0.2,0.1,0.05",
        help="operating points of each SANAS controller: a node is on when its probability "
        "exceeds the threshold (0.5: the mode); each is a row, chosen among on validation",
    )
    parser.add_argument(
        "--target-fraction",
        type=float,
        default=0.2,
        help="the verdict's share of + shortcuts' MACs per step (issue 4: 1/5; the paper "
        "reached about 1/3.6 = 0.28)",
    )
    parser.add_argument(
        "--hold-fraction",
        type=float,
        default=None,
        help="each SANAS point holds this fraction of + shortcuts' MACs per step on the "
        "streams (a token bucket, sanas.supernet.governor), e.g. 0.2 for the target's 1/5",
    )
    parser.add_argument(
        "--baseline-epochs",
        default="",
        help="also train static + shortcuts for these numbers of epochs; the target is "
        "judged against the best of them on validation (e.g. 25)",
    )
    parser.add_argument("--bsn-budget", type=float, default=3e6)
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs trained at once (trials of a Ray Tune sweep)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="run only the models whose name matches this regular expression, "
        "e.g. 'shortcuts|searched'",
    )
    parser.add_argument("--arch-lr", type=float, default=1e-2, help="lr of the BSN logits")
    parser.add_argument(
        "--controller-lr", type=float, default=3e-4, help="lr of the SANAS controller"
    )
    args = parser.parse_args()
    lams = _numbers(args.lambdas)
    budgets = _numbers(args.sanas_budgets)
    full_budgets = _numbers(args.full_network_budgets)
    search_budgets = _numbers(args.search_budgets)
    baseline_epochs = _numbers(args.baseline_epochs, int)
    specs = default_specs(
        lams,
        args.bsn_budget,
        args.arch_lr,
        budgets,
        args.controller_lr,
        full_budgets,
        search_budgets,
        args.search_epochs,
        baseline_epochs=baseline_epochs,
        distilled_search_budgets=_numbers(args.distilled_search_budgets),
        conv_0_search_budgets=_numbers(args.conv_0_search_budgets),
        imitation_gates=tuple(g for g in args.imitation_gates.split(",") if g),
        reuse_steps=args.reuse_steps,
        imitation_overlap_ms=args.imitation_overlap_ms,
        imitation_stream_count=args.imitation_streams,
    )
    specs = [spec for spec in specs if re.search(args.only, spec.name)]
    if not specs:
        parser.error(f"--only {args.only!r} matches no model")
    static = build_kws_model("static-shortcuts", channels=args.channels)
    full_macs = float(static.cost.of_architecture(static.net, None)[0])
    rows = run_experiment(
        args.data,
        args.out,
        specs,
        epochs=args.epochs,
        channels=args.channels,
        minutes=args.minutes,
        jobs=args.jobs,
        architecture_thresholds=_numbers(args.arch_thresholds),
        held_budget=None if args.hold_fraction is None else args.hold_fraction * full_macs,
        references=reference_names(baseline_epochs),
        target_fraction=args.target_fraction,
    )
    print(format_table(rows))
    verdict = target_verdict(rows, reference_names(baseline_epochs), args.target_fraction)
    print(verdict or f"no SANAS point within {args.target_fraction:g} of + shortcuts' MACs")


if __name__ == "__main__":
    main()
