"""The wheel ships every subpackage and the top-level templates/."""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "chromowatch").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["chromowatch.templates"] == "templates"


def test_templates_are_importable_resources() -> None:
    names = {p.name for p in importlib.resources.files("chromowatch.templates").iterdir()}
    assert {"report.html", "report.css"} <= names
