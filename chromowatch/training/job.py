"""The training job, run in a spawned subprocess (see runner.py).

labels -> dataset (holdout / validation / train) -> start points -> fine-tune -> member
choice on validation -> temperature on validation -> bundles and a candidate ensemble saved
(not current) -> candidate and current ensemble scored on the same holdout. The result is a
plain JSON file; the parent decides about promotion. Each phase is a function with a typed
result; `train_candidate` runs them in order.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chromowatch.classify.bundle import Bundle
from chromowatch.classify.ensemble import resolve_device
from chromowatch.classify.library import ModelLibrary
from chromowatch.errors import ModelError
from chromowatch.files import atomic_write_bytes
from chromowatch.records import CLASS_NAMES
from chromowatch.settings import Settings, TrainingSettings
from chromowatch.store import Store, fingerprint_labels
from chromowatch.training import crossval, dataset, nets
from chromowatch.training.calibrate import (
    bake_temperature,
    ensemble_nll,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from chromowatch.training.dataset import LabelledCrop
from chromowatch.training.evaluate import choose_members, score
from chromowatch.training.finetune import MemberState, train_members

log = logging.getLogger(__name__)

VERSION_KEY = "training"  # metrics key that marks an ensemble made by `chromowatch train`


class TrainingError(ModelError):
    """Training could not run or did not finish; the current model is untouched."""


@dataclass(frozen=True)
class TrainRequest:
    name: str
    base: str | None  # ensemble of start points; None: settings.training.base
    members: tuple[str, ...] | None  # None: settings.training.members
    current: str | None  # the current ensemble when training was asked for


@dataclass(frozen=True)
class LabelledData:
    """The confirmed labels as crops, split; what the run saw (fingerprint, counts)."""

    fingerprint: str
    n_labels: int
    distinct: int  # crops left after deduplication by content
    train: list[LabelledCrop]
    val: list[LabelledCrop]
    holdout: list[LabelledCrop]
    counts: dict[str, dict[str, int]]  # per split, per class


@dataclass(frozen=True)
class StartPoints:
    """The bundles members start from, and the ensemble they came from (None: ImageNet or
    random weights)."""

    bundles: list[Bundle]
    base: str | None


@dataclass(frozen=True)
class Calibration:
    """Member choice and temperature, both fitted on validation only."""

    chosen: list[int]
    val_scores: dict[str, float]
    temperature: float
    nll: tuple[float, float]  # validation log-loss before, after the temperature
    ece: tuple[float, float]  # expected calibration error before, after


@dataclass(frozen=True)
class SavedMembers:
    """The chosen members as saved bundles, with what the metrics say of each."""

    names: list[str]
    info: list[dict[str, Any]]


@dataclass(frozen=True)
class HoldoutScores:
    """Candidate and current ensemble on the same holdout; `current` None when absent or
    unscorable (it then counts as worst)."""

    candidate: dict[str, Any]
    current: str | None
    current_scores: dict[str, Any] | None


def default_name() -> str:
    return "trained-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def run_job(settings: Settings, request: TrainRequest, result_path: str, log_level: str) -> None:
    """Entry point of the subprocess: the result (or the error) goes to `result_path`."""
    logging.basicConfig(level=getattr(logging, log_level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train_candidate(settings, request)
    except KeyboardInterrupt:
        # Ctrl+C reaches the whole foreground group: the parent says "interrupted"; a
        # traceback from here too would only bury that
        raise SystemExit(130) from None
    except ModelError as exc:  # includes TrainingError
        result = {"ok": False, "error": str(exc)}
    except Exception as exc:  # reported by the parent, which stays up
        log.exception("training failed")
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    atomic_write_bytes(Path(result_path), json.dumps(result).encode())


def _prepare_torch(settings: Settings) -> torch.device:
    """Threads and determinism for this process; the device training runs on."""
    threads = settings.training.threads or settings.classify.threads
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(settings.training.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def load_data(settings: Settings) -> LabelledData:
    """The current labels' crops split into train / validation / holdout; too few is a
    TrainingError naming what is missing."""
    cfg = settings.training
    with Store.open(settings.paths.db) as store:
        rows = store.current_labels()
    fingerprint, n_labels = fingerprint_labels((r.crop_id, r.cls) for r in rows)
    crops, problems = dataset.load_labelled(rows)
    for problem in problems:
        log.warning("left out: %s", problem)
    parts = dataset.split(crops, cfg.holdout_percent, cfg.validation_percent)
    train, val, holdout = parts[dataset.TRAIN], parts[dataset.VALIDATION], parts[dataset.HOLDOUT]
    counts = {k: dataset.class_counts(v) for k, v in parts.items()}
    log.info("%d labelled crops (%d distinct): train %s, validation %s, holdout %s",
             n_labels, len(crops), counts[dataset.TRAIN], counts[dataset.VALIDATION],
             counts[dataset.HOLDOUT])
    short = [c for c, n in counts[dataset.TRAIN].items() if n < cfg.min_per_class]
    if short or not val or not holdout:
        raise TrainingError(
            f"not enough confirmed labels to train: train {counts[dataset.TRAIN]}, "
            f"validation {len(val)}, holdout {len(holdout)} crops",
            hint=f"confirm at least {cfg.min_per_class} training crops of each class "
            "(`chromowatch labels import-...`); about a third more go to validation and holdout",
        )
    return LabelledData(fingerprint, n_labels, len(crops), train, val, holdout, counts)


def start_points(library: ModelLibrary, request: TrainRequest, base_name: str) -> StartPoints:
    """The base ensemble's bundles; without one (unless asked for by name), none."""
    try:
        resolved = library.resolve(base_name)
        info = library.ensemble_info(resolved)
        bundles = [library.load_bundle(m) for m in info.members]
    except ModelError as exc:
        if request.base:  # asked for by name: it must exist
            raise
        log.info("no base ensemble (%s); members start from ImageNet or random weights",
                 exc.message)
        return StartPoints([], None)
    log.info("start points: the %d bundles of ensemble %s", len(bundles), resolved)
    return StartPoints(bundles, resolved)


