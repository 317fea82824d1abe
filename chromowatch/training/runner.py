"""`chromowatch train`: nothing new -> nothing done; otherwise train in a spawned subprocess,
then promote the candidate only if it is measurably better.

The subprocess (multiprocessing "spawn": no inherited CUDA state, a clean interpreter) does
all of the torch work and writes a JSON result; if it crashes, is killed (out of memory) or
runs past `training.timeout_hours`, the caller gets a TrainingError and the current model is
untouched. Promotion happens here, after the subprocess has exited: the candidate is loaded
completely (a corrupt bundle is refused), and `current.json` is replaced in one rename.
Every finished run is recorded in the store with the fingerprint of the labels it saw.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chromowatch.classify.library import ModelLibrary
from chromowatch.errors import ModelError
from chromowatch.settings import Settings
from chromowatch.store import Store
from chromowatch.training.evaluate import decide
from chromowatch.training.job import VERSION_KEY, TrainingError, TrainRequest, default_name, run_job

log = logging.getLogger(__name__)

NOTHING_NEW = "nothing-new"
PROMOTED = "promoted"
KEPT = "kept"


@dataclass
class TrainOutcome:
    status: str  # nothing-new, promoted, kept
    message: str
    candidate: str | None = None
    current: str | None = None  # current ensemble after this run
    result: dict[str, Any] = field(default_factory=dict)


def _library(settings: Settings) -> ModelLibrary:
    return ModelLibrary(settings.paths.models)


def _current(library: ModelLibrary) -> str | None:
    try:
        return library.current_name()
    except ModelError:
        return None


def _is_trained(info: Any) -> bool:
    return bool(info.metrics and VERSION_KEY in info.metrics)


def run_subprocess(target: Callable[..., None], args: tuple[Any, ...], timeout_s: float) -> int:
    """Run `target(*args)` in a spawned process; its exit code (negative: killed by signal)."""
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=target, args=args, name="chromowatch-train")
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise TrainingError(
            f"training ran longer than {timeout_s / 3600:g} h and was stopped",
            hint="raise training.timeout_hours, or train fewer members or epochs",
        )
    return int(proc.exitcode if proc.exitcode is not None else -1)


def train(
    settings: Settings,
    *,
    base: str | None = None,
    members: list[str] | None = None,
    name: str | None = None,
    force: bool = False,
    target: Callable[..., None] = run_job,
    log_level: str = "INFO",
) -> TrainOutcome:
    """Train, evaluate and maybe promote; see the module docstring."""
    from chromowatch.classify.architectures import get_spec
    from chromowatch.classify.library import _check_name

    cfg = settings.training
    for arch in members or cfg.members:
        get_spec(arch)  # a typo fails now, not after minutes in the subprocess
    library = _library(settings)
    name = name or default_name()
    _check_name(name, "ensemble")
    if library.ensemble_path(name).exists():
        raise TrainingError(f"an ensemble named {name!r} exists already",
                            hint="choose another --name")
    with Store.open(settings.paths.db) as store:
        fingerprint, n_labels = store.labels_fingerprint()
        last = store.last_training_run(completed=True)
    if not force and last is not None and last["labels_fingerprint"] == fingerprint:
        return TrainOutcome(
            NOTHING_NEW,
            f"nothing new: the {n_labels} confirmed labels are those of the last training "
            f"(run {last['id']}, {last['status']}); nothing done",
            current=_current(library),
        )
    if n_labels == 0:
        # A fresh install (and its first nightly run) has nothing to learn from yet: not an error.
        return TrainOutcome(
            NOTHING_NEW,
            "no confirmed labels yet: nothing to train (import some with chromowatch labels "
            "import-folder|import-yolo|import-csv)",
            current=_current(library),
        )

    current = _current(library)
    request = TrainRequest(name=name, base=base, members=tuple(members) if members else None,
                           current=current)
    work = settings.paths.models / ".training"
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / f"{name}.json"
    result_path.unlink(missing_ok=True)
    started = time.time()
    log.info("training %s on %d confirmed labels in a subprocess", name, n_labels)

    def failed(message: str) -> TrainingError:
        with Store.open(settings.paths.db) as store:
            store.record_training_run(
                started_at=started, status="failed", labels_fingerprint=fingerprint,
                labels=n_labels, candidate=name, current_before=current, current_after=current,
                message=message, metrics=None)
        return TrainingError(message, hint="the current model is unchanged"
                             + (f" ({current})" if current else ""))

    try:
        code = run_subprocess(target, (settings, request, str(result_path), log_level),
                              cfg.timeout_hours * 3600)
    except TrainingError as exc:
        raise failed(exc.message) from None
    result: dict[str, Any] | None = None
    if result_path.is_file():
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            result = None
        result_path.unlink(missing_ok=True)
    if code != 0 or result is None:
        how = (f"was killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
               if code < 0 else f"exited with code {code}")
        raise failed(f"the training subprocess {how} before finishing")
    if not result.get("ok"):
        raise failed(f"training failed: {result.get('error')}")

    candidate = str(result["candidate"])
    promote, why = decide(result["candidate_holdout"], result.get("current_holdout"),
                          margin=cfg.promote_margin, class_margin=cfg.class_margin)
    status = KEPT
    now_current = _current(library)
    if promote and now_current != current:
        promote, why = False, (f"the current ensemble changed during training "
                               f"({current} -> {now_current}); not promoted")
    if promote:
        try:
            library.promote(candidate)
            status = PROMOTED
        except ModelError as exc:
            promote, why = False, f"the candidate cannot be loaded: {exc.message}"
    after = _current(library)
    summary: dict[str, object] = {
        "candidate": {k: result["candidate_holdout"][k]
                      for k in ("accuracy", "recall", "fraction_error_max", "n")},
        "current": ({k: result["current_holdout"][k]
                     for k in ("accuracy", "recall", "fraction_error_max", "n")}
                    if result.get("current_holdout") else None),
    }
    message = (f"{candidate} {'promoted' if status == PROMOTED else 'not promoted'}: {why}")
    with Store.open(settings.paths.db) as store:
        store.record_training_run(
            started_at=started, status=status, labels_fingerprint=result["labels_fingerprint"],
            labels=int(result["labels"]), candidate=candidate, current_before=current,
            current_after=after, message=message, metrics=summary)
    removed = library.prune(cfg.keep_versions, is_version=_is_trained)
    if removed:
        log.info("removed old trained ensembles: %s", ", ".join(removed))
    return TrainOutcome(status, message, candidate=candidate, current=after, result=result)


def rollback(settings: Settings) -> tuple[str, str | None]:
    """Go back to the previous ensemble; returns (now current, was current)."""
    library = _library(settings)
    before = _current(library)
    return library.rollback(), before


def promote(settings: Settings, name: str) -> str | None:
    """Make an installed ensemble current by hand (fully checked first); returns the old one."""
    return _library(settings).promote(name)


def ensemble_rows(settings: Settings) -> list[dict[str, Any]]:
    """Installed ensembles with their headline holdout metrics, newest first."""
    library = _library(settings)
    current = _current(library)
    rows: list[dict[str, Any]] = []
    for info in library.list_ensembles():
        m = dict(info.metrics or {})
        rows.append({
            "name": info.name,
            "current": info.name == current,
            "members": len(info.members),
            "created": info.created,
            "trained": VERSION_KEY in m,
            "holdout_accuracy": m.get("holdout_accuracy"),
            "recall": {c: m.get(f"recall_{c}") for c in "ABC"},
            "fraction_error_max": m.get("fraction_error_max"),
            "n_holdout": m.get("n_holdout"),
        })
    rows.sort(key=lambda r: str(r["created"]), reverse=True)
    return rows
