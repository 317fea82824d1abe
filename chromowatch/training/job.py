"""The training job, run in a spawned subprocess (see runner.py).

labels -> dataset (holdout / validation / train) -> start points -> fine-tune -> member
choice on validation -> temperature on validation -> bundles and a candidate ensemble saved
(not current) -> candidate and current ensemble scored on the same holdout. The result is a
plain JSON file; the parent decides about promotion.
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

from chromowatch.errors import ModelError
from chromowatch.files import atomic_write_bytes
from chromowatch.records import CLASS_NAMES
from chromowatch.settings import Settings

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


def labels_fingerprint(rows: list[Any]) -> tuple[str, int]:
    """As Store.labels_fingerprint, over rows of Store.current_labels."""
    import hashlib

    h = hashlib.sha256()
    for crop_id, cls in sorted((int(r["crop_id"]), str(r["class"])) for r in rows):
        h.update(f"{crop_id}:{cls}\n".encode())
    return h.hexdigest(), len(rows)


def default_name() -> str:
    return "trained-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def run_job(settings: Settings, request: TrainRequest, result_path: str, log_level: str) -> None:
    """Entry point of the subprocess: the result (or the error) goes to `result_path`."""
    logging.basicConfig(level=getattr(logging, log_level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train_candidate(settings, request)
    except ModelError as exc:  # includes TrainingError
        result = {"ok": False, "error": str(exc)}
    except Exception as exc:  # reported by the parent, which stays up
        log.exception("training failed")
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    atomic_write_bytes(Path(result_path), json.dumps(result).encode())


def _device(settings: Settings) -> Any:

    from chromowatch.classify.ensemble import resolve_device

    return resolve_device(settings.training.device)


def train_candidate(settings: Settings, request: TrainRequest) -> dict[str, Any]:
    import numpy as np
    import torch

    from chromowatch.classify.bundle import Bundle
    from chromowatch.classify.library import ModelLibrary
    from chromowatch.store import Store
    from chromowatch.training import dataset, nets
    from chromowatch.training.calibrate import (
        bake_temperature,
        ensemble_nll,
        expected_calibration_error,
        fit_temperature,
        softmax,
    )
    from chromowatch.training.evaluate import choose_members, score
    from chromowatch.training.finetune import train_members

    started = time.monotonic()
    cfg = settings.training
    threads = cfg.threads or settings.classify.threads
    if threads:
        torch.set_num_threads(threads)
    device = _device(settings)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    with Store.open(settings.paths.db) as store:
        rows = store.current_labels()
    fingerprint, n_labels = labels_fingerprint(rows)
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

    library = ModelLibrary(settings.paths.models)
    base_name = request.base or cfg.base
    base_bundles: list[Bundle] = []
    try:
        resolved_base = library.resolve(base_name)
        info = library.ensemble_info(resolved_base)
        base_bundles = [library.load_bundle(m) for m in info.members]
        log.info("start points: the %d bundles of ensemble %s", len(base_bundles), resolved_base)
    except ModelError as exc:
        if request.base:  # asked for by name: it must exist
            raise
        resolved_base = None
        log.info("no base ensemble (%s); members start from ImageNet or random weights",
                 exc.message)
    members = list(request.members or cfg.members)
    torch.manual_seed(cfg.seed)
    member_nets = nets.start_nets(members, base_bundles, unfreeze=dict(cfg.unfreeze),
                                  imagenet_download=cfg.imagenet_download)
    states = train_members(member_nets, train, val, cfg, device)
    trained_at = time.monotonic()

    # member choice and calibration, on validation only
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

    # save the chosen members as bundles, then score exactly what was saved
    name = request.name
    member_names = []
    member_info = []
    for rank, i in enumerate(chosen):
        net = member_nets[i]
        net.model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
        probe = dataset.to_batch([c.image for c in val[:4]], net.input_size, net.mean, net.std)
        baked = bake_temperature(net.model, temperature, len(CLASS_NAMES), probe)  # type: ignore[arg-type]
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
                "temperature": f"{temperature:.4f}" if baked else "1",
                "labels_fingerprint": fingerprint,
            },
        )
        member = f"{name}-m{rank}-{net.arch}"
        library.save_bundle(bundle, member)
        member_names.append(member)
        member_info.append({"name": member, "arch": net.arch, "start": net.start,
                            "best_epoch": st.best_epoch, "val_loss": round(st.best_loss, 4),
                            "epochs": len(st.history), "temperature_baked": baked})
    del member_nets, states

    y_hold = np.array([c.label for c in holdout], np.int64)
    samples = [c.sample for c in holdout]
    images = [c.image for c in holdout]
    saved = [nets.net_from_bundle(library.load_bundle(m)) for m in member_names]
    current_nets: list[nets.Net] = []
    current = request.current
    if current is not None:
        try:
            cinfo = library.ensemble_info(current)
            current_nets = [nets.net_from_bundle(library.load_bundle(m)) for m in cinfo.members]
        except (ModelError, ValueError) as exc:
            log.warning("the current ensemble %s cannot be scored (%s); it counts as worst",
                        current, exc)
            current = None
            current_nets = []
    all_nets = saved + current_nets
    logits = nets.member_logits(all_nets, images, device)
    cand_probs = softmax(logits[: len(saved)]).mean(axis=0)
    cand_scores = score(cand_probs, y_hold, samples)
    cur_scores = None
    if current_nets:
        cur_scores = score(softmax(logits[len(saved):]).mean(axis=0), y_hold, samples)
    elapsed = time.monotonic() - started
    log.info("holdout (%d crops): candidate %s accuracy %s recall %s; current %s accuracy %s "
             "recall %s", len(holdout), name, cand_scores["accuracy"], cand_scores["recall"],
             current, cur_scores and cur_scores["accuracy"], cur_scores and cur_scores["recall"])

    metrics: dict[str, Any] = {
        "holdout_accuracy": cand_scores["accuracy"],
        "holdout_balanced_accuracy": cand_scores["balanced_accuracy"],
        "recall_A": cand_scores["recall"]["A"],
        "recall_B": cand_scores["recall"]["B"],
        "recall_C": cand_scores["recall"]["C"],
        "fraction_error_max": cand_scores["fraction_error_max"],
        "n_holdout": len(holdout),
        "confusion_matrix": cand_scores["confusion_matrix"],
        "holdout": cand_scores,
        "compared_with": {"name": current, "holdout": cur_scores},
        VERSION_KEY: {
            "labels": n_labels,
            "distinct_crops": len(crops),
            "labels_fingerprint": fingerprint,
            "split": counts,
            "members_trained": members,
            "members": member_info,
            "base": resolved_base,
            "validation": val_scores,
            "temperature": round(temperature, 4),
            "validation_log_loss": [round(nll_before, 4), round(nll_after, 4)],
            "validation_ece": [round(ece_before, 4), round(ece_after, 4)],
            "seed": cfg.seed,
            "device": str(device),
            "train_seconds": round(trained_at - started, 1),
            "seconds": round(elapsed, 1),
        },
    }
    library.save_ensemble(name, member_names, metrics=metrics)
    return {
        "ok": True,
        "candidate": name,
        "labels_fingerprint": fingerprint,
        "labels": n_labels,
        "candidate_holdout": cand_scores,
        "current": current,
        "current_holdout": cur_scores,
        "seconds": round(elapsed, 1),
    }