def calibrate(member_nets: list[nets.Net], val: list[LabelledCrop],
              device: torch.device) -> Calibration:
    """Choose members and fit the temperature on validation only."""
    y_val = np.array([c.label for c in val], np.int64)
    val_logits = nets.member_logits(member_nets, [c.image for c in val], device)
    chosen, val_scores = choose_members(val_logits, y_val)
    temperature = fit_temperature(val_logits[chosen], y_val)
    nll_before = ensemble_nll(val_logits[chosen], y_val)
    nll_after = ensemble_nll(val_logits[chosen], y_val, temperature)
    ece_before = expected_calibration_error(softmax(val_logits[chosen]).mean(0), y_val)
    ece_after = expected_calibration_error(
        softmax(val_logits[chosen], temperature).mean(0), y_val)
    log.info("members chosen on validation: %s (accuracy %.4f); temperature %.3f "
             "(log-loss %.4f -> %.4f, ECE %.4f -> %.4f)", chosen, val_scores["accuracy"],
             temperature, nll_before, nll_after, ece_before, ece_after)
    return Calibration(chosen, val_scores, temperature, (nll_before, nll_after),
                       (ece_before, ece_after))


def save_members(library: ModelLibrary, name: str, member_nets: list[nets.Net],
                 states: list[MemberState], cal: Calibration, val: list[LabelledCrop],
                 fingerprint: str) -> SavedMembers:
    """The chosen members, temperature baked in, saved as bundles `<name>-m<rank>-<arch>`."""
    names: list[str] = []
    info: list[dict[str, Any]] = []
    for rank, i in enumerate(cal.chosen):
        net = member_nets[i]
        net.model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
        probe = dataset.to_batch([c.image for c in val[:4]], net.input_size, net.mean, net.std)
        baked = bake_temperature(net.model, cal.temperature, len(CLASS_NAMES), probe)  # type: ignore[arg-type]
        st = states[i]
        bundle = Bundle(
            arch=net.arch,
            state_dict={k: v.detach().clone() for k, v in net.model.state_dict().items()},
            class_names=CLASS_NAMES,
            input_size=net.input_size,
            mean=net.mean,
            std=net.std,
            meta={
                "trained_by": "chromowatch train",
                "start": net.start,
                "ensemble": name,
                "best_epoch": str(st.best_epoch),
                "temperature": f"{cal.temperature:.4f}" if baked else "1",
                "labels_fingerprint": fingerprint,
            },
        )
        member = f"{name}-m{rank}-{net.arch}"
        library.save_bundle(bundle, member)
        names.append(member)
        info.append({"name": member, "arch": net.arch, "start": net.start,
                     "best_epoch": st.best_epoch, "val_loss": round(st.best_loss, 4),
                     "epochs": len(st.history), "temperature_baked": baked})
    return SavedMembers(names, info)


