"""The synthetic spread generator: its truth must match what it draws, or every test that
leans on it (segmentation, classification, the demo) checks against a wrong answer."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from chromowatch.demo.synth import (
    GAP_PX,
    MASK_THRESHOLD,
    SAMPLE_MIXES,
    SynthSpread,
    generate_crops,
    generate_spread,
    parse_yolo,
    render_chromosome,
    write_dataset,
    yolo_lines,
)
from chromowatch.records import BBox


def _spread(seed: int, **kwargs: Any) -> SynthSpread:
    return generate_spread(np.random.default_rng(seed), **kwargs)


@pytest.fixture(scope="module")
def crowded() -> SynthSpread:
    """A default-sized spread with many touching pairs, shared by the read-only tests."""
    return _spread(11, chromosomes=(70, 90), touching_fraction=0.3)


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation; radius 1 is the full 3x3 square, i.e. 8-connected contact counts."""
    shape = cv2.MORPH_RECT if radius == 1 else cv2.MORPH_ELLIPSE
    kernel = cv2.getStructuringElement(shape, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def test_same_seed_same_spread() -> None:
    a, b = _spread(3), _spread(3)
    assert np.array_equal(a.rgb, b.rgb)
    assert a.objects == b.objects and a.nuclei == b.nuclei
    assert not np.array_equal(a.rgb, _spread(4).rgb)


def test_spread_shape_and_default_content(crowded: SynthSpread) -> None:
    assert crowded.rgb.shape == (1024, 1440, 3) and crowded.rgb.dtype == np.uint8
    assert crowded.label_map is not None and crowded.label_map.shape == (1024, 1440)
    assert 60 <= len(crowded.objects) <= 90  # a few may not fit; most must
    assert {o.metaphase for o in crowded.objects} == {0}
    assert crowded.nuclei


def test_boxes_inside_image_and_tight_around_their_mask(crowded: SynthSpread) -> None:
    labels = crowded.label_map
    assert labels is not None
    height, width = labels.shape
    for i, obj in enumerate(crowded.objects):
        b = obj.bbox
        assert b.x >= 0 and b.y >= 0 and b.x + b.w <= width and b.y + b.h <= height
        assert 8 <= b.w <= 90 and 8 <= b.h <= 90
        ys, xs = np.nonzero(labels == i + 1)
        inside = (xs >= b.x) & (xs < b.x + b.w) & (ys >= b.y) & (ys < b.y + b.h)
        assert inside.all(), f"object {i} has mask pixels outside its box"
        if not obj.touching:  # a touching object may lose overlap pixels to its partner
            assert BBox(int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1) == b


def test_boxes_hold_the_dark_pixels(crowded: SynthSpread) -> None:
    """Inside each box the picture is dark; a ring just outside it is plain glass."""
    labels = crowded.label_map
    assert labels is not None
    green = crowded.rgb[..., 1].astype(int)
    glass = float(np.median(green))
    dark = green < glass - 25
    for i, obj in enumerate(crowded.objects):
        b = obj.bbox
        box = dark[b.y : b.y + b.h, b.x : b.x + b.w]
        assert box.mean() > 0.15, f"object {i} box is mostly empty"
        own = labels == i + 1
        y0, y1 = max(b.y - 4, 0), min(b.y + b.h + 4, labels.shape[0])
        x0, x1 = max(b.x - 4, 0), min(b.x + b.w + 4, labels.shape[1])
        ring = np.ones((y1 - y0, x1 - x0), bool)
        ring[b.y - 2 - y0 : b.y + b.h + 2 - y0, b.x - 2 - x0 : b.x + b.w + 2 - x0] = False
        others = _grow((labels[y0:y1, x0:x1] > 0) & ~own[y0:y1, x0:x1], 3)
        ring &= ~others
        assert dark[y0:y1, x0:x1][ring].mean() <= 0.01, f"dark pixels outside box {i}"


def test_touching_flag_matches_masks(crowded: SynthSpread) -> None:
    labels = crowded.label_map
    assert labels is not None
    touching = 0
    for i, obj in enumerate(crowded.objects):
        b = obj.bbox
        y0, x0 = max(b.y - GAP_PX - 2, 0), max(b.x - GAP_PX - 2, 0)
        window = labels[y0 : b.y + b.h + GAP_PX + 2, x0 : b.x + b.w + GAP_PX + 2]
        own = window == i + 1
        adjacent = set(np.unique(window[_grow(own, 1)]).tolist()) - {0, i + 1}
        near = set(np.unique(window[_grow(own, GAP_PX - 1)]).tolist()) - {0, i + 1}
        assert obj.touching == bool(adjacent), f"object {i}: flag {obj.touching}"
        if not obj.touching:
            assert not near, f"object {i} is closer than {GAP_PX} px to {near}"
        touching += obj.touching
    assert touching >= 4


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="class_weights"):
        _spread(0, class_weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="chromosomes"):
        _spread(0, chromosomes=(50, 40))


