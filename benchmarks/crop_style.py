"""Crop style: chromowatch's crops of the ddx11 spreads against the published enhanced crops.

    .venv/bin/python benchmarks/crop_style.py [--members 30] [--wt-recall] [--segmenter]
        [--variant 'NAME={"key": value}' ...]

Issue 17, item 2. The published crops: the 652 wild-type crops of
$CHROMOWATCH_REAL_DATA/ikemoto2023/crops (class folders a, b, c). chromowatch's crops: the 342
labelled ddx11 boxes, cut as `labels import-yolo` cuts them (the segmenter's padding) and
enhanced with each variant of the [enhance] settings; with --segmenter also the segmenter's
crops of the same spreads that match a labelled box (IoU >= 0.5, the box's class).
Variants default to "before" (no framing, no JPEG: main's enhancement) and "after" (the
defaults), measured in the same run.

Per variant: medians of style statistics (chromosome and background grey levels, share of pure
white background, margins as shares of the chromosome box's longer side, chromosome thickness,
sharpness at 64 px, crop size), Wasserstein distances of the pooled chromosome and background
grey levels to the published crops', and the cross-validated accuracy of a logistic regression
telling the two sources apart from style features, class-balanced (0.5: alike).
With --members N > 0, also the per-class recall of the first N published SqueezeNets on the
ddx11 crops of each variant (they never saw ddx11: a change there comes from the restyling
alone), and with --wt-recall on the published crops too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))
DEFAULT_VARIANTS = ('before={"frame_margin": null, "jpeg_quality": null}', "after={}")


def published_crops() -> tuple[list[np.ndarray], np.ndarray]:
    from chromowatch.classify import read_crop

    paths = sorted((DATA / "ikemoto2023" / "crops" / "wt").glob("*/*.jpg"))
    labels = np.array(["abc".index(p.parent.name) for p in paths])
    return [read_crop(p) for p in paths], labels


def segmenter_crops() -> tuple[list[object], np.ndarray]:
    """The segmenter's crops of the ddx11 spreads that match a labelled box, with its class."""
    from chromowatch.ingest import read_spread
    from chromowatch.segmentation.segment import segment
    from chromowatch.settings import Settings
    from chromowatch.training.labels import parse_yolo

    settings = Settings()
    crops, labels = [], []
    for image in sorted((DATA / "ddx11" / "images").iterdir()):
        spread = read_spread(image, settings.ingest)
        label_file = DATA / "ddx11" / "labels" / f"{image.stem}.txt"
        boxes = parse_yolo(label_file.read_text(), spread.width, spread.height)
        found = segment(spread.rgb, settings.segment,
                        chroma_subsampled=spread.chroma_subsampled).crops
        for crop in found:
            best = max(boxes, key=lambda b, c=crop: c.bbox.iou(b[0]))  # type: ignore[misc]
            if crop.bbox.iou(best[0]) >= 0.5:
                crops.append(crop)
                labels.append("ABC".index(best[1]))
    return crops, np.array(labels)


