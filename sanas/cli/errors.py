"""How every command reports a failure: one line on stderr, never a traceback.

Bad input (a ValueError or OSError of the library, caught by the command) and files that
cannot be read or written (an OSError anywhere) exit with code 2 and a line naming the
file or field. Anything else is a bug: exit code 1, a short line, and the full traceback
in a file of the system's temporary folder, named in that line.
"""

from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

INTERNAL_ERROR = 1
BAD_INPUT = 2


def fail(message: object) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise."""
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code=BAD_INPUT)


def check_writable(path: Path, option: str, folder: bool = False) -> None:
    """Fail now, before any work, when ``path`` (a file, or a ``folder``) cannot be written
    (an existing parent is a file or is read-only); create nothing."""
    if path.exists() and path.is_dir() != folder:
        raise fail(f"{option} {path}: {'not a folder' if folder else 'is a folder'}")
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise fail(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise fail(f"{option} {path}: {ancestor} is not writable")


def _describe_os_error(error: OSError) -> str:
    """``path: what went wrong`` for an OSError (its own message when it names no file)."""
    if error.filename is None or error.strerror is None:
        return str(error)
    target = f" -> {error.filename2}" if error.filename2 is not None else ""
    return f"{error.filename}{target}: {error.strerror}"


def report_internal_error(error: BaseException) -> typer.Exit:
    """Write ``error``'s traceback to a file in the temporary folder; print one line that
    names it; return the exit to raise (code 1)."""
    text = "".join(traceback.format_exception(error))
    try:
        handle, path = tempfile.mkstemp(prefix="sanas-error-", suffix=".txt")
        with os.fdopen(handle, "w") as f:
            f.write(text)
        where = f"the full traceback is in {path}"
    except OSError:
        where = "the traceback could not be written to the temporary folder"
    summary = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    typer.secho(
        f"error: internal error ({type(error).__name__}{': ' if summary else ''}{summary}); "
        f"{where}; please report it",
        err=True,
        fg="red",
    )
    return typer.Exit(code=INTERNAL_ERROR)


class ReportingGroup(TyperGroup):
    """The ``sanas`` command group: a command's unexpected exception becomes one line (an
    unreadable or unwritable file: exit code 2; anything else: exit code 1 and a
    traceback file), never a traceback on the terminal."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except OSError as error:  # a file or folder: the user's to fix
            raise fail(_describe_os_error(error)) from None
        except MemoryError:
            raise fail("out of memory: the input is too large for this machine") from None
        except Exception as error:  # the last line of defence
            raise report_internal_error(error) from None
