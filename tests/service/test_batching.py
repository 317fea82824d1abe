"""The daemon's classify step: crops of several images in one batch, predictions sliced back.

A fake ensemble plugs into the seam (the daemon's current model); no torch model is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from chromowatch.pipeline import PreparedCrop, PreparedImage
from chromowatch.records import BBox, Prediction
from chromowatch.service.daemon import Daemon, _Item
from chromowatch.service.ledger import Job
from chromowatch.settings import Settings


class FakeEnsemble:
    """Predicts from the crop's pixel value: crop k of image i carries 10*i + k."""

    name = version = "fake"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def predict(self, images: Sequence[np.ndarray],
                progress: Callable[[float, int], None] | None = None) -> list[Prediction]:
        tags = [int(im[0, 0, 0]) for im in images]
        self.calls.append(tags)
        return [Prediction(label="ABC"[t % 3], probs={"A": t / 100, "B": 0.0, "C": 0.0},
                           member_probs={}, model_version="fake") for t in tags]


def prepared(i: int, n: int) -> PreparedImage:
    crops = tuple(
        PreparedCrop(k, BBox(0, 0, 2, 2), 0, frozenset(),
                     np.full((2, 2, 3), 10 * i + k, dtype=np.uint8), f"/crops/{i}/{k}.png")
        for k in range(n))
    return PreparedImage(path=f"/in/{i}.png", sha256=f"{i:064x}", size_bytes=1, width=2,
                         height=2, metaphases=1, note=None, crops=crops)


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    settings = Settings(paths={"data_dir": str(tmp_path)},  # type: ignore[arg-type]
                        classify={"batch_size": 5},  # type: ignore[arg-type]
                        daemon={"batch_linger_s": 0.05})  # type: ignore[arg-type]
    d = Daemon(settings)
    d.model.ensemble = FakeEnsemble()  # type: ignore[assignment]
    d.model.maybe_reload = lambda: None  # type: ignore[method-assign]
    return d


def test_crops_of_several_images_go_in_one_batch_and_come_back_to_their_image(
        daemon: Daemon) -> None:
    sizes = {1: 2, 2: 0, 3: 2, 4: 3, 5: 1}  # image 2 has no crops
    for i, n in sizes.items():
        daemon._classify_q.put(_Item(Job(i, f"/in/{i}.png", "/in", "s", None, 0), prepared(i, n)))
    daemon._classify_step()  # 2 + 0 + 2 crops, then image 4 fills the batch of 5
    daemon._classify_step()  # what is left: image 5
    fake = daemon.model.ensemble
    assert isinstance(fake, FakeEnsemble)
    assert fake.calls == [[10, 11, 30, 31, 40, 41, 42], [50]]
    written = [daemon._write_q.get_nowait() for _ in range(daemon._write_q.qsize())]
    assert [item.job.id for item in written] == [1, 2, 3, 4, 5]  # in the order they came
    for item in written:
        i = item.job.id
        assert [round(p.probs["A"] * 100) for p in item.predictions] == [
            10 * i + k for k in range(sizes[i])]
    assert daemon._classify_q.empty()


def test_a_lone_image_is_classified_after_the_linger(daemon: Daemon) -> None:
    daemon._classify_q.put(_Item(Job(7, "/in/7.png", "/in", "s", None, 0), prepared(7, 1)))
    daemon._classify_step()
    fake = daemon.model.ensemble
    assert isinstance(fake, FakeEnsemble) and fake.calls == [[70]]
    assert daemon._write_q.get_nowait().predictions[0].label == "ABC"[70 % 3]
