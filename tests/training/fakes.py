"""Stand-ins for the training job, run in the spawned subprocess by tests/training/test_training.py.

They live in a module of their own (importable as tests.training.fakes from the repo root)
so that a spawned child can import them by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from chromowatch.settings import Settings
from chromowatch.store import Store, fingerprint_labels
from chromowatch.training import job
from chromowatch.training.job import TrainRequest


def crash_job(settings: Settings, request: TrainRequest, result_path: str, level: str) -> None:
    """Dies the way an out-of-memory kill looks from outside: no result, no cleanup."""
    os._exit(137)


def raising_job(settings: Settings, request: TrainRequest, result_path: str, level: str) -> None:
    raise MemoryError("simulated out of memory while training")


def _scores(accuracy: float, recall: tuple[float, float, float]) -> dict[str, object]:
    return {"n": 30, "accuracy": accuracy, "balanced_accuracy": sum(recall) / 3,
            "recall": dict(zip("ABC", recall, strict=True)),
            "confusion_matrix": [[10, 0, 0], [0, 10, 0], [0, 0, 10]],
            "fraction_error_max": 0.0, "per_sample": {}, "log_loss": 0.1, "ece": 0.0}


def _write_candidate(settings: Settings, name: str, seed: int) -> None:
    from chromowatch.classify.library import ModelLibrary
    from tests.helpers import install_tiny_model

    library = ModelLibrary(settings.paths.models)
    current = library.current_name()
    install_tiny_model(settings.paths.models, name, seed=seed)  # also sets it current...
    if current is not None:
        library.set_current(current)  # ...which a real job never does: put it back
    else:
        library.current_file.unlink()


def better_job(settings: Settings, request: TrainRequest, result_path: str, level: str) -> None:
    """A candidate that is better than the current one on every count."""
    _write_candidate(settings, request.name, seed=1)
    _result(settings, request, result_path, _scores(0.95, (0.95, 0.95, 0.95)),
            _scores(0.70, (0.8, 0.6, 0.7)))


def worse_class_job(settings: Settings, request: TrainRequest, result_path: str,
                    level: str) -> None:
    """More accurate overall, but class C much worse: must not be promoted."""
    _write_candidate(settings, request.name, seed=2)
    _result(settings, request, result_path, _scores(0.90, (0.99, 0.99, 0.50)),
            _scores(0.80, (0.8, 0.7, 0.9)))


def cross_worse_job(settings: Settings, request: TrainRequest, result_path: str,
                    level: str) -> None:
    """Better on the holdout, but its worst left-out group's fractions far off: kept."""
    _write_candidate(settings, request.name, seed=3)
    cross = {"n": 60, "accuracy": 0.70, "fraction_error_max": 0.30, "folds": [{}, {}]}
    _result(settings, request, result_path, _scores(0.95, (0.95, 0.95, 0.95)),
            _scores(0.70, (0.8, 0.6, 0.7)),
            cross=(cross, {**cross, "fraction_error_max": 0.10}))


def _result(settings: Settings, request: TrainRequest, result_path: str,
            candidate: dict[str, object], current: dict[str, object],
            cross: tuple[dict[str, object], dict[str, object]] | None = None) -> None:
    with Store.open(settings.paths.db) as store:
        fingerprint, n = fingerprint_labels((r.crop_id, r.cls) for r in store.current_labels())
    Path(result_path).write_text(json.dumps({
        "ok": True, "candidate": request.name, "labels_fingerprint": fingerprint, "labels": n,
        "candidate_holdout": candidate, "current": request.current,
        "current_holdout": current if request.current else None, "seconds": 0.0,
        "cross_sample": cross[0] if cross else None,
        "current_cross_sample": cross[1] if cross else None,
    }))


def interrupted_job(settings: Settings, request: TrainRequest, result_path: str,
                    level: str) -> None:
    """The real entry point, training stood in for by a long sleep (Ctrl+C arrives there);
    `<result_path>.started` says it is under way."""
    def train_for_a_while(settings: Settings, request: TrainRequest) -> dict[str, object]:
        Path(result_path + ".started").write_text("")
        time.sleep(60)
        return {"ok": True}

    job.train_candidate = train_for_a_while  # type: ignore[assignment]
    job.run_job(settings, request, result_path, level)
