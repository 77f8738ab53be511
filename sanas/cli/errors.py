"""How every command reports bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import typer


def fail(message: object) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise."""
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code=2)