def _current_nets(library: ModelLibrary, current: str | None
                  ) -> tuple[str | None, list[nets.Net]]:
    """The current ensemble's nets; (None, []) when there is none or it cannot be loaded."""
    if current is None:
        return None, []
    try:
        cinfo = library.ensemble_info(current)
        return current, [nets.net_from_bundle(library.load_bundle(m)) for m in cinfo.members]
    except (ModelError, ValueError) as exc:
        log.warning("the current ensemble %s cannot be scored (%s); it counts as worst",
                    current, exc)
        return None, []


def cross_sample(library: ModelLibrary, data: LabelledData, members: list[str],
                 start: StartPoints, cfg: TrainingSettings, current: str | None,
                 device: torch.device) -> crossval.CrossResult:
    """Cross-sample validation of the recipe (see crossval.py), and the current ensemble's
    figures to compare with: scored on the same left-out groups when it was not made by
    `chromowatch train` (the published models never saw these labels), else the figures
    its own training run recorded (its metrics' "cross_sample")."""
    crops = sorted(data.train + data.val + data.holdout, key=lambda c: c.crop_id)
    stored: dict[str, Any] | None = None
    current_nets: list[nets.Net] = []
    if current is not None and cfg.cross_validation != "off":
        try:
            metrics = library.ensemble_info(current).metrics or {}
        except ModelError:
            metrics = {}
        if VERSION_KEY in metrics:
            stored = metrics.get("cross_sample")
            if stored is not None:
                stored = {**stored, "source": f"recorded by {current}'s own training run"}
        else:
            _, current_nets = _current_nets(library, current)
    result = crossval.cross_validate(crops, members, start.bundles, cfg, device, current_nets)
    if stored is not None and result.candidate is not None:
        return crossval.CrossResult(result.candidate, stored)
    return result


def score_holdout(library: ModelLibrary, saved: SavedMembers, current: str | None,
                  holdout: list[LabelledCrop], device: torch.device) -> HoldoutScores:
    """Score exactly what was saved, and the current ensemble, on the same holdout."""
    y_hold = np.array([c.label for c in holdout], np.int64)
    samples = [c.sample for c in holdout]
    images = [c.image for c in holdout]
    saved_nets = [nets.net_from_bundle(library.load_bundle(m)) for m in saved.names]
    current, current_nets = _current_nets(library, current)
    logits = nets.member_logits(saved_nets + current_nets, images, device)
    cand_scores = score(softmax(logits[: len(saved_nets)]).mean(axis=0), y_hold, samples)
    cur_scores = None
    if current_nets:
        cur_scores = score(softmax(logits[len(saved_nets):]).mean(axis=0), y_hold, samples)
    return HoldoutScores(cand_scores, current, cur_scores)


@dataclass(frozen=True)
class _Run:
    """Everything the candidate's metrics record, gathered from the phases."""

    data: LabelledData
    start: StartPoints
    members: list[str]
    cal: Calibration
    saved: SavedMembers
    scores: HoldoutScores
    cross: crossval.CrossResult
    seed: int
    device: str
    train_seconds: float
    cross_seconds: float
    seconds: float


