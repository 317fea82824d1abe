"""Nightly retraining: the schedule, the training subprocess, and catching up a missed night.

apscheduler runs `Retrainer.run_once` at `schedule.retrain_cron`; with `schedule.catch_up` a
night missed while the daemon was stopped runs at start (not at the first start: nothing was
missed before retraining was ever scheduled). The training command runs as a
subprocess, niced from its first instruction, never two at once, stopped after
`schedule.retrain_timeout_hours`; whatever it does, the daemon goes on. A promoted model is
picked up by the classifier thread (service/model.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from chromowatch.service.connections import ThreadStores
from chromowatch.settings import Settings

log = logging.getLogger(__name__)

RETRAIN_JOB = "retrain"


def last_due_before(trigger: Any, now: datetime) -> datetime | None:
    """The latest time before `now` the cron trigger fired (within 40 days), if any."""
    t = trigger.get_next_fire_time(None, now - timedelta(days=40))
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


class Retrainer:
    """Schedules retraining and runs it; `stop()` ends the schedule and a running training."""

    def __init__(self, settings: Settings, stores: ThreadStores, *,
                 config: str | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.config = config
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._scheduler: Any = None
        self.scheduled = False  # this daemon schedules retraining (kept in its state)

    def start(self) -> None:
        """Schedule the nightly job (when schedule.retrain); run a missed night now."""
        sched = self.settings.schedule
        self.scheduled = sched.retrain
        if not sched.retrain:
            return
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(sched.retrain_cron, timezone=sched.timezone or None)
        kwargs: dict[str, Any] = {"timezone": sched.timezone} if sched.timezone else {}
        scheduler = BackgroundScheduler(
            job_defaults={
                # apscheduler 3's default grace is 1 s: a late night would be skipped silently
                "misfire_grace_time": int(sched.misfire_grace_hours * 3600),
                "coalesce": True,
                "max_instances": 1,
            },
            **kwargs,
        )
        scheduler.add_job(self.run_once, trigger, id=RETRAIN_JOB, name="nightly retraining")
        scheduler.start()
        self._scheduler = scheduler
        nxt = scheduler.get_job(RETRAIN_JOB).next_run_time
        log.info("retraining scheduled (%s %s); next run %s", sched.retrain_cron,
                 sched.timezone or "local time", nxt)
        if sched.catch_up and self._missed(trigger):
            scheduler.add_job(self.run_once, id=RETRAIN_JOB + "-catch-up",
                              name="missed retraining")

    def _missed(self, trigger: Any) -> bool:
        """A night passed since the last retraining, or since a daemon that had it scheduled
        started; a daemon that never scheduled it (a first start, the demo) missed nothing."""
        missed = last_due_before(trigger, datetime.now(trigger.timezone))
        since = self._scheduled_since()
        if missed is not None and since is not None and since < missed.timestamp():
            log.info("retraining due at %s was missed while stopped; running it now", missed)
            return True
        return False

    def _scheduled_since(self) -> float | None:
        """When retraining last ran, or else when a previous daemon that scheduled it started
        (its state, read before this daemon writes its own)."""
        store = self.stores.get()
        job = store.job_row(RETRAIN_JOB)
        if job is not None and job.last_started_at is not None:
            return job.last_started_at
        state = store.daemon_state_read()
        if state is None:
            return None
        try:
            scheduled = bool(json.loads(state.info).get("retrain_scheduled"))
        except (ValueError, AttributeError):
            scheduled = False
        return state.started_at if scheduled else None

    def stop_schedule(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def stop(self) -> None:
        """The daemon stops: a running training is stopped too, and nothing more is run."""
        proc = self._proc
        if proc is not None:
            log.warning("stopping the running retraining")
            _kill_group(proc)
        self.stop_schedule()

    def command(self) -> list[str]:
        cmd = list(self.settings.schedule.retrain_command)
        if cmd:
            return cmd
        config = ["--config", self.config] if self.config else []
        # -P: a folder named chromowatch in the working directory (a clone) must not shadow
        # the installed package (ImportError: cannot import name '__version__')
        return [sys.executable, "-P", "-m", "chromowatch", *config, "train"]

    def run_once(self) -> None:
        """Run the training command; never two at once, at low CPU priority, with a timeout."""
        if not self._lock.acquire(blocking=False):
            log.warning("retraining is already running; this run is skipped")
            return
        store = self.stores.get()
        try:
            cmd = self.command()
            store.job_started(RETRAIN_JOB, time.time())
            log.info("retraining: %s", " ".join(cmd))
            ok, error = self.run_command(cmd)
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
            self._lock.release()

    def run_command(self, cmd: list[str]) -> tuple[bool, str | None]:
        """(ok, error) of one training subprocess; its last lines go to the log."""
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
        self._proc = proc
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
            self._proc = None
        for line in output.splitlines()[-20:]:
            log.info("retrain: %s", line)
        if proc.returncode == 0:
            return True, None
        tail = " | ".join(output.strip().splitlines()[-3:])
        return False, f"exit code {proc.returncode}: {tail}"
