"""process_file(): the stages a spread goes through, top to bottom.

ingest -> segment -> enhance -> classify -> store. `chromowatch process` and the daemon both
call this, so what is tested one-shot is what runs unattended.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from chromowatch import enhance, ingest
from chromowatch.enhance import ENHANCEMENT
from chromowatch.errors import InputImageError, ModelError
from chromowatch.records import BBox, Crop, Prediction, Spread
from chromowatch.segmentation import segment
from chromowatch.settings import Settings
from chromowatch.store import ImageRow, Store, StoredCrop

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble

log = logging.getLogger(__name__)

# The enhancement this pipeline applies to crops; a model must expect exactly this.


@dataclass(frozen=True)
class CropResult:
    index: int
    bbox: BBox
    metaphase: int
    flags: frozenset[str]
    prediction: Prediction
    file: str

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "bbox": self.bbox.as_list(),
            "metaphase": self.metaphase,
            "flags": sorted(self.flags),
            "label": self.prediction.label,
            "probs": {k: round(v, 6) for k, v in self.prediction.probs.items()},
            "file": self.file,
        }


@dataclass(frozen=True)
class ImageResult:
    path: str
    sample: str
    status: Literal["done", "duplicate", "failed"]
    image_id: int | None = None
    width: int = 0
    height: int = 0
    crops: tuple[CropResult, ...] = ()
    error: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "image": self.path,
            "sample": self.sample,
            "status": self.status,
            "image_id": self.image_id,
            "width": self.width,
            "height": self.height,
            "error": self.error,
            "note": self.note,
            "crops": [c.as_dict() for c in self.crops],
        }


def check_model_fits(ensemble: Ensemble) -> None:
    if ensemble.enhancement != ENHANCEMENT:
        raise ModelError(
            f"model {ensemble.name} expects {ensemble.enhancement!r} crops, but the pipeline "
            f"produces {ENHANCEMENT!r} crops",
            hint="choose another model with --model or classify.model",
        )


def write_crop_file(directory: Path, index: int, rgb: np.ndarray) -> str:
    """Write an enhanced crop as PNG atomically; returns its path."""
    import cv2

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{index:04d}.png"
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode crop {index} as PNG")
    part = target.with_suffix(".png.part")
    part.write_bytes(encoded.tobytes())
    os.replace(part, target)
    return str(target)


@dataclass(frozen=True)
class PreparedCrop:
    """An enhanced crop, as the model will see it, with its file already written."""

    index: int
    bbox: BBox
    metaphase: int
    flags: frozenset[str]
    enhanced: np.ndarray
    file: str


@dataclass(frozen=True)
class PreparedImage:
    """A spread after ingest, segment and enhance: the CPU work, which the daemon runs in
    worker processes. Plain data, so it crosses a process boundary by pickling."""

    path: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    metaphases: int
    note: str | None
    crops: tuple[PreparedCrop, ...]


def prepare_spread(spread: Spread, settings: Settings) -> PreparedImage:
    """Segment and enhance a decoded spread; its enhanced crops are written under crops/."""
    seg = segment.segment(
        spread.rgb, settings.segment, chroma_subsampled=spread.chroma_subsampled
    )
    if not seg.crops:
        log.info("%s: no chromosomes found (%s)", spread.path, seg.note or "no reason given")
    crop_dir = settings.paths.crops / spread.sha256[:2] / spread.sha256
    crops = []
    for crop in seg.crops:
        image = enhance.enhance_crop(crop, settings.enhance)
        crops.append(PreparedCrop(crop.index, crop.bbox, crop.metaphase, crop.flags, image,
                                  write_crop_file(crop_dir, crop.index, image)))
    return PreparedImage(path=spread.path, sha256=spread.sha256, size_bytes=spread.size_bytes,
                         width=spread.width, height=spread.height, metaphases=seg.metaphases,
                         note=seg.note, crops=tuple(crops))


def prepare_image(path: Path, settings: Settings) -> PreparedImage:
    """Ingest, segment and enhance one file; raises InputImageError for a bad file."""
    return prepare_spread(ingest.read_spread(path, settings.ingest), settings)


def _duplicate(store: Store, path: str, sha256: str, width: int, height: int
               ) -> ImageResult | None:
    known = store.find_image(sha256)
    if known is None:
        return None
    log.info("%s: already stored as image %d (%s, sample %s); not processed again",
             path, known["id"], known["path"], known["sample"])
    return ImageResult(path=path, sample=known["sample"], status="duplicate",
                       image_id=int(known["id"]), width=width, height=height)


def finish_image(
    prepared: PreparedImage,
    *,
    sample: str,
    settings: Settings,
    store: Store,
    ensemble: Ensemble | None = None,
    predictions: Sequence[Prediction] | None = None,
    metaphase_label: str | None = None,
) -> ImageResult:
    """Classify a prepared spread and commit its results in one transaction.

    The daemon classifies crops of several images in one batch and passes `predictions`;
    otherwise `ensemble` classifies them here. Content already stored (under any name) is
    not stored again: the result is a duplicate.
    """
    dup = _duplicate(store, prepared.path, prepared.sha256, prepared.width, prepared.height)
    if dup is not None:
        return dup
    if predictions is None:
        if ensemble is None:
            raise ValueError("finish_image needs an ensemble or predictions")
        images = [c.enhanced for c in prepared.crops]
        predictions = ensemble.predict(images) if images else []
    results = tuple(
        CropResult(c.index, c.bbox, c.metaphase, c.flags, pred, c.file)
        for c, pred in zip(prepared.crops, predictions, strict=True)
    )
    image = ImageRow(
        path=prepared.path,
        sample=sample,
        sha256=prepared.sha256,
        size=prepared.size_bytes,
        width=prepared.width,
        height=prepared.height,
        metaphases=prepared.metaphases,
        note=prepared.note,
        metaphase_label=metaphase_label,
    )
    image_id = store.save_image(
        image,
        [StoredCrop(r.index, r.bbox, r.metaphase, r.flags, r.file, r.prediction) for r in results],
    )
    log.info("%s: image %d, %d crops, %d metaphase(s)", prepared.path, image_id, len(results),
             prepared.metaphases)
    return ImageResult(path=prepared.path, sample=sample, status="done", image_id=image_id,
                       width=prepared.width, height=prepared.height, crops=results,
                       note=prepared.note)


def process_file(
    path: Path,
    *,
    sample: str,
    settings: Settings,
    store: Store,
    ensemble: Ensemble,
    metaphase_label: str | None = None,
) -> ImageResult:
    """Run one spread through every stage and commit its results in one transaction.

    A bad input file is recorded as failed with its reason and returned, never raised:
    the caller goes on with the next file.
    """
    try:
        spread = ingest.read_spread(path, settings.ingest)
    except InputImageError as exc:
        log.warning("skipped %s", exc)
        size = path.stat().st_size if path.is_file() else None
        store.record_failure(path=str(path), sample=sample, error=exc.problem, size=size,
                             sha256=None)
        return ImageResult(path=str(path), sample=sample, status="failed", error=str(exc))

    dup = _duplicate(store, str(path), spread.sha256, spread.width, spread.height)
    if dup is not None:
        return dup
    return finish_image(prepare_spread(spread, settings), sample=sample, settings=settings,
                        store=store, ensemble=ensemble, metaphase_label=metaphase_label)


def classify_files(
    paths: Sequence[Path], *, settings: Settings, ensemble: Ensemble, enhanced: bool
) -> list[tuple[Path, Prediction | InputImageError]]:
    """Classify single-chromosome crop images; raw crops are enhanced first.

    A bad file gives its error in place of a prediction; the others are still classified.
    """
    images: list[np.ndarray] = []
    kept: list[Path] = []
    out: dict[Path, Prediction | InputImageError] = {}
    for path in paths:
        try:
            rgb = ingest.read_spread(path, settings.ingest).rgb
        except InputImageError as exc:
            log.warning("skipped %s", exc)
            out[path] = exc
            continue
        if not enhanced:
            h, w = rgb.shape[:2]
            rgb = enhance.enhance_crop(Crop(index=0, bbox=BBox(0, 0, w, h), rgb=rgb),
                                       settings.enhance)
        images.append(rgb)
        kept.append(path)
    for path, pred in zip(kept, ensemble.predict(images) if images else [], strict=True):
        out[path] = pred
    return [(p, out[p]) for p in paths]
