"""``sanas data ...``: dataset download, streaming test files, synthetic keywords."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Get and make keyword-spotting data.", no_args_is_help=True)
