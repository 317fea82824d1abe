"""The README's service install works as written on a machine where chromowatch is only in its
venv (a pip install puts nothing on the PATH for root or the service user)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _install_block() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("Install with systemd")
    block = text[start:].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_every_chromowatch_command_goes_through_the_venv() -> None:
    bare = [line for line in _install_block()
            if re.search(r"(^|[|;&]\s*|sudo( -u \S+)?\s+)chromowatch\s", line.strip())]
    assert not bare, f"`chromowatch` is not on the PATH after the install: {bare}"


def test_the_units_documentation_file_is_installed_by_the_steps() -> None:
    unit = (REPO / "systemd" / "chromowatch.service").read_text(encoding="utf-8")
    doc = re.search(r"^Documentation=file://(\S+)", unit, re.M)
    assert doc is not None
    assert any(doc.group(1) in line for line in _install_block()), (
        f"nothing in the README's install creates {doc.group(1)}")
