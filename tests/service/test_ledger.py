"""The ledger's state machine: exactly-once bookkeeping, retries with backoff, recovery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chromowatch.service.ledger import Candidate, Ledger, backoff_s
from chromowatch.settings import DaemonSettings
from chromowatch.store import Store

# Watcher, daemon and ledger threads must all stop when a test ends (conftest.py).
pytestmark = pytest.mark.usefixtures("no_thread_leaks")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = Store.open(tmp_path / "db.sqlite3")
    yield Ledger(store, DaemonSettings(max_attempts=3, retry_backoff_s=10,
                                       retry_backoff_max_s=25))
    store.close()


def cand(path: str, size: int = 10, mtime: float = 1.0, sample: str = "s1") -> Candidate:
    return Candidate(path, "/root", sample, None, size, mtime)


def test_file_goes_seen_stable_processing_done_once(ledger: Ledger) -> None:
    assert [c.path for c in ledger.admit([cand("/root/s1/a.png")])] == ["/root/s1/a.png"]
    assert ledger.counts()["seen"] == 1
    assert ledger.stable([("/root/s1/a.png", 10, 1.0)]) == 1
    jobs = ledger.claim(5)
    assert [j.path for j in jobs] == ["/root/s1/a.png"]
    assert ledger.claim(5) == []  # claimed files are not handed out twice
    ledger.done(jobs[0], sha256="ab" * 32, image_id=7, crops=40, duplicate=False)
    counts = ledger.counts()
    assert counts["done"] == 1 and counts["processing"] == 0
    # seen again unchanged (rescan, restart): nothing to do
    assert ledger.admit([cand("/root/s1/a.png")]) == []
    assert ledger.store.ledger_finished_since(0) == (1, 40)


def test_changed_file_is_seen_again(ledger: Ledger) -> None:
    ledger.admit([cand("/p.png")])
    ledger.stable([("/p.png", 10, 1.0)])
    job = ledger.claim(1)[0]
    ledger.done(job, sha256="0" * 64, image_id=1, crops=3, duplicate=False)
    assert [c.path for c in ledger.admit([cand("/p.png", size=11, mtime=2.0)])] == ["/p.png"]
    assert ledger.counts()["seen"] == 1


def test_failures_back_off_then_quarantine(ledger: Ledger) -> None:
    ledger.admit([cand("/bad.png")])
    ledger.stable([("/bad.png", 10, 1.0)])
    job = ledger.claim(1)[0]
    assert ledger.failed(job, "corrupt PNG") == "failed"
    row = ledger.store.ledger_lookup(["/bad.png"])["/bad.png"]
    assert row.attempts == 1 and row.last_error == "corrupt PNG"
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - time.time() == pytest.approx(10, abs=2)
    assert ledger.claim(1) == []  # not due yet
    ledger.store.ledger_mark_failed("/bad.png", state="failed", error="corrupt PNG", attempts=1,
                                    next_attempt_at=time.time() - 1, now=time.time())
    job = ledger.claim(1)[0]
    assert job.attempts == 1
    assert ledger.failed(job, "corrupt PNG") == "failed"
    ledger.store.ledger_mark_failed("/bad.png", state="failed", error="corrupt PNG", attempts=2,
                                    next_attempt_at=time.time() - 1, now=time.time())
    job = ledger.claim(1)[0]
    assert ledger.failed(job, "corrupt PNG") == "quarantined"
    row = ledger.store.ledger_lookup(["/bad.png"])["/bad.png"]
    assert row.state == "quarantined" and row.attempts == 3
    # the failure is visible in the results too
    assert ledger.store.sample_counts("s1")[0].failed_images == 1
    # retry puts it back, with its attempts reset
    assert ledger.retry(["/bad.png"]) == 1
    assert ledger.claim(1)[0].attempts == 0


def test_offline_failure_does_not_use_an_attempt(ledger: Ledger) -> None:
    ledger.admit([cand("/x.png")])
    ledger.stable([("/x.png", 10, 1.0)])
    job = ledger.claim(1)[0]
    ledger.failed(job, "the folder is offline", count=False)
    assert ledger.store.ledger_lookup(["/x.png"])["/x.png"].attempts == 0


def test_backoff_doubles_and_is_capped() -> None:
    s = DaemonSettings(retry_backoff_s=10, retry_backoff_max_s=25)
    assert [backoff_s(n, s) for n in (1, 2, 3, 4)] == [10, 20, 25, 25]


def test_recover_puts_files_in_flight_back(ledger: Ledger) -> None:
    ledger.admit([cand("/a.png"), cand("/b.png")])
    ledger.stable([("/a.png", 10, 1.0), ("/b.png", 10, 1.0)])
    assert len(ledger.claim(2)) == 2
    assert ledger.recover() == 2
    assert ledger.counts()["stable"] == 2
    assert [j.path for j in ledger.claim(5)] == ["/a.png", "/b.png"]


def test_vanished_files_are_forgotten_but_done_ones_kept(ledger: Ledger) -> None:
    ledger.admit([cand("/a.png"), cand("/b.png")])
    ledger.stable([("/b.png", 10, 1.0)])
    job = ledger.claim(1)[0]
    ledger.done(job, sha256="1" * 64, image_id=1, crops=1, duplicate=False)
    assert ledger.forget(["/a.png", "/b.png"]) == 1
    assert set(ledger.store.ledger_lookup(["/a.png", "/b.png"])) == {"/b.png"}


def test_quarantine_on_sight_and_sample_close(ledger: Ledger) -> None:
    ledger.quarantine_on_sight(cand("/link.png"), "symbolic link outside")
    assert ledger.counts()["quarantined"] == 1
    ledger.admit([cand("/s1/a.png")])
    assert ledger.close_sample("s1", "marker") is True
    assert ledger.close_sample("s1", "marker") is False
    row = ledger.store.sample_state_rows()[0]
    assert row.name == "s1" and row.close_reason == "marker"
