"""The model library on disk: bundles, ensembles, the current pointer, checked loading."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from chromowatch.classify import ModelLibrary, describe_library
from chromowatch.errors import ModelError
from tests.classify.test_bundle import make_bundle

FETCH = "chromowatch models fetch ikemoto2023"


@pytest.fixture
def library(tmp_path: Path) -> ModelLibrary:
    lib = ModelLibrary(tmp_path / "models")
    lib.save_bundle(make_bundle(1), "m1")
    lib.save_bundle(make_bundle(2, class_names=("B", "C", "A")), "m2")
    return lib


def test_save_and_list(library: ModelLibrary) -> None:
    info = library.save_ensemble("pair", ["m1", "m2"], metrics={"accuracy": 0.9})
    assert info.members == ("m1", "m2")
    assert info.metrics == {"accuracy": 0.9}
    assert info.enhancement == "ikemoto2023"
    assert [b.name for b in library.list_bundles()] == ["m1", "m2"]
    assert library.list_bundles()[0].arch == "tinycnn"
    assert library.list_bundles()[0].sha256 is not None
    (listed,) = library.list_ensembles()
    assert listed == info
    assert listed.created.endswith("+00:00")
    manifest = json.loads(info.path.read_text())
    assert [m["file"] for m in manifest["members"]] == ["bundles/m1.pt", "bundles/m2.pt"]
    assert not list(library.root.rglob("*.part"))


def test_nothing_installed_points_to_fetch(tmp_path: Path) -> None:
    empty = ModelLibrary(tmp_path / "none")
    assert empty.current_name() is None
    assert empty.list_ensembles() == [] and empty.list_bundles() == []
    for name in ("current", "ikemoto2023"):
        with pytest.raises(ModelError) as info:
            empty.load_ensemble(name)
        assert FETCH in str(info.value.hint) and "--from DIR" in str(info.value.hint)


def test_current_pointer_and_previous(library: ModelLibrary) -> None:
    library.save_ensemble("one", ["m1"])
    library.save_ensemble("two", ["m2"])
    library.set_current("one")
    library.set_current("two")
    assert library.current_name() == "two"
    assert library.previous_name() == "one"
    library.set_current("two")  # idempotent: previous is kept
    assert library.previous_name() == "one"
    with pytest.raises(ModelError, match="no ensemble named 'three'"):
        library.set_current("three")
    ensemble = library.load_ensemble("current", device="cpu", batch_size=4)
    assert ensemble.name == "two"
    assert library.ensemble_info("current").name == "two"


def test_configured_loading_follows_the_classify_settings(library: ModelLibrary) -> None:
    from chromowatch.settings import ClassifySettings

    library.save_ensemble("one", ["m1"])
    library.save_ensemble("two", ["m2"])
    library.set_current("one")
    classify = ClassifySettings(device="cpu", batch_size=5, cuda_graphs=False)
    ensemble = library.load_configured(classify)
    assert (ensemble.name, ensemble.batch_size, ensemble.device.type) == ("one", 5, "cpu")
    assert library.load_configured(classify, "two").name == "two"


def test_loaded_ensemble_predicts_with_member_names(library: ModelLibrary) -> None:
    library.save_ensemble("pair", ["m1", "m2"])
    ensemble = library.load_ensemble("pair", device="cpu")
    images = [np.full((40, 30, 3), v, np.uint8) for v in (10, 128, 250)]
    predictions = ensemble.predict(images)
    assert len(predictions) == 3
    assert set(predictions[0].member_probs) == {"m1", "m2"}
    assert ensemble.version == library.load_ensemble("pair", device="cpu").version


def test_changed_member_file_is_refused_naming_it(library: ModelLibrary) -> None:
    library.save_ensemble("pair", ["m1", "m2"])
    library.save_bundle(make_bundle(9), "m2")  # replaced after the ensemble pinned it
    with pytest.raises(ModelError, match=r"m2\.pt has sha256 [0-9a-f]{64}, expected"):
        library.load_ensemble("pair")


def test_corrupt_manifest(library: ModelLibrary, caplog: pytest.LogCaptureFixture) -> None:
    library.save_ensemble("good", ["m1"])
    library.ensemble_path("bad").write_text("{not json")
    with pytest.raises(ModelError, match=r"bad\.json cannot be read"):
        library.load_ensemble("bad")
    with caplog.at_level(logging.WARNING):
        assert [e.name for e in library.list_ensembles()] == ["good"]
    assert "bad.json" in caplog.text


def test_member_outside_the_library_is_refused(library: ModelLibrary) -> None:
    info = library.save_ensemble("pair", ["m1"])
    manifest = json.loads(info.path.read_text())
    manifest["members"][0]["file"] = "../../elsewhere.pt"
    info.path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="outside"):
        library.load_ensemble("pair")


def test_save_ensemble_refusals(library: ModelLibrary) -> None:
    library.save_bundle(make_bundle(3, enhancement="none"), "raw")
    with pytest.raises(ModelError, match="no bundle named 'ghost'"):
        library.save_ensemble("e", ["m1", "ghost"])
    with pytest.raises(ModelError, match="different enhancements"):
        library.save_ensemble("e", ["m1", "raw"])
    with pytest.raises(ModelError, match="twice"):
        library.save_ensemble("e", ["m1", "m1"])
    for bad in ("current", "../x", "", "a b"):
        with pytest.raises(ModelError, match="invalid ensemble name"):
            library.save_ensemble(bad, ["m1"])
    assert library.list_ensembles() == []


def test_describe_library(library: ModelLibrary) -> None:
    library.save_ensemble("pair", ["m1", "m2"], metrics={"accuracy": 0.5})
    library.save_ensemble("solo", ["m1"])
    library.set_current("solo")
    rows = describe_library(library)
    assert [(r["name"], r["current"], len(r["members"])) for r in rows] == [
        ("pair", False, 2),
        ("solo", True, 1),
    ]
    assert rows[0]["metrics"] == {"accuracy": 0.5}
    json.dumps(rows)  # plain data, ready for --json


def test_unknown_ensemble_lists_the_installed_ones(library: ModelLibrary,
                                                   tmp_path: Path) -> None:
    library.save_ensemble("one", ["m1"])
    library.save_ensemble("two", ["m2"])
    with pytest.raises(ModelError, match="no ensemble named 'three'") as info:
        library.load_ensemble("three")
    assert "installed ensembles: one, two" in str(info.value)
    with pytest.raises(ModelError) as none:
        ModelLibrary(tmp_path / "empty").load_ensemble("three")
    assert "no ensemble is installed" in str(none.value) and FETCH in str(none.value)
