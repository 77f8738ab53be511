"""How much could input adaptivity gain with these trained weights? (sanas.lab.oracle)

For each run: every fixed cost tier of its super network (cheap 0.52M path, conv_0 tier,
full network) scored on a stream, and each expensive tier gated by the ground truth (on
steps whose window overlaps a word, the cheap path elsewhere). If "oracle full/cheap"
scores no better than "cheap", no controller can gain by spending more on speech.
"confident": the share of the three steps best aligned with each word whose top posterior
is that word's label above the detection threshold, what a detection is made of.
--hindsight-budgets gates each expensive tier within a budget of MACs per step, knowing the
ground truth and the posteriors: the words needing the fewest expensive steps are served
first (sanas.lab.oracle.hindsight_gate). If that gate falls short of a static network, a
controller choosing between those two tiers of these weights will not reach it either.
--strides gates on every k-th step whatever the input (frame skipping); --reuse-steps lets
the cheap steps after an expensive one reuse its posteriors in every gate
(sanas.supernet.reuse).
--arch-thresholds scores a SANAS run's own controller at those operating points too, and
--plot draws every policy's accuracy against its MACs (controller against perfect gates).

Usage: .venv/bin/python bench/oracle.py RUN [RUN ...] --stream out/valstream
       [--min-overlaps-ms 0,600,800] [--hindsight-budgets 3.36e6]
       [--arch-thresholds 0.5,0.1,0.05 --plot gates.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sanas.kws.data.speech_commands import kws_task
from sanas.kws.evaluation.evaluate import evaluate_model_on_stream
from sanas.kws.evaluation.plots import ModelPoint, plot_cost_accuracy
from sanas.kws.runs import load_run
from sanas.lab.oracle import oracle_gating


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
        "(comma-separated; 0: at all, 700: the three best aligned steps, 800: two)",
    )
    parser.add_argument(
        "--hindsight-budgets",
        default="",
        help="hindsight gates within these MACs per step (comma-separated; 3.36e6 is 1/5 "
        "of the 16-channel full network)",
    )
    parser.add_argument(
        "--hindsight-counts",
        default="correct",
        help="what the hindsight gates maximise: words detected 'correct'ly, or 'matched' "
        "by any detection (comma-separated, one gate each)",
    )
    parser.add_argument(
        "--strides",
        default="",
        help="also gate on every k-th step, blind to the input (comma-separated k; frame "
        "skipping, what input adaptivity must beat)",
    )
    parser.add_argument(
        "--reuse-steps",
        type=int,
        default=0,
        help="in every gate, the cheap steps after an expensive one reuse its posteriors",
    )
    parser.add_argument(
        "--arch-thresholds",
        default="",
        help="also score each SANAS run's controller at these architecture thresholds",
    )
    parser.add_argument(
        "--static",
        nargs="*",
        default=[],
        help="static runs scored on the same stream, to compare with (e.g. the baseline)",
    )
    parser.add_argument("--plot", help="cost/accuracy figure of every policy (one run only)")
    args = parser.parse_args()
    if args.plot and len(args.runs) > 1:
        parser.error("--plot draws one run; give one RUN")
    overlaps = [float(v) for v in args.min_overlaps_ms.split(",") if v]
    thresholds = [float(v) for v in args.arch_thresholds.split(",") if v]
    budgets = [float(v) for v in args.hindsight_budgets.split(",") if v]
    counts = [v for v in args.hindsight_counts.split(",") if v]
    torch.set_num_threads(1)
    stream = Path(args.stream)
    print(
        f"{'run':<24} {'policy':<42} {'Matched':>8} {'Correct':>8} {'MACs/step':>10} "
        f"{'confident':>9}"
    )
    points: list[ModelPoint] = []
    for run in args.runs:
        model, config = load_run(run)
        for score in oracle_gating(
            model,
            kws_task(config.task).labels,
            stream / "stream.wav",
            stream / "labels.txt",
            min_overlaps_ms=overlaps,
            architecture_thresholds=thresholds,
            hindsight_budgets=budgets,
            hindsight_counts=counts,
            strides=[int(v) for v in args.strides.split(",") if v],
            reuse_steps=args.reuse_steps,
        ):
            points.append(
                ModelPoint(
                    score.policy,
                    score.family,
                    score.macs_per_step,
                    score.matched,
                    score.correct,
                    series="" if score.family == "tier" else score.family,  # one curve per gate
                    label=score.policy.removeprefix(score.family).strip(),
                )
            )
            print(
                f"{Path(run).name:<24} {score.policy:<42} {score.matched:>8.1f} "
                f"{score.correct:>8.1f} {score.macs_per_step / 1e6:>9.2f}M "
                f"{100 * score.confident_steps:>8.1f}%"
            )
    for run in args.static:
        model, config = load_run(run)
        labels = kws_task(config.task).labels
        score = evaluate_model_on_stream(
            model, labels, stream / "stream.wav", stream / "labels.txt"
        ).score
        macs = float(model.cost.of_architecture(model.net, None)[0])
        points.append(
            ModelPoint(Path(run).name, "static", macs, score.matched_pct, score.correct_pct)
        )
        print(
            f"{Path(run).name:<24} {'static':<42} {score.matched_pct:>8.1f} "
            f"{score.correct_pct:>8.1f} {macs / 1e6:>9.2f}M"
        )
    if args.plot:
        print(f"figure: {plot_cost_accuracy(points, args.plot)}")


if __name__ == "__main__":
    main()
