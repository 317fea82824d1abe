"""A pool of worker processes for the CPU step, `pipeline.prepare` (ingest, segment, enhance).

Processes are started with `spawn` (forking after CUDA initialised fails). Each worker has its
own pipe and takes one file at a time, so the pool knows which file each worker holds: a file
that takes longer than `daemon.task_timeout_s` gets its worker killed and replaced, and a
worker that dies takes only its own file with it. Workers ignore SIGINT/SIGTERM (the daemon
decides when they stop) and leave on their own when the daemon process is gone.

A worker's log records travel to the daemon on the same pipe, ahead of the file's result, and
are handled there by the daemon's own handlers: each names the file it concerns, and an
unexpected exception arrives with its traceback. (One pipe per worker rather than one queue
shared by all: a worker killed in the middle of a write breaks only its own pipe.)
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from chromowatch import pipeline
from chromowatch.errors import InputImageError
from chromowatch.settings import Settings

log = logging.getLogger(__name__)

Prepare = Callable[[Path, Settings], pipeline.PreparedImage]


@dataclass(frozen=True)
class Task:
    file_id: int
    path: str


@dataclass(frozen=True)
class TaskResult:
    task: Task
    prepared: pipeline.PreparedImage | None  # set when error is None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class _LogRecord:
    """A worker's log record on its way to the daemon (told apart from results)."""

    record: logging.LogRecord


class _PipeQueue:
    """What QueueHandler needs of a queue, writing to the worker's pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def put_nowait(self, record: logging.LogRecord) -> None:
        with self.lock:
            self.conn.send(_LogRecord(record))


class _TaskFilter(logging.Filter):
    """Tags every record with the file the worker holds: `file 3 (/in/S1/a.png): `."""

    def __init__(self) -> None:
        super().__init__()
        self.task: Task | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        task = self.task
        record.file_id = task.file_id if task else None
        record.path = task.path if task else None
        record.task = f"file {task.file_id} ({task.path}): " if task else ""
        return True


def _log_to_parent(conn: Connection, level: int) -> _TaskFilter:
    """Send this process's records to the daemon; returns the filter that names the file."""
    handler = logging.handlers.QueueHandler(_PipeQueue(conn))  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(task)s%(message)s"))  # traceback as text
    tag = _TaskFilter()
    handler.addFilter(tag)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return tag


def _prepare_one(task: Task, settings: Settings, prepare: Prepare) -> TaskResult:
    started = time.perf_counter()
    try:
        prepared = prepare(Path(task.path), settings)
        return TaskResult(task, prepared, None, time.perf_counter() - started)
    except InputImageError as exc:
        return TaskResult(task, None, exc.problem, time.perf_counter() - started)
    except Exception as exc:  # anything else is this file's failure, not the worker's
        log.exception("preparing it failed unexpectedly: %s", exc)
        return TaskResult(task, None, f"{type(exc).__name__}: {exc}",
                          time.perf_counter() - started)


