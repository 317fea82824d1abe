"""Scores of an ensemble on labelled crops, and the choice of members (on validation).

`score` gives accuracy, balanced accuracy, per-class recall, the confusion matrix (rows the
true class A, B, C; columns the predicted class: what reports use to correct fractions),
per-sample A/B/C fraction errors (what a lab reads), log-loss and calibration error.

`choose_members` follows Table 2 of Matsumoto et al. 2025: every combination of the trained
members is scored, on the validation split only (the holdout never chooses anything). The
paper ranked by accuracy; on a validation split of ~100-200 crops accuracy moves in steps of
~1% and mostly picked one lucky member, so combinations are ranked by log-loss (smoother,
and what calibration optimises), accuracy breaking ties.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from chromowatch.records import CLASS_NAMES
from chromowatch.training.calibrate import ensemble_nll, expected_calibration_error, softmax


def score(probs: np.ndarray, labels: np.ndarray, samples: Sequence[str]) -> dict[str, Any]:
    """Metrics of (N, 3) probabilities against true class indices, per sample too."""
    n = len(labels)
    pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
    k = len(CLASS_NAMES)
    confusion = np.zeros((k, k), np.int64)
    for t, p in zip(labels, pred, strict=True):
        confusion[int(t), int(p)] += 1
    recall: dict[str, float | None] = {}
    f1: dict[str, float | None] = {}
    for i, c in enumerate(CLASS_NAMES):
        total, called, hit = int(confusion[i].sum()), int(confusion[:, i].sum()), confusion[i, i]
        recall[c] = round(float(hit / total), 4) if total else None
        f1[c] = round(float(2 * hit / (total + called)), 4) if total else None
    present = [v for v in recall.values() if v is not None]
    per_sample: dict[str, Any] = {}
    for sample in sorted(set(samples)):
        idx = np.array([i for i, s in enumerate(samples) if s == sample])
        true_f = np.bincount(labels[idx], minlength=k) / len(idx)
        pred_f = np.bincount(pred[idx], minlength=k) / len(idx)
        per_sample[sample] = {
            "n": len(idx),
            "accuracy": round(float((pred[idx] == labels[idx]).mean()), 4),
            "true_fractions": {c: round(float(v), 4) for c, v in zip(CLASS_NAMES, true_f,
                                                                    strict=True)},
            "predicted_fractions": {c: round(float(v), 4) for c, v in zip(CLASS_NAMES, pred_f,
                                                                         strict=True)},
            "fraction_error": round(float(np.abs(true_f - pred_f).max()), 4),
            # what a sample looked like to the model: a new sample is compared with these
            "mean_confidence": round(float(probs[idx].max(axis=1).mean()), 4),
        }
    picked = probs[np.arange(n), labels] if n else np.zeros(0)
    return {
        "n": n,
        "accuracy": round(float((pred == labels).mean()), 4) if n else None,
        "balanced_accuracy": round(float(np.mean(present)), 4) if present else None,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": confusion.tolist(),
        "fraction_error_max": max((s["fraction_error"] for s in per_sample.values()),
                                  default=None),
        "per_sample": per_sample,
        "log_loss": round(float(-np.log(np.clip(picked, 1e-12, None)).mean()), 4) if n else None,
        "ece": round(expected_calibration_error(probs, labels), 4),
    }


def choose_members(logits: np.ndarray, labels: np.ndarray, max_exhaustive: int = 10
                   ) -> tuple[list[int], dict[str, float]]:
    """The member combination with the lowest validation log-loss (ties: accuracy).

    Every combination is tried up to `max_exhaustive` members, greedy forward selection
    beyond. Returns the member indices and their validation accuracy and log-loss.
    """
    m = logits.shape[0]
    probs = softmax(logits)

    def rank(subset: Sequence[int]) -> tuple[float, float]:
        mean = probs[list(subset)].mean(axis=0)
        acc = float((mean.argmax(axis=1) == labels).mean()) if len(labels) else 0.0
        return -round(ensemble_nll(logits[list(subset)], labels), 6), acc

    if m <= max_exhaustive:
        candidates = (list(c) for r in range(1, m + 1)
                      for c in itertools.combinations(range(m), r))
        best = max(candidates, key=rank)
    else:
        best = []
        remaining = list(range(m))
        while remaining:
            nxt = max(remaining, key=lambda i: rank([*best, i]))
            if best and rank([*best, nxt]) <= rank(best):
                break
            best.append(nxt)
            remaining.remove(nxt)
    neg_nll, acc = rank(best)
    return sorted(best), {"accuracy": round(acc, 4), "log_loss": round(-neg_nll, 4)}


def _holdout_rule(candidate: dict[str, Any], current: dict[str, Any], *, margin: float,
                  class_margin: float) -> tuple[bool, str]:
    acc_new, acc_old = candidate["accuracy"] or 0.0, current["accuracy"] or 0.0
    if acc_new < acc_old + margin:
        return False, (f"holdout accuracy {acc_new:.4f} does not beat the current "
                       f"{acc_old:.4f} by the margin {margin:g}")
    key = "f1" if "f1" in candidate and "f1" in current else "recall"
    for c in CLASS_NAMES:
        new, old = candidate[key].get(c), current[key].get(c)
        if new is not None and old is not None and new < old - class_margin:
            return False, (f"class {c} {key} {new:.4f} is worse than the current {old:.4f} "
                           f"by more than {class_margin:g}")
    return True, (f"holdout accuracy {acc_new:.4f} vs {acc_old:.4f}, no class's {key} worse "
                  f"by more than {class_margin:g}")


def _cross_rule(cross: dict[str, Any] | None, cross_current: dict[str, Any] | None,
                cross_margin: float) -> tuple[bool, str]:
    """Whole left-out groups: the candidate's pooled accuracy and worst group's fraction
    error against the current's (on the same groups, or its own recorded figures)."""
    if not cross:
        return True, "no cross-sample figures (cross_validation off, or no group to leave out)"
    acc_new, fe_new = cross["accuracy"] or 0.0, cross["fraction_error_max"] or 0.0
    groups = len(cross.get("folds") or [])
    if not cross_current:
        return True, (f"cross-sample accuracy {acc_new:.4f}, worst-group fraction error "
                      f"{fe_new:.4f} over {groups} left-out group(s); the current ensemble "
                      "has no cross-sample figures to compare with")
    acc_old, fe_old = cross_current["accuracy"] or 0.0, cross_current["fraction_error_max"] or 0.0
    if acc_new < acc_old - cross_margin:
        return False, (f"cross-sample accuracy {acc_new:.4f} is worse than the current "
                       f"{acc_old:.4f} by more than {cross_margin:g}")
    if fe_new > fe_old + cross_margin:
        return False, (f"cross-sample worst-group fraction error {fe_new:.4f} is worse than "
                       f"the current {fe_old:.4f} by more than {cross_margin:g}")
    return True, (f"cross-sample accuracy {acc_new:.4f} vs {acc_old:.4f}, worst-group "
                  f"fraction error {fe_new:.4f} vs {fe_old:.4f} over {groups} left-out "
                  f"group(s)")


