"""`chromowatch run`: the unattended daemon beside the microscope; its supervisor and loops.

    watcher thread --(ledger: seen -> stable)--> dispatcher thread --> worker processes
      (pipeline.prepare) --> classifier thread (pipeline.classify; the one owner of the
      device, batches crops across images) --> writer thread (pipeline.commit, then "done")
      --> completion hooks

Every queue is bounded and the ledger, not memory, holds the backlog, so 100,000 waiting
files cost rows on disk, not RAM. The main thread is the supervisor: it handles signals
(SIGTERM/SIGINT: stop taking files, finish or roll back those in flight, exit 0; SIGHUP:
reload the configuration), talks to systemd (READY, STOPPING, WATCHDOG only while every part
is alive and moving), writes the state `chromowatch status` shows (service/status.py),
completes samples (service/samples.py) and publishes metrics. The model's reloads live in
service/model.py, nightly retraining in service/retrain.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from chromowatch import __version__, ingest, pipeline
from chromowatch.errors import ChromowatchError, UsageError
from chromowatch.records import Prediction
from chromowatch.service.connections import ThreadStores
from chromowatch.service.ledger import BACKLOG_STATES, Job, Ledger
from chromowatch.service.metrics import MetricsPublisher
from chromowatch.service.model import CurrentModel
from chromowatch.service.rescore import RescorePass, daemon_pass, rescore_batch
from chromowatch.service.retrain import RETRAIN_JOB, Retrainer
from chromowatch.service.samples import Completion, Hooks, mail_wait_s, settle_outbox
from chromowatch.service.sdnotify import Notifier
from chromowatch.service.status import print_completion, print_mail
from chromowatch.service.watch import Watcher, root_problem, watch_roots
from chromowatch.service.workers import Task, TaskResult, WorkerPool
from chromowatch.settings import Settings, load_settings

log = logging.getLogger(__name__)

STALL_S = 120.0  # a core thread that has not gone round its loop for this long is stuck
# errors of a file that may still be being written (ingest's words)
INCOMPLETE = ("truncated", "corrupt", "empty file")


@dataclass
class _Item:
    job: Job
    prepared: pipeline.PreparedImage
    predictions: Sequence[Prediction] = ()
    prepare_s: float = 0.0


@dataclass
class Stats:
    """Counters of this daemon process, for metrics and the status line."""

    outcomes: dict[str, int] = field(default_factory=lambda: {
        "done": 0, "duplicate": 0, "failed": 0, "quarantined": 0})
    crops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, outcome: str, crops: int = 0) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.crops += crops


class _Loop:
    """A named thread running `step` until stopped; remembers when it last went round.
    Its own database connection (from `stores`) is closed when it ends."""

    def __init__(self, name: str, step: Callable[[], None], stores: ThreadStores) -> None:
        self.name = name
        self.step = step
        self.stores = stores
        self.stop_event = threading.Event()
        self.at = time.monotonic()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.at = time.monotonic()
                self.step()
        except BaseException as exc:
            self.error = exc
            log.critical("the %s thread failed: %s", self.name, exc, exc_info=True)
        finally:
            self.stores.close_mine()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> bool:
        self.stop_event.set()
        self.thread.join(timeout=timeout)
        return not self.thread.is_alive()

    def healthy(self) -> bool:
        return self.thread.is_alive() and time.monotonic() - self.at < STALL_S


@contextlib.contextmanager
def _single_instance(db: Path) -> Iterator[None]:
    """One daemon per database: a second `run` is refused instead of racing the first."""
    lock_path = db.with_name(db.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh: TextIO = open(lock_path, "a+")  # noqa: SIM115 (held for the daemon's lifetime)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            other = fh.read().strip() or "?"
            raise UsageError(f"another `chromowatch run` (pid {other}) already uses {db}",
                             hint="stop it first, or point paths.database elsewhere") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def worker_count(settings: Settings) -> int:
    return settings.daemon.workers or max(1, (os.cpu_count() or 2) - 1)


def take_batch(q: queue.Queue[_Item], batch_size: int, linger_s: float,
               timeout: float = 0.2) -> list[_Item]:
    """Prepared images for one classify call: the first waiting one, then more as they come
    within `linger_s`, until their crops fill `batch_size`. Empty when nothing waits."""
    try:
        batch = [q.get(timeout=timeout)]
    except queue.Empty:
        return []
    crops = len(batch[0].prepared.crops)
    deadline = time.monotonic() + linger_s
    while crops < batch_size:
        remaining = deadline - time.monotonic()
        try:
            item = q.get(timeout=remaining) if remaining > 0 else q.get_nowait()
        except queue.Empty:
            break
        batch.append(item)
        crops += len(item.prepared.crops)
    return batch


class Daemon:
    def __init__(self, settings: Settings, *, config: str | None = None,
                 until_complete: bool = False, out: TextIO | None = None) -> None:
        self.settings = settings
        self.config = config
        self.until_complete = until_complete
        self.out = out or sys.stdout
        self.notifier = Notifier()
        self.stats = Stats()
        self.started_at = time.time()
        self.stores = ThreadStores(settings.paths.db)
        self.model = CurrentModel(settings)
        self.retrainer = Retrainer(settings, self.stores, config=config)
        self.hooks = Hooks(settings, self.stores)
        self.metrics = MetricsPublisher(settings.metrics)
        self._stop_signal: int | None = None
        self._reload = False
        self._accepting = threading.Event()
        self._accepting.set()
        self._classify_q: queue.Queue[_Item] = queue.Queue(settings.daemon.queue_size)
        self._write_q: queue.Queue[_Item] = queue.Queue(settings.daemon.queue_size)
        self._in_flight: dict[int, Job] = {}  # dispatched, not yet written or failed
        self._in_flight_lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._rescore: RescorePass | None = None  # stored crops to classify again
        self._rescore_version: str | None = None  # the model the last pass was for

    def _ledger(self) -> Ledger:
        """The ledger, over the calling thread's own connection."""
        return Ledger(self.stores.get(), self.settings.daemon)

    # -- startup ---------------------------------------------------------------------------

    def run(self) -> int:
        with _single_instance(self.settings.paths.db):
            try:
                code = self._run()
            finally:
                self.stores.close_mine()
        self._leave_if_busy(code)
        return code

    def _leave_if_busy(self, code: int) -> None:
        """A core thread still inside a native call (torch classifying past stop_timeout_s; its
        files are rolled back already) aborts the interpreter's exit with `terminate called
        without an active exception`: leave without that teardown."""
        busy = [lp.name for lp in getattr(self, "loops", []) if lp.thread.is_alive()]
        if not busy:
            return
        log.info("the %s thread is still busy; leaving without waiting for it", ", ".join(busy))
        logging.shutdown()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    def _run(self) -> int:
        s = self.settings
        self._ledger().recover()
        self.model.load(strict=self.until_complete)
        self.completion = Completion(s.samples, self._ledger())
        self.pool = WorkerPool(s, worker_count(s), task_timeout_s=s.daemon.task_timeout_s)
        self.pool.start()
        self.watcher = Watcher(s, self.stores)
        self.watcher.start()
        self.loops = [
            _Loop("dispatcher", self._dispatch_step, self.stores),
            _Loop("classifier", self._classify_step, self.stores),
            _Loop("writer", self._write_step, self.stores),
        ]
        for loop in self.loops:
            loop.start()
        if not self.until_complete:
            # A run to completion (the demo, a one-off backlog) is not the service: no nightly job.
            self.retrainer.start()
        self.metrics.start()
        self._install_signals()
        roots = ", ".join(str(r) for r in watch_roots(s))
        ensemble = self.model.ensemble
        log.info("chromowatch %s running: watching %s (%s mode), %d worker(s), model %s, "
                 "database %s", __version__, roots, s.watch.mode, self.pool.size,
                 ensemble.version if ensemble else "none", s.paths.db)
        self.notifier.ready(f"watching {roots}")
        try:
            code = self._supervise()
        finally:
            self._shutdown()
        return code

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._stop_signal = signum

        def hup(_signum: int, _frame: object) -> None:
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    # -- dispatcher: ledger -> worker processes (prepare) -> classify queue -----------------

    def _dispatch_step(self) -> None:
        ledger = self._ledger()
        for result in self.pool.collect(0.05):
            self._handle_prepared(ledger, result)
        if self._accepting.is_set() and self.model.ensemble is not None:
            room = min(self.pool.idle(),
                       self._classify_q.maxsize - self._classify_q.qsize())
            while room > 0:  # duplicates take no worker: claim again in their place
                claimed = ledger.claim(room)
                if not claimed:
                    break
                jobs = [job for job in claimed if not self._stored_already(ledger, job)]
                for job in jobs:
                    with self._in_flight_lock:
                        self._in_flight[job.id] = job
                    log.debug("file %d: processing %s", job.id, job.path)
                    self.pool.submit(Task(job.id, job.path))
                room -= len(jobs)

    def _stored_already(self, ledger: Ledger, job: Job) -> bool:
        """A file whose content is stored already is recorded as a duplicate at once, by its
        hash: segmenting and classifying it (90 s with 30 models on a CPU) would be wasted."""
        sha256 = ingest.file_sha256(Path(job.path), self.settings.ingest)
        known = ledger.store.find_image(sha256) if sha256 else None
        if sha256 is None or known is None:
            return False
        ledger.done(job, sha256=sha256, image_id=known.id, crops=0, duplicate=True)
        self.stats.count("duplicate")
        log.info("file %d duplicate: %s has the content of image %d (%s, sample %s); "
                 "not processed again", job.id, job.path, known.id, known.path, known.sample)
        return True

    def _handle_prepared(self, ledger: Ledger, result: TaskResult) -> None:
        with self._in_flight_lock:
            job = self._in_flight.get(result.task.file_id)
        if job is None:
            return
        if result.prepared is not None:
            item = _Item(job, result.prepared, prepare_s=result.seconds)
            while True:
                try:
                    self._classify_q.put(item, timeout=0.5)
                    return
                except queue.Full:
                    if self.loops[0].stop_event.is_set():
                        return  # stopping: the file stays "processing" and is rolled back
        error = result.error or "no result"
        if not self._still_written(ledger, job, error):
            self._fail(ledger, job, error)

    def _still_written(self, ledger: Ledger, job: Job, error: str) -> bool:
        """A file still being written is not a failure: it goes back to waiting for stability,
        quietly and without using an attempt. It grew since it was claimed, or it looks cut
        short and changed less than daemon.incomplete_wait_s ago (a writer pausing longer than
        the stability delay). Cut short and unchanged for longer, it stays incomplete: that is
        a failure (warned, retried, quarantined)."""
        try:
            st = os.stat(job.path)
        except OSError:
            return False
        row = ledger.lookup([job.path]).get(job.path)
        if row is None:
            return False
        if (row.size, row.mtime) == (st.st_size, st.st_mtime):
            age = time.time() - st.st_mtime
            cut_short = any(word in error for word in INCOMPLETE)
            if not cut_short or not 0 <= age < self.settings.daemon.incomplete_wait_s:
                return False
        with self._in_flight_lock:
            self._in_flight.pop(job.id, None)
        ledger.wait_again(job, st.st_size, st.st_mtime)
        self.watcher.events.put(("touch", job.path, False))  # its stability is watched again
        log.debug("file %d is still being written (%s); waiting for it", job.id, error)
        return True

    def _fail(self, ledger: Ledger, job: Job, error: str) -> None:
        with self._in_flight_lock:
            self._in_flight.pop(job.id, None)
        if error == "file not found":
            if root_problem(Path(job.root), self.settings.watch.expect_mount) is None:
                log.info("file %d vanished before it was processed: %s", job.id, job.path)
                ledger.release([job.path])
                ledger.forget([job.path])
                return
            ledger.failed(job, "the folder is offline", count=False)
            return
        state = ledger.failed(job, error)
        self.stats.count(state)

    # -- classifier: the one owner of the device (classify) ---------------------------------

    def _classify_step(self) -> None:
        self.model.maybe_reload()
        self._start_rescore()
        batch = take_batch(self._classify_q, self.settings.classify.batch_size,
                           self.settings.daemon.batch_linger_s,
                           timeout=0.0 if self._rescore is not None else 0.2)
        if not batch:
            self._rescore_step()  # new files first: stored crops only while none waits
            return
        ensemble = self.model.ensemble
        assert ensemble is not None  # nothing is dispatched without a model
        try:
            predictions = pipeline.classify([item.prepared for item in batch], ensemble)
        except Exception as exc:  # e.g. out of memory: these files fail, the daemon goes on
            crops = sum(len(item.prepared.crops) for item in batch)
            log.exception("classifying %d crops failed: %s", crops, exc)
            ledger = self._ledger()
            for item in batch:
                self._fail(ledger, item.job, f"classification failed: {exc}")
            return
        for item, preds in zip(batch, predictions, strict=True):
            item.predictions = preds
            self._write_q.put(item)

    def _start_rescore(self) -> None:
        """A model not seen before (at start, or newly current): a pass over the stored crops
        it has not scored yet (service/rescore.py; classify.rescore says which)."""
        ensemble = self.model.ensemble
        if ensemble is None or ensemble.version == self._rescore_version:
            return
        self._rescore_version = ensemble.version
        self._rescore = daemon_pass(self.settings, self.stores.get(), ensemble.version)

    def _rescore_step(self) -> None:
        """One batch of the re-scoring pass; at its end, new report versions (hooks thread)."""
        run, ensemble = self._rescore, self.model.ensemble
        if run is None or ensemble is None:
            return
        try:
            rescore_batch(self.stores.get(), self.settings, ensemble, run,
                          self.settings.classify.batch_size)
        except Exception as exc:  # e.g. the database busy: the rest waits for the next start
            log.exception("classifying stored crops again failed: %s; the rest is done at "
                          "the next start or model change", exc)
            self._rescore = None
            return
        if run.done:
            self._rescore = None
            if run.scored or run.unreadable:
                log.info("%s", run.line())
            self.hooks.refresh_reports(run.changed)

    # -- writer: commit, then "done" --------------------------------------------------------

    def _write_step(self) -> None:
        try:
            item = self._write_q.get(timeout=0.2)
        except queue.Empty:
            return
        ledger = self._ledger()
        job = item.job
        started = time.perf_counter()
        try:
            result = pipeline.commit(item.prepared, item.predictions, sample=job.sample,
                                     store=ledger.store, metaphase_label=job.metaphase)
            assert result.image_id is not None
            ledger.done(job, sha256=item.prepared.sha256, image_id=result.image_id,
                        crops=len(result.crops), duplicate=result.status == "duplicate")
        except Exception as exc:  # a database problem: this file is retried later
            log.exception("file %d: storing the results failed: %s", job.id, exc)
            self._fail(ledger, job, f"storing the results failed: {exc}")
            return
        with self._in_flight_lock:
            self._in_flight.pop(job.id, None)
        self.stats.count(result.status, len(result.crops))
        if result.status == "duplicate":
            log.info("file %d duplicate: %s has the content of image %d (sample %s); "
                     "stored once", job.id, job.path, result.image_id, result.sample)
        else:
            log.info("file %d done: %s -> image %d, sample %s, %d crops (prepare %.2f s, "
                     "store %.2f s)", job.id, job.path, result.image_id, job.sample,
                     len(result.crops), item.prepare_s, time.perf_counter() - started)

    # -- the supervisor (main thread) -------------------------------------------------------

    def _supervise(self) -> int:
        next_beat = 0.0
        next_ping = 0.0
        ping_every = self.notifier.watchdog_interval_s
        while True:
            if self._stop_signal is not None:
                log.info("received %s: taking no new files, finishing those in flight",
                         signal.Signals(self._stop_signal).name)
                return 0
            if self._reload:
                self._reload = False
                self._reload_settings()
            dead = [lp.name for lp in self.loops if not lp.thread.is_alive()]
            if not self.watcher.alive():
                dead.append("watcher")
            if dead:
                log.critical("the %s thread(s) stopped; exiting so the service is restarted",
                             ", ".join(dead))
                return 1
            now = time.monotonic()
            if ping_every and now >= next_ping and self._healthy():
                self.notifier.watchdog()
                next_ping = now + ping_every
            if now >= next_beat:
                beat_s = self.settings.daemon.heartbeat_s
                next_beat = now + (min(beat_s, 0.5) if self.until_complete else beat_s)
                self._beat()
                if self.until_complete and self._all_complete():
                    return self._finish()
            time.sleep(0.1)

    def _healthy(self) -> bool:
        watcher_ok = time.monotonic() - self.watcher.loop_at < STALL_S
        return watcher_ok and all(lp.healthy() for lp in self.loops)

    def _beat(self) -> None:
        """Completion, outbox, state for `status`, metrics: every heartbeat_s."""
        self.hooks.submit(self.completion.due())
        self.hooks.flush_outbox_when_due()
        snap = self._collect_snapshot()
        self.stores.get().daemon_state_write(pid=os.getpid(), started_at=self.started_at,
                                             info=json.dumps(snap), now=time.time())
        self.metrics.publish(snap)
        self.notifier.status(f"backlog {snap['backlog']}, {snap['files_per_s']:.2f} files/s, "
                             f"model {snap['model_version'] or 'none'}")

    def _collect_snapshot(self) -> dict[str, Any]:
        """The daemon's state as `status` and the metrics show it."""
        ledger = self._ledger()
        counts = ledger.counts()
        files, crops = ledger.finished_since(time.time() - 60)
        retrain = ledger.store.job_row(RETRAIN_JOB)
        ens = self.model.ensemble
        with self.stats.lock:
            outcomes = dict(self.stats.outcomes)
            crop_total = self.stats.crops
        snap = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "ledger": counts,
            "backlog": sum(counts[s] for s in BACKLOG_STATES),
            "files_per_s": files / 60.0,
            "crops_per_s": crops / 60.0,
            "outcomes": outcomes,
            "crops": crop_total,
            "sources": self.watcher.sources(),
            "mode": self.settings.watch.mode,
            "model_name": ens.name if ens else None,
            "model_version": ens.version if ens else None,
            "model_reloads": self.model.reloads,
            "rescoring": ({"model": run.version, "scored": run.scored}
                          if (run := self._rescore) is not None else None),
            "workers": self.pool.size,
            "worker_replacements": self.pool.replaced,
            "retrain_last_success": retrain.last_success_at if retrain else None,
            "retrain_scheduled": self.retrainer.scheduled,
        }
        self._snapshot = snap
        return snap

    def _all_complete(self) -> bool:
        """For --until-complete: nothing waiting anywhere and every sample completed."""
        if not self.watcher.idle() or self.watcher.scans_done == 0:
            return False
        if self._snapshot.get("backlog", 1) or self.hooks.busy():
            return False
        rows = self.stores.get().sample_state_rows()
        return bool(rows) and all(r.completed_at is not None for r in rows)

    def _finish(self) -> int:
        """A run to completion ends: its mail delivered (or given up on, within a bound), then
        the summary, then what became of the mail."""
        store = self.stores.get()
        entries = []
        if self.settings.mail.enabled:
            names = {r.name for r in store.sample_state_rows()}
            entries = settle_outbox(self.settings, store, names, since=self.started_at,
                                    wait_s=mail_wait_s(self.settings.mail))
        code = print_completion(self.settings, store, self._snapshot.get("model_version"),
                                self.out)
        print_mail(entries, self.out)
        return code

    # -- configuration reload --------------------------------------------------------------

    def _reload_settings(self) -> None:
        self.notifier.reloading()
        try:
            new = load_settings(self.config).settings
        except ChromowatchError as exc:
            log.error("SIGHUP: the new configuration is invalid, keeping the old one: %s", exc)
            self.notifier.ready()
            return
        old = self.settings
        if new.paths != old.paths or new.daemon.workers != old.daemon.workers:
            log.warning("SIGHUP: changes to [paths] and daemon.workers take effect at the next "
                        "restart")
        self.settings = self.model.settings = self.retrainer.settings = new
        self.hooks.settings = new
        self.metrics.settings = new.metrics
        if new.watch != old.watch or new.samples != old.samples or new.ingest != old.ingest:
            self.watcher.stop()
            self.watcher = Watcher(new, self.stores)
            self.watcher.start()
        self.completion = Completion(new.samples, self._ledger())
        self.pool.update_settings(new)
        if new.classify != old.classify:
            self.model.reload_soon()
        if new.schedule != old.schedule:
            self.retrainer.stop_schedule()
            if not self.until_complete:
                self.retrainer.start()
        log.info("SIGHUP: configuration reloaded")
        self.notifier.ready()

    # -- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Take no new files; let those in flight finish within stop_timeout_s; roll back the
        rest (they are redone at the next start)."""
        s = self.settings
        self.notifier.stopping()
        self._accepting.clear()
        self.watcher.stop()
        deadline = time.monotonic() + s.daemon.stop_timeout_s
        while time.monotonic() < deadline:
            with self._in_flight_lock:
                busy = len(self._in_flight)
            if busy == 0 or not all(lp.thread.is_alive() for lp in self.loops):
                break
            time.sleep(0.05)
        for lp in self.loops:
            lp.stop(timeout=max(1.0, deadline - time.monotonic()))
        self.pool.stop(timeout=2.0)
        with self._in_flight_lock:
            left = [job.path for job in self._in_flight.values()]
        if left:
            n = self._ledger().release(left)
            log.warning("%d file(s) did not finish within %g s; rolled back, redone at the "
                        "next start", n, s.daemon.stop_timeout_s)
        self.retrainer.stop()
        self.hooks.shutdown()
        self.metrics.stop()
        with contextlib.suppress(Exception):
            self._collect_snapshot()
        self.stores.get().daemon_state_write(pid=os.getpid(), started_at=self.started_at,
                                             info=json.dumps(self._snapshot), now=time.time(),
                                             stopped=True)
        log.info("chromowatch stopped")


def run_daemon(settings: Settings, *, config: str | None = None,
               until_complete: bool = False) -> int:
    """Run until SIGTERM/SIGINT (exit 0), or with until_complete until every sample is."""
    roots = watch_roots(settings)
    if settings.watch.roots == [] and not roots[0].exists():
        roots[0].mkdir(parents=True, exist_ok=True)
        log.info("created the inbox %s: put each sample's spreads in a folder there", roots[0])
    if until_complete:
        for root in roots:
            problem = root_problem(root, settings.watch.expect_mount)
            if problem:
                raise UsageError(f"cannot watch {root}: {problem}",
                                 hint="check watch.roots")
    return Daemon(settings, config=config, until_complete=until_complete).run()
