"""The published models on the published crops: chromowatch reproduces the paper's numbers.

Reference: a plain torchvision loop (ImageFolder, Resize((224, 224)), ToTensor, ImageNet
Normalize, model.eval()), as in the paper's demonstration code. Measured once (see the pins):
the 30-model ensemble gets 479/652 = 73.47% of the wild-type crops right; model 1 alone 471.
The full 652 x 30 run (and all 30 members against torchvision on every 4th crop) is
slow-marked; the default suite runs fixed subsets: model 1 on every 2nd crop, the ensemble
on every 16th.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chromowatch.classify import ModelLibrary, fetch_ikemoto2023, read_crop
from chromowatch.classify.ensemble import Ensemble

pytestmark = pytest.mark.realdata

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
ENSEMBLE_CORRECT = 479  # of 652, 73.47%
SUBSET_STEP, SUBSET_CORRECT = 16, 31  # every 16th crop in ImageFolder order: 31 of 41
MODEL1_STEP, MODEL1_CORRECT = 2, 238  # model 1 on every 2nd crop: 238 of 326 (471 of all 652)
PUBLISHED_CSV_CORRECT = 461  # wt_SqueezeNet.csv, 70.7%


@pytest.fixture(scope="module")
def installed(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelLibrary:
    library = ModelLibrary(tmp_path_factory.mktemp("models"))
    fetch_ikemoto2023(library, real_data / "ikemoto2023/models/squeezenet", timeout=5)
    return library


@pytest.fixture(scope="module")
def crops(real_data: Path) -> tuple[list[Path], np.ndarray]:
    """Crop files in torchvision ImageFolder order (sorted classes, sorted files) and labels."""
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(real_data / "ikemoto2023/crops/wt"))
    assert folder.classes == ["a", "b", "c"]
    return [Path(p) for p, _ in folder.samples], np.array(folder.targets)


def torchvision_inputs(real_data: Path, step: int) -> torch.Tensor:
    """The paper's preprocessing: ImageFolder + Resize((224, 224)), ToTensor, Normalize."""
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(*IMAGENET)]
    )
    folder = torchvision.datasets.ImageFolder(str(real_data / "ikemoto2023/crops/wt"), tf)
    return torch.stack([folder[i][0] for i in range(0, len(folder), step)])


def torchvision_probs(
    real_data: Path, library: ModelLibrary, member: str, inputs: torch.Tensor
) -> np.ndarray:
    """The paper's model: the bare published state dict in torchvision's squeezenet1_1."""
    import torchvision

    published = library.load_bundle(member).meta["published_file"]
    model = torchvision.models.squeezenet1_1(weights=None)
    model.classifier[1] = torch.nn.Conv2d(512, 3, 1)
    model.load_state_dict(
        torch.load(
            real_data / "ikemoto2023/models/squeezenet" / published,
            weights_only=True,
            map_location="cpu",
        )
    )
    model.eval()
    with torch.inference_mode():
        out = [torch.softmax(model(x), dim=1).numpy() for x in inputs.split(64)]
    return np.concatenate(out)


def test_read_crop_gives_pil_pixels(crops: tuple[list[Path], np.ndarray]) -> None:
    files, _ = crops
    assert len(files) == 652
    for path in files:
        rgb = read_crop(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert np.array_equal(rgb, np.asarray(Image.open(path).convert("RGB"))), path


def test_published_csv_is_in_imagefolder_order(
    real_data: Path, crops: tuple[list[Path], np.ndarray]
) -> None:
    """The CSV's labels are in ImageFolder order (its accuracy is the published 70.7%).

    The demonstration notebook wrote it with SqueezeNet_1 (net_num = 1), but the
    SqueezeNet_1.pth published now agrees with it on only 87% of crops (72.2% accuracy), and
    no one of the 30 does better than 88%: the file was replaced after the CSV was made (the
    repository's history has an earlier models/SqueezeNet/ folder). So per-crop agreement
    with the CSV is not tested; agreement with the torchvision loop is.
    """
    published = np.loadtxt(
        real_data / "ikemoto2023/published-predictions/wt_SqueezeNet.csv", dtype=int
    )
    assert int((published == crops[1]).sum()) == PUBLISHED_CSV_CORRECT  # the paper's 70.7%


def test_single_model_matches_the_torchvision_loop(
    real_data: Path, installed: ModelLibrary, crops: tuple[list[Path], np.ndarray]
) -> None:
    files, labels = crops[0][::MODEL1_STEP], crops[1][::MODEL1_STEP]
    member = "ikemoto2023-squeezenet-01"
    ensemble = Ensemble("one", [(member, installed.load_bundle(member))], device="cpu")
    ours, _ = ensemble.predict_proba([read_crop(p) for p in files])
    inputs = torchvision_inputs(real_data, MODEL1_STEP)
    reference = torchvision_probs(real_data, installed, member, inputs)
    assert np.abs(ours - reference).max() < 1e-4
    assert (ours.argmax(1) == reference.argmax(1)).mean() >= 0.995
    assert int((ours.argmax(1) == labels).sum()) == MODEL1_CORRECT


def test_ensemble_on_a_fixed_subset(
    installed: ModelLibrary, crops: tuple[list[Path], np.ndarray]
) -> None:
    files, labels = crops
    ensemble = installed.load_ensemble("ikemoto2023", device="cpu")
    subset = list(range(0, len(files), SUBSET_STEP))
    predictions = ensemble.predict([read_crop(files[i]) for i in subset])
    correct = sum(p.label == "ABC"[labels[i]] for p, i in zip(predictions, subset, strict=True))
    assert abs(correct - SUBSET_CORRECT) <= 1
    assert len(predictions[0].member_probs) == 30


@pytest.mark.slow
def test_ensemble_reproduces_the_published_accuracy(
    real_data: Path, installed: ModelLibrary, crops: tuple[list[Path], np.ndarray]
) -> None:
    """73.5% (within 1 point) on all 652 crops; each member = torchvision on every 4th crop."""
    files, labels = crops
    ensemble = installed.load_ensemble("ikemoto2023", device="cpu")
    probs, per_member = ensemble.predict_proba([read_crop(p) for p in files])
    accuracy = float((probs.argmax(1) == labels).mean())
    assert abs(accuracy - 0.735) <= 0.01, accuracy
    assert abs(int((probs.argmax(1) == labels).sum()) - ENSEMBLE_CORRECT) <= 2
    inputs = torchvision_inputs(real_data, 4)
    for j, member in enumerate(ensemble.member_names):
        reference = torchvision_probs(real_data, installed, member, inputs)
        ours = per_member[j, ::4]
        assert np.abs(ours - reference).max() < 1e-4, member
        assert (ours.argmax(1) == reference.argmax(1)).mean() >= 0.995, member
