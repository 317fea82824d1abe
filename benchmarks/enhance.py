"""Enhancement: how the published models do on our enhanced ddx11 crops, per setting.

    .venv/bin/python benchmarks/enhance.py [--members 10] [--variant 'NAME={"key": value}' ...]

The published models learnt from the paper's enhanced crops; a raw crop enhanced by
chromowatch should look like those to them. Crops: the 342 labelled ddx11 boxes, cut as
`labels import-yolo` cuts them (the segmenter's padding), enhanced with each variant of the
[enhance] settings. Scored with the first --members published ikemoto2023 SqueezeNets
(installed from $CHROMOWATCH_REAL_DATA/ikemoto2023/models/squeezenet into a temporary
folder): accuracy, balanced accuracy, per-class recall, confusion matrix. Also the darkness
of the chromosome pixels (Otsu foreground of the grey crop: quartiles of grey level) next to
the published wild-type crops' own, the look the models were trained on.
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
DATA = Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))
DEFAULT_VARIANTS = ("defaults={}", 'no-restain={"stain": null}')


def foreground_quartiles(images: Sequence[np.ndarray]) -> list[float]:
    """Median over crops of the grey-level quartiles of the Otsu foreground."""
    import cv2

    rows = []
    for image in images:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        _, dark = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
        if dark.sum() >= 10:
            rows.append(np.quantile(grey[dark > 0], [0.25, 0.5, 0.75]))
    return [round(float(v)) for v in np.median(rows, axis=0)]


def ddx11_raw_crops() -> tuple[list[np.ndarray], np.ndarray]:
    from chromowatch.ingest import read_spread
    from chromowatch.settings import Settings
    from chromowatch.training.labels import parse_yolo

    settings = Settings()
    crops, labels = [], []
    for image in sorted((DATA / "ddx11" / "images").iterdir()):
        spread = read_spread(image, settings.ingest)
        label_file = DATA / "ddx11" / "labels" / f"{image.stem}.txt"
        for box, cls in parse_yolo(label_file.read_text(), spread.width, spread.height,
                                   pad=settings.segment.pad, origin=str(label_file)):
            crops.append(np.ascontiguousarray(
                spread.rgb[box.y:box.y + box.h, box.x:box.x + box.w]))
            labels.append("ABC".index(cls))
    return crops, np.array(labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--variant", action="append",
                        help='NAME=JSON of [enhance] settings; default: defaults, no-restain')
    args = parser.parse_args()

    import torch

    from chromowatch.classify import ModelLibrary, read_crop
    from chromowatch.classify.ensemble import Ensemble
    from chromowatch.classify.published import IKEMOTO2023, fetch_published
    from chromowatch.enhance import enhance_whole
    from chromowatch.settings import EnhanceSettings

    torch.set_num_threads(os.cpu_count() or 1)
    published = DATA / "ikemoto2023" / "models" / "squeezenet"
    files = list(IKEMOTO2023.files)[: args.members]
    wt = [read_crop(p) for p in sorted((DATA / "ikemoto2023" / "crops" / "wt").glob("*/*.jpg"))]
    raws, y = ddx11_raw_crops()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {len(raws)} ddx11 crops; published models 1-"
          f"{len(files)}; published wt crops: foreground quartiles {foreground_quartiles(wt)}")
    print("| variant | accuracy | balanced | recall A / B / C | foreground grey quartiles "
          "| confusion (rows true A, B, C) |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        library = ModelLibrary(Path(tmp))
        fetch_published(library, IKEMOTO2023.subset(files), published,
                        timeout=30)
        names = library.ensemble_info("ikemoto2023").members
        members = [(m, library.load_bundle(m)) for m in names]
        ensemble = Ensemble("published", members, device="cpu")
        for spec in args.variant or DEFAULT_VARIANTS:
            name, _, raw = spec.partition("=")
            settings = EnhanceSettings(**json.loads(raw or "{}"))
            images = [enhance_whole(r, settings) for r in raws]
            probs, _ = ensemble.predict_proba(images)
            pred = probs.argmax(1)
            confusion = np.zeros((3, 3), int)
            for t, p in zip(y, pred, strict=True):
                confusion[t, p] += 1
            recall = confusion.diagonal() / confusion.sum(1)
            print(f"| {name} | {np.mean(pred == y):.3f} | {recall.mean():.3f} | "
                  f"{' / '.join(f'{r:.3f}' for r in recall)} | {foreground_quartiles(images)} "
                  f"| {confusion.tolist()} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
