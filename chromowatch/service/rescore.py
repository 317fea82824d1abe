"""Re-scoring: the stored crops classified again when another model becomes current.

A crop's prediction that counts (in results, reports, exports) is its latest; re-scoring adds
the current model's prediction to each crop whose latest is by another model (or that has
none), so the current model's counts everywhere, and the older predictions stay as history.
It reads the stored enhanced crop files (`crops.file`): nothing is segmented again. A crop
whose latest prediction is by the current model is skipped, so a pass stopped half-way
(a restart, Ctrl-C) goes on where it stopped.

Which samples: `classify.rescore` for the daemon (all, open: those not closed yet, off);
`chromowatch reclassify` all or one. The daemon runs a pass in batches of
`classify.batch_size` crops on its classifier thread, only while no new file waits, so new
files are held up by one batch at most. When a pass ends, each sample it changed that has a
report version gets a new one (reports.publish: only when what the report shows changed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chromowatch import ingest
from chromowatch.errors import InputImageError
from chromowatch.pipeline import check_model_fits
from chromowatch.reports import publish
from chromowatch.settings import Settings
from chromowatch.store import Store

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble

log = logging.getLogger(__name__)


@dataclass
class RescorePass:
    """One pass over the stored crops for one model version; `samples` None: all."""

    version: str
    samples: list[str] | None
    after_id: int = 0  # crops are taken in id order: the last one looked at
    scored: int = 0
    unreadable: list[int] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # samples with new predictions
    done: bool = False

    def line(self) -> str:
        where = "all samples" if self.samples is None else ", ".join(self.samples) or "none"
        bad = (f", {len(self.unreadable)} crop file(s) unreadable (not scored)"
               if self.unreadable else "")
        return f"{self.scored} crop(s) of {where} classified again with {self.version}{bad}"


def daemon_pass(settings: Settings, store: Store, version: str) -> RescorePass | None:
    """The pass the daemon runs for a newly current model, by classify.rescore (None: off)."""
    scope = settings.classify.rescore
    if scope == "off":
        return None
    if scope == "all":
        return RescorePass(version, None)
    closed = store.closed_samples()
    return RescorePass(version, [s for s in store.sample_names() if s not in closed])


def rescore_batch(store: Store, settings: Settings, ensemble: Ensemble, run: RescorePass,
                  limit: int) -> int:
    """Classify the next `limit` crops of the pass and store their predictions (one
    transaction); how many were looked at (0: the pass is done)."""
    crops = store.crops_to_score(run.version, run.samples, after_id=run.after_id, limit=limit)
    if not crops:
        run.done = True
        return 0
    run.after_id = crops[-1].id
    images, kept = [], []
    for crop in crops:
        try:
            images.append(ingest.read_spread(Path(crop.file), settings.ingest).rgb)
        except InputImageError as exc:
            log.warning("stored crop %d cannot be read, so it is not classified again: %s",
                        crop.id, exc.problem)
            run.unreadable.append(crop.id)
            continue
        kept.append(crop)
    predictions = ensemble.predict(images) if images else []
    store.add_predictions([(crop.id, p) for crop, p in zip(kept, predictions, strict=True)])
    run.scored += len(kept)
    run.changed.update(crop.sample for crop in kept)
    return len(crops)


def refresh_reports(settings: Settings, store: Store, samples: Iterable[str]) -> list[str]:
    """A new report version for each of these samples that has one already (only when what
    it shows changed); a report that fails is logged, the others still come. Returns the
    samples whose report was refreshed."""
    reported = set(store.reported_samples())
    done = []
    for sample in sorted(set(samples) & reported):
        try:
            publish.on_sample_complete(settings, store, sample)
        except Exception as exc:  # one report's problem must not stop the others
            log.exception("the report of %s could not be renewed: %s", sample, exc)
            continue
        done.append(sample)
    return done


def reclassify(store: Store, settings: Settings, ensemble: Ensemble, *,
               sample: str | None = None,
               progress: Callable[[float, int], None] | None = None) -> RescorePass:
    """`chromowatch reclassify`: every stored crop (of one sample) whose latest prediction is
    not by `ensemble`, classified with it; then new report versions where there are
    versions. An unknown sample is a UsageError; a model made for other crops than the
    stored ones a ModelError. `progress(done, total)` counts crops."""
    check_model_fits(ensemble)
    samples = None
    if sample is not None:
        store.sample_images(sample)  # an unknown sample: a usage error naming the known ones
        samples = [sample]
    run = RescorePass(ensemble.version, samples)
    total = len(store.crops_to_score(run.version, samples, after_id=0, limit=-1))
    seen = 0
    while not run.done:
        seen += rescore_batch(store, settings, ensemble, run, settings.classify.batch_size)
        if progress is not None:
            progress(seen, total)
    refresh_reports(settings, store, run.changed)
    log.info("%s", run.line())
    return run
