"""The ``sanas`` command line: a thin layer over the library API.

Every command imports what it needs lazily so that ``sanas --help`` stays instant.
"""

from __future__ import annotations

import typer

from sanas.cli.data import data_app

app = typer.Typer(
    name="sanas",
    help=(
        "Budgeted, input-adaptive neural architecture search.\n\n"
        "Start with `sanas demo` (keyword spotting on synthetic speech), "
        "`sanas costs --model cnn-trad-fpool3 --shortcuts` (the cost table), "
        "or `sanas example digits` (a Budgeted Super Network on a non-audio task)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point of the ``sanas`` console script."""
    app()
