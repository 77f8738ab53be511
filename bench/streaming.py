"""Streaming benchmark: ms per 200 ms step, real-time factor, training windows per second.

    .venv/bin/python bench/streaming.py --json /tmp/bench_streaming.json
    .venv/bin/python bench/streaming.py --audio stream.wav --model-run runs/sanas --json out.json
    .venv/bin/python bench/streaming.py --backend torch,onnx,onnx-int8 --streams 1,8,64 \
        --threads 1 --audio stream.wav --model-run runs/sanas --json out.json

Everything is measured side by side in one process (see sanas/lab/bench_streaming.py);
the same runs as `sanas bench streaming`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sanas.kws.data.audio import read_wav
from sanas.lab.bench_onnx import parse_backends, parse_streams
from sanas.lab.bench_streaming import parse_mix, run_streaming_benchmark


def main() -> None:
    """Parse the arguments, run the benchmark, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--audio", type=Path, help="a 16 kHz wav to stream (default: noise)")
    parser.add_argument("--model-run", type=Path, help="trained run folder for the mix row")
    parser.add_argument("--mix", help="tier fractions without a run, e.g. 0.52M=0.5,full=0.5")
    parser.add_argument("--threads", type=int, help="batch-1 threads (default: measured)")
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds of 10 steps")
    parser.add_argument("--backend", default="torch", help="e.g. torch,onnx,onnx-int8")
    parser.add_argument("--streams", default="1,8,64", help="stream counts, e.g. 1,8,64")
    args = parser.parse_args()
    result = run_streaming_benchmark(
        audio=None if args.audio is None else read_wav(args.audio),
        model_run=args.model_run,
        mix=None if args.mix is None else parse_mix(args.mix),
        threads=args.threads,
        rounds=args.rounds,
        backends=parse_backends(args.backend),
        streams=parse_streams(args.streams),
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
