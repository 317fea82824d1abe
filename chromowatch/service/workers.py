"""A pool of worker processes for the CPU stages (ingest, segment, enhance).

Processes are started with `spawn` (forking after CUDA initialised fails). Each worker has its
own pipe and takes one file at a time, so the pool knows which file each worker holds: a file
that takes longer than `daemon.task_timeout_s` gets its worker killed and replaced, and a
worker that dies takes only its own file with it. Workers ignore SIGINT/SIGTERM (the daemon
decides when they stop) and leave on their own when the daemon process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from chromowatch.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    file_id: int
    path: str


@dataclass(frozen=True)
class TaskResult:
    task: Task
    prepared: Any  # chromowatch.pipeline.PreparedImage when ok
    error: str | None
    seconds: float
    count_attempt: bool = True


def _worker_main(settings: Settings, conn: Connection, parent_pid: int, threads: int) -> None:
    """Runs in the worker process: prepare one file per message until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import cv2

    from chromowatch.errors import InputImageError
    from chromowatch.pipeline import prepare_image

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
        started = time.perf_counter()
        try:
            prepared = prepare_image(Path(task.path), settings)
            result = TaskResult(task, prepared, None, time.perf_counter() - started)
        except InputImageError as exc:
            result = TaskResult(task, None, exc.problem, time.perf_counter() - started)
        except Exception as exc:  # anything else is this file's failure, not the worker's
            result = TaskResult(task, None, f"{type(exc).__name__}: {exc}",
                                time.perf_counter() - started)
        try:
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


class WorkerPool:
    """`size` worker processes; submit() to an idle one, collect() results and timeouts."""

    def __init__(self, settings: Settings, size: int, *, task_timeout_s: float,
                 threads: int = 1) -> None:
        self.settings = settings
        self.size = size
        self.task_timeout_s = task_timeout_s
        self.threads = threads
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
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self.settings, child, os.getpid(), self.threads),
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

    def busy(self) -> list[Task]:
        return [w.task for w in self._workers if w.task is not None]

    def pids(self) -> list[int]:
        return [int(w.process.pid) for w in self._workers if w.process.pid is not None]

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
                w = busy[conn]  # type: ignore[index]
                try:
                    result: TaskResult = w.conn.recv()
                except (EOFError, OSError):
                    continue  # the process died: handled below
                w.task = None
                out.append(result)
        elif timeout > 0:
            time.sleep(timeout)
        now = time.monotonic()
        for i, w in enumerate(self._workers):
            if w.task is not None and now > w.deadline:
                log.error("file %d took longer than %g s in worker %d (pid %s); killing and "
                          "replacing that worker", w.task.file_id, self.task_timeout_s,
                          w.number, w.process.pid)
                out.append(TaskResult(w.task, None,
                                      f"timed out after {self.task_timeout_s:g} s in a worker",
                                      self.task_timeout_s))
                self._kill(w)
                self._workers[i] = self._spawn()
                self.replaced += 1
            elif not w.process.is_alive():
                code = w.process.exitcode
                if w.task is not None:
                    log.error("worker %d died (exit code %s) with file %d; replacing it",
                              w.number, code, w.task.file_id)
                    out.append(TaskResult(w.task, None,
                                          f"the worker process died (exit code {code})", 0.0))
                else:
                    log.error("worker %d died (exit code %s); replacing it", w.number, code)
                w.conn.close()
                self._workers[i] = self._spawn()
                self.replaced += 1
        self._replace_retired()
        return out

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
