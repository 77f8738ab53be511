"""The documentation cannot rot: every ```python block of the README and of docs/ runs as
written, every `sanas` command of a ```bash block names a command and options that exist,
and no page points outside the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from sanas.cli import app

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
SNIPPETS = [
    pytest.param(code, id=f"{page.relative_to(REPO)}:{n}")
    for page in PAGES
    for n, code in enumerate(PYTHON_BLOCK.findall(page.read_text()), start=1)
]


def test_the_readme_has_a_python_snippet_and_stays_a_front_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert PYTHON_BLOCK.search(readme)
    assert len(readme.encode()) <= 12_000
    assert readme.split("```bash\n", 1)[1].startswith("make demo\nmake test\n")


@pytest.mark.parametrize("code", SNIPPETS)
def test_python_snippet_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_pages_point_inside_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def sanas_command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each line of a ```bash block that starts with `sanas `,
    backslash continuations joined."""
    commands = []
    for block in BASH_BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).splitlines()
        n = 0
        while n < len(lines):
            start, line = n, lines[n].strip()
            while line.endswith("\\") and n + 1 < len(lines):
                n += 1
                line = line[:-1] + " " + lines[n].strip()
            n += 1
            if line.startswith("sanas "):
                commands.append((first + start, line))
    return commands


def cli_problem(command: str) -> str | None:
    """Why ``command`` (a `sanas ...` line) does not match the Typer app, or None: each word
    before the options must name a command of the group before it, and each --option must
    be one of the command (or group) it reaches. Nothing is executed."""
    words = shlex.split(command, comments=True)[1:]  # drops the `# comment` at the end
    # Typer's (vendored) click objects: a group has .commands, every command .params.
    cmd: Any = typer.main.get_command(app)
    path = ["sanas"]
    while hasattr(cmd, "commands") and words and not words[0].startswith("-"):
        if words[0] not in cmd.commands:
            return f"`{' '.join(path)}` has no command {words[0]!r} (it has {sorted(cmd.commands)})"
        path.append(words[0])
        cmd = cmd.commands[words.pop(0)]
    known = {"--help"}
    for param in cmd.params:
        known.update(param.opts + param.secondary_opts)
    options = [word.split("=")[0] for word in words if word.startswith("--") and word != "--"]
    unknown = [option for option in options if option not in known]
    if unknown:
        return f"`{' '.join(path)}` has no option {', '.join(unknown)} (it has {sorted(known)})"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_sanas_commands_in_bash_blocks_exist(page: Path) -> None:
    name = page.relative_to(REPO)
    problems = [
        f"{name}:{number}: {command}\n    {problem}"
        for number, command in sanas_command_lines(page.read_text())
        if (problem := cli_problem(command)) is not None
    ]
    assert not problems, "commands in the docs that the CLI does not have:\n" + "\n".join(problems)


def test_the_cli_pages_have_sanas_commands_to_check() -> None:
    for page in ("README.md", "docs/cli.md", "docs/recipes.md"):
        assert sanas_command_lines((REPO / page).read_text()), page
    assert cli_problem("sanas data synth --out synth --per-word 5  # a comment --no") is None
    assert "no command 'nope'" in str(cli_problem("sanas data nope --out x"))
    assert "no option --jobs" in str(cli_problem("sanas demo --jobs 2"))
