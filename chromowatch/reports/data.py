"""What a report shows, read through the store: one sample's crops and images, the current
model and the control it is compared with (the correction for the model's errors is in
trust.py).

A model's holdout confusion matrix is read from its ensemble manifest's metrics, under
"confusion_matrix" (or "confusion"), directly or one level down (e.g. metrics["holdout"]):
3x3 counts, rows the true class A, B, C and columns the predicted class.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from chromowatch.classify.library import ModelLibrary, ensemble_of_version
from chromowatch.classify.published import IKEMOTO2023
from chromowatch.errors import ChromowatchError
from chromowatch.records import is_demonstration
from chromowatch.reports.stats import CropObservation, SampleStats, summarize
from chromowatch.review.novelty import GroupFigures, reference_groups
from chromowatch.settings import Settings
from chromowatch.store import SampleCrop, SampleImage, Store

log = logging.getLogger(__name__)


# -- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """An ensemble as a report shows it (the current one, or one behind a sample's numbers)."""

    name: str
    created: str
    members: int
    metrics: dict[str, Any]  # scalar holdout metrics, for display
    confusion: list[list[float]] | None  # rows true A, B, C; columns predicted
    fingerprint: str  # changes when the manifest (members, metrics) changes
    version: str = ""  # the prediction version, for a model behind a sample's numbers
    crops: int = 0  # how many of the sample's crops it predicted
    installed: bool = True  # False: its manifest is gone, nothing is known of it
    validated_on: tuple[GroupFigures, ...] = ()  # what its validation samples looked like

    @property
    def demonstration(self) -> bool:
        return is_demonstration(self.name)

    @property
    def published(self) -> bool:
        """The published models of Ikemoto et al. (they often call B C)."""
        return self.name == IKEMOTO2023.name


def confusion_from_metrics(metrics: Mapping[str, Any] | None) -> list[list[float]] | None:
    """The 3x3 confusion matrix in an ensemble's metrics, when there is one: the cross-sample
    one (pooled over samples left out of training) before the within-sample holdout's."""
    if not metrics:
        return None
    places: list[Mapping[str, Any]] = []
    cross = metrics.get("cross_sample")
    if isinstance(cross, Mapping):
        places.append(cross)  # measured on samples it never trained on: what a new one meets
    places.append(metrics)
    places += [v for v in metrics.values() if isinstance(v, Mapping)]
    for place in places:
        for key in ("confusion_matrix", "confusion"):
            value = place.get(key)
            if (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(r, list) and len(r) == 3 for r in value)
                and all(isinstance(v, int | float) for r in value for v in r)
            ):
                return [[float(v) for v in r] for r in value]
    return None


def _model_info(library: ModelLibrary, name: str) -> ModelInfo | None:
    """An installed ensemble's manifest (no torch needed); None when it is not installed."""
    try:
        info = library.ensemble_info(name)
        manifest = info.path.read_bytes()
    except (ChromowatchError, OSError) as exc:
        log.info("no model information for the report: %s", exc)
        return None
    metrics = dict(info.metrics or {})
    return ModelInfo(
        name=info.name,
        created=info.created,
        members=len(info.members),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
        confusion=confusion_from_metrics(metrics),
        fingerprint=hashlib.sha256(manifest).hexdigest()[:16],
        validated_on=tuple(reference_groups(metrics)),
    )


def current_model_info(settings: Settings) -> ModelInfo | None:
    """The current ensemble's manifest; None when no model is installed."""
    return _model_info(ModelLibrary(settings.paths.models), settings.classify.model)


def models_behind(settings: Settings, model_versions: Mapping[str, int]) -> list[ModelInfo]:
    """The ensembles whose predictions a sample counts (most crops first), as installed
    now; one no longer installed is named with nothing else known of it."""
    library = ModelLibrary(settings.paths.models)
    out = []
    for version, n in sorted(model_versions.items(), key=lambda item: (-item[1], item[0])):
        name = ensemble_of_version(version)
        info = _model_info(library, name)
        if info is None:
            info = ModelInfo(name, "", 0, {}, None, "", installed=False)
        out.append(replace(info, version=version, crops=n))
    return out


# -- gathering a sample ----------------------------------------------------------------


@dataclass(frozen=True)
class CropView:
    """One crop for galleries and overlays."""

    crop_id: int
    image_id: int
    file: str
    bbox: tuple[int, int, int, int]
    counted_as: str | None
    excluded: str | None
    predicted: str | None
    confirmed: str | None
    probs: tuple[float, float, float]
    review: str | None = None  # why it was queued for review (uncertain / audit), if it was

    @property
    def confidence(self) -> float:
        return max(self.probs) if self.predicted else 0.0


@dataclass(frozen=True)
class SampleData:
    """Everything about one sample a report needs, read from the store once."""

    name: str
    stats: SampleStats
    crops: tuple[CropView, ...]
    images: tuple[SampleImage, ...]
    model_versions: dict[str, int]  # prediction model version -> crops
    state: str  # hash of what the statistics depend on


def observation(row: SampleCrop) -> CropObservation:
    """A stored crop as the statistics see it."""
    probs = (row.p_a, row.p_b, row.p_c)
    return CropObservation(
        crop_id=row.id,
        image_id=row.image_id,
        metaphase=row.metaphase,
        predicted=row.predicted,
        confidence=max(float(p or 0) for p in probs) if row.predicted else 0.0,
        confirmed=row.confirmed,
        flags=row.flag_set,
    )


def _crop_view(row: SampleCrop, obs: CropObservation, min_confidence: float) -> CropView:
    label, reason = obs.counted_as(min_confidence)
    return CropView(
        crop_id=obs.crop_id, image_id=obs.image_id, file=str(row.file),
        bbox=(row.x, row.y, row.w, row.h),
        counted_as=label, excluded=reason, predicted=row.predicted,
        confirmed=row.confirmed,
        probs=(float(row.p_a or 0), float(row.p_b or 0), float(row.p_c or 0)),
        review=row.review,
    )


def load_sample(settings: Settings, store: Store, sample: str) -> SampleData:
    min_conf = settings.report.min_confidence
    observations: list[CropObservation] = []
    views: list[CropView] = []
    versions: Counter[str] = Counter()
    digest = hashlib.sha256()
    for r in store.sample_crop_rows(sample):
        obs = observation(r)
        observations.append(obs)
        views.append(_crop_view(r, obs, min_conf))
        if r.model_version:
            versions[str(r.model_version)] += 1
        digest.update(f"{r.id}|{r.flags}|{r.pred_id}|{r.predicted}|{r.confirmed}|{r.review}\n"
                      .encode())
    images = tuple(store.sample_images(sample))
    for im in images:
        digest.update(f"i{im.id}|{im.status}\n".encode())
    stats = summarize(
        sample,
        observations,
        min_confidence=min_conf,
        min_chromosomes=settings.report.min_chromosomes,
        min_metaphases=settings.report.min_metaphases,
    )
    return SampleData(sample, stats, tuple(views), images, dict(versions), digest.hexdigest())


def control_for(settings: Settings, sample: str) -> str | None:
    """The control a sample is compared with (report.controls, first matching pattern)."""
    for pattern, control in settings.report.controls.items():
        if fnmatchcase(sample, pattern) and control != sample:
            return control
    return None


def settings_hash(settings: Settings) -> str:
    """A short hash of the whole configuration, mail credentials left out (shown in every
    report, and part of a report version's fingerprint)."""
    data = settings.model_dump(mode="json", exclude={"mail": {"password", "username"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
