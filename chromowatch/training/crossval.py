"""Cross-sample validation: the training recipe scored on whole groups it never saw.

The within-sample holdout (a hash split of crops) shares samples and spreads with training,
so a model that learns a sample's or a spread's look scores well there and badly on a new
sample. Here each fold leaves one whole group out, trains the same recipe on everything else
and scores on the group left out:

- a sample (`training.cross_validation = "samples"`), when at least two samples are labelled;
- a spread of a sample with several spreads ("spreads"): a spread is the image its crops were
  cut from (`labels import-yolo`: one image per spread); crops imported one per file
  (`labels import-folder`) have no spread and are never left out as spreads, only with their
  sample;
- both ("both"), or none ("off"). At most `cross_validation_max_folds` folds, the largest
  groups first.

In a fold, the rest's crops are split by the same content hash as the candidate's: the
validation share chooses members, stops early and fits the temperature; every other crop of
the rest trains (the candidate's holdout crops too: the fold's model is thrown away). The
fold's scores are the usual `evaluate.score`, with the group as the "sample", so a fold's
`fraction_error` is that group's A/B/C fraction error. The pooled figures concatenate every
fold's predictions: `accuracy`, per-class `recall`, and `fraction_error_max`, the worst group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from chromowatch.classify.bundle import Bundle
from chromowatch.settings import TrainingSettings
from chromowatch.training import dataset, nets
from chromowatch.training.calibrate import fit_temperature, softmax
from chromowatch.training.dataset import LabelledCrop
from chromowatch.training.evaluate import choose_members, score
from chromowatch.training.finetune import train_members

log = logging.getLogger(__name__)

SAMPLE = "sample"
SPREAD = "spread"


@dataclass(frozen=True)
class Fold:
    """One group left out: `train` and `val` never hold a crop of `left_out`."""

    kind: str  # SAMPLE or SPREAD
    group: str  # "sample NAME" or "spread NAME/FILE"
    left_out: list[LabelledCrop]
    train: list[LabelledCrop]
    val: list[LabelledCrop]


def _groups(crops: list[LabelledCrop], mode: str) -> list[tuple[str, str, set[str]]]:
    """(kind, group name, the keys of its crops) for the mode, largest groups first."""
    out: list[tuple[str, str, set[str]]] = []
    if mode in ("samples", "both"):
        samples = sorted({c.sample for c in crops})
        if len(samples) > 1:
            out += [(SAMPLE, f"sample {s}", {c.key for c in crops if c.sample == s})
                    for s in samples]
    if mode in ("spreads", "both"):
        for s in sorted({c.sample for c in crops}):
            spreads = sorted({c.spread for c in crops if c.sample == s and c.spread})
            if len(spreads) > 1:
                out += [(SPREAD, f"spread {s}/{sp.replace(chr(92), '/').rsplit('/', 1)[-1]}",
                         {c.key for c in crops if c.sample == s and c.spread == sp})
                        for sp in spreads]
    return sorted(out, key=lambda g: -len(g[2]))  # stable: name order among equal sizes


def make_folds(crops: list[LabelledCrop], cfg: TrainingSettings) -> tuple[list[Fold], list[str]]:
    """The folds the settings ask for, and why any group was not used as one."""
    notes: list[str] = []
    folds: list[Fold] = []
    groups = _groups(crops, cfg.cross_validation)
    if len(groups) > cfg.cross_validation_max_folds:
        notes += [f"{name}: not left out (cross_validation_max_folds "
                  f"{cfg.cross_validation_max_folds})"
                  for _, name, _ in groups[cfg.cross_validation_max_folds:]]
        groups = groups[: cfg.cross_validation_max_folds]
    for kind, name, keys in groups:
        left = [c for c in crops if c.key in keys]
        rest = [c for c in crops if c.key not in keys]
        val_keys = {c.key for c in rest if dataset.split_of(c.key, 0.0, cfg.validation_percent)
                    == dataset.VALIDATION}
        val = [c for c in rest if c.key in val_keys]
        train = [c for c in rest if c.key not in val_keys]
        counts = dataset.class_counts(train)
        short = [k for k, n in counts.items() if n < cfg.min_per_class]
        if short or not val:
            notes.append(f"{name}: not left out (the rest has training crops {counts}, "
                         f"validation {len(val)})")
            continue
        folds.append(Fold(kind, name, left, train, val))
    return folds, notes


def _fold_cfg(cfg: TrainingSettings) -> TrainingSettings:
    if not cfg.cross_validation_max_epochs:
        return cfg
    return cfg.model_copy(update={"max_epochs": cfg.cross_validation_max_epochs})


def _train_fold(fold: Fold, members: list[str], bundles: list[Bundle], cfg: TrainingSettings,
                device: torch.device) -> np.ndarray:
    """The recipe trained on the fold's rest; its (N, 3) probabilities on the left-out group."""
    torch.manual_seed(cfg.seed)
    member_nets = nets.start_nets(members, bundles, unfreeze=dict(cfg.unfreeze),
                                  imagenet_download=cfg.imagenet_download)
    train_members(member_nets, fold.train, fold.val, cfg, device)
    y_val = np.array([c.label for c in fold.val], np.int64)
    val_logits = nets.member_logits(member_nets, [c.image for c in fold.val], device)
    chosen, _ = choose_members(val_logits, y_val)
    temperature = fit_temperature(val_logits[chosen], y_val)
    logits = nets.member_logits(member_nets, [c.image for c in fold.left_out], device)
    return softmax(logits[chosen], temperature).mean(axis=0)


