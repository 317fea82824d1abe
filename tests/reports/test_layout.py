"""The reports package's shape: no import cycles, no SQL, nothing of the daemon, and
export reads its data without the HTML/PDF code."""

from __future__ import annotations

import ast
from pathlib import Path

import chromowatch.reports

PACKAGE = Path(chromowatch.reports.__file__).parent


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every module the file imports, the package's own modules imported inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    lazy: set[str] = set()
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f)}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(names)
        if id(node) in inside:
            lazy.update(n for n in names if n.startswith("chromowatch"))
    return found, lazy


def _modules() -> dict[str, tuple[set[str], set[str]]]:
    return {f"chromowatch.reports.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py")
            if p.stem != "__init__"}


def test_reports_use_no_sql_and_nothing_of_the_daemon() -> None:
    for name, (imports, lazy) in _modules().items():
        assert "sqlite3" not in imports, name
        assert not any(i.startswith("chromowatch.service") for i in imports), name
        assert not lazy, f"{name} imports {sorted(lazy)} inside a function"


def test_export_reads_data_not_the_renderer() -> None:
    imports, _ = _modules()["chromowatch.reports.export"]
    assert "chromowatch.reports.data" in imports
    assert not imports & {"chromowatch.reports.render", "chromowatch.reports.pdf",
                          "chromowatch.reports.publish"}


def test_no_import_cycle_inside_reports() -> None:
    modules = _modules()
    graph = {name: {i for i in imports if i in modules and i != name}
             for name, (imports, _) in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
