"""How far a sample's numbers can be trusted, and what they become with what people know.

Confirmed crops count as they are. The crops nobody answered are corrected for the model's
errors: with the sample's own audit (random crops a person answered, enough of them), else
with the confusion matrix the model was validated with. And a sample unlike the samples the
model was validated on is said to look new, with how many crops to review.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chromowatch.records import CLASS_NAMES
from chromowatch.reports.data import ModelInfo, SampleData, load_sample
from chromowatch.reports.stats import Adjusted, adjust_for_confusion
from chromowatch.review.correct import audit_correction
from chromowatch.review.novelty import unlike_validation
from chromowatch.review.queue import AUDIT
from chromowatch.settings import Settings
from chromowatch.store import Store


@dataclass(frozen=True)
class Correction:
    adjusted: Adjusted | None
    note: str
    method: str = ""  # "audit" or "validation" ("" when there is none)


def _other_models_note(data: SampleData, model: ModelInfo) -> str:
    others = sorted(v for v in data.model_versions if not v.startswith(model.name + "-")
                    and v != model.name)
    if not others:
        return ""
    return (" Some predictions come from another model (" + ", ".join(others) +
            "): the correction assumes they err like the current one.")


def audit_crops(data: SampleData) -> tuple[np.ndarray, list[str]]:
    """Probabilities and answers of the sample's answered audit crops."""
    rows = [(v.probs, str(v.confirmed)) for v in data.crops
            if v.review == AUDIT and v.confirmed and v.predicted]
    return np.array([p for p, _ in rows], dtype=float).reshape(-1, 3), [t for _, t in rows]


def _audit_correction(settings: Settings, data: SampleData) -> Correction | None:
    """With enough answered audit crops: the sample's own correction (see review.correct)."""
    probs, truth = audit_crops(data)
    if len(truth) < settings.review.min_audit:
        return None
    unreviewed = np.array([v.probs for v in data.crops if v.counted_as and not v.confirmed],
                          dtype=float).reshape(-1, 3)
    a = audit_correction(data.stats.confirmed, unreviewed, probs, truth)
    adjusted = Adjusted(fractions=a.fractions, intervals=a.intervals,
                        n_predicted=a.n_unreviewed, n_confirmed=a.n_confirmed, holdout=None,
                        clipped=False)
    note = (f"Corrected with this sample's own audit: {a.n_audit} crops drawn at random and "
            f"answered by a person estimate the model's error on the {a.n_unreviewed} crops "
            f"nobody answered; the {a.n_confirmed} answered crops count as answered (95% "
            "intervals over the audit and the unanswered crops).")
    return Correction(adjusted, note, "audit")


def correction_for(settings: Settings, data: SampleData, model: ModelInfo | None) -> Correction:
    """The sample's audit correction when it has enough audit answers; else adjusted
    classify-and-count with the model's validation confusion; else why there is none."""
    own = _audit_correction(settings, data)
    if own is not None:
        return own
    if model is not None and model.confusion is not None and looks_new(settings, data, model):
        # measured (benchmarks/review_loop.py): on a sample unlike the validation samples the
        # validation confusion made fractions worse, not better; no number beats a wrong one
        return Correction(None, f"No correction: this sample looks unlike the samples "
                          f"{model.name} was validated on, so its validation confusion does "
                          "not apply here. Answer the sample's audit crops (`chromowatch "
                          f"review queue`; {settings.review.min_audit} needed) to correct it "
                          "with its own errors.")
    if model is None:
        return Correction(None, "No model is installed, so no holdout confusion matrix: the "
                          "frequencies are not corrected for the model's errors.")
    if model.confusion is None:
        known = " (B is often called C)" if model.published else ""
        return Correction(None, f"The model {model.name} has no holdout confusion "
                          "matrix in its metrics: the frequencies are not corrected for its "
                          f"errors{known}.")
    stats = data.stats
    try:
        adjusted = adjust_for_confusion(
            stats.predicted_only, model.confusion, confirmed=stats.confirmed,
            n_boot=settings.report.bootstrap, seed=settings.report.seed,
        )
    except ValueError as exc:
        return Correction(None, f"No correction: {exc}.")
    note = (f"Corrected with the holdout confusion matrix of {model.name} (adjusted "
            "classify-and-count; 95% bootstrap intervals over the sample and the holdout). "
            "That matrix was measured on other samples; answering the sample's audit crops "
            f"(`chromowatch review queue`; {settings.review.min_audit} needed) corrects it "
            "with the sample's own errors.")
    note += _other_models_note(data, model)
    if adjusted.holdout is None:
        note += " The matrix holds rates, not counts: the holdout's own uncertainty is left out."
    if adjusted.clipped:
        note += " The raw correction fell outside 0-100% and was projected back."
    return Correction(adjusted, note, "validation")


def looks_new(settings: Settings, data: SampleData, model: ModelInfo | None) -> str | None:
    """A warning when the sample is unlike the model's validation samples, naming how many
    crops to review; None when it is not (or nothing is known to compare with)."""
    if model is None or not model.validated_on:
        return None
    scored = [v for v in data.crops if v.predicted and v.counted_as]
    if not scored:
        return None
    mean_conf = float(np.mean([max(v.probs) for v in scored]))
    pred = np.bincount([CLASS_NAMES.index(str(v.predicted)) for v in scored], minlength=3)
    fractions = {c: float(pred[i] / len(scored)) for i, c in enumerate(CLASS_NAMES)}
    why = unlike_validation(mean_conf, fractions, model.validated_on,
                            confidence_tolerance=settings.review.confidence_tolerance,
                            fraction_tolerance=settings.review.fraction_tolerance)
    if not why:
        return None
    reviewed = sum(1 for v in data.crops if v.confirmed)
    todo = max(0, settings.review.suggest - reviewed)
    ask = (f"review {todo} more crops (`chromowatch review queue --sample {data.name} "
           f"--count {todo}`)" if todo else "its reviewed crops already correct it")
    return (f"This sample looks unlike the samples {model.name} was validated on: "
            + "; ".join(why) + f". Its model fractions may be wrong; {ask}.")


def results_extra(settings: Settings, store: Store, sample: str,
                  model: ModelInfo | None) -> dict[str, Any]:
    """What `results --json` adds to a sample's counts: the corrected fractions (or why
    none), how many crops are confirmed, and the 'looks new' warning. `model` is the
    current one (`current_model_info`), read once by the caller for all its samples."""
    data = load_sample(settings, store, sample)
    corr = correction_for(settings, data, model)
    corrected: Mapping[str, float] | None = None
    if corr.adjusted is not None:
        corrected = {c: round(corr.adjusted.fractions[c], 4) for c in CLASS_NAMES}
    return {
        "corrected": corrected,
        "corrected_interval": None if corr.adjusted is None else {
            c: [round(v, 4) for v in corr.adjusted.intervals[c]] for c in CLASS_NAMES},
        "correction_method": corr.method or None,
        "correction_note": corr.note,
        "reviewed": sum(1 for v in data.crops if v.confirmed),
        "looks_new": looks_new(settings, data, model),
    }
