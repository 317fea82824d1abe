"""`chromowatch export`: results as CSV or JSON for R, Python or a spreadsheet.

Three levels: one row per crop (everything needed to recompute any statistic), per
metaphase (the unit for tests over cells), and per sample (counts, fractions, Wilson
intervals, and corrected fractions when the model has a holdout confusion matrix).
Column names are plain identifiers (B+C is `BC`) so they read well as R data frames.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from chromowatch.records import CLASS_NAMES
from chromowatch.reports.data import current_model_info, load_sample, observation
from chromowatch.reports.trust import correction_for
from chromowatch.settings import Settings
from chromowatch.store import Store

LEVELS = ("crops", "metaphases", "samples")

CROP_COLUMNS = (
    "sample", "image_id", "image", "crop_id", "crop_index", "metaphase", "x", "y", "w", "h",
    "flags", "model_version", "predicted", "p_A", "p_B", "p_C", "confirmed", "counted_as",
    "excluded_reason", "file",
)
METAPHASE_COLUMNS = ("sample", "image_id", "metaphase", "scored", "A", "B", "C", "frac_BC")


def _groups() -> list[tuple[str, str]]:
    return [(c, c) for c in CLASS_NAMES] + [("B+C", "BC")]


SAMPLE_COLUMNS = (
    "sample", "images", "failed_images", "crops", "excluded", "scored", "metaphases",
    *[f"n_{c}" for c in CLASS_NAMES],
    *[f"{kind}_{name}" for _, name in _groups() for kind in ("frac", "lo", "hi")],
    *[f"{kind}_{name}" for _, name in _groups() for kind in ("adj", "adj_lo", "adj_hi")],
    "correction", "model",
)


def crop_rows(settings: Settings, store: Store, samples: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for sample in samples:
        for r in store.sample_crop_rows(sample):
            label, reason = observation(r).counted_as(settings.report.min_confidence)
            out.append({
                "sample": sample, "image_id": r.image_id, "image": r.image_path,
                "crop_id": r.id, "crop_index": r.idx, "metaphase": r.metaphase,
                "x": r.x, "y": r.y, "w": r.w, "h": r.h,
                "flags": ",".join(sorted(r.flag_set)), "model_version": r.model_version,
                "predicted": r.predicted, "p_A": r.p_a, "p_B": r.p_b,
                "p_C": r.p_c, "confirmed": r.confirmed, "counted_as": label,
                "excluded_reason": reason, "file": r.file,
            })
    return out


def metaphase_rows(settings: Settings, store: Store,
                   samples: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for sample in samples:
        for m in load_sample(settings, store, sample).stats.metaphases:
            out.append({"sample": sample, "image_id": m.image_id, "metaphase": m.metaphase,
                        "scored": m.n, **m.counts, "frac_BC": m.fraction("B+C")})
    return out


def sample_rows(settings: Settings, store: Store, samples: Sequence[str]) -> list[dict[str, Any]]:
    model = current_model_info(settings)
    out = []
    for sample in samples:
        data = load_sample(settings, store, sample)
        stats = data.stats
        adjusted = correction_for(settings, data, model).adjusted
        done = sum(1 for im in data.images if im.status == "done")
        row: dict[str, Any] = {
            "sample": sample, "images": done, "failed_images": len(data.images) - done,
            "crops": stats.crops, "excluded": stats.excluded_total, "scored": stats.scored,
            "metaphases": len(stats.metaphases),
        }
        row.update({f"n_{c}": stats.counts[c] for c in CLASS_NAMES})
        for group, name in _groups():
            prop = stats.proportions[group]
            row[f"frac_{name}"] = prop.fraction
            row[f"lo_{name}"], row[f"hi_{name}"] = prop.interval
            if adjusted is not None:
                row[f"adj_{name}"] = adjusted.fractions[group]
                row[f"adj_lo_{name}"], row[f"adj_hi_{name}"] = adjusted.intervals[group]
            else:
                row[f"adj_{name}"] = row[f"adj_lo_{name}"] = row[f"adj_hi_{name}"] = None
        row["correction"] = "adjusted classify-and-count" if adjusted is not None else None
        row["model"] = model.name if model else None
        out.append(row)
    return out


def export(settings: Settings, store: Store, out: TextIO, *, samples: Sequence[str],
           level: str, fmt: str) -> int:
    """Write one level as CSV (header row; empty cell = none) or JSON (a list of objects);
    returns the number of rows."""
    columns: Sequence[str]
    if level == "crops":
        rows, columns = crop_rows(settings, store, samples), CROP_COLUMNS
    elif level == "metaphases":
        rows, columns = metaphase_rows(settings, store, samples), METAPHASE_COLUMNS
    elif level == "samples":
        rows, columns = sample_rows(settings, store, samples), SAMPLE_COLUMNS
    else:
        raise ValueError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    if fmt == "json":
        json.dump(rows, out, indent=1)
        out.write("\n")
    else:
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
