"""The ONNX Runtime rows of the streaming benchmark (``--backend onnx,onnx-int8``).

The same configurations as the torch engine's rows, exported with ``sanas export``'s code
(:mod:`sanas.kws.export`) and run by its ONNX Runtime backend at batch 1: the static
network's plain export, which recomputes its window at every step (``static_window``, the
anchor of issue 19's targets), and its deployed step with row caches (``static_cached``),
each cost tier of the super network with shortcuts as a cached graph of its used nodes,
and a trained run at its operating point (its cached `If` graph) when one is given.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from sanas.kws.data.speech_commands import labels_12
from sanas.kws.export.onnx_export import export_model, export_run
from sanas.kws.export.runtime import OnnxStreamingModel
from sanas.kws.model.registry import build_kws_model

BACKENDS = ("torch", "onnx", "onnx-int8")


def parse_backends(text: str) -> tuple[str, ...]:
    """``"torch,onnx,onnx-int8"`` → the backends, in that order; torch always runs (its
    rows are the benchmark's reference)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise ValueError(f"backends are a comma-separated subset of {','.join(BACKENDS)}: {text!r}")
    return tuple(name for name in BACKENDS if name == "torch" or name in names)


def parse_streams(text: str) -> tuple[int, ...]:
    """``"1,8,64"`` → the stream counts of the many-streams rows (1 is always measured)."""
    try:
        counts = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        counts = set()
    if not counts or min(counts) < 1:
        raise ValueError(f"streams are positive integers separated by commas: {text!r}")
    return tuple(sorted(counts | {1}))


def export_models(
    folder: Path, tiers: dict[str, Tensor], int8: bool, model_run: str | Path | None
) -> dict[str, Path]:
    """Export, into ``folder``, the static network without and with row caches
    (``static_window``, ``static_cached``), each tier of the super network with shortcuts
    (``tier NAME``; ``tiers``: name → its (S,) architecture) and the trained run at its
    operating point (``point``, if given); ``int8``: quantised."""
    suffix = "-int8" if int8 else ""
    labels = tuple(labels_12())
    static = build_kws_model("static").eval()
    supernet = build_kws_model("sanas").eval()
    paths = {
        name: export_model(
            static, folder / f"{name}{suffix}.onnx", labels, int8=int8, cached=cached
        )
        for name, cached in (("static_window", False), ("static_cached", True))
    }
    for tier, architecture in tiers.items():
        path = folder / f"tier-{tier}{suffix}.onnx"
        paths[f"tier {tier}"] = export_model(
            supernet, path, labels, int8=int8, architecture=architecture
        )
    if model_run is not None:
        paths["point"] = export_run(model_run, folder / f"point{suffix}.onnx", int8=int8)
    return paths


def onnx_runners(paths: dict[str, Path], threads: int) -> dict[str, OnnxStreamingModel]:
    """A batch-1 ONNX Runtime runner per exported model."""
    return {name: OnnxStreamingModel(path, threads=threads) for name, path in paths.items()}


def file_mb(paths: dict[str, Path]) -> dict[str, float]:
    """Each exported model's file size in MB."""
    return {name: path.stat().st_size / 1e6 for name, path in paths.items()}
