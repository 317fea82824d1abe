"""The daemon's ledger: one row per file seen, and the rules that move it between states.

seen -> stable -> processing -> done, or -> failed (retried with backoff) -> quarantined.
"done" is written only after the image's results are committed; the results themselves are
unique by content (sha256), so a crash between the two re-does that file once and finds it
already stored. At start, files left "processing" by a crash go back to "stable".
The SQL lives in the store; this module holds the decisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chromowatch.files import file_size
from chromowatch.settings import DaemonSettings
from chromowatch.store import LedgerRow, Store

log = logging.getLogger(__name__)

STATES = ("seen", "stable", "processing", "done", "failed", "quarantined")
BACKLOG_STATES = ("seen", "stable", "processing", "failed")


@dataclass(frozen=True)
class Candidate:
    """A file found in a watch root, with what its path says about it."""

    path: str
    root: str
    sample: str
    metaphase: str | None
    size: int
    mtime: float


@dataclass(frozen=True)
class Job:
    """A claimed file: its ledger id is the file id in log lines."""

    id: int
    path: str
    root: str
    sample: str
    metaphase: str | None
    attempts: int


def backoff_s(attempts: int, settings: DaemonSettings) -> float:
    """Wait before the next try after `attempts` failed ones: doubling, capped."""
    return float(min(settings.retry_backoff_s * 2 ** max(attempts - 1, 0),
                     settings.retry_backoff_max_s))


def _admission(row: LedgerRow | None, c: Candidate) -> tuple[bool, bool]:
    """(record it as seen, track its stability) for a file found again."""
    if row is None:
        return True, True
    same = row.size == c.size and row.mtime == c.mtime
    if row.state == "seen":
        return not same, True
    if same or row.state == "processing":
        return False, False
    if row.state == "done":
        log.warning("file %d changed after it was processed (%s); processing the new content",
                    row.id, c.path)
    elif row.state in ("failed", "quarantined"):
        log.info("file %d changed (%s); trying it again", row.id, c.path)
    return True, True


class Ledger:
    """The ledger's rules over its rows; every call the daemon makes on the ledger is here."""

    def __init__(self, store: Store, settings: DaemonSettings) -> None:
        self.store = store
        self.settings = settings

    def recover(self) -> int:
        """Files a previous run left in flight go back to the queue (they are redone once)."""
        n = self.store.ledger_release(None, time.time())
        if n:
            log.warning("%d file(s) were in flight when the last run stopped; redoing them", n)
        return n

    def admit(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Record files as seen; returns those the stability tracker must watch.

        Unchanged files already queued, in flight, done or quarantined are left alone; a
        file whose size or mtime changed since is seen again (a re-export, a completed copy).
        """
        if not candidates:
            return []
        rows = self.store.ledger_lookup([c.path for c in candidates])
        fresh: list[Candidate] = []
        track: list[Candidate] = []
        for c in candidates:
            record, watch = _admission(rows.get(c.path), c)
            if record:
                fresh.append(c)
            if watch:
                track.append(c)
        if fresh:
            now = time.time()
            self.store.ledger_add_seen(
                [(c.path, c.root, c.sample, c.metaphase, c.size, c.mtime) for c in fresh], now
            )
            self.store.sample_state_touch(dict.fromkeys((c.sample for c in fresh), now))
        return track

    def stable(self, items: Iterable[tuple[str, int, float]]) -> int:
        items = list(items)
        return self.store.ledger_mark_stable(items, time.time()) if items else 0

    def claim(self, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        return [
            Job(r.id, r.path, r.root, r.sample, r.metaphase, int(r.attempts))
            for r in self.store.ledger_claim(limit, time.time())
        ]

    def done(self, job: Job, *, sha256: str, image_id: int, crops: int, duplicate: bool) -> None:
        self.store.ledger_mark_done(job.path, sha256=sha256, image_id=image_id, crops=crops,
                                    duplicate=duplicate, now=time.time())

    def failed(self, job: Job, error: str, *, count: bool = True) -> str:
        """Record a failed try; returns the new state ('failed' or 'quarantined').

        `count=False` retries later without using up an attempt (e.g. the source is offline).
        """
        attempts = job.attempts + 1 if count else job.attempts
        now = time.time()
        if attempts >= self.settings.max_attempts:
            self.store.ledger_mark_failed(job.path, state="quarantined", error=error,
                                          attempts=attempts, next_attempt_at=None, now=now)
            # As `process` records a bad file (pipeline.commit_failure): results count it.
            self.store.record_failure(path=job.path, sample=job.sample, error=error,
                                      size=file_size(job.path), sha256=None)
            log.error("file %d quarantined after %d attempt(s): %s: %s", job.id, attempts,
                      job.path, error)
            return "quarantined"
        wait = backoff_s(max(attempts, 1), self.settings)
        self.store.ledger_mark_failed(job.path, state="failed", error=error, attempts=attempts,
                                      next_attempt_at=now + wait, now=now)
        log.warning("file %d failed (attempt %d of %d, retry in %.0f s): %s: %s", job.id,
                    attempts, self.settings.max_attempts, wait, job.path, error)
        return "failed"

    def wait_again(self, job: Job, size: int, mtime: float) -> None:
        """A file still being written goes back to waiting for stability; no attempt is used."""
        self.store.ledger_add_seen([(job.path, job.root, job.sample, job.metaphase, size,
                                     mtime)], time.time())

    def quarantine_on_sight(self, c: Candidate, reason: str) -> None:
        """Refuse a file without trying it (e.g. a symbolic link leading out of the root)."""
        row = self.store.ledger_lookup([c.path]).get(c.path)
        if row is not None and row.state == "quarantined" and row.last_error == reason:
            return
        self.store.ledger_quarantine_new(c.path, c.root, c.sample, reason, time.time())
        log.error("quarantined %s: %s", c.path, reason)

    def close_sample(self, sample: str, reason: str) -> bool:
        if self.store.sample_state_close(sample, reason, time.time()):
            log.info("sample %s closed (%s)", sample, reason)
            return True
        return False

    def release(self, paths: Sequence[str] | None) -> int:
        return self.store.ledger_release(paths, time.time())

    def forget(self, paths: Sequence[str]) -> int:
        return self.store.ledger_forget(paths) if paths else 0

    def retry(self, paths: Sequence[str] | None) -> int:
        return self.store.ledger_retry(paths, time.time())

    def lookup(self, paths: Sequence[str]) -> dict[str, LedgerRow]:
        return self.store.ledger_lookup(paths)

    def rows(self, states: Sequence[str], limit: int = 1000) -> list[LedgerRow]:
        """Files in these states, oldest first (status, the run-to-completion summary)."""
        return self.store.ledger_rows(states, limit)

    def finished_since(self, since: float) -> tuple[int, int]:
        """(files, crops) done since this time: throughput."""
        return self.store.ledger_finished_since(since)

    def open_samples(self) -> dict[str, int]:
        """Samples with files not yet done or quarantined, and how many."""
        return self.store.ledger_open_samples()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        counts.update(self.store.ledger_counts())
        return counts
