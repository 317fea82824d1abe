"""The three steps a spread goes through, and the one-shot run of them.

    prepare   ingest (decode, validate), segment, enhance, write the crop files
    classify  the crops of one or many prepared spreads through the ensemble, in one call
    commit    one transaction per image (crops, predictions); a failure recorded one way

`process_file` runs the three for `chromowatch process`. The daemon runs the same three in its
own places: `prepare` in worker processes (CPU work), `classify` in the one thread that owns
the device (batching crops of several spreads), `commit` in its writer thread. A stage added
here therefore reaches both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from chromowatch import enhance, ingest
from chromowatch.enhance import ENHANCEMENT
from chromowatch.errors import InputImageError, ModelError
from chromowatch.files import crop_dir, file_size, write_crop_png
from chromowatch.records import BBox, Prediction, Spread
from chromowatch.segmentation import segment
from chromowatch.settings import Settings
from chromowatch.store import ImageRow, Store, StoredCrop

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble

log = logging.getLogger(__name__)


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


def check_model_fits(ensemble: Ensemble) -> None:
    """A model trained on other crops than this pipeline's would score them silently wrong."""
    if ensemble.enhancement != ENHANCEMENT:
        raise ModelError(
            f"model {ensemble.name} expects {ensemble.enhancement!r} crops, but the pipeline "
            f"produces {ENHANCEMENT!r} crops",
            hint="choose another model with --model or classify.model",
        )


# -- prepare --------------------------------------------------------------------------------


def prepare(path: Path, settings: Settings) -> PreparedImage:
    """Ingest, segment and enhance one file; raises InputImageError for a bad file."""
    return prepare_spread(ingest.read_spread(path, settings.ingest), settings)


def prepare_spread(spread: Spread, settings: Settings) -> PreparedImage:
    """Segment and enhance a decoded spread; its enhanced crops are written under crops/."""
    seg = segment.segment(
        spread.rgb, settings.segment, chroma_subsampled=spread.chroma_subsampled
    )
    if not seg.crops:
        log.info("%s: no chromosomes found (%s)", spread.path, seg.note or "no reason given")
    directory = crop_dir(settings.paths.crops, spread.sha256)
    crops = []
    for crop in seg.crops:
        image = enhance.enhance_crop(crop, settings.enhance)
        crops.append(PreparedCrop(crop.index, crop.bbox, crop.metaphase, crop.flags, image,
                                  write_crop_png(directory, crop.index, image)))
    return PreparedImage(path=spread.path, sha256=spread.sha256, size_bytes=spread.size_bytes,
                         width=spread.width, height=spread.height, metaphases=seg.metaphases,
                         note=seg.note, crops=tuple(crops))


# -- classify -------------------------------------------------------------------------------


def classify(images: Sequence[PreparedImage], ensemble: Ensemble,
             progress: Callable[[float, int], None] | None = None) -> list[list[Prediction]]:
    """Predictions for the crops of several spreads, per spread and in crop order.

    The crops go through the ensemble in one call: a device is fastest on full batches, and
    a spread rarely fills one alone. `progress(done, total)` counts crops.
    """
    crops = [c.enhanced for image in images for c in image.crops]
    predictions = ensemble.predict(crops, progress=progress) if crops else []
    out: list[list[Prediction]] = []
    start = 0
    for image in images:
        out.append(list(predictions[start:start + len(image.crops)]))
        start += len(image.crops)
    return out


# -- commit ---------------------------------------------------------------------------------


def _duplicate(store: Store, path: str, sha256: str, width: int, height: int
               ) -> ImageResult | None:
    known = store.find_image(sha256)
    if known is None:
        return None
    log.info("%s: already stored as image %d (%s, sample %s); not processed again",
             path, known.id, known.path, known.sample)
    return ImageResult(path=path, sample=known.sample, status="duplicate",
                       image_id=known.id, width=width, height=height)


def commit(
    prepared: PreparedImage,
    predictions: Sequence[Prediction],
    *,
    sample: str,
    store: Store,
    metaphase_label: str | None = None,
) -> ImageResult:
    """Store a classified spread, crops and predictions, in one transaction.

    Content already stored (under any name) is not stored again: the result is a duplicate.
    """
    dup = _duplicate(store, prepared.path, prepared.sha256, prepared.width, prepared.height)
    if dup is not None:
        return dup
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


def commit_failure(store: Store, *, path: str, sample: str, error: str,
                   message: str | None = None) -> ImageResult:
    """Record that a file could not be processed, and why: an images row with status failed,
    which results and reports count. `message` is what the caller shows (default: error)."""
    store.record_failure(path=path, sample=sample, error=error, size=file_size(path),
                         sha256=None)
    return ImageResult(path=path, sample=sample, status="failed", error=message or error)


# -- the three in one go ----------------------------------------------------------------------


def process_file(
    path: Path,
    *,
    sample: str,
    settings: Settings,
    store: Store,
    ensemble: Ensemble,
    metaphase_label: str | None = None,
    progress: Callable[[float, int], None] | None = None,
) -> ImageResult:
    """Prepare, classify and commit one spread (`chromowatch process`); `progress` follows
    the crops through the ensemble.

    Prepare runs in its two halves so that content already stored is recognised after
    decoding, before it is segmented again. A bad input file is recorded as failed with its
    reason and returned, never raised: the caller goes on with the next file.
    """
    try:
        spread = ingest.read_spread(path, settings.ingest)
    except InputImageError as exc:
        log.warning("skipped %s", exc)
        return commit_failure(store, path=str(path), sample=sample, error=exc.problem,
                              message=str(exc))
    dup = _duplicate(store, str(path), spread.sha256, spread.width, spread.height)
    if dup is not None:
        return dup
    prepared = prepare_spread(spread, settings)
    (predictions,) = classify([prepared], ensemble, progress)
    return commit(prepared, predictions, sample=sample, store=store,
                  metaphase_label=metaphase_label)


def classify_files(
    paths: Sequence[Path], *, settings: Settings, ensemble: Ensemble, enhanced: bool
) -> list[tuple[Path, Prediction | InputImageError]]:
    """Classify single-chromosome crop images (`chromowatch classify`); raw crops are
    enhanced first, each as one whole crop.

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
        images.append(rgb if enhanced else enhance.enhance_whole(rgb, settings.enhance))
        kept.append(path)
    for path, pred in zip(kept, ensemble.predict(images) if images else [], strict=True):
        out[path] = pred
    return [(p, out[p]) for p in paths]
