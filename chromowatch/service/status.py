"""The read side: what `chromowatch status` shows, and the summary of a run to completion.

Everything here reads the database (and the daemon's last heartbeat in it), never the running
daemon, so `status` works whether or not a daemon runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, TextIO

from chromowatch.classify.library import ModelLibrary
from chromowatch.errors import ChromowatchError
from chromowatch.reports.tables import format_counts_table
from chromowatch.service.ledger import BACKLOG_STATES, Ledger
from chromowatch.service.retrain import RETRAIN_JOB
from chromowatch.service.watch import root_problem, watch_roots
from chromowatch.settings import Settings
from chromowatch.store import DaemonState, OutboxEntry, Store


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(settings: Settings, state: DaemonState | None, now: float) -> bool:
    """A heartbeat recent enough, from a process that still exists."""
    return bool(
        state and state.stopped_at is None
        and now - state.heartbeat_at < 3 * settings.daemon.heartbeat_s + 10
        and _pid_alive(int(state.pid))
    )


def _offline_view(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """Sources and model as seen from here when no daemon reports them."""
    sources = []
    for root in watch_roots(settings):
        problem = root_problem(root, settings.watch.expect_mount)
        sources.append({"root": str(root), "online": problem is None, "problem": problem})
    try:
        model = ModelLibrary(settings.paths.models).current_name()
    except ChromowatchError as exc:
        model = f"unusable ({exc.message})"
    return sources, model


def _samples(store: Store) -> list[dict[str, Any]]:
    """Each tracked sample's state and where its latest report is ("report" is the state of
    the completion hook, which is "done" also when there was nothing to report)."""
    own = set(store.sample_names())
    out = []
    for r in store.sample_state_rows():
        latest = store.latest_report(r.name) if r.name in own else None
        out.append({
            "sample": r.name,
            "state": ("complete" if r.completed_at else "closed" if r.closed_at else "open"),
            "close_reason": r.close_reason, "report": r.hook_state,
            "report_error": r.hook_error, "has_images": r.name in own,
            "report_version": latest.version if latest else None,
            "report_html": latest.html_path if latest else None,
            "report_pdf": latest.pdf_path if latest else None,
        })
    return out


def _report_text(smp: dict[str, Any]) -> str:
    """Where the sample's latest report is, or why there is none."""
    failed = (f"report FAILED: {smp['report_error']}; "
              if smp["report"] == "failed" else "")
    if smp["report_version"] is not None:
        files = ", ".join(f for f in (smp["report_html"], smp["report_pdf"]) if f)
        return f"{failed}report version {smp['report_version']}: {files}"
    why = (" (its files duplicate other samples' files)"
           if smp["state"] == "complete" and not smp["has_images"] else "")
    return f"{failed}no report yet{why}"


def collect_status(settings: Settings, store: Store) -> dict[str, Any]:
    """What `chromowatch status` shows, from the database (and the daemon's last heartbeat)."""
    now = time.time()
    ledger = Ledger(store, settings.daemon)
    counts = ledger.counts()
    files_1m, crops_1m = ledger.finished_since(now - 60)
    files_15m, crops_15m = ledger.finished_since(now - 900)
    state = store.daemon_state_read()
    running = _running(settings, state, now)
    if running and state is not None:
        info: dict[str, Any] = json.loads(state.info)
        sources, model = info.get("sources", []), info.get("model_version")
        rescoring = info.get("rescoring")
    else:
        sources, model = _offline_view(settings)
        rescoring = None
    retrain = store.job_row(RETRAIN_JOB)
    samples = _samples(store)
    problems = [
        {"id": r.id, "path": r.path, "state": r.state, "attempts": r.attempts,
         "error": r.last_error}
        for r in ledger.rows(["failed", "quarantined"], limit=50)
    ]
    return {
        "daemon": {
            "running": running,
            "pid": state.pid if state else None,
            "started_at": state.started_at if state else None,
            "heartbeat_at": state.heartbeat_at if state else None,
            "stopped_at": state.stopped_at if state else None,
        },
        "files": counts,
        "backlog": sum(counts[s] for s in BACKLOG_STATES),
        "throughput": {
            "files_per_s_1m": files_1m / 60, "crops_per_s_1m": crops_1m / 60,
            "files_per_s_15m": files_15m / 900, "crops_per_s_15m": crops_15m / 900,
        },
        "model": model,
        "rescoring": rescoring,
        "sources": sources,
        "samples": samples,
        "retrain": dataclasses.asdict(retrain) if retrain else None,
        "problems": problems,
    }


