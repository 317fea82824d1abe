"""Which sample an image belongs to (from its path), and when a sample is complete.

A sample is closed by a marker file, a quiet period or `chromowatch sample close`; it is
complete once closed and none of its files is still waiting or in flight. Completion calls the
reports hook once (again if late files arrive). The hook lives in the reports code; when that
is not installed the completion is still recorded and the absence is logged.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from chromowatch.settings import SamplesSettings, Settings
from chromowatch.store import Store

log = logging.getLogger(__name__)


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
    """Call the reports code for a completed sample: ('done'|'failed'|'unavailable', error)."""
    try:
        from chromowatch.reports.publish import on_sample_complete
    except ImportError as exc:
        log.warning("sample %s complete; its report is not rendered because the reports code "
                    "is not available (%s)", sample, exc)
        return "unavailable", str(exc)
    try:
        on_sample_complete(settings, store, sample)
    except Exception as exc:  # a report problem must never stop the daemon
        log.exception("sample %s complete, but its report failed: %s", sample, exc)
        return "failed", f"{type(exc).__name__}: {exc}"
    log.info("sample %s complete; report hook done", sample)
    return "done", None


def flush_outbox(settings: Settings, store: Store) -> int:
    """Send waiting report emails through the delivery code, when it is installed."""
    try:
        from chromowatch.reports.mail import flush_outbox as deliver_flush
    except ImportError as exc:
        log.debug("email delivery not available (%s)", exc)
        return 0
    try:
        return int(deliver_flush(settings, store))
    except Exception as exc:  # mail problems are retried by the outbox, never fatal here
        log.exception("sending report emails failed: %s", exc)
        return 0


class Completion:
    """Decides which samples are complete now; the caller runs their hooks."""

    def __init__(self, settings: SamplesSettings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def close(self, sample: str, reason: str) -> bool:
        if self.store.sample_state_close(sample, reason, time.time()):
            log.info("sample %s closed (%s)", sample, reason)
            return True
        return False

    def due(self, now: float | None = None) -> list[str]:
        """Samples to complete now: closed (quiet periods close here) and fully processed."""
        now = time.time() if now is None else now
        quiet = self.settings.quiet_period_s
        rows = self.store.sample_state_rows()
        open_files = self.store.ledger_open_samples()
        due: list[str] = []
        for row in rows:
            name = row["name"]
            if row["closed_at"] is None:
                last = row["last_file_at"]
                if quiet and last is not None and now - last >= quiet and name not in open_files:
                    self.close(name, f"no new file for {quiet:g} s")
                else:
                    continue
            if row["completed_at"] is None and name not in open_files:
                due.append(name)
        return due
