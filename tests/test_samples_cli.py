"""`sample delete` and `sample rename` (issue 16 item 4), and an unknown sample as a usage error
(exit 2, with the known samples in the hint) wherever a sample is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chromowatch.cli import main
from chromowatch.demo.synth import write_dataset
from chromowatch.errors import UsageError
from chromowatch.settings import Settings
from chromowatch.store import Store
from tests.helpers import install_tiny_model, settings_in


@pytest.fixture(scope="module")
def spreads(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("spreads")
    return write_dataset(out, samples=1, spreads=2, seed=7)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spreads: list[Path],
        capsys: pytest.CaptureFixture[str]) -> Settings:
    """Two samples, one spread each; one crop of `gone` confirmed, a report of `gone`."""
    settings = settings_in(tmp_path / "data", monkeypatch)
    install_tiny_model(settings.paths.models)
    monkeypatch.setenv("CHROMOWATCH_REPORT__FORMATS", '["html"]')
    assert main(["process", str(spreads[0]), "--sample", "gone"]) == 0
    assert main(["process", str(spreads[1]), "--sample", "kept"]) == 0
    with Store.open(settings.paths.db) as store:
        crop = store.sample_crop_rows("gone")[0]
        store.add_label(crop.id, "C", source="t", who="t")
    assert main(["report", "gone"]) == 0
    capsys.readouterr()
    return settings


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_delete_removes_rows_and_files_of_that_sample_only(
        env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open(env.paths.db) as store:
        gone_files = [Path(c.file) for c in store.sample_crop_rows("gone")]
        kept_files = [Path(c.file) for c in store.sample_crop_rows("kept")]
        kept_before = store.sample_counts("kept")
    reports = env.paths.data / "reports" / "gone"
    assert reports.is_dir() and all(f.is_file() for f in gone_files)
    assert main(["sample", "delete", "gone", "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"sample gone: 1 image(s), 0 failed file(s), {len(gone_files)} crop(s)" in out
    assert "1 confirmed label(s)" in out and "deleted" in out
    assert not any(f.exists() for f in gone_files) and not reports.exists()
    assert not gone_files[0].parent.parent.exists()  # the spread's crop folders too
    assert env.paths.crops.is_dir()
    assert all(f.is_file() for f in kept_files)
    with Store.open(env.paths.db) as store:
        assert store.sample_names() == ["kept"]
        assert store.sample_counts("kept") == kept_before
    db = env.paths.db
    assert _count(db, "SELECT COUNT(*) FROM crops") == len(kept_files)
    assert _count(db, "SELECT COUNT(*) FROM predictions") == len(kept_files)
    assert _count(db, "SELECT COUNT(*) FROM labels") == 0
    assert _count(db, "SELECT COUNT(*) FROM reports") == 0


def test_delete_asks_or_needs_yes(env: Settings, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    # not a terminal, no --yes: nothing is deleted, and the user is told what would be
    assert main(["sample", "delete", "gone"]) == 2
    err = capsys.readouterr().err
    assert "--yes" in err and "1 confirmed label(s)" in err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["sample", "delete", "gone"]) == 0
    assert "nothing deleted" in capsys.readouterr().out
    with Store.open(env.paths.db) as store:
        assert store.sample_names() == ["gone", "kept"]
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert main(["sample", "delete", "gone"]) == 0
    with Store.open(env.paths.db) as store:
        assert store.sample_names() == ["kept"]


def test_deleted_sample_can_be_processed_again(env: Settings, spreads: list[Path]) -> None:
    assert main(["sample", "delete", "gone", "--yes"]) == 0
    assert main(["process", str(spreads[0]), "--sample", "gone"]) == 0
    with Store.open(env.paths.db) as store:
        assert store.sample_counts("gone")[0].images == 1


def test_rename(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open(env.paths.db) as store:
        before = store.sample_counts("gone")[0]
    assert main(["sample", "rename", "gone", "ddx11"]) == 0
    assert "sample gone is now ddx11" in capsys.readouterr().out
    with Store.open(env.paths.db) as store:
        assert store.sample_names() == ["ddx11", "kept"]
        after = store.sample_counts("ddx11")[0]
    assert (after.crops, after.counts) == (before.crops, before.counts)
    assert main(["sample", "rename", "ddx11", "kept"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["sample", "rename", "nope", "x"]) == 2


@pytest.mark.parametrize("argv", [
    ["results", "--sample", "nope"],
    ["report", "nope"],
    ["export", "--sample", "nope", "--format", "csv"],
    ["sample", "delete", "nope", "--yes"],
])
def test_unknown_sample_is_a_usage_error(env: Settings, argv: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no sample named 'nope'" in err and "known samples: gone, kept" in err


def test_store_names_the_known_samples(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store, pytest.raises(UsageError) as info:
        store.sample_counts("nope")
    assert "no sample is stored yet" in str(info.value)


def test_process_of_files_stored_under_another_sample(
        env: Settings, spreads: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Every file already stored under another sample: say where, and show that sample
    (was: exit 5, "no sample named ...")."""
    assert main(["process", str(spreads[0]), "--sample", "other"]) == 0
    out = capsys.readouterr().out
    assert "already processed (image 1, sample gone), stored once" in out
    assert "gone" in out.split("model:")[1]