def test_no_touching_when_not_asked() -> None:
    assert not any(o.touching for o in _spread(5, touching_fraction=0.0).objects)


def test_class_mix_follows_weights() -> None:
    counts: Counter[str] = Counter()
    for seed in range(3):
        counts.update(o.cls for o in _spread(seed, class_weights=(0.6, 0.3, 0.1)).objects)
    total = sum(counts.values())
    assert total > 150
    for cls, weight in zip("ABC", (0.6, 0.3, 0.1), strict=True):
        assert abs(counts[cls] / total - weight) < 0.08, counts
    only_c = _spread(7, class_weights=(0.0, 0.0, 1.0), chromosomes=(20, 30))
    assert {o.cls for o in only_c.objects} == {"C"}


def test_no_metaphase_means_no_objects() -> None:
    spread = _spread(8, metaphases=0, nuclei=3)
    assert spread.objects == ()
    assert spread.label_map is not None and not spread.label_map.any()
    assert 1 <= len(spread.nuclei) <= 3
    assert spread.rgb.min() < 80  # nuclei (and debris) are still drawn


def test_two_metaphases_are_two_separate_clusters() -> None:
    for seed in (1, 2):
        spread = _spread(seed, metaphases=2)
        centres = {
            m: np.array(
                [
                    (o.bbox.x + o.bbox.w / 2, o.bbox.y + o.bbox.h / 2)
                    for o in spread.objects
                    if o.metaphase == m
                ]
            )
            for m in (0, 1)
        }
        assert len(centres[0]) >= 30 and len(centres[1]) >= 30

        def nearest(a: np.ndarray, b: np.ndarray, same: bool) -> np.ndarray:
            d = np.hypot(*(a[:, None, :] - b[None, :, :]).transpose(2, 0, 1))
            if same:
                np.fill_diagonal(d, np.inf)
            return d.min(axis=1)

        within = max(float(np.median(nearest(c, c, True))) for c in centres.values())
        between = float(nearest(centres[0], centres[1], False).min())
        assert between > 2 * within, (between, within)


def test_render_chromosome_shapes_read_as_their_class() -> None:
    """A and B are one blob (B's sisters stay joined at the centromere), C two rods."""
    rng = np.random.default_rng(0)
    for cls, parts in (("A", 1), ("B", 1), ("C", 2)):
        for _ in range(20):
            darkness, mask = render_chromosome(
                rng, cls, length=rng.uniform(15, 45), width=6.0, angle=rng.uniform(0, 6.3)
            )
            assert darkness.dtype == np.float32 and darkness.shape == mask.shape
            assert np.array_equal(mask, darkness >= MASK_THRESHOLD)
            assert not mask[0].any() and not mask[-1].any()  # margin around the object
            assert cv2.connectedComponents(mask.astype(np.uint8))[0] - 1 == parts
    with pytest.raises(ValueError, match="unknown class"):
        render_chromosome(rng, "D", length=20, width=6, angle=0)