def _ago(t: float | None) -> str:
    return f"{time.time() - t:.0f} s ago" if t else "never"


def _daemon_line(d: dict[str, Any]) -> str:
    if d["running"]:
        return f"daemon:     running (pid {d['pid']}, heartbeat {_ago(d['heartbeat_at'])})"
    if d["pid"]:
        return f"daemon:     NOT running (last heartbeat {_ago(d['heartbeat_at'])})"
    return "daemon:     never ran on this database"


def format_status(st: dict[str, Any]) -> str:
    lines = [_daemon_line(st["daemon"])]
    files = st["files"]
    lines.append("files:      " + ", ".join(f"{k} {v}" for k, v in files.items()))
    t = st["throughput"]
    lines.append(f"backlog:    {st['backlog']}")
    lines.append(f"throughput: {t['files_per_s_1m']:.2f} files/s, {t['crops_per_s_1m']:.1f} "
                 f"crops/s (last minute); {t['files_per_s_15m']:.2f} files/s (15 min)")
    lines.append(f"model:      {st['model'] or 'none installed'}")
    if st.get("rescoring"):
        r = st["rescoring"]
        lines.append(f"rescoring:  stored crops classified again with {r['model']}: "
                     f"{r['scored']} so far")
    for src in st["sources"]:
        state = "online" if src["online"] else f"OFFLINE ({src['problem']})"
        lines.append(f"source:     {src['root']}: {state}")
    for smp in st["samples"]:
        extra = f" ({smp['close_reason']})" if smp["close_reason"] else ""
        lines.append(f"sample:     {smp['sample']}: {smp['state']}{extra}, "
                     f"{_report_text(smp)}")
    r = st["retrain"]
    if r:
        err = f": {r['last_error']}" if r["last_error"] else ""
        lines.append(f"retrain:    last {r['last_status']} {_ago(r['last_finished_at'])}, "
                     f"last success {_ago(r['last_success_at'])}{err}")
    for p in st["problems"]:
        lines.append(f"{p['state']:<11} file {p['id']} {p['path']} (attempts {p['attempts']}): "
                     f"{p['error']}")
    return "\n".join(lines)


def print_completion(settings: Settings, store: Store, model_version: str | None,
                     out: TextIO) -> int:
    """What `run --until-complete` prints when every sample is complete; its exit code
    (3 when files were quarantined, else 0)."""
    names = [r.name for r in store.sample_state_rows()]
    known = set(store.sample_names())
    rows = [c for c in store.sample_counts(None) if c.sample in names and c.sample in known]
    quarantined = Ledger(store, settings.daemon).rows(["quarantined"])
    print(f"all samples complete ({len(names)}); model {model_version}", file=out)
    if rows:
        print(format_counts_table(rows), file=out)
    if quarantined:
        print(f"\n{len(quarantined)} file(s) quarantined (see `chromowatch status`):", file=out)
        for r in quarantined[:20]:
            print(f"  {r.path}: {r.last_error}", file=out)
    print(f"\nresults:  {settings.paths.db}  (chromowatch results)", file=out)
    print(f"crops:    {settings.paths.crops}", file=out)
    reports = settings.paths.data / "reports"
    if reports.is_dir():
        print(f"reports:  {reports}", file=out)
    return 3 if quarantined else 0


def print_mail(entries: list[OutboxEntry], out: TextIO) -> None:
    """What became of a run's report mail: sent to whom, or why not and where it waits."""
    if entries:
        print("", file=out)
    for e in entries:
        if e.status == "sent":
            print(f"mail for {e.sample} sent to {', '.join(e.recipients)}", file=out)
        else:
            why = e.last_error or "not tried yet"
            print(f"mail for {e.sample} not delivered: {why}; it stays in the outbox: "
                  "chromowatch outbox", file=out)
