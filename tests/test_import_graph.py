"""The house rules of toolchain/ that a reader relies on: no import circle between its modules
(a registry never imports its plug-ins back), and no module over 300 lines. Imports are read
with ast, not run: those at module level (also inside if/try at that level), less the ones under
``if TYPE_CHECKING:``, which never run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolchain"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: at its top level, or nested in
    if/else, try/except/finally and with blocks there; not in functions or classes."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            pending += node.orelse if _is_type_checking(node.test) else node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            pending += [stmt for handler in node.handlers for stmt in handler.body]
        elif isinstance(node, ast.With):
            pending += node.body
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The toolchain modules that ``name`` (at ``path``) imports at module level: ``from a.b
    import c`` is a.b.c when that is a module, else a.b."""
    edges = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in module_level_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        edges |= {t for t in targets if t in known and t != name}
    return edges


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported_modules(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order, the first repeated last), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once every edge is explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_circles_and_passes_chains():
    """The checks below are only as good as this: a chain has no circle, a circle through a
    registry and its plug-in is named in order."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"reg": {"plugin"}, "plugin": {"reg"}, "x": {"reg"}}) == [
        "plugin", "reg", "plugin"]


def test_module_level_imports_skip_functions_and_type_checking():
    tree = ast.parse("import a\nif TYPE_CHECKING:\n    import b\nelse:\n    import c\n"
                     "try:\n    import d\nexcept ImportError:\n    import e\n"
                     "def f():\n    import g\n")
    names = [alias.name for node in module_level_imports(tree) for alias in node.names]
    assert sorted(names) == ["a", "c", "d", "e"]


def test_the_graph_sees_the_export_registry_and_its_plug_ins():
    """Sanity of the parse on the package it was written for: the transforms package imports
    its plug-ins, they import the registry, and the registry imports none of them."""
    graph = import_graph()
    plugins = {"toolchain.export.transforms.stock", "toolchain.export.transforms.rowwise"}
    assert plugins <= graph["toolchain.export.transforms"]
    for plugin in plugins:
        assert "toolchain.export.transforms.registry" in graph[plugin]
    assert not plugins & graph["toolchain.export.transforms.registry"]


def test_no_import_circle_in_toolchain():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_300_lines(name):
    path = modules()[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (f"{path.relative_to(PACKAGE.parent)}: {lines} lines (at most "
                                f"{MAX_LINES}); split it by concern")
