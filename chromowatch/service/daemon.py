"""`chromowatch run`: the unattended daemon beside the microscope.

    watcher thread --(ledger: seen -> stable)--> dispatcher thread --> worker processes
      (ingest, segment, enhance) --> classifier thread (the one owner of the device, batches
      crops across images) --> writer thread (results, then "done") --> completion hooks

Every queue is bounded and the ledger, not memory, holds the backlog, so 100,000 waiting
files cost rows on disk, not RAM. The main thread is the supervisor: it handles signals
(SIGTERM/SIGINT: stop taking files, finish or roll back those in flight, exit 0; SIGHUP:
reload the configuration), talks to systemd (READY, STOPPING, WATCHDOG only while every part
is alive and moving), writes the state `chromowatch status` shows, completes samples and
publishes metrics. Nightly retraining runs as a subprocess from apscheduler.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from chromowatch import __version__, pipeline
from chromowatch.errors import ChromowatchError, UsageError
from chromowatch.service.ledger import BACKLOG_STATES, Job, Ledger
from chromowatch.service.samples import Completion, flush_outbox, run_completion_hook
from chromowatch.service.sdnotify import Notifier
from chromowatch.service.watch import Watcher, root_problem, watch_roots
from chromowatch.service.workers import Task, TaskResult, WorkerPool
from chromowatch.settings import Settings, load_settings
from chromowatch.store import Store

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble
    from chromowatch.records import Prediction

log = logging.getLogger(__name__)

RETRAIN_JOB = "retrain"
STALL_S = 120.0  # a core thread that has not gone round its loop for this long is stuck


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
    model_reloads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, outcome: str, crops: int = 0) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.crops += crops


class _Loop:
    """A named thread running `step` until stopped; remembers when it last went round."""

    def __init__(self, name: str, step: Callable[[], None]) -> None:
        self.name = name
        self.step = step
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
        self._stop_signal: int | None = None
        self._reload = False
        self._accepting = threading.Event()
        self._accepting.set()
        self._classify_q: queue.Queue[_Item] = queue.Queue(settings.daemon.queue_size)
        self._write_q: queue.Queue[_Item] = queue.Queue(settings.daemon.queue_size)
        self._in_flight: dict[int, Job] = {}  # dispatched, not yet written or failed
        self._in_flight_lock = threading.Lock()
        self._ensemble: Ensemble | None = None
        self._model_sig: object = None
        self._model_next_check = 0.0
        self._hooks = ThreadPoolExecutor(1, thread_name_prefix="hooks")
        self._hooks_running: set[str] = set()
        self._hooks_lock = threading.Lock()
        self._outbox_next = 0.0
        self._retrain_lock = threading.Lock()
        self._retrain_proc: subprocess.Popen[str] | None = None
        self._scheduler: Any = None
        self._metrics: Any = None
        self._metrics_text = ""
        self._snapshot: dict[str, Any] = {}
        self._dispatch_ledger: Ledger | None = None
        self._writer_ledger: Ledger | None = None

    # -- startup ---------------------------------------------------------------------------

    def run(self) -> int:
        s = self.settings
        with _single_instance(s.paths.db):
            self.store = Store.open(s.paths.db)
            try:
                return self._run()
            finally:
                self.store.close()

    def _run(self) -> int:
        s = self.settings
        ledger = Ledger(self.store, s.daemon)
        ledger.recover()
        self._load_model(initial=True)
        self.completion = Completion(s.samples, self.store)
        self.pool = WorkerPool(s, worker_count(s), task_timeout_s=s.daemon.task_timeout_s)
        self.pool.start()
        self.watcher = self._new_watcher(s)
        self.watcher.start()
        self.loops = [
            _Loop("dispatcher", self._dispatch_step),
            _Loop("classifier", self._classify_step),
            _Loop("writer", self._write_step),
        ]
        for loop in self.loops:
            loop.start()
        self._start_scheduler()
        self._start_metrics()
        self._install_signals()
        roots = ", ".join(str(r) for r in watch_roots(s))
        log.info("chromowatch %s running: watching %s (%s mode), %d worker(s), model %s, "
                 "database %s", __version__, roots, s.watch.mode, self.pool.size,
                 self._ensemble.version if self._ensemble else "none", s.paths.db)
        self.notifier.ready(f"watching {roots}")
        try:
            code = self._supervise()
        finally:
            self._shutdown()
        return code

    def _new_watcher(self, settings: Settings) -> Watcher:
        return Watcher(settings)

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

    # -- the model -------------------------------------------------------------------------

    def _model_signature(self) -> object:
        from chromowatch.classify.library import CURRENT, ModelLibrary

        library = ModelLibrary(self.settings.paths.models)
        name = self.settings.classify.model
        path = library.current_file if name == CURRENT else library.ensemble_path(name)
        try:
            st = path.stat()
        except OSError:
            return None
        return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)

    def _load_model(self, *, initial: bool = False) -> None:
        """Load the configured ensemble; keep the old one when the new one cannot be loaded."""
        from chromowatch.classify.library import ModelLibrary

        s = self.settings
        sig = self._model_signature()
        self._model_sig = sig
        try:
            if s.classify.threads:
                import torch

                torch.set_num_threads(s.classify.threads)
            ensemble = ModelLibrary(s.paths.models).load_configured(s.classify)
            pipeline.check_model_fits(ensemble)
        except ChromowatchError as exc:
            if initial and self.until_complete:
                raise
            if self._ensemble is None:
                log.error("no usable model (%s); files are recorded and wait until one is "
                          "installed (chromowatch models fetch ikemoto2023)", exc)
            else:
                log.error("the new model cannot be used (%s); keeping %s", exc,
                          self._ensemble.version)
            return
        old = self._ensemble
        self._ensemble = ensemble
        if old is None:
            log.info("model %s loaded", ensemble.version)
        elif old.version != ensemble.version:
            self.stats.model_reloads += 1
            log.info("model reloaded without a restart: %s -> %s", old.version, ensemble.version)

    def _maybe_reload_model(self) -> None:
        now = time.monotonic()
        if now < self._model_next_check:
            return
        self._model_next_check = now + self.settings.daemon.model_check_s
        if self._model_signature() != self._model_sig:
            self._load_model()

    # -- dispatcher: ledger -> worker processes -> classify queue --------------------------

    def _dispatch_step(self) -> None:
        if self._dispatch_ledger is None:
            self._dispatch_ledger = Ledger(Store.open(self.settings.paths.db),
                                           self.settings.daemon)
        ledger = self._dispatch_ledger
        for result in self.pool.collect(0.05):
            self._handle_prepared(ledger, result)
        if self._accepting.is_set() and self._ensemble is not None:
            room = min(self.pool.idle(),
                       self._classify_q.maxsize - self._classify_q.qsize())
            for job in ledger.claim(room):
                with self._in_flight_lock:
                    self._in_flight[job.id] = job
                log.debug("file %d: processing %s", job.id, job.path)
                self.pool.submit(Task(job.id, job.path))

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
        self._fail(ledger, job, result.error or "no result")

    def _fail(self, ledger: Ledger, job: Job, error: str) -> None:
        with self._in_flight_lock:
            self._in_flight.pop(job.id, None)
        if error == "file not found":
            if root_problem(Path(job.root), self.settings.watch.expect_mount) is None:
                log.info("file %d vanished before it was processed: %s", job.id, job.path)
                ledger.store.ledger_release([job.path], time.time())
                ledger.forget([job.path])
                return
            error = "the folder is offline"
            ledger.failed(job, error, count=False)
            return
        state = ledger.failed(job, error)
        self.stats.count(state)

    # -- classifier: the one owner of the device --------------------------------------------

    def _classify_step(self) -> None:
        self._maybe_reload_model()
        try:
            first = self._classify_q.get(timeout=0.2)
        except queue.Empty:
            return
        ensemble = self._ensemble
        assert ensemble is not None  # nothing is dispatched without a model
        batch = [first]
        crops = len(first.prepared.crops)
        deadline = time.monotonic() + self.settings.daemon.batch_linger_s
        while crops < self.settings.classify.batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (self._classify_q.get(timeout=remaining) if remaining > 0
                        else self._classify_q.get_nowait())
            except queue.Empty:
                break
            batch.append(item)
            crops += len(item.prepared.crops)
        try:
            predictions = pipeline.classify([item.prepared for item in batch], ensemble)
        except Exception as exc:  # e.g. out of memory: these files fail, the daemon goes on
            crops = sum(len(item.prepared.crops) for item in batch)
            log.exception("classifying %d crops failed: %s", crops, exc)
            ledger = Ledger(self.store_for_thread(), self.settings.daemon)
            for item in batch:
                self._fail(ledger, item.job, f"classification failed: {exc}")
            return
        for item, preds in zip(batch, predictions, strict=True):
            item.predictions = preds
            self._write_q.put(item)

    _thread_stores: threading.local = threading.local()

    def store_for_thread(self) -> Store:
        store = getattr(self._thread_stores, "store", None)
        if store is None:
            store = Store.open(self.settings.paths.db)
            self._thread_stores.store = store
        return store

    # -- writer: results, then "done" -------------------------------------------------------

    def _write_step(self) -> None:
        if self._writer_ledger is None:
            self._writer_ledger = Ledger(Store.open(self.settings.paths.db), self.settings.daemon)
        ledger = self._writer_ledger
        try:
            item = self._write_q.get(timeout=0.2)
        except queue.Empty:
            return
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
        s = self.settings
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
                next_beat = now + (min(s.daemon.heartbeat_s, 0.5) if self.until_complete
                                   else s.daemon.heartbeat_s)
                self._beat()
                if self.until_complete and self._all_complete():
                    return self._finish_report()
            time.sleep(0.1)

    def _healthy(self) -> bool:
        watcher_ok = time.monotonic() - self.watcher.loop_at < STALL_S
        return watcher_ok and all(lp.healthy() for lp in self.loops)

    def _beat(self) -> None:
        """Completion, outbox, state for `status`, metrics: every heartbeat_s."""
        for sample in self.completion.due():
            with self._hooks_lock:
                if sample in self._hooks_running:
                    continue
                self._hooks_running.add(sample)
            self._hooks.submit(self._complete_sample, sample)
        now = time.monotonic()
        if now >= self._outbox_next:
            self._outbox_next = now + 60.0
            self._hooks.submit(self._flush_outbox)
        snap = self._collect_snapshot()
        self.store.daemon_state_write(pid=os.getpid(), started_at=self.started_at,
                                      info=json.dumps(snap), now=time.time())
        if self._metrics is not None or self.settings.metrics.textfile is not None:
            self._publish_metrics(snap)
        self.notifier.status(f"backlog {snap['backlog']}, {snap['files_per_s']:.2f} files/s, "
                             f"model {snap['model_version'] or 'none'}")

    def _collect_snapshot(self) -> dict[str, Any]:
        counts = Ledger(self.store, self.settings.daemon).counts()
        files, crops = self.store.ledger_finished_since(time.time() - 60)
        retrain = self.store.job_row(RETRAIN_JOB)
        ens = self._ensemble
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
            "model_reloads": self.stats.model_reloads,
            "workers": self.pool.size,
            "worker_replacements": self.pool.replaced,
            "retrain_last_success": retrain["last_success_at"] if retrain else None,
        }
        self._snapshot = snap
        return snap

    def _complete_sample(self, sample: str) -> None:
        try:
            store = self.store_for_thread()
            state, error = run_completion_hook(self.settings, store, sample)
            store.sample_state_completed(sample, hook_state=state, hook_error=error,
                                         now=time.time())
            log.info("sample %s is complete (report hook: %s)", sample, state)
        except Exception as exc:  # recorded as not complete: tried again at the next beat
            log.exception("completing sample %s failed: %s", sample, exc)
        finally:
            with self._hooks_lock:
                self._hooks_running.discard(sample)

    def _flush_outbox(self) -> None:
        sent = flush_outbox(self.settings, self.store_for_thread())
        if sent:
            log.info("sent %d report email(s)", sent)

    def _all_complete(self) -> bool:
        """For --until-complete: nothing waiting anywhere and every sample completed."""
        if not self.watcher.idle() or self.watcher.scans_done == 0:
            return False
        if self._snapshot.get("backlog", 1):
            return False
        with self._hooks_lock:
            if self._hooks_running:
                return False
        rows = self.store.sample_state_rows()
        return bool(rows) and all(r["completed_at"] is not None for r in rows)

    def _finish_report(self) -> int:
        from chromowatch.reports.tables import format_counts_table

        s = self.settings
        names = [r["name"] for r in self.store.sample_state_rows()]
        known = set(self.store.sample_names())
        counts = self.store.sample_counts(None)
        rows = [c for c in counts if c.sample in names and c.sample in known]
        quarantined = self.store.ledger_rows(["quarantined"])
        print(f"all samples complete ({len(names)}); model {self._snapshot.get('model_version')}",
              file=self.out)
        if rows:
            print(format_counts_table(rows), file=self.out)
        if quarantined:
            print(f"\n{len(quarantined)} file(s) quarantined (see `chromowatch status`):",
                  file=self.out)
            for r in quarantined[:20]:
                print(f"  {r['path']}: {r['last_error']}", file=self.out)
        print(f"\nresults:  {s.paths.db}  (chromowatch results)", file=self.out)
        print(f"crops:    {s.paths.crops}", file=self.out)
        reports = s.paths.data / "reports"
        if reports.is_dir():
            print(f"reports:  {reports}", file=self.out)
        return 3 if quarantined else 0

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
        self.settings = new
        if new.watch != old.watch or new.samples != old.samples or new.ingest != old.ingest:
            self.watcher.stop()
            self.watcher = self._new_watcher(new)
            self.watcher.start()
        self.completion = Completion(new.samples, self.store)
        self.pool.update_settings(new)
        if new.classify != old.classify:
            self._model_sig = "reload"  # the classifier thread reloads at its next check
            self._model_next_check = 0.0
        if new.schedule != old.schedule:
            self._stop_scheduler()
            self._start_scheduler()
        log.info("SIGHUP: configuration reloaded")
        self.notifier.ready()

    # -- nightly retraining -------------------------------------------------------------------

    def _start_scheduler(self) -> None:
        sched = self.settings.schedule
        if not sched.retrain or self.until_complete:
            # A run-to-completion (the demo, a one-off backlog) is not the service: no nightly job.
            return
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(sched.retrain_cron, timezone=sched.timezone or None)
        kwargs: dict[str, Any] = {}
        if sched.timezone:
            kwargs["timezone"] = sched.timezone
        scheduler = BackgroundScheduler(
            job_defaults={
                # apscheduler 3's default grace is 1 s: a late night would be skipped silently
                "misfire_grace_time": int(sched.misfire_grace_hours * 3600),
                "coalesce": True,
                "max_instances": 1,
            },
            **kwargs,
        )
        scheduler.add_job(self._retrain, trigger, id=RETRAIN_JOB, name="nightly retraining")
        scheduler.start()
        self._scheduler = scheduler
        nxt = scheduler.get_job(RETRAIN_JOB).next_run_time
        log.info("retraining scheduled (%s %s); next run %s", sched.retrain_cron,
                 sched.timezone or "local time", nxt)
        if sched.catch_up:
            missed = last_due_before(trigger, datetime.now(trigger.timezone))
            row = self.store.job_row(RETRAIN_JOB)
            last = row["last_started_at"] if row else None
            if missed is not None and (last is None or last < missed.timestamp()):
                log.info("retraining due at %s was missed while stopped; running it now", missed)
                scheduler.add_job(self._retrain, id=RETRAIN_JOB + "-catch-up",
                                  name="missed retraining")

    def _stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def retrain_command(self) -> list[str]:
        cmd = list(self.settings.schedule.retrain_command)
        if cmd:
            return cmd
        config = ["--config", self.config] if self.config else []
        return [sys.executable, "-m", "chromowatch", *config, "train"]

    def _retrain(self) -> None:
        """Run the training command; never two at once, at low CPU priority, with a timeout."""
        if not self._retrain_lock.acquire(blocking=False):
            log.warning("retraining is already running; this run is skipped")
            return
        store = Store.open(self.settings.paths.db)
        try:
            cmd = self.retrain_command()
            store.job_started(RETRAIN_JOB, time.time())
            log.info("retraining: %s", " ".join(cmd))
            ok, error = self._run_retrain(cmd)
            store.job_finished(RETRAIN_JOB, ok=ok, error=error, now=time.time())
            if ok:
                log.info("retraining finished; a promoted model is picked up within %g s",
                         self.settings.daemon.model_check_s)
            else:
                log.error("retraining failed: %s", error)
        except Exception as exc:  # the daemon goes on whatever the training does
            log.exception("retraining could not run: %s", exc)
            store.job_finished(RETRAIN_JOB, ok=False, error=str(exc), now=time.time())
        finally:
            store.close()
            self._retrain_lock.release()

    def _run_retrain(self, cmd: list[str]) -> tuple[bool, str | None]:
        sched = self.settings.schedule
        # Low priority from the first instruction: `nice` execs the command already niced
        # (setting it after the start raced with the child; preexec_fn is unsafe in a
        # threaded process). Without `nice` on the PATH, it is set right after the start.
        nice = shutil.which("nice")
        if shutil.which(cmd[0]) is None:
            return False, f"cannot start {cmd[0]}: no such program"
        run = [nice, "-n", str(sched.retrain_nice), *cmd] if nice else cmd
        try:
            proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        except OSError as exc:
            return False, f"cannot start {cmd[0]}: {exc}"
        self._retrain_proc = proc
        if not nice:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, sched.retrain_nice)
        try:
            output, _ = proc.communicate(timeout=sched.retrain_timeout_hours * 3600)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            return False, f"stopped after {sched.retrain_timeout_hours:g} h (retrain_timeout_hours)"
        finally:
            self._retrain_proc = None
        for line in output.splitlines()[-20:]:
            log.info("retrain: %s", line)
        if proc.returncode == 0:
            return True, None
        if "invalid choice: 'train'" in output:
            return False, ("this chromowatch has no `train` command yet (the training feature "
                           "is not installed); nothing was retrained")
        tail = " | ".join(output.strip().splitlines()[-3:])
        return False, f"exit code {proc.returncode}: {tail}"

    # -- metrics ------------------------------------------------------------------------------

    def _start_metrics(self) -> None:
        m = self.settings.metrics
        if not m.port:
            return
        from chromowatch.service.metrics import MetricsServer

        try:
            server = MetricsServer(m.host, m.port)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); metrics are off", m.host, m.port, exc)
            return
        server.start()
        self._metrics = server
        log.info("metrics on http://%s:%d/metrics", m.host, server.port)

    def _publish_metrics(self, snap: dict[str, Any]) -> None:
        from chromowatch.service.metrics import daemon_families, render, write_textfile

        text = render(daemon_families(snap))
        if self._metrics is not None:
            self._metrics.update(text)
        path = self.settings.metrics.textfile
        if path is not None:
            try:
                write_textfile(path, text)
            except OSError as exc:
                log.error("metrics: cannot write %s: %s", path, exc)

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
            n = self.store.ledger_release(left, time.time())
            log.warning("%d file(s) did not finish within %g s; rolled back, redone at the "
                        "next start", n, s.daemon.stop_timeout_s)
        if self._retrain_proc is not None:
            log.warning("stopping the running retraining")
            _kill_group(self._retrain_proc)
        self._stop_scheduler()
        self._hooks.shutdown(wait=True, cancel_futures=True)
        if self._metrics is not None:
            self._metrics.stop()
        with contextlib.suppress(Exception):
            self._collect_snapshot()
        self.store.daemon_state_write(pid=os.getpid(), started_at=self.started_at,
                                      info=json.dumps(self._snapshot), now=time.time(),
                                      stopped=True)
        log.info("chromowatch stopped")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def last_due_before(trigger: Any, now: datetime) -> datetime | None:
    """The latest time before `now` the cron trigger fired (within 40 days), if any."""
    t = trigger.get_next_fire_time(None, now - timedelta(days=40))
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last


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


# -- `chromowatch status` ---------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_status(settings: Settings, store: Store) -> dict[str, Any]:
    """What `chromowatch status` shows, from the database (and the daemon's last heartbeat)."""
    now = time.time()
    counts = Ledger(store, settings.daemon).counts()
    files_1m, crops_1m = store.ledger_finished_since(now - 60)
    files_15m, crops_15m = store.ledger_finished_since(now - 900)
    row = store.daemon_state_read()
    info: dict[str, Any] = json.loads(row["info"]) if row else {}
    running = bool(
        row and row["stopped_at"] is None
        and now - row["heartbeat_at"] < 3 * settings.daemon.heartbeat_s + 10
        and _pid_alive(int(row["pid"]))
    )
    if running:
        sources = info.get("sources", [])
        model = info.get("model_version")
    else:
        sources = []
        for root in watch_roots(settings):
            problem = root_problem(root, settings.watch.expect_mount)
            sources.append({"root": str(root), "online": problem is None, "problem": problem})
        try:
            from chromowatch.classify.library import ModelLibrary

            model = ModelLibrary(settings.paths.models).current_name()
        except ChromowatchError as exc:
            model = f"unusable ({exc.message})"
    retrain = store.job_row(RETRAIN_JOB)
    samples = [
        {"sample": r["name"],
         "state": ("complete" if r["completed_at"] else "closed" if r["closed_at"] else "open"),
         "close_reason": r["close_reason"], "report": r["hook_state"]}
        for r in store.sample_state_rows()
    ]
    problems = [
        {"id": r["id"], "path": r["path"], "state": r["state"], "attempts": r["attempts"],
         "error": r["last_error"]}
        for r in store.ledger_rows(["failed", "quarantined"], limit=50)
    ]
    return {
        "daemon": {
            "running": running,
            "pid": row["pid"] if row else None,
            "started_at": row["started_at"] if row else None,
            "heartbeat_at": row["heartbeat_at"] if row else None,
            "stopped_at": row["stopped_at"] if row else None,
        },
        "files": counts,
        "backlog": sum(counts[s] for s in BACKLOG_STATES),
        "throughput": {
            "files_per_s_1m": files_1m / 60, "crops_per_s_1m": crops_1m / 60,
            "files_per_s_15m": files_15m / 900, "crops_per_s_15m": crops_15m / 900,
        },
        "model": model,
        "sources": sources,
        "samples": samples,
        "retrain": dict(retrain) if retrain else None,
        "problems": problems,
    }


def format_status(st: dict[str, Any]) -> str:
    d = st["daemon"]
    ago = lambda t: f"{time.time() - t:.0f} s ago" if t else "never"  # noqa: E731
    if d["running"]:
        lines = [f"daemon:     running (pid {d['pid']}, heartbeat {ago(d['heartbeat_at'])})"]
    elif d["pid"]:
        lines = [f"daemon:     NOT running (last heartbeat {ago(d['heartbeat_at'])})"]
    else:
        lines = ["daemon:     never ran on this database"]
    files = st["files"]
    lines.append("files:      " + ", ".join(f"{k} {v}" for k, v in files.items()))
    t = st["throughput"]
    lines.append(f"backlog:    {st['backlog']}")
    lines.append(f"throughput: {t['files_per_s_1m']:.2f} files/s, {t['crops_per_s_1m']:.1f} "
                 f"crops/s (last minute); {t['files_per_s_15m']:.2f} files/s (15 min)")
    lines.append(f"model:      {st['model'] or 'none installed'}")
    for src in st["sources"]:
        state = "online" if src["online"] else f"OFFLINE ({src['problem']})"
        lines.append(f"source:     {src['root']}: {state}")
    for smp in st["samples"]:
        extra = f" ({smp['close_reason']})" if smp["close_reason"] else ""
        report = f", report {smp['report']}" if smp["report"] else ""
        lines.append(f"sample:     {smp['sample']}: {smp['state']}{extra}{report}")
    r = st["retrain"]
    if r:
        err = f": {r['last_error']}" if r["last_error"] else ""
        lines.append(f"retrain:    last {r['last_status']} {ago(r['last_finished_at'])}, "
                     f"last success {ago(r['last_success_at'])}{err}")
    for p in st["problems"]:
        lines.append(f"{p['state']:<11} file {p['id']} {p['path']} (attempts {p['attempts']}): "
                     f"{p['error']}")
    return "\n".join(lines)
