"""The habits issue 15 set, kept by a test: short functions, few top-level modules, a CLI that
starts without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chromowatch"
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 14


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}",
         (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_is_longer_than_80_lines() -> None:
    long = [
        f"{where} ({lines} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for where, lines in _functions(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, "split these into steps:\n" + "\n".join(long)


def test_few_modules_stay_flat_at_the_package_top() -> None:
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_TOP_LEVEL_MODULES, f"{len(flat)} modules at the top: {flat}"


def test_help_imports_no_torch_opencv_or_weasyprint() -> None:
    code = (
        "import sys\n"
        "from chromowatch.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('torch', 'torchvision', 'cv2', 'weasyprint')\n"
        "print('HEAVY:', *(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert "usage: chromowatch" in out.stdout
    heavy = [line for line in out.stderr.splitlines() if line.startswith("HEAVY:")]
    assert heavy == ["HEAVY:"], out.stderr


def test_no_import_cycle_in_the_package() -> None:
    grimp = __import__("grimp")  # comes with import-linter (a dev dependency)
    graph = grimp.build_graph("chromowatch")
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if imported.startswith("chromowatch")
            and graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert not cycles, f"modules that import each other (directly or through others): {cycles}"
