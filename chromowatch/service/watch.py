"""Watching export folders: events, a startup scan, periodic rescans, stability, source health.

The watchdog handler only enqueues paths; one watcher thread does everything else, so a slow
disk or a burst of 100,000 events never stalls the observer. A file is handed to the ledger
when its size and mtime have not changed for `watch.stable_s` (monotonic clock), or for the
shorter `closed_stable_s` after a close-after-write or moved-in event. Each root has its own
observer, supervised: a root that vanishes, becomes unreadable or is not mounted is reported
offline (not empty), and when it comes back the observer is recreated and the root rescanned.
"""

from __future__ import annotations

import fnmatch
import heapq
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chromowatch.service.connections import ThreadStores
from chromowatch.service.ledger import Candidate, Ledger
from chromowatch.service.samples import SampleRules
from chromowatch.settings import Settings

log = logging.getLogger(__name__)

# Hidden, temporary and partial-download names, and NAS metadata folders.
DEFAULT_IGNORE = (
    ".*", "~*", "*~", "*.part", "*.partial", "*.tmp", "*.temp", "*.crdownload", "*.download",
    "*.swp", "Thumbs.db", "desktop.ini", "@eaDir", "#recycle", "$RECYCLE.BIN",
)

SCAN_BATCH = 500


def watch_roots(settings: Settings) -> list[Path]:
    """The folders to watch: watch.roots, or <data_dir>/inbox on the embedded default."""
    roots = settings.watch.roots or [settings.paths.data / "inbox"]
    return [Path(os.path.abspath(r.expanduser())) for r in roots]


class IgnoreRules:
    def __init__(self, settings: Settings) -> None:
        self.patterns = (*DEFAULT_IGNORE, *settings.watch.ignore_patterns)
        self.extensions = frozenset(e.lower() for e in settings.ingest.extensions)

    def ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def is_image_name(self, name: str) -> bool:
        return os.path.splitext(name)[1].lower() in self.extensions


def root_problem(root: Path, expect_mount: bool) -> str | None:
    """Why a root is offline (missing, not a folder, unreadable, not mounted), or None."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be reached ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return "unreadable (permission denied)"
    try:
        with os.scandir(root) as it:
            next(it, None)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if expect_mount and not os.path.ismount(root):
        return "not mounted (watch.expect_mount is set)"
    return None


@dataclass
class SourceHealth:
    root: Path
    online: bool = False
    problem: str | None = "not checked yet"
    since: float = field(default_factory=time.time)
    observer_restarts: int = 0
    last_scan_at: float | None = None
    files_seen: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "online": self.online,
            "problem": self.problem,
            "since": self.since,
            "observer_restarts": self.observer_restarts,
            "last_scan_at": self.last_scan_at,
        }


# -- events ------------------------------------------------------------------------------

# What the handler enqueues: ("touch", path, fast) for files, ("scan", dir, False) for folders.
Event = tuple[str, str, bool]


def _make_handler(events: queue.SimpleQueue[Event]) -> Any:
    """A watchdog handler that only enqueues; it never blocks and never raises."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class EnqueueHandler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            kind = event.event_type
            if kind in ("deleted", "opened", "closed_no_write"):
                return
            path = event.dest_path if kind == "moved" else event.src_path
            path = os.fsdecode(path)
            if not path:
                return
            if event.is_directory:
                if kind in ("created", "moved"):
                    events.put(("scan", path, False))
                return
            events.put(("touch", path, kind in ("closed", "moved")))

    return EnqueueHandler()