def decide(candidate: dict[str, Any], current: dict[str, Any] | None, *, margin: float,
           class_margin: float, cross: dict[str, Any] | None = None,
           cross_current: dict[str, Any] | None = None, cross_margin: float = 0.03
           ) -> tuple[bool, str]:
    """Promote only when the candidate beats the current ensemble on the holdout by
    `margin` in accuracy, loses no class's F1 by more than `class_margin`, and, on whole
    groups left out of training (crossval.py), is not worse than the current ensemble by
    more than `cross_margin` in pooled accuracy or in the worst group's fraction error.

    F1, not recall: a model that calls most B crops C (as the published one does on ddx11)
    has a high C recall bought with a low C precision; recall alone would protect that bias.
    The holdout shares samples and spreads with training; the cross-sample rule guards
    against a candidate that learned a sample's look (it reads a new sample's fractions
    badly though its holdout looks good).
    """
    if current is None:
        _, cross_why = _cross_rule(cross, None, cross_margin)
        return True, f"no current ensemble to compare with; {cross_why}"
    ok, why = _holdout_rule(candidate, current, margin=margin, class_margin=class_margin)
    if not ok:
        return False, why
    ok, cross_why = _cross_rule(cross, cross_current, cross_margin)
    return ok, (f"{why}; {cross_why}" if ok else f"{cross_why} (though {why})")
