"""`crops import --enhanced` on published wild-type crops with three published models: stored
as they are, classified exactly as `classify --enhanced` classifies them, one crop for the two
identical files (a034, a035); then `reclassify` with another ensemble of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chromowatch.classify.library import ModelLibrary
from chromowatch.classify.published import IKEMOTO2023, fetch_published
from chromowatch.cli import main
from chromowatch.store import Store
from tests.helpers import settings_in

pytestmark = pytest.mark.realdata

FILES = [f"a{n:03d}.jpg" for n in range(30, 38)] + \
    [f"b{n:03d}.jpg" for n in range(1, 7)] + [f"c{n:03d}.jpg" for n in range(1, 7)]


def install(models: Path, real_data: Path, names: list[str]) -> None:
    subset = IKEMOTO2023.subset(names)
    fetch_published(ModelLibrary(models), subset, real_data / "ikemoto2023/models/squeezenet",
                    timeout=5)


def test_published_crops_import_and_reclassify(
        real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    settings = settings_in(tmp_path / "data", monkeypatch)
    install(settings.paths.models, real_data, [f"SqueezeNet_{i}.pth" for i in (1, 2, 3)])
    crops = tmp_path / "wt"
    for name in FILES:
        folder = crops / name[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_data / "ikemoto2023/crops/wt" / name[0] / name, folder / name)
    assert main(["crops", "import", str(crops), "--sample", "wt", "--enhanced", "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert main(["classify", str(crops), "--enhanced", "--json"]) == 0
    classified = {r["path"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(imported) == 19  # a034.jpg and a035.jpg are one crop
    for row in imported:
        assert row["label"] == classified[row["source"]]["label"]
        for k, v in row["probs"].items():
            assert abs(v - classified[row["source"]]["probs"][k]) < 1e-5
    with Store.open(settings.paths.db) as store:
        stored = store.sample_crop_rows("wt")
    assert len(stored) == 19
    by_id = {c.id: c.file for c in stored}
    for row in imported[:3]:
        original = cv2.imread(row["source"])
        assert np.array_equal(cv2.imread(by_id[row["crop_id"]]), original)

    # another ensemble (one of the three) becomes current: `reclassify` scores every crop
    library = ModelLibrary(settings.paths.models)
    library.save_ensemble("one", ["ikemoto2023-squeezenet-02"])
    library.set_current("one")
    assert main(["reclassify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scored"] == 19 and out["results"][0]["models"] == {out["model"]: 19}
