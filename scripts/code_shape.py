"""Sizes that show the code's shape (issue 15's before/after table): module counts, longest
modules and functions, complexity, in-function imports of the package, import edges.

    .venv/bin/python scripts/code_shape.py [REPO]     # REPO: a checkout (default: this one)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _own_imports(node: ast.AST) -> list[str]:
    return [n.module for n in ast.walk(node)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("chromowatch")]


def main() -> None:
    repo = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE
    pkg = repo / "chromowatch"
    modules = sorted(pkg.rglob("*.py"))
    functions: list[tuple[int, str]] = []
    inner = 0
    edges: set[tuple[str, str]] = set()
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(repo)
        top = rel.parts[1].removesuffix(".py")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((lines, f"{rel}:{node.name}"))
                inner += len(_own_imports(node))
        for module in _own_imports(tree):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] != top:
                edges.add((top, parts[1]))
    sizes = sorted(((len(p.read_text().splitlines()), str(p.relative_to(repo))) for p in modules),
                   reverse=True)
    ruff = Path(sys.executable).with_name("ruff")
    complex_ = subprocess.run(
        [str(ruff), "check", str(pkg), "--isolated", "--select", "C901", "--config",
         "lint.mccabe.max-complexity=10", "--output-format", "concise"],
        capture_output=True, text=True, check=False).stdout
    functions.sort(reverse=True)
    print(f"modules: {len(modules)} ({len(list(pkg.glob('*.py')))} flat at the top)")
    print("longest modules:", ", ".join(f"{n} {k}" for k, n in sizes[:5]))
    print("longest functions:", ", ".join(f"{n} {k}" for k, n in functions[:5]))
    print("functions over 80 lines:", sum(k > 80 for k, _ in functions))
    print("functions over complexity 10:", complex_.count("C901"))
    print("in-function imports of the package's own modules:", inner)
    print("import edges between top-level modules/packages:", len(edges))


if __name__ == "__main__":
    main()
