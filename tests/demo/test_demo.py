"""The README's main job, offline with no model: bootstrap, generate, process, print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chromowatch.classify.library import ModelLibrary
from chromowatch.cli import main
from chromowatch.demo.bootstrap import DEMO_ENSEMBLE, bootstrap_demo_model
from chromowatch.demo.run import ensure_model
from chromowatch.records import is_demonstration
from chromowatch.settings import Settings
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
    assert re.search(r"the demo took \d+ s on \d+ CPU core", out)
    assert "chromowatch users add NAME --role admin" in out and "http://127.0.0.1:8765/" in out
    assert main(["results", "--json"]) == 0


def test_bootstrapping_says_what_it_measured_not_a_guess(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """It once promised "about a minute" and took 284 s on two cores: it now says what it took."""
    settings = settings_in(tmp_path, monkeypatch)

    def quick(library: ModelLibrary, settings: Settings) -> str:
        return bootstrap_demo_model(library, settings, crops=60, epochs=1)

    monkeypatch.setattr("chromowatch.demo.run.bootstrap_demo_model", quick)
    assert ensure_model(settings, models_from=None, offline=True) == DEMO_ENSEMBLE
    out = capsys.readouterr().out
    assert "about a minute" not in out
    assert re.search(r"trained the DEMONSTRATION model in \d+ s", out)


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