def test_generate_crops_balanced_raw_crops() -> None:
    crops = generate_crops(np.random.default_rng(2), 10)
    assert len(crops) == 10
    counts = Counter(cls for _, cls in crops)
    assert set(counts) == {"A", "B", "C"} and max(counts.values()) - min(counts.values()) <= 1
    for rgb, _ in crops:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert min(rgb.shape[:2]) >= 15 and max(rgb.shape[:2]) <= 120
        green = rgb[..., 1].astype(int)
        assert green.min() < np.median(green[0]) - 30  # a dark chromosome on lighter glass


def test_yolo_round_trip() -> None:
    spread = _spread(9)
    height, width = spread.rgb.shape[:2]
    text = "".join(f"{line}\n" for line in yolo_lines(spread.objects, width, height))
    parsed = parse_yolo(text, width, height)
    assert [cls for cls, _ in parsed] == [o.cls for o in spread.objects]
    assert [box for _, box in parsed] == [o.bbox for o in spread.objects]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("synth") / "a"
    return root, write_dataset(root, samples=2, spreads=1, seed=42)


def test_write_dataset_is_byte_identical_for_a_seed(
    dataset: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, _ = dataset
    write_dataset(tmp_path, samples=2, spreads=1, seed=42)
    files_a = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_write_dataset_layout_and_truth(dataset: tuple[Path, list[Path]]) -> None:
    root, images = dataset
    assert [p.relative_to(root) for p in images] == [
        Path("synthetic-01/images/spread_001.png"),
        Path("synthetic-02/images/spread_001.png"),
    ]
    for sample, (_, weights) in zip(("synthetic-01", "synthetic-02"), SAMPLE_MIXES, strict=False):
        truth = json.loads((root / sample / "truth.json").read_text())
        assert truth["sample"] == sample and truth["class_weights"] == list(weights)
        (spread,) = truth["spreads"]
        bgr = cv2.imread(str(root / sample / spread["image"]))
        assert bgr is not None and bgr.shape == (spread["height"], spread["width"], 3) == (
            1024,
            1440,
            3,
        )
        parsed = parse_yolo((root / sample / spread["labels"]).read_text(), 1440, 1024)
        assert [(c, b.as_list()) for c, b in parsed] == [
            (o["cls"], o["bbox"]) for o in spread["objects"]
        ]
        assert spread["objects"] and all(
            set(o) == {"bbox", "cls", "metaphase", "touching"} for o in spread["objects"]
        )


def test_samples_differ_in_class_mix(dataset: tuple[Path, list[Path]]) -> None:
    """The first sample is control-like (mostly A), the second clearly defective."""
    root, _ = dataset
    share_a = []
    for sample in ("synthetic-01", "synthetic-02"):
        truth = json.loads((root / sample / "truth.json").read_text())
        classes = [o["cls"] for s in truth["spreads"] for o in s["objects"]]
        share_a.append(classes.count("A") / len(classes))
    assert share_a[0] > 0.6 > 0.4 > share_a[1]


def test_one_spread_is_fast() -> None:
    """Guard against accidental quadratic placement; the target is well under 1 s."""
    _spread(0)  # warm up imports
    start = time.perf_counter()
    _spread(1)
    assert time.perf_counter() - start < 2.0


@pytest.mark.realdata
def test_sizes_resemble_ddx11(real_data: Path) -> None:
    """Synthetic boxes are about as big as the hand-drawn ddx11 ones (which carry a few px
    of padding); the parser also reads the real label files."""
    real = []
    for path in sorted((real_data / "ddx11" / "labels").glob("*.txt")):
        real += [max(b.w, b.h) for _, b in parse_yolo(path.read_text(), 1440, 1024)]
    synthetic = [max(o.bbox.w, o.bbox.h) for o in _spread(12).objects]
    assert len(real) > 100
    assert abs(np.median(synthetic) - np.median(real)) < 12, (
        np.median(synthetic),
        np.median(real),
    )
