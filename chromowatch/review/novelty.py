"""Does a sample look unlike the samples the model was validated on?

A model's validation figures hold for samples like its validation samples. A new genotype
or a new staining shows up first as lower confidence or as fractions outside anything the
validation saw; then the model's numbers are a guess until a person reviews some crops.
The check compares the sample's mean top probability and predicted fractions with the range
the validation groups showed (each left-out sample or spread, or each holdout sample).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chromowatch.records import CLASS_NAMES


@dataclass(frozen=True)
class GroupFigures:
    """What one validation group looked like to the model."""

    name: str
    mean_confidence: float
    fractions: dict[str, float]  # predicted A, B, C


def reference_groups(metrics: Mapping[str, Any] | None) -> list[GroupFigures]:
    """Validation groups from a model's metrics: the cross-sample groups when present,
    else the holdout's samples. Groups without a mean confidence are left out."""
    if not metrics:
        return []
    groups: dict[str, Any] = {}
    cross = metrics.get("cross_sample")
    if isinstance(cross, Mapping):
        groups = {str(f.get("group")): f for f in cross.get("folds") or []
                  if isinstance(f, Mapping)}
    if not groups and isinstance(metrics.get("holdout"), Mapping):
        groups = dict(metrics["holdout"].get("per_sample") or {})
    out = []
    for name, g in sorted(groups.items()):
        if not isinstance(g, Mapping) or g.get("mean_confidence") is None:
            continue
        fr = g.get("predicted_fractions") or {}
        out.append(GroupFigures(str(name), float(g["mean_confidence"]),
                                {c: float(fr.get(c, 0.0)) for c in CLASS_NAMES}))
    return out


def unlike_validation(mean_confidence: float, fractions: Mapping[str, float],
                      groups: Sequence[GroupFigures], *, confidence_tolerance: float,
                      fraction_tolerance: float) -> list[str]:
    """Why the sample looks new (empty: it does not, or there is nothing to compare with)."""
    if not groups:
        return []
    why = []
    lowest = min(g.mean_confidence for g in groups)
    if mean_confidence < lowest - confidence_tolerance:
        why.append(f"its mean confidence {mean_confidence:.2f} is below every validation "
                   f"sample's (lowest {lowest:.2f})")
    for c in CLASS_NAMES:
        lo = min(g.fractions[c] for g in groups)
        hi = max(g.fractions[c] for g in groups)
        f = float(fractions.get(c, 0.0))
        if f < lo - fraction_tolerance or f > hi + fraction_tolerance:
            why.append(f"its predicted {c} fraction {f:.2f} is outside what validation "
                       f"showed ({lo:.2f}-{hi:.2f})")
    return why