class RootObserver:
    """One watchdog observer for one root (native or polling), recreated when it dies."""

    def __init__(self, root: Path, mode: str, poll_interval_s: float,
                 events: queue.SimpleQueue[Event]) -> None:
        self.root = root
        self.mode = mode
        self.poll_interval_s = poll_interval_s
        self.events = events
        self._observer: Any = None

    def start(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        if self.mode == "polling":
            observer: Any = PollingObserver(timeout=self.poll_interval_s)
        else:
            observer = Observer()
        observer.daemon = True
        observer.schedule(_make_handler(self.events), str(self.root), recursive=True)
        try:
            observer.start()
        except OSError as exc:
            if self.mode == "polling":
                raise
            # e.g. inotify watch limits reached: polling still works
            log.warning("native events unavailable for %s (%s); polling it instead",
                        self.root, exc)
            observer = PollingObserver(timeout=self.poll_interval_s)
            observer.daemon = True
            observer.schedule(_make_handler(self.events), str(self.root), recursive=True)
            observer.start()
        self._observer = observer

    def alive(self) -> bool:
        obs = self._observer
        if obs is None or not obs.is_alive():
            return False
        return all(e.is_alive() for e in obs.emitters) and bool(obs.emitters)

    def stop(self) -> None:
        obs, self._observer = self._observer, None
        if obs is None:
            return
        try:
            obs.stop()
            obs.join(timeout=5)
        except Exception as exc:  # a broken observer must not stop the daemon
            log.debug("stopping the observer of %s: %s", self.root, exc)


# -- stability ---------------------------------------------------------------------------


@dataclass
class _Tracked:
    candidate: Candidate
    size: int
    mtime: float
    changed_at: float
    fast: bool


class StabilityTracker:
    """Files waiting for their size and mtime to stop changing (monotonic clock)."""

    def __init__(self, stable_s: float, closed_stable_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stable_s = stable_s
        self.closed_stable_s = min(closed_stable_s, stable_s)
        self.clock = clock
        self._files: dict[str, _Tracked] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def track(self, c: Candidate, *, fast: bool = False) -> None:
        now = self.clock()
        t = self._files.get(c.path)
        if t is None:
            self._files[c.path] = _Tracked(c, c.size, c.mtime, now, fast)
            heapq.heappush(self._heap, (now + self._delay(fast), c.path))
        else:
            self.poke(c.path, fast=fast)

    def poke(self, path: str, *, fast: bool) -> None:
        """An event for a tracked file: check it again now."""
        t = self._files.get(path)
        if t is None:
            return
        t.fast = fast
        heapq.heappush(self._heap, (self.clock(), path))

    def drop_under(self, root: str) -> int:
        prefix = root.rstrip(os.sep) + os.sep
        gone = [p for p in self._files if p.startswith(prefix)]
        for p in gone:
            del self._files[p]
        return len(gone)

    def _delay(self, fast: bool) -> float:
        return self.closed_stable_s if fast else self.stable_s

    def check(self, limit: int = 20000) -> tuple[list[tuple[Candidate, int, float]], list[str]]:
        """(stable files with size and mtime, vanished paths) among those due now."""
        now = self.clock()
        stable: list[tuple[Candidate, int, float]] = []
        vanished: list[str] = []
        checked = 0
        while self._heap and self._heap[0][0] <= now and checked < limit:
            _, path = heapq.heappop(self._heap)
            t = self._files.get(path)
            if t is None:
                continue
            checked += 1
            try:
                st = os.stat(path)
            except FileNotFoundError:
                del self._files[path]
                vanished.append(path)
                continue
            except OSError:
                # unreadable metadata: let the worker report the real error
                del self._files[path]
                stable.append((t.candidate, t.size, t.mtime))
                continue
            if st.st_size != t.size or st.st_mtime != t.mtime:
                t.size, t.mtime, t.changed_at = st.st_size, st.st_mtime, now
                t.fast = False
                heapq.heappush(self._heap, (now + self.stable_s, path))
                continue
            due = t.changed_at + self._delay(t.fast)
            if now >= due:
                del self._files[path]
                stable.append((t.candidate, st.st_size, st.st_mtime))
            else:
                heapq.heappush(self._heap, (due, path))
        return stable, vanished


# -- the watcher thread ------------------------------------------------------------------


class Watcher:
    """Feeds the ledger from the watch roots; runs in its own thread with its own connection.

    A sample's marker file closes the sample.
    """

    def __init__(self, settings: Settings, stores: ThreadStores | None = None) -> None:
        self.settings = settings
        self.stores = stores or ThreadStores(settings.paths.db)
        self.ledger: Ledger | None = None
        self.roots = watch_roots(settings)
        self.rules = SampleRules(settings.samples)
        self.ignore = IgnoreRules(settings)
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.tracker = StabilityTracker(settings.watch.stable_s, settings.watch.closed_stable_s)
        self.health = {r: SourceHealth(r) for r in self.roots}
        self._observers: dict[Path, RootObserver] = {}
        self._next_rescan: dict[Path, float] = {}
        self._next_health = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_at = time.monotonic()  # last time the loop went round (for the supervisor)
        self.scans_done = 0
        self.error: BaseException | None = None

    # public ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for obs in self._observers.values():
            obs.stop()
        self._observers.clear()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_rescan(self) -> None:
        for root in self.roots:
            self._next_rescan[root] = 0.0

    def sources(self) -> list[dict[str, Any]]:
        return [h.as_dict() for h in self.health.values()]

    def idle(self) -> bool:
        """Nothing waiting for stability or in the event queue, and every root scanned."""
        return (len(self.tracker) == 0 and self.events.empty()
                and all(h.last_scan_at is not None or not h.online for h in self.health.values()))

    # loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        self.ledger = Ledger(self.stores.get(), self.settings.daemon)
        try:
            while not self._stop.is_set():
                self.loop_at = time.monotonic()
                now = time.monotonic()
                if now >= self._next_health:
                    self._check_health()
                    self._next_health = now + self.settings.watch.health_interval_s
                for root in self.roots:
                    if self.health[root].online and now >= self._next_rescan.get(root, 0.0):
                        self._next_rescan[root] = now + self.settings.watch.rescan_interval_s
                        self._scan(root, root)
                self._drain_events()
                stable, vanished = self.tracker.check()
                if stable:
                    self._ledger.stable((c.path, size, mtime) for c, size, mtime in stable)
                    for c, _size, _mtime in stable:
                        log.debug("stable: %s", c.path)
                if vanished:
                    self._ledger.forget(vanished)
                self._stop.wait(0.1)
        except BaseException as exc:  # the supervisor sees the dead thread and stops
            self.error = exc
            log.exception("the watcher stopped: %s", exc)
            raise
        finally:
            self.stores.close_mine()

    @property
    def _ledger(self) -> Ledger:
        assert self.ledger is not None, "used only inside the watcher thread"
        return self.ledger

    def _check_health(self) -> None:
        for root in self.roots:
            h = self.health[root]
            problem = root_problem(root, self.settings.watch.expect_mount)
            if problem is not None:
                if h.online or h.problem != problem:
                    log.error("source %s is OFFLINE: %s (this is not an empty folder; "
                              "files there wait until it is back)", root, problem)
                    h.since = time.time()
                h.online, h.problem = False, problem
                obs = self._observers.pop(root, None)
                if obs is not None:
                    obs.stop()
                self.tracker.drop_under(str(root))
                continue
            obs = self._observers.get(root)
            if not h.online:
                if h.problem != "not checked yet":
                    log.warning("source %s is back online; rescanning it", root)
                h.online, h.problem, h.since = True, None, time.time()
                self._start_observer(root)
                self._next_rescan[root] = 0.0
            elif obs is None or not obs.alive():
                log.error("the %s observer of %s stopped; recreating it and rescanning",
                          self.settings.watch.mode, root)
                h.observer_restarts += 1
                if obs is not None:
                    obs.stop()
                self._start_observer(root)
                self._next_rescan[root] = 0.0

    def _start_observer(self, root: Path) -> None:
        obs = RootObserver(root, self.settings.watch.mode, self.settings.watch.poll_interval_s,
                           self.events)
        try:
            obs.start()
        except OSError as exc:
            log.error("cannot watch %s (%s); relying on rescans every %g s", root, exc,
                      self.settings.watch.rescan_interval_s)
            return
        self._observers[root] = obs

    def _root_of(self, path: str) -> Path | None:
        for root in self.roots:
            prefix = str(root).rstrip(os.sep) + os.sep
            if path.startswith(prefix):
                return root
        return None

    def _drain_events(self, limit: int = 20000) -> None:
        touched: dict[str, bool] = {}
        for _ in range(limit):
            try:
                kind, path, fast = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "scan":
                root = self._root_of(path + os.sep)
                if root is not None and self.health[root].online:
                    self._scan(root, Path(path))
                continue
            touched[path] = touched.get(path, False) or fast
        new: list[tuple[Path, str, bool]] = []
        for path, fast in touched.items():
            if path in self.tracker:
                self.tracker.poke(path, fast=fast)
                continue
            root = self._root_of(path)
            if root is not None and self.health[root].online:
                new.append((root, path, fast))
        by_root: dict[Path, list[tuple[str, bool]]] = {}
        for root, path, fast in new:
            by_root.setdefault(root, []).append((path, fast))
        for root, items in by_root.items():
            fast_paths = {p for p, f in items if f}
            self._consider(root, [Path(p) for p, _ in items], fast_paths)

    def _scan(self, root: Path, top: Path) -> None:
        """Walk `top` (inside `root`) and hand every image file to the ledger in batches."""
        t0 = time.monotonic()
        n = 0
        batch: list[Path] = []
        for path in self._walk(top):
            batch.append(path)
            if len(batch) >= SCAN_BATCH:
                self._consider(root, batch, set())
                n += len(batch)
                batch = []
                self._drain_events(limit=2000)  # keep events flowing during long scans
        if batch:
            self._consider(root, batch, set())
            n += len(batch)
        if top == root:
            h = self.health[root]
            h.last_scan_at, h.files_seen = time.time(), n
            self.scans_done += 1
            log.debug("scanned %s: %d image file(s) in %.2f s", root, n, time.monotonic() - t0)

    def _walk(self, top: Path) -> Iterator[Path]:
        def onerror(exc: OSError) -> None:
            log.warning("cannot list %s: %s", exc.filename, exc.strerror or exc)

        for dirpath, dirnames, filenames in os.walk(top, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if not self.ignore.ignored(d))
            for name in sorted(filenames):
                yield Path(dirpath) / name

    def _consider(self, root: Path, paths: list[Path], fast_paths: set[str]) -> None:
        """Filter names, spot markers and links out of the root, admit the rest."""
        candidates: list[Candidate] = []
        for path in paths:
            if any(self.ignore.ignored(part) for part in path.relative_to(root).parts):
                continue
            if self.rules.is_marker(path.name):
                placement = self.rules.place(root, path)
                if placement is not None and path.exists():
                    self._ledger.close_sample(placement.sample, f"marker {path}")
                continue
            if not self.ignore.is_image_name(path.name):
                continue
            candidate = self._candidate(root, path)
            if candidate is not None:
                candidates.append(candidate)
        for c in self._ledger.admit(candidates):
            self.tracker.track(c, fast=c.path in fast_paths)

    def _candidate(self, root: Path, path: Path) -> Candidate | None:
        """An image file with its sample, or None: no sample, gone, not a regular file, or
        a link out of the root (quarantined on sight)."""
        placement = self.rules.place(root, path)
        if placement is None:
            log.debug("no sample for %s (samples.pattern); left alone", path)
            return None
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot stat %s: %s", path, exc.strerror or exc)
            return None
        st: os.stat_result | None = lst
        if stat.S_ISLNK(lst.st_mode):
            st = self._follow_link(root, path, placement.sample, placement.metaphase)
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        return Candidate(str(path), str(root), placement.sample, placement.metaphase,
                         st.st_size, st.st_mtime)

    def _follow_link(self, root: Path, path: Path, sample: str,
                     metaphase: str | None) -> os.stat_result | None:
        """What a link inside the root points to; a link leading out is quarantined."""
        target = os.path.realpath(path)
        root_real = os.path.realpath(root)
        if os.path.commonpath([target, root_real]) != root_real:
            self._ledger.quarantine_on_sight(
                Candidate(str(path), str(root), sample, metaphase, 0, 0.0),
                f"symbolic link to {target}, outside the watch root {root}; not read",
            )
            return None
        try:
            return os.stat(path)
        except OSError:
            return None  # a dangling link: nothing to read
