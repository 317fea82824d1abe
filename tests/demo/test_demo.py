"""The README's main job, offline with no model: bootstrap, generate, process, print."""

from __future__ import annotations

from pathlib import Path

import pytest

from chromowatch.classify.library import ModelLibrary
from chromowatch.cli import main
from chromowatch.demo.bootstrap import DEMO_ENSEMBLE, bootstrap_demo_model
from chromowatch.records import is_demonstration
from tests.helpers import settings_in


def test_offline_demo_bootstraps_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_in(tmp_path, monkeypatch)
    library = ModelLibrary(settings.paths.models)
    # A short training run; the demo itself trains longer.
    assert bootstrap_demo_model(library, settings, crops=150, epochs=1) == DEMO_ENSEMBLE
    assert library.current_name() == DEMO_ENSEMBLE and is_demonstration(DEMO_ENSEMBLE)
    assert main(["demo", "--offline", "--spreads", "1"]) == 0
    out = capsys.readouterr().out
    assert "DEMONSTRATION" in out
    assert "synthetic-01" in out and "synthetic-02" in out
    assert "all samples complete (2)" in out
    assert main(["results", "--json"]) == 0


@pytest.mark.slow
@pytest.mark.realdata
def test_demo_installs_published_models_from_local_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_data: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings_in(tmp_path, monkeypatch)
    source = real_data / "ikemoto2023" / "models" / "squeezenet"
    assert main(["demo", "--spreads", "1", "--models-from", str(source)]) == 0
    out = capsys.readouterr().out
    assert "; model ikemoto2023-" in out and "DEMONSTRATION" not in out
