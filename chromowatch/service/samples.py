"""Which sample an image belongs to (from its path), and when a sample is complete.

A sample is closed by a marker file, a quiet period or `chromowatch sample close`; it is
complete once closed and none of its files is still waiting or in flight. Completion calls the
reports hook (reports.publish) once, again if late files arrive; `Hooks` runs it, and sends the
mail outbox, off the supervisor's thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from chromowatch.reports import mail, publish
from chromowatch.service.connections import ThreadStores
from chromowatch.service.ledger import Ledger
from chromowatch.service.rescore import refresh_reports
from chromowatch.settings import MailSettings, SamplesSettings, Settings
from chromowatch.store import OutboxEntry, Store

log = logging.getLogger(__name__)

MAIL_WAIT_MAX_S = 180.0  # a run to completion waits at most this long for its mail


@dataclass(frozen=True)
class Placement:
    """Where an image belongs: its sample and, when the path says, slide/metaphase label."""

    sample: str
    metaphase: str | None = None


class SampleRules:
    """Applies samples.pattern to a file's path below its watch root."""

    def __init__(self, settings: SamplesSettings) -> None:
        self._pattern = re.compile(settings.pattern)
        self._unmatched = settings.unmatched
        self._markers = frozenset(settings.markers)

    def place(self, root: Path, path: Path) -> Placement | None:
        """The file's sample, or None when it matches no sample and unmatched is ""."""
        try:
            rel = PurePosixPath(path.relative_to(root).as_posix()).as_posix()
        except ValueError:
            return None
        m = self._pattern.search(rel)
        sample = m.group("sample") if m else None
        if not sample:
            return Placement(self._unmatched) if self._unmatched else None
        groups = m.groupdict() if m else {}
        label = "/".join(v for k in ("slide", "metaphase") if (v := groups.get(k)))
        return Placement(sample, label or None)

    def is_marker(self, name: str) -> bool:
        return name in self._markers


def run_completion_hook(settings: Settings, store: Store, sample: str) -> tuple[str, str | None]:
    """Call the reports code for a completed sample: ('done'|'failed', error)."""
    try:
        publish.on_sample_complete(settings, store, sample)
    except Exception as exc:  # a report problem must never stop the daemon
        log.exception("sample %s complete, but its report failed: %s", sample, exc)
        return "failed", f"{type(exc).__name__}: {exc}"
    log.info("sample %s complete; report hook done", sample)
    return "done", None


class Completion:
    """Decides which samples are complete now; the caller runs their hooks."""

    def __init__(self, settings: SamplesSettings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger
        self.store = ledger.store

    def due(self, now: float | None = None) -> list[str]:
        """Samples to complete now: closed (quiet periods close here) and fully processed."""
        now = time.time() if now is None else now
        quiet = self.settings.quiet_period_s
        rows = self.store.sample_state_rows()
        open_files = self.ledger.open_samples()
        due: list[str] = []
        for row in rows:
            name = row.name
            if row.closed_at is None:
                last = row.last_file_at
                if quiet and last is not None and now - last >= quiet and name not in open_files:
                    self.ledger.close_sample(name, f"no new file for {quiet:g} s")
                else:
                    continue
            if row.completed_at is None and name not in open_files:
                due.append(name)
        return due


class Hooks:
    """Runs completed samples' hooks and the mail outbox on one thread of their own, so a
    slow report or mail server never holds up the supervisor; one hook per sample at once."""

    OUTBOX_EVERY_S = 60.0

    def __init__(self, settings: Settings, stores: ThreadStores) -> None:
        self.settings = settings
        self.stores = stores
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hooks")
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._outbox_next = 0.0

    def submit(self, samples: Iterable[str]) -> None:
        """Complete these samples (those not already being completed)."""
        for sample in samples:
            with self._lock:
                if sample in self._running:
                    continue
                self._running.add(sample)
            self._pool.submit(self._complete, sample)

    def refresh_reports(self, samples: Iterable[str]) -> None:
        """New report versions of these samples (those that have one), after re-scoring."""
        names = sorted(samples)
        if names:
            self._pool.submit(self._refresh, names)

    def _refresh(self, samples: list[str]) -> None:
        try:
            renewed = refresh_reports(self.settings, self.stores.get(), samples)
        except Exception as exc:  # the next model change or completion tries again
            log.exception("renewing reports failed: %s", exc)
            return
        if renewed:
            log.info("reports renewed after re-scoring: %s", ", ".join(renewed))

    def flush_outbox_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._outbox_next:
            self._outbox_next = now + self.OUTBOX_EVERY_S
            self._pool.submit(self._flush_outbox)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, sample: str) -> None:
        try:
            store = self.stores.get()
            state, error = run_completion_hook(self.settings, store, sample)
            store.sample_state_completed(sample, hook_state=state, hook_error=error,
                                         now=time.time())
            log.info("sample %s is complete (report hook: %s)", sample, state)
        except Exception as exc:  # recorded as not complete: tried again at the next beat
            log.exception("completing sample %s failed: %s", sample, exc)
        finally:
            with self._lock:
                self._running.discard(sample)

    def _flush_outbox(self) -> None:
        try:
            sent = mail.flush_outbox(self.settings, self.stores.get())
        except Exception as exc:  # mail problems are retried by the outbox, never fatal here
            log.exception("sending report emails failed: %s", exc)
            return
        if sent:
            log.info("sent %d report email(s)", sent)


def mail_wait_s(settings: MailSettings) -> float:
    """How long a run to completion waits for its mail: the first retries, at most 3 min."""
    return min(MAIL_WAIT_MAX_S, 3 * settings.retry_base_s)


def settle_outbox(settings: Settings, store: Store, samples: set[str], *, since: float,
                  wait_s: float) -> list[OutboxEntry]:
    """Send these samples' mail now and retry it for up to `wait_s`, so that a run to
    completion does not exit with it still pending; the mail as it ended up (sent during this
    run, or not sent: pending or refused)."""
    deadline = time.monotonic() + wait_s
    waiting_said = False
    while True:
        mail.flush_outbox(settings, store)
        entries = [e for e in store.outbox_rows() if e.sample in samples
                   and (e.status != "sent" or (e.sent_at or 0.0) >= since)]
        unsettled = [e for e in entries if e.status in ("pending", "sending")]
        left = deadline - time.monotonic()
        if not unsettled or left <= 0:
            return entries
        if not waiting_said:
            log.info("waiting up to %.0f s for the mail of %s", left,
                     ", ".join(sorted({e.sample for e in unsettled})))
            waiting_said = True
        time.sleep(min(0.5, left))
