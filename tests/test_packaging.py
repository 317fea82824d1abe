"""The wheel ships every subpackage and the top-level templates/; the CLI is built from one
table of commands."""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

from chromowatch.cli import COMMANDS, build_parser

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


def test_every_command_of_the_table_is_parsed_to_its_function() -> None:
    parser = build_parser()
    usage = parser.format_help()
    places = [usage.index(f"\n    {c.name} ") for c in COMMANDS]
    assert places == sorted(places)  # --help lists them in the table's order
    argv = {"config": ["config", "show"], "models": ["models", "list"],
            "labels": ["labels", "export-csv"], "sample": ["sample", "close", "s"],
            "synth": ["synth", "out"], "segment": ["segment", "x.png"],
            "classify": ["classify", "c.png"], "process": ["process", "p", "--sample", "s"],
            "report": ["report", "s"], "export": ["export", "--format", "csv"],
            "crops": ["crops", "import", "d", "--sample", "s"],
            "review": ["review", "queue", "--sample", "s"], "users": ["users", "list"]}
    for command in COMMANDS:
        args = parser.parse_args(argv.get(command.name, [command.name]))
        assert args.command == command.name and args.func is command.run