def _pooled(folds: list[Fold], probs: list[np.ndarray]) -> dict[str, Any]:
    labels = np.array([c.label for f in folds for c in f.left_out], np.int64)
    groups = [f.group for f in folds for _ in f.left_out]
    pooled = score(np.concatenate(probs), labels, groups)
    return {k: pooled[k] for k in ("n", "accuracy", "balanced_accuracy", "recall", "f1",
                                   "fraction_error_max", "confusion_matrix")}


def _fold_row(fold: Fold, probs: np.ndarray) -> dict[str, Any]:
    labels = np.array([c.label for c in fold.left_out], np.int64)
    s = score(probs, labels, [fold.group] * len(labels))
    group = s["per_sample"][fold.group]
    return {"group": fold.group, "kind": fold.kind, "n": s["n"], "n_train": len(fold.train),
            "accuracy": s["accuracy"], "recall": s["recall"],
            "true_fractions": group["true_fractions"],
            "predicted_fractions": group["predicted_fractions"],
            "fraction_error": group["fraction_error"],
            "mean_confidence": group["mean_confidence"]}


def summarise(folds: list[Fold], probs: list[np.ndarray], notes: list[str], how: str
              ) -> dict[str, Any]:
    """The cross-sample figures as metrics and the decision read them; `how` says where they
    come from."""
    return {"source": how, **_pooled(folds, probs),
            "folds": [_fold_row(f, p) for f, p in zip(folds, probs, strict=True)],
            "notes": notes}


@dataclass(frozen=True)
class CrossResult:
    candidate: dict[str, Any] | None  # None: off, or no group to leave out
    current: dict[str, Any] | None  # the current ensemble on the same groups, when it can be


def cross_validate(crops: list[LabelledCrop], members: list[str], bundles: list[Bundle],
                   cfg: TrainingSettings, device: torch.device,
                   current_nets: list[nets.Net]) -> CrossResult:
    """Run every fold; score `current_nets` (an ensemble never trained on these labels; []
    for none) on the same left-out groups."""
    if cfg.cross_validation == "off":
        return CrossResult(None, None)
    folds, notes = make_folds(crops, cfg)
    for note in notes:
        log.info("cross-sample validation: %s", note)
    if not folds:
        log.info("cross-sample validation: no group to leave out (%s)", cfg.cross_validation)
        return CrossResult(None, None)
    fold_cfg = _fold_cfg(cfg)
    cand, cur = [], []
    for i, fold in enumerate(folds, 1):
        log.info("fold %d of %d: %s left out (%d crops), training on %d (validation %d)",
                 i, len(folds), fold.group, len(fold.left_out), len(fold.train), len(fold.val))
        cand.append(_train_fold(fold, members, bundles, fold_cfg, device))
        if current_nets:
            logits = nets.member_logits(current_nets, [c.image for c in fold.left_out], device)
            cur.append(softmax(logits).mean(axis=0))
        log.info("fold %d: %s accuracy %.4f", i, fold.group, float(
            (cand[-1].argmax(1) == np.array([c.label for c in fold.left_out])).mean()))
    recipe = (f"{cfg.cross_validation}: the recipe retrained per fold "
              f"(up to {fold_cfg.max_epochs} epochs)")
    return CrossResult(summarise(folds, cand, notes, recipe),
                       summarise(folds, cur, notes, "scored on the same left-out groups")
                       if cur else None)
