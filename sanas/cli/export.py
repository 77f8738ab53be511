"""``sanas export``: a trained run's streaming step as one ONNX graph."""

from __future__ import annotations

from pathlib import Path

import typer

from sanas.cli.errors import check_writable, fail
from sanas.cli.evaluate import ARCH_THRESHOLD_HELP, HOLD_BUDGET_HELP, REUSE_STEPS_HELP


def export(
    run: Path = typer.Argument(..., help="Training run folder (from `sanas train`)."),
    out: Path = typer.Option(..., "--out", help="The ONNX file to write (e.g. model.onnx)."),
    arch_threshold: float = typer.Option(None, help=ARCH_THRESHOLD_HELP),
    hold_budget: float = typer.Option(None, help=HOLD_BUDGET_HELP),
    reuse_steps: int = typer.Option(None, help=REUSE_STEPS_HELP),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="8-bit weights (ONNX Runtime dynamic quantisation, inside the `If` nodes too): "
        "a quarter to a third of the file, dense layers read 4x fewer bytes per step.",
    ),
) -> None:
    """Export a run's streaming step to ONNX, at an operating point fixed in the file.

    The graph takes one step's 20 new feature frames (20 x 40) and the stream's state
    (the 81 frames before them, the row caches and, for a SANAS run, the controller's
    state); it gives the posteriors, the step's architecture, its MACs and the new
    state. Each node of a SANAS run sits in an ONNX `If`, so ONNX
    Runtime computes only what the step uses. Labels, step, detection settings, MAC
    table and operating point are in the model's metadata. With --int8 the dense layers
    compute in int8, and the convolutions and the controller keep fp32 arithmetic on
    int8-stored weights (docs/deploy.md says why). Needs the export extra:
    `pip install 'sanas[export]'`.

    Example: `sanas export runs/sanas --out runs/sanas/model.onnx --hold-budget 3.3e6`,
    then `sanas evaluate runs/sanas/model.onnx --stream-wav stream/stream.wav
    --stream-labels stream/labels.txt`; int8: `sanas export runs/sanas --out
    runs/sanas/model-int8.onnx --int8`
    """
    from sanas.cli.evaluate import _operating_point

    check_writable(out, "--out")
    try:
        from sanas.kws.export.onnx_export import export_run, read_metadata

        point = _operating_point(run, arch_threshold, hold_budget, reuse_steps)
        path = export_run(run, out, point, int8=int8)
        macs = read_metadata(path)["tier_macs"]
    except (ImportError, OSError, ValueError) as err:
        raise fail(str(err)) from None
    precision = "int8" if int8 else "fp32"
    size = f"{path.stat().st_size / 1e6:.2f} MB, {precision}"
    span = f"{macs['cheapest']:,.0f} to {macs['full']:,.0f}"
    if macs["cheapest"] == macs["full"]:  # one architecture
        span = f"{macs['full']:,.0f}"
    span += " MACs per window"
    typer.echo(f"wrote {path} ({size}; {span})")


def register(app: typer.Typer) -> None:
    """Add ``export`` to the main command."""
    app.command()(export)
