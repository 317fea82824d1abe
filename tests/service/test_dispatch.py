"""The daemon's dispatcher, in process, with a pool that only records what it is given."""

from __future__ import annotations

import hashlib
from pathlib import Path

from chromowatch.service.daemon import Daemon
from chromowatch.service.ledger import Candidate
from chromowatch.service.workers import Task, TaskResult
from chromowatch.settings import Settings
from chromowatch.store import ImageRow


class RecordingPool:
    """Stands in for WorkerPool: one idle worker that never runs anything."""

    def __init__(self) -> None:
        self.submitted: list[Task] = []
        self.size = 1

    def idle(self) -> int:
        return 1

    def submit(self, task: Task) -> None:
        self.submitted.append(task)

    def collect(self, timeout: float) -> list[TaskResult]:
        return []


def _daemon(tmp_path: Path) -> tuple[Daemon, RecordingPool]:
    d = Daemon(Settings(paths={"data_dir": str(tmp_path / "data")}))  # type: ignore[arg-type]
    pool = RecordingPool()
    d.pool = pool  # type: ignore[assignment]
    d.model.ensemble = object()  # type: ignore[assignment]  # anything: nothing is classified
    return d, pool


def _stable(d: Daemon, path: Path) -> None:
    st = path.stat()
    ledger = d._ledger()
    ledger.admit([Candidate(str(path), str(path.parent.parent), "S1", None, st.st_size,
                            st.st_mtime)])
    ledger.stable([(str(path), st.st_size, st.st_mtime)])


def test_a_copy_of_stored_content_is_never_prepared(tmp_path: Path) -> None:
    """A duplicate is recognised by its hash before a worker segments and the ensemble
    classifies it (90 s with 30 models on a CPU, for nothing)."""
    inbox = tmp_path / "inbox" / "S1"
    inbox.mkdir(parents=True)
    content = b"\x89PNG\r\n\x1a\n pretend spread"
    sha = hashlib.sha256(content).hexdigest()
    d, pool = _daemon(tmp_path)
    try:
        store = d.stores.get()
        image_id = store.save_image(ImageRow(path="/elsewhere/a.png", sample="S0", sha256=sha,
                                             size=len(content), width=10, height=10), [])
        (inbox / "copy.png").write_bytes(content)
        (inbox / "new.png").write_bytes(content + b"other")
        _stable(d, inbox / "copy.png")
        _stable(d, inbox / "new.png")
        d._dispatch_step()
        assert [Path(t.path).name for t in pool.submitted] == ["new.png"]
        row = d._ledger().lookup([str(inbox / "copy.png")])[str(inbox / "copy.png")]
        assert (row.state, row.duplicate, row.image_id, row.sha256) == ("done", 1, image_id, sha)
        assert d.stats.outcomes["duplicate"] == 1
    finally:
        d.stores.close_mine()
