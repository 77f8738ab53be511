"""The layering rule of docs/architecture.md, checked on the source: imports flow one way.

Each package of sanas sits on a layer; a module imports only from its own layer or from
layers below it, never from one above, and no two modules import each other (directly or
around a loop). The library (everything but the CLI) imports sanas modules at the top of
the file only, so its dependencies are visible where a reader looks for them, and never
imports an optional extra (ONNX, sounddevice, Ray) at import time.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sanas"
# Lowest first. Packages on one layer must not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sanas.supernet",),
    ("sanas.examples", "sanas.kws.data"),
    ("sanas.kws.model",),
    ("sanas.kws.config",),
    ("sanas.kws.run_files",),
    ("sanas.kws.runs",),
    ("sanas.kws.streaming",),
    ("sanas.kws.evaluation",),
    ("sanas.kws.export",),
    ("sanas.kws.training",),
    ("sanas.kws.wakeword", "sanas.kws.sweeps"),
    ("sanas.lab",),
    ("sanas.cli",),
    ("sanas.__main__",),  # python -m sanas: the cli
)
ROOTS = ("sanas", "sanas.kws")  # bare package folders: they import nothing
EXTRAS = ("onnx", "onnxruntime", "sounddevice", "ray", "optuna", "pocketsphinx")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in tree.body
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
    return found


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> tuple[int, str]:
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} is on no layer of LAYERS: add it to docs/architecture.md")


def _sanas_edges() -> list[tuple[str, str, bool]]:
    return [
        (module, imported, top)
        for module, imports in IMPORTS.items()
        for imported, top in imports
        if imported.startswith("sanas.") and imported != module
    ]


def test_every_module_sits_on_a_layer() -> None:
    for module in MODULES:
        if module in ROOTS:
            assert not IMPORTS[module], f"{module} is a bare package folder: it imports nothing"
        else:
            _layer(module)


@pytest.mark.parametrize("module", sorted(set(MODULES) - set(ROOTS)))
def test_imports_never_run_back_up_or_sideways(module: str) -> None:
    rank, package = _layer(module)
    for source, imported, _ in _sanas_edges():
        if source != module:
            continue
        their_rank, their_package = _layer(imported)
        assert their_rank < rank or their_package == package, (
            f"{module} imports {imported}, which is on layer {their_package} "
            f"(must be below {package})"
        )


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, imported, _ in _sanas_edges():
        if imported in MODULES:
            graph[module].add(imported)
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the loop


def test_the_library_imports_sanas_modules_at_the_top_only() -> None:
    hidden = [
        f"{module} -> {imported}"
        for module, imported, top in _sanas_edges()
        if not top and not module.startswith("sanas.cli")
    ]
    assert not hidden, f"imports inside functions: {hidden}"


def test_the_core_knows_nothing_about_audio() -> None:
    for module, imports in IMPORTS.items():
        if module.startswith("sanas.supernet"):
            for imported, _ in imports:
                assert not imported.startswith(("sanas.kws", "soundfile", "scipy.signal")), (
                    f"{module} imports {imported}"
                )


def test_optional_extras_are_never_imported_at_module_level() -> None:
    for module, imports in IMPORTS.items():
        for imported, top in imports:
            assert not (top and imported.split(".")[0] in EXTRAS), (
                f"{module} imports the optional extra {imported} at import time"
            )
