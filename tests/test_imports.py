"""The shape of avsearch's imports, read from the source (AST), every import statement counted:
top level, inside functions, under ``TYPE_CHECKING``.

- media decodes to what the towers declare but knows no tower: ``avsearch/media`` imports
  nothing from ``avsearch.encoders``;
- the module import graph of ``avsearch`` is acyclic (a cycle means a module can only be
  imported in some orders, or only thanks to a lazy import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "avsearch"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, modules: dict[str, Path] = MODULES, root: Path = PACKAGE) -> set[str]:
    """The avsearch modules (or packages) ``path`` (a file under ``root``) imports anywhere."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "avsearch")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "avsearch":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, set()) & graph.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, set()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, TYPE_CHECKING, relative and `from pkg import module` imports count."""
    pkg = tmp_path / "avsearch" / "media"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from . import y\n"
        "from ..encoders.registry import BACKBONES\n"
        "if TYPE_CHECKING:\n"
        "    from avsearch.store import features\n"
        "def f() -> None:\n"
        "    import avsearch.encoders.tower\n"
        "    from avsearch.encoders import model_dir as md\n"
    )
    modules = {"avsearch.media.y": pkg / "y.py", "avsearch.encoders.model_dir": pkg}
    assert imported(pkg / "x.py", modules, tmp_path / "avsearch") == {
        "avsearch.media.y",
        "avsearch.encoders.registry",
        "avsearch.store",
        "avsearch.encoders.tower",
        "avsearch.encoders.model_dir",
    }


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "media").glob("*.py")), ids=lambda p: p.name)
def test_media_imports_nothing_from_encoders(path: Path) -> None:
    bad = sorted(m for m in imported(path) if m.startswith("avsearch.encoders"))
    assert not bad, f"{path.name} imports {bad}: media must not know the towers"


def test_the_module_graph_is_acyclic() -> None:
    graph = {name: imported(path) for name, path in MODULES.items()}
    assert len(graph) > 40  # the scan saw the package
    assert "avsearch.encoders.registry" in graph["avsearch.encoders.model_dir"]
    assert cycles(graph) == []