def candidate_metrics(run: _Run) -> dict[str, Any]:
    """The metrics saved with the candidate ensemble (headline numbers first)."""
    cand, data, cal, cross = run.scores.candidate, run.data, run.cal, run.cross.candidate
    return {
        "holdout_accuracy": cand["accuracy"],
        "holdout_balanced_accuracy": cand["balanced_accuracy"],
        "recall_A": cand["recall"]["A"],
        "recall_B": cand["recall"]["B"],
        "recall_C": cand["recall"]["C"],
        "fraction_error_max": cand["fraction_error_max"],
        "n_holdout": len(data.holdout),
        "cross_sample_accuracy": cross["accuracy"] if cross else None,
        "cross_sample_fraction_error_max": cross["fraction_error_max"] if cross else None,
        "cross_sample_groups": len(cross["folds"]) if cross else 0,
        "confusion_matrix": cand["confusion_matrix"],
        "holdout": cand,
        "cross_sample": cross,
        "compared_with": {"name": run.scores.current, "holdout": run.scores.current_scores,
                          "cross_sample": run.cross.current},
        VERSION_KEY: {
            "labels": data.n_labels,
            "distinct_crops": data.distinct,
            "labels_fingerprint": data.fingerprint,
            "split": data.counts,
            "members_trained": run.members,
            "members": run.saved.info,
            "base": run.start.base,
            "validation": cal.val_scores,
            "temperature": round(cal.temperature, 4),
            "validation_log_loss": [round(cal.nll[0], 4), round(cal.nll[1], 4)],
            "validation_ece": [round(cal.ece[0], 4), round(cal.ece[1], 4)],
            "seed": run.seed,
            "device": run.device,
            "train_seconds": round(run.train_seconds, 1),
            "cross_sample_seconds": round(run.cross_seconds, 1),
            "seconds": round(run.seconds, 1),
        },
    }


def train_candidate(settings: Settings, request: TrainRequest) -> dict[str, Any]:
    """Run the phases; the result the parent reads (it decides about promotion)."""
    started = time.monotonic()
    cfg = settings.training
    device = _prepare_torch(settings)
    data = load_data(settings)
    library = ModelLibrary(settings.paths.models)
    start = start_points(library, request, request.base or cfg.base)
    members = list(request.members or cfg.members)
    torch.manual_seed(cfg.seed)
    member_nets = nets.start_nets(members, start.bundles, unfreeze=dict(cfg.unfreeze),
                                  imagenet_download=cfg.imagenet_download)
    states = train_members(member_nets, data.train, data.val, cfg, device)
    trained_at = time.monotonic()
    cal = calibrate(member_nets, data.val, device)
    saved = save_members(library, request.name, member_nets, states, cal, data.val,
                         data.fingerprint)
    del member_nets, states
    scores = score_holdout(library, saved, request.current, data.holdout, device)
    log.info("holdout (%d crops): candidate %s accuracy %s recall %s; current %s accuracy %s "
             "recall %s", len(data.holdout), request.name, scores.candidate["accuracy"],
             scores.candidate["recall"], scores.current,
             scores.current_scores and scores.current_scores["accuracy"],
             scores.current_scores and scores.current_scores["recall"])
    cross_at = time.monotonic()
    cross = cross_sample(library, data, members, start, cfg, request.current, device)
    elapsed = time.monotonic() - started
    run = _Run(data, start, members, cal, saved, scores, cross, cfg.seed, str(device),
               trained_at - started, time.monotonic() - cross_at, elapsed)
    library.save_ensemble(request.name, saved.names, metrics=candidate_metrics(run))
    return {
        "ok": True,
        "candidate": request.name,
        "labels_fingerprint": data.fingerprint,
        "labels": data.n_labels,
        "candidate_holdout": scores.candidate,
        "current": scores.current,
        "current_holdout": scores.current_scores,
        "cross_sample": cross.candidate,
        "current_cross_sample": cross.current,
        "seconds": round(elapsed, 1),
    }