def _worker_main(settings: Settings, conn: Connection, parent_pid: int, threads: int,
                 log_level: int, prepare: Prepare) -> None:
    """Runs in the worker process: prepare one file per message until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tag = _log_to_parent(conn, log_level)
    import cv2  # the worker's own process: cv2 is loaded here, not at daemon start

    cv2.setNumThreads(threads)
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:
                return  # the daemon is gone (e.g. kill -9): do not linger
            continue
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        tag.task = task
        try:
            result = _prepare_one(task, settings, prepare)
            tag.task = None
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    number: int
    process: Any  # multiprocessing.context.SpawnProcess
    conn: Connection
    task: Task | None = None
    deadline: float = 0.0
    retire: bool = False


def _hand_on(record: logging.LogRecord) -> None:
    """A worker's record, to the daemon's handlers as if logged here."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class WorkerPool:
    """`size` worker processes; submit() to an idle one, collect() results and timeouts.

    `prepare` is the step the workers run (pipeline.prepare; a test passes its own, which
    must be importable by name, as spawned processes import it afresh).
    """

    def __init__(self, settings: Settings, size: int, *, task_timeout_s: float,
                 threads: int = 1, prepare: Prepare = pipeline.prepare) -> None:
        self.settings = settings
        self.size = size
        self.task_timeout_s = task_timeout_s
        self.threads = threads
        self.prepare = prepare
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._started = 0
        self.replaced = 0

    def start(self) -> None:
        for _ in range(self.size):
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        self._started += 1
        parent, child = self._ctx.Pipe(duplex=True)
        level = logging.getLogger("chromowatch").getEffectiveLevel()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self.settings, child, os.getpid(), self.threads, level, self.prepare),
            name=f"chromowatch-worker-{self._started}",
            daemon=True,
        )
        proc.start()
        child.close()
        return _Worker(self._started, proc, parent)

    def update_settings(self, settings: Settings) -> None:
        """New workers get the new settings; every worker is replaced once it is idle.

        Called from another thread (SIGHUP) than the dispatcher that owns the workers, so it
        only marks them: the dispatcher's next `collect` replaces them. Replacing them here
        too raced with it (a pipe closed twice killed the dispatcher).
        """
        self.settings = settings
        for w in self._workers:
            w.retire = True

    def _replace_retired(self) -> None:
        for i, w in enumerate(self._workers):
            if w.retire and w.task is None:
                self._stop_worker(w, timeout=2.0)
                self._workers[i] = self._spawn()

    def idle(self) -> int:
        return sum(1 for w in self._workers if w.task is None and w.process.is_alive())

    def submit(self, task: Task) -> None:
        for w in self._workers:
            if w.task is None and w.process.is_alive():
                w.conn.send(task)
                w.task = task
                w.deadline = time.monotonic() + self.task_timeout_s
                return
        raise RuntimeError("no idle worker")  # callers check idle() first

    def collect(self, timeout: float) -> list[TaskResult]:
        """Results that arrived within `timeout`, plus failures for hung or dead workers."""
        out: list[TaskResult] = []
        busy = {w.conn: w for w in self._workers if w.task is not None}
        if busy:
            for conn in wait(list(busy), timeout=timeout):
                result = self._receive(busy[conn])  # type: ignore[index]
                if result is not None:
                    out.append(result)
        elif timeout > 0:
            time.sleep(timeout)
        for i, w in enumerate(self._workers):
            gone, failure = self._lost(w)
            if failure is not None:
                out.append(failure)
            if gone:
                self._workers[i] = self._spawn()
                self.replaced += 1
        self._replace_retired()
        return out

    def _receive(self, w: _Worker) -> TaskResult | None:
        """Hand on the worker's log records; its result once it is there."""
        try:
            while True:
                message = w.conn.recv()
                if not isinstance(message, _LogRecord):
                    break
                _hand_on(message.record)
                if not w.conn.poll():
                    return None
        except (EOFError, OSError):
            return None  # the process died: `_lost` sees it
        w.task = None
        result: TaskResult = message
        return result

    def _lost(self, w: _Worker) -> tuple[bool, TaskResult | None]:
        """A hung worker is killed, a dead one noticed: (gone, the failure of the file it
        held). The caller replaces a worker that is gone."""
        if w.task is not None and time.monotonic() > w.deadline:
            log.error("file %d took longer than %g s in worker %d (pid %s); killing and "
                      "replacing that worker", w.task.file_id, self.task_timeout_s,
                      w.number, w.process.pid)
            self._kill(w)
            return True, TaskResult(w.task, None, f"timed out after {self.task_timeout_s:g} s "
                                    "in a worker", self.task_timeout_s)
        if w.process.is_alive():
            return False, None
        code = w.process.exitcode
        w.conn.close()
        if w.task is None:
            log.error("worker %d died (exit code %s); replacing it", w.number, code)
            return True, None
        log.error("worker %d died (exit code %s) with file %d; replacing it",
                  w.number, code, w.task.file_id)
        return True, TaskResult(w.task, None, f"the worker process died (exit code {code})", 0.0)

    def _kill(self, w: _Worker) -> None:
        w.process.kill()
        w.process.join(timeout=5)
        w.conn.close()

    def _stop_worker(self, w: _Worker, timeout: float) -> None:
        with contextlib.suppress(OSError):
            w.conn.send(None)
        w.process.join(timeout=timeout)
        if w.process.is_alive():
            self._kill(w)
        else:
            w.conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every worker to leave; kill those still busy after `timeout`."""
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
        self._workers.clear()
