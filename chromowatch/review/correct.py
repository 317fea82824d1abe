"""A sample's A/B/C fractions from what is known: confirmed crops count as they are; the
unreviewed crops' counts are the model's, corrected by the error the model makes on this
sample's audit crops (a random sample that a person answered).

The estimator is the difference estimator of survey sampling, known in machine learning as
prediction-powered inference (Angelopoulos et al., Science 2023): the total of the
unreviewed crops is the sum of the model's answers plus (their number) x (the mean of
truth - answer over the audit crops). It is unbiased whatever the model's errors, because
the audit is random; a better model only makes it tighter. Unlike inverting a confusion
matrix it needs no matrix from other samples and cannot blow up with few crops.

The interval adds the two uncertainties: the audit's estimate of the mean error, and which
of the unreviewed crops the model gets wrong (the truth being this sample's own chromosomes,
a finite population).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from chromowatch.records import CLASS_NAMES

Z95 = 1.959963984540054
Answer = Literal["soft", "hard", "strata"]


@dataclass(frozen=True)
class AuditCorrection:
    """Fractions (A, B, C, B+C) over confirmed + unreviewed crops, with 95% intervals."""

    fractions: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    n_confirmed: int
    n_unreviewed: int
    n_audit: int
    bias: dict[str, float]  # mean truth - answer on the audit crops, per class


def _answers(probs: np.ndarray, answer: Answer) -> np.ndarray:
    if answer == "soft":
        return probs
    out = np.zeros_like(probs)
    if len(probs):
        out[np.arange(len(probs)), probs.argmax(axis=1)] = 1.0
    return out


def _with_bc(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 4): A, B, C and B+C."""
    return np.concatenate([v, v[..., 1:2] + v[..., 2:3]], axis=-1)


def _strata_total(unrev: np.ndarray, audit: np.ndarray, truth: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Post-stratified by the predicted class: each predicted class's unreviewed crops are
    split as that class's audit crops are (the ratio estimator). A predicted class without
    audit crops keeps the model's answers plus the pooled error. Returns the unreviewed
    total (A, B, C) and its variance."""
    pu, pa = unrev.argmax(axis=1), audit.argmax(axis=1)
    pooled = (truth - _answers(audit, "hard")).mean(axis=0)
    total, var = np.zeros(3), np.zeros(3)
    for k in range(3):
        n_k, in_k = int((pu == k).sum()), pa == k
        a_k = int(in_k.sum())
        if n_k == 0:
            continue
        if a_k == 0:
            total += n_k * (np.eye(3)[k] + pooled)
            var += n_k * 0.25 * (1 + n_k)  # nothing known of this stratum: the worst case
            continue
        q = truth[in_k].mean(axis=0)
        total += n_k * q
        var += n_k * q * (1 - q) * (1 + n_k / a_k)
    return total, var


def audit_correction(
    confirmed: Mapping[str, int],
    unreviewed: np.ndarray,
    audit_probs: np.ndarray,
    audit_truth: Sequence[str],
    *,
    answer: Answer = "strata",
    shrink: bool = True,
) -> AuditCorrection:
    """`unreviewed`: (N, 3) probabilities of the crops nobody answered; `audit_probs` (M, 3)
    and `audit_truth` (M classes) the audit crops, scored by the same model. `answer`: the
    model's answer as its probabilities (soft), its class (hard), or its class as strata of
    a ratio estimator (strata). `shrink`: the correction of each class is shrunk towards
    none by how little the audit can tell it from noise (positive-part James-Stein: a
    correction within its own standard error mostly vanishes, a large one stays); biased
    towards the model, but a smaller error when the model is nearly right. Raises
    ValueError without audit crops."""
    m = len(audit_truth)
    if m == 0:
        raise ValueError("no audit crops")
    truth = np.zeros((m, 3))
    truth[np.arange(m), [CLASS_NAMES.index(t) for t in audit_truth]] = 1.0
    unrev = np.asarray(unreviewed, dtype=float).reshape(-1, 3)
    audit = np.asarray(audit_probs, float).reshape(-1, 3)
    resid = truth - _answers(audit, "hard" if answer == "strata" else answer)
    n_u = len(unrev)
    conf = np.asarray([confirmed.get(c, 0) for c in CLASS_NAMES], dtype=float)
    n = conf.sum() + n_u
    if n == 0:
        raise ValueError("no crops to count")
    bias = resid.mean(axis=0)
    if answer == "strata":
        unrev_total, unrev_var = _strata_total(unrev, audit, truth)
        # B+C: B and C counts covary negatively, so the sum of variances bounds it
        var_total = np.concatenate([unrev_var, [unrev_var[1] + unrev_var[2]]])
    else:
        unrev_total = _answers(unrev, answer).sum(axis=0) + n_u * bias
        # residual variance per crop; one audit crop cannot estimate it: the worst case
        rv = _with_bc(resid).var(axis=0, ddof=1) if m > 1 else np.full(4, 0.25)
        var_total = n_u * rv * (1.0 + n_u / m)
    if shrink:
        counted = _answers(unrev, "hard" if answer == "strata" else answer).sum(axis=0)
        delta = unrev_total - counted
        keep = np.clip(1.0 - var_total[:3] / np.maximum(delta * delta, 1e-12), 0.0, 1.0)
        unrev_total = counted + keep * delta
    point = np.clip(conf + unrev_total, 0.0, None)
    point = _with_bc(point / point.sum() if point.sum() > 0 else np.full(3, 1 / 3))
    sd = np.sqrt(var_total) / n
    keys = (*CLASS_NAMES, "B+C")
    return AuditCorrection(
        fractions={k: float(point[i]) for i, k in enumerate(keys)},
        intervals={k: (float(max(0.0, point[i] - Z95 * sd[i])),
                       float(min(1.0, point[i] + Z95 * sd[i]))) for i, k in enumerate(keys)},
        n_confirmed=int(conf.sum()),
        n_unreviewed=n_u,
        n_audit=m,
        bias={k: float(bias[i]) for i, k in enumerate(CLASS_NAMES)},
    )
