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
from pathlib import Path
from typing import Any

from chromowatch.classify.architectures import get_spec
from chromowatch.classify.library import ModelLibrary, check_name
from chromowatch.errors import ModelError
from chromowatch.settings import Settings
from chromowatch.store import Store, TrainingRun
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


def _check_request(settings: Settings, library: ModelLibrary, members: list[str] | None,
                   name: str | None) -> str:
    """Fail now, not after minutes in the subprocess: unknown architectures, a bad or taken
    name. Returns the new ensemble's name."""
    for arch in members or settings.training.members:
        get_spec(arch)
    name = name or default_name()
    check_name(name, "ensemble")
    if library.ensemble_path(name).exists():
        raise TrainingError(f"an ensemble named {name!r} exists already",
                            hint="choose another --name")
    return name


def _nothing_to_do(library: ModelLibrary, fingerprint: str, n_labels: int,
                   last: TrainingRun | None, force: bool) -> TrainOutcome | None:
    """The outcome when there is nothing to train on or nothing new since the last run."""
    if not force and last is not None and last.labels_fingerprint == fingerprint:
        return TrainOutcome(
            NOTHING_NEW,
            f"nothing new: the {n_labels} confirmed labels are those of the last training "
            f"(run {last.id}, {last.status}); nothing done",
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
    return None


@dataclass(frozen=True)
class _Attempt:
    """One training run under way: what a failure record needs."""

    settings: Settings
    started: float
    fingerprint: str
    n_labels: int
    name: str
    current: str | None

    def failed(self, message: str) -> TrainingError:
        """Record the failed run; the error to raise (the current model is unchanged)."""
        with Store.open(self.settings.paths.db) as store:
            store.record_training_run(
                started_at=self.started, status="failed", labels_fingerprint=self.fingerprint,
                labels=self.n_labels, candidate=self.name, current_before=self.current,
                current_after=self.current, message=message, metrics=None)
        return TrainingError(message, hint="the current model is unchanged"
                             + (f" ({self.current})" if self.current else ""))


def _read_result(result_path: Path) -> dict[str, Any] | None:
    """The subprocess's JSON result (removed once read); None when missing or unreadable."""
    result: dict[str, Any] | None = None
    if result_path.is_file():
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            result = None
        result_path.unlink(missing_ok=True)
    return result


def _run_job(attempt: _Attempt, request: TrainRequest, target: Callable[..., None],
             log_level: str) -> dict[str, Any]:
    """Run the job in its subprocess; its successful result, or a recorded TrainingError."""
    settings = attempt.settings
    work = settings.paths.models / ".training"
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / f"{attempt.name}.json"
    result_path.unlink(missing_ok=True)
    log.info("training %s on %d confirmed labels in a subprocess", attempt.name,
             attempt.n_labels)
    try:
        code = run_subprocess(target, (settings, request, str(result_path), log_level),
                              settings.training.timeout_hours * 3600)
    except TrainingError as exc:
        raise attempt.failed(exc.message) from None
    result = _read_result(result_path)
    if code != 0 or result is None:
        how = (f"was killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
               if code < 0 else f"exited with code {code}")
        raise attempt.failed(f"the training subprocess {how} before finishing")
    if not result.get("ok"):
        raise attempt.failed(f"training failed: {result.get('error')}")
    return result


def _promote_if_better(settings: Settings, library: ModelLibrary, result: dict[str, Any],
                       current: str | None) -> tuple[str, str]:
    """Promote the candidate when it beats the current ensemble: (status, why)."""
    cfg = settings.training
    candidate = str(result["candidate"])
    promote, why = decide(result["candidate_holdout"], result.get("current_holdout"),
                          margin=cfg.promote_margin, class_margin=cfg.class_margin,
                          cross=result.get("cross_sample"),
                          cross_current=result.get("current_cross_sample"),
                          cross_margin=cfg.cross_margin)
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
    return status, why


def _summary(result: dict[str, Any]) -> dict[str, object]:
    """The headline holdout numbers of candidate and current, as the store keeps them."""
    keys = ("accuracy", "recall", "fraction_error_max", "n")

    def pick(scores: dict[str, Any] | None) -> dict[str, Any] | None:
        return {k: scores.get(k) for k in keys} if scores else None

    return {
        "candidate": pick(result["candidate_holdout"]),
        "current": pick(result.get("current_holdout")),
        "candidate_cross_sample": pick(result.get("cross_sample")),
        "current_cross_sample": pick(result.get("current_cross_sample")),
    }


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
    library = _library(settings)
    name = _check_request(settings, library, members, name)
    with Store.open(settings.paths.db) as store:
        fingerprint, n_labels = store.labels_fingerprint()
        last = store.last_training_run(completed=True)
    idle = _nothing_to_do(library, fingerprint, n_labels, last, force)
    if idle is not None:
        return idle

    current = _current(library)
    request = TrainRequest(name=name, base=base, members=tuple(members) if members else None,
                           current=current)
    attempt = _Attempt(settings, time.time(), fingerprint, n_labels, name, current)
    result = _run_job(attempt, request, target, log_level)

    candidate = str(result["candidate"])
    status, why = _promote_if_better(settings, library, result, current)
    after = _current(library)
    message = (f"{candidate} {'promoted' if status == PROMOTED else 'not promoted'}: {why}")
    with Store.open(settings.paths.db) as store:
        store.record_training_run(
            started_at=attempt.started, status=status,
            labels_fingerprint=result["labels_fingerprint"], labels=int(result["labels"]),
            candidate=candidate, current_before=current, current_after=after, message=message,
            metrics=_summary(result))
    removed = library.prune(settings.training.keep_versions, is_version=_is_trained)
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
            "cross_sample_accuracy": m.get("cross_sample_accuracy"),
            "cross_sample_fraction_error_max": m.get("cross_sample_fraction_error_max"),
            "cross_sample_groups": m.get("cross_sample_groups"),
        })
    rows.sort(key=lambda r: str(r["created"]), reverse=True)
    return rows