def style_row(name: str, images: Sequence[np.ndarray], classes: np.ndarray,
              reference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> str:
    from chromowatch.training import style

    ref_features, ref_classes, ref_fg, ref_bg = reference
    features = style.feature_matrix(images)
    fg, bg = style.pooled_levels(images, np.random.default_rng(0))
    d = style.describe(features, [max(im.shape[:2]) for im in images])
    acc = style.source_accuracy(ref_features, ref_classes, features, classes)
    per_class = " / ".join(f"{acc.per_class.get(c, float('nan')):.2f}" for c in range(3))
    groups = []
    for names in (style.INTENSITY, style.FRAMING):
        cols = [style.FEATURES.index(n) for n in names]
        groups.append(style.source_accuracy(ref_features[:, cols], ref_classes,
                                            features[:, cols], classes).accuracy)
    return (f"| {name} | {d['fg_mean']:.0f} | {d['bg_mean']:.1f} | {d['bg_white_255']:.2f} | "
            f"{d['margin_mean']:.3f} / {d['margin_min']:.3f} | {d['thickness']:.3f} | "
            f"{d['sharpness']:.1f} | {d['size_px']:.0f} | {style.wasserstein(fg, ref_fg):.1f} | "
            f"{style.wasserstein(bg, ref_bg):.2f} | **{acc.accuracy:.3f}** ({per_class}) | "
            f"{groups[0]:.3f} | {groups[1]:.3f} |")


def reference_of(images: Sequence[np.ndarray], classes: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from chromowatch.training import style

    fg, bg = style.pooled_levels(images, np.random.default_rng(0))
    return style.feature_matrix(images), classes, fg, bg


def augmented(images: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """One training view of each crop, with the default augmentation."""
    from chromowatch.settings import TrainingSettings
    from chromowatch.training.augment import augment, augment_of

    rng = np.random.default_rng(seed)
    aug = augment_of(TrainingSettings())
    return [augment(im, rng, aug) for im in images]


def recall_row(name: str, ensemble: object, images: Sequence[np.ndarray], y: np.ndarray
               ) -> str:
    probs, _ = ensemble.predict_proba(images)  # type: ignore[attr-defined]
    pred = probs.argmax(1)
    recall = [float(np.mean(pred[y == c] == c)) for c in range(3)]
    return (f"| {name} | {len(y)} | {np.mean(pred == y):.3f} | "
            f"{' / '.join(f'{r:.3f}' for r in recall)} | "
            f"{' / '.join(f'{np.mean(pred == c):.3f}' for c in range(3))} |")


def published_ensemble(members: int, tmp: Path) -> object:
    import torch

    from chromowatch.classify import ModelLibrary
    from chromowatch.classify.ensemble import Ensemble
    from chromowatch.classify.published import IKEMOTO2023, fetch_published

    torch.set_num_threads(os.cpu_count() or 1)
    library = ModelLibrary(tmp)
    files = list(IKEMOTO2023.files)[:members]
    fetch_published(library, IKEMOTO2023.subset(files), DATA / "ikemoto2023" / "models" /
                    "squeezenet", timeout=30)
    names = library.ensemble_info("ikemoto2023").members
    return Ensemble("published", [(m, library.load_bundle(m)) for m in names], device="cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=0,
                        help="published SqueezeNets for the recall table (0: none)")
    parser.add_argument("--wt-recall", action="store_true",
                        help="also the recall on the published crops (slow: 652 crops)")
    parser.add_argument("--segmenter", action="store_true",
                        help="also the segmenter's crops that match a labelled box")
    parser.add_argument("--variant", action="append",
                        help='NAME=JSON of [enhance] settings; default: before, after')
    args = parser.parse_args()

    from enhance import ddx11_raw_crops

    from chromowatch.enhance import enhance_crop, enhance_whole
    from chromowatch.settings import EnhanceSettings
    started = time.time()
    wt, wt_y = published_crops()
    reference = reference_of(wt, wt_y)
    raws, y = ddx11_raw_crops()
    segmented, seg_y = segmenter_crops() if args.segmenter else ([], np.array([], int))
    variants = [(n, EnhanceSettings(**json.loads(raw or "{}"))) for n, _, raw in
                (spec.partition("=") for spec in args.variant or DEFAULT_VARIANTS)]
    sources: list[tuple[str, list[np.ndarray], np.ndarray]] = []
    for name, settings in variants:
        sources.append((f"ddx11 boxes, {name}", [enhance_whole(r, settings) for r in raws], y))
        if segmented:
            sources.append((f"ddx11 segmenter, {name}",
                            [enhance_crop(c, settings) for c in segmented], seg_y))  # type: ignore[arg-type]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; published WT crops: "
          f"{len(wt)} (A/B/C {np.bincount(wt_y, minlength=3).tolist()}); ddx11 boxes: "
          f"{len(y)} (A/B/C {np.bincount(y, minlength=3).tolist()}); segmenter crops matching "
          f"a box: {len(seg_y)}")
    print("| crops | chromosome grey | background grey | pure white bg | margin mean / min "
          "| thickness | sharpness | size px | W1 chromosome | W1 background "
          "| source classifier accuracy (A / B / C) | intensity features only "
          "| framing features only |")
    print("| --- " * 13 + "|")
    print(style_row("published WT (against itself)", wt, wt_y, reference))
    for name, images, labels in sources:
        print(style_row(name, images, labels, reference), flush=True)
    wt_views = augmented(wt, 1)
    for name, images, labels in sources:
        views = augmented(images, 2)
        print(style_row(f"{name}: training views (default augmentation, both sources)", views,
                        labels, reference_of(wt_views, wt_y)), flush=True)
    if args.members > 0:
        with tempfile.TemporaryDirectory() as tmp:
            ensemble = published_ensemble(args.members, Path(tmp))
            print(f"\nPublished ensemble, {args.members} SqueezeNets:\n")
            print("| crops | n | accuracy | recall A / B / C | predicted A / B / C |")
            print("| --- " * 5 + "|")
            if args.wt_recall:
                print(recall_row("published WT", ensemble, wt, wt_y), flush=True)
            for name, images, labels in sources:
                print(recall_row(name, ensemble, images, labels), flush=True)
    print(f"\n({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
