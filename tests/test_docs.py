"""The documentation cannot rot: every ```python block of the README and of docs/ runs as
written, and no page points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
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
