"""SQLite store: the only module that writes SQL.

WAL journal, foreign keys and a busy timeout; the schema is versioned (PRAGMA user_version)
and migrated forward at open. One image's results go in one transaction, so after a crash an
image is either fully stored or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from chromowatch.errors import StoreError, UsageError
from chromowatch.records import CLASS_NAMES, BBox, Prediction
from chromowatch.store.reviewing import ReviewingMixin, write_label
from chromowatch.store.rows import (
    CropToScore,
    CurrentLabel,
    DaemonState,
    ImageCrop,
    ImageRow,
    JobRun,
    KnownImage,
    LabelEntry,
    LedgerRow,
    OutboxEntry,
    OutboxMail,
    PredictedCrop,
    QueuedMail,
    ReportVersion,
    ReportVersionExists,
    ReviewRow,
    SampleContents,
    SampleCounts,
    SampleCrop,
    SampleImage,
    SampleState,
    StoredCrop,
    TrainingRun,
    fingerprint_labels,
    recipients_of,
)
from chromowatch.store.schema import MIGRATIONS

# The end of a query over one sample's finished crops (a name parameter): each crop's current
# label and review reason, its image and its latest prediction (aliases c, i, s, p), for the
# columns the caller selects before it.
_SAMPLE_CROPS = """
       (SELECT l.class FROM labels l WHERE l.crop_id = c.id
          AND l.superseded_at IS NULL) AS confirmed,
       (SELECT q.reason FROM review_queue q WHERE q.crop_id = c.id) AS review
FROM crops c
JOIN images i ON i.id = c.image_id
JOIN samples s ON s.id = i.sample_id
LEFT JOIN predictions p ON p.id = (SELECT MAX(id) FROM predictions WHERE crop_id = c.id)
WHERE s.name = ? AND i.status = 'done'
"""

class Store(ReviewingMixin):
    """A connection to the chromowatch database; open with `Store.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the database {path}: {exc}",
                hint="check paths.database and that its folder is writable",
            ) from None
        store = cls(conn, path)
        store._migrate()
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the database {self.path} has schema version {current}, newer than this "
                f"chromowatch knows ({len(MIGRATIONS)})",
                hint="upgrade chromowatch, or point paths.database at another file",
            )
        for version in range(current, len(MIGRATIONS)):
            with self.transaction() as conn:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    # -- samples and images -------------------------------------------------------------

    def _sample_id(self, conn: sqlite3.Connection, name: str) -> int:
        conn.execute(
            "INSERT INTO samples(name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
            (name, time.time()),
        )
        return int(conn.execute("SELECT id FROM samples WHERE name = ?", (name,)).fetchone()[0])

    def find_image(self, sha256: str) -> KnownImage | None:
        """A finished image with this content, whatever its name was."""
        row = self._conn.execute(
            "SELECT images.id, images.path, samples.name AS sample FROM images "
            "JOIN samples ON samples.id = images.sample_id "
            "WHERE sha256 = ? AND status = 'done'",
            (sha256,),
        ).fetchone()
        if row is None:
            return None
        return KnownImage(id=int(row["id"]), path=str(row["path"]), sample=str(row["sample"]))

    def record_failure(
        self, *, path: str, sample: str, error: str, size: int | None, sha256: str | None
    ) -> None:
        """Remember that a file could not be processed, and why (one row per path)."""
        with self.transaction() as conn:
            sid = self._sample_id(conn, sample)
            conn.execute(
                "DELETE FROM images WHERE path = ? AND status = 'failed'", (path,)
            )
            conn.execute(
                "INSERT INTO images(path, size, sha256, sample_id, status, error, created_at) "
                "VALUES (?, ?, ?, ?, 'failed', ?, ?) "
                "ON CONFLICT(sha256) DO UPDATE SET error = excluded.error "
                "WHERE images.status = 'failed'",
                (path, size, sha256, sid, error, time.time()),
            )

    def save_image(self, image: ImageRow, crops: Sequence[StoredCrop]) -> int:
        """Store one image with all its crops and predictions atomically; returns its id."""
        return self.save_images([(image, crops)])[0]

    def save_images(self, images: Sequence[tuple[ImageRow, Sequence[StoredCrop]]],
                    predictions: Sequence[tuple[int, Prediction]] = ()) -> list[int]:
        """Store several images with their crops and predictions, and more predictions of
        crops already stored (see add_predictions), all in one transaction: all or nothing.
        Returns the image ids in order."""
        now = time.time()
        ids = []
        with self.transaction() as conn:
            for image, crops in images:
                image_id = self._insert_done_image(conn, image, now)
                for crop in crops:
                    b = crop.bbox
                    ccur = conn.execute(
                        "INSERT INTO crops(image_id, idx, x, y, w, h, metaphase, file, flags, "
                        "pixels_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (image_id, crop.index, b.x, b.y, b.w, b.h, crop.metaphase, crop.file,
                         ",".join(sorted(crop.flags)), crop.pixels_sha256),
                    )
                    self._insert_prediction(conn, int(ccur.lastrowid or 0), crop.prediction,
                                            now)
                ids.append(image_id)
            for crop_id, prediction in predictions:
                self._insert_prediction(conn, crop_id, prediction, now)
        return ids

    @staticmethod
    def _insert_prediction(conn: sqlite3.Connection, crop_id: int, p: Prediction,
                           now: float) -> None:
        """A crop's prediction by p's model; one made by that model before is replaced, so
        this one is the crop's latest (the prediction that counts is the latest)."""
        conn.execute("DELETE FROM predictions WHERE crop_id = ? AND model_version = ?",
                     (crop_id, p.model_version))
        conn.execute(
            "INSERT INTO predictions(crop_id, model_version, label, p_a, p_b, p_c, "
            "member_probs, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (crop_id, p.model_version, p.label, p.probs["A"], p.probs["B"], p.probs["C"],
             json.dumps(p.member_probs), now),
        )

    def add_predictions(self, items: Sequence[tuple[int, Prediction]]) -> None:
        """New predictions of stored crops (re-scoring), in one transaction; each becomes its
        crop's latest, the one results and reports count."""
        self.save_images([], items)

    def crops_to_score(self, version: str, samples: Sequence[str] | None, *, after_id: int,
                       limit: int) -> list[CropToScore]:
        """Crops of finished images (of these samples; None: all) whose latest prediction is
        not by `version` (or that have none), in id order after `after_id`."""
        where = ""
        args: list[object] = [version, after_id]
        if samples is not None:
            where = f"AND s.name IN ({','.join('?' * len(samples))}) "
            args += list(samples)
        rows = self._conn.execute(
            "SELECT c.id, c.file, s.name AS sample FROM crops c "
            "JOIN images i ON i.id = c.image_id JOIN samples s ON s.id = i.sample_id "
            "WHERE i.status = 'done' AND COALESCE((SELECT p.model_version FROM predictions p "
            "WHERE p.crop_id = c.id ORDER BY p.id DESC LIMIT 1), '') != ? AND c.id > ? "
            + where + "ORDER BY c.id LIMIT ?",
            (*args, limit),
        )
        return [CropToScore(**row) for row in rows]

    def closed_samples(self) -> set[str]:
        """Samples closed for good: by a marker, a quiet period or `sample close` (the
        daemon's sample_state), or completed (samples.closed_at)."""
        return {str(r[0]) for r in self._conn.execute(
            "SELECT name FROM samples WHERE closed_at IS NOT NULL UNION "
            "SELECT name FROM sample_state WHERE closed_at IS NOT NULL")}

    def _insert_done_image(self, conn: sqlite3.Connection, image: ImageRow, now: float) -> int:
        """A processed image row (replacing an earlier failure of the same file); its id."""
        sid = self._sample_id(conn, image.sample)
        conn.execute("DELETE FROM images WHERE status = 'failed' AND (path = ? OR sha256 = ?)",
                     (image.path, image.sha256))
        cur = conn.execute(
            "INSERT INTO images(path, size, sha256, sample_id, metaphase, status, width, "
            "height, metaphases, note, created_at, processed_at) "
            "VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, ?)",
            (image.path, image.size, image.sha256, sid, image.metaphase_label, image.width,
             image.height, image.metaphases, image.note, now, now),
        )
        return int(cur.lastrowid or 0)

    # -- labels -------------------------------------------------------------------------

    def add_label(self, crop_id: int, cls: str, *, source: str, who: str) -> None:
        """Confirm a crop's class; the previous label is kept as history."""
        if cls not in CLASS_NAMES:
            raise StoreError(f"unknown class {cls!r}", hint="use A, B or C")
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE labels SET superseded_at = ? WHERE crop_id = ? AND superseded_at IS NULL",
                (now, crop_id),
            )
            conn.execute(
                "INSERT INTO labels(crop_id, class, source, who, created_at) VALUES (?,?,?,?,?)",
                (crop_id, cls, source, who, now),
            )

    def label_history(self, crop_id: int) -> list[LabelEntry]:
        """Every label a crop had, oldest first."""
        return [LabelEntry.from_row(r) for r in self._conn.execute(
            "SELECT * FROM labels WHERE crop_id = ? ORDER BY id", (crop_id,)
        )]

    # -- queries ------------------------------------------------------------------------

    def image_crops(self, image_id: int) -> list[PredictedCrop]:
        """Crops of one image with their latest prediction."""
        return [PredictedCrop.from_row(r) for r in self._conn.execute(
            "SELECT c.*, p.label, p.p_a, p.p_b, p.p_c, p.model_version FROM crops c "
            "JOIN predictions p ON p.id = (SELECT MAX(id) FROM predictions WHERE crop_id = c.id) "
            "WHERE c.image_id = ? ORDER BY c.idx",
            (image_id,),
        )]

    def sample_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM samples ORDER BY name")]

    def sample_counts(self, sample: str | None = None) -> list[SampleCounts]:
        """A/B/C counts per sample: a confirmed label wins over the latest prediction;
        flagged crops count only once a person confirmed them."""
        names = [sample] if sample is not None else self.sample_names()
        out: list[SampleCounts] = []
        for name in names:
            sid = self._require_sample(name)
            img = self._conn.execute(
                "SELECT SUM(status = 'done'), SUM(status = 'failed') FROM images "
                "WHERE sample_id = ?",
                (sid,),
            ).fetchone()
            counts = dict.fromkeys(CLASS_NAMES, 0)
            crops = excluded = 0
            for r in self._conn.execute(
                """
                SELECT c.flags,
                       (SELECT class FROM labels l WHERE l.crop_id = c.id
                          AND l.superseded_at IS NULL) AS confirmed,
                       (SELECT label FROM predictions p WHERE p.crop_id = c.id
                          ORDER BY p.id DESC LIMIT 1) AS predicted
                FROM crops c JOIN images i ON i.id = c.image_id
                WHERE i.sample_id = ? AND i.status = 'done'
                """,
                (sid,),
            ):
                crops += 1
                if r["confirmed"]:
                    counts[r["confirmed"]] += 1
                elif r["flags"] or not r["predicted"]:
                    excluded += 1
                else:
                    counts[r["predicted"]] += 1
            out.append(
                SampleCounts(
                    sample=name,
                    images=int(img[0] or 0),
                    failed_images=int(img[1] or 0),
                    crops=crops,
                    excluded=excluded,
                    counts=counts,
                    models=self._sample_models(sid),
                )
            )
        return out

    def _sample_models(self, sample_id: int) -> dict[str, int]:
        """Model version -> crops whose latest prediction it made, in one sample."""
        rows = self._conn.execute(
            """
            SELECT p.model_version, COUNT(*) FROM crops c
            JOIN images i ON i.id = c.image_id
            JOIN predictions p ON p.id = (SELECT MAX(q.id) FROM predictions q
                                          WHERE q.crop_id = c.id)
            WHERE i.sample_id = ? AND i.status = 'done'
            GROUP BY p.model_version ORDER BY p.model_version
            """,
            (sample_id,),
        )
        return {str(version): int(n) for version, n in rows}

    # -- removing and renaming samples (`chromowatch sample`) -------------------------------

    def sample_contents(self, sample: str) -> SampleContents:
        """What a sample holds, counted (what `sample delete` would remove)."""
        sid = self._require_sample(sample)
        one = self._conn.execute
        crops = "SELECT c.id FROM crops c JOIN images i ON i.id = c.image_id WHERE i.sample_id = ?"
        reports = "SELECT id FROM reports WHERE sample_id = ?"
        return SampleContents(
            sample=sample,
            images=one("SELECT COUNT(*) FROM images WHERE sample_id = ? AND status = 'done'",
                       (sid,)).fetchone()[0],
            failed_images=one("SELECT COUNT(*) FROM images WHERE sample_id = ? "
                              "AND status = 'failed'", (sid,)).fetchone()[0],
            crops=one(f"SELECT COUNT(*) FROM ({crops})", (sid,)).fetchone()[0],
            predictions=one(f"SELECT COUNT(*) FROM predictions WHERE crop_id IN ({crops})",
                            (sid,)).fetchone()[0],
            labels=one(f"SELECT COUNT(*) FROM labels WHERE superseded_at IS NULL "
                       f"AND crop_id IN ({crops})", (sid,)).fetchone()[0],
            reports=one(f"SELECT COUNT(*) FROM ({reports})", (sid,)).fetchone()[0],
            mails=one(f"SELECT COUNT(*) FROM outbox WHERE report_id IN ({reports})",
                      (sid,)).fetchone()[0],
            crop_files=tuple(r[0] for r in one(
                "SELECT c.file FROM crops c JOIN images i ON i.id = c.image_id "
                "WHERE i.sample_id = ? ORDER BY c.id", (sid,))),
        )

    def delete_sample(self, sample: str) -> SampleContents:
        """Remove a sample and everything recorded of it, in one transaction: images, crops,
        predictions, labels (with history), report versions, their mail, its completion
        state and the daemon's ledger rows (a file still in a watched folder is processed
        again). The files are the caller's to remove; returns what was deleted."""
        contents = self.sample_contents(sample)
        with self.transaction() as conn:
            sid = self._require_sample(sample)
            conn.execute("DELETE FROM outbox WHERE report_id IN "
                         "(SELECT id FROM reports WHERE sample_id = ?)", (sid,))
            conn.execute("DELETE FROM reports WHERE sample_id = ?", (sid,))
            conn.execute("DELETE FROM images WHERE sample_id = ?", (sid,))  # crops cascade
            conn.execute("DELETE FROM samples WHERE id = ?", (sid,))
            conn.execute("DELETE FROM sample_state WHERE name = ?", (sample,))
            conn.execute("DELETE FROM watched_files WHERE sample = ?", (sample,))
        return contents

    def rename_sample(self, old: str, new: str) -> None:
        """Give a sample another name, everywhere it is recorded; an existing name is
        refused (two samples are never merged by accident)."""
        with self.transaction() as conn:
            sid = self._require_sample(old)
            taken = conn.execute(
                "SELECT 1 FROM samples WHERE name = ? UNION "
                "SELECT 1 FROM sample_state WHERE name = ?", (new, new)).fetchone()
            if taken is not None:
                raise UsageError(f"a sample named {new!r} already exists",
                                 hint="choose another name, or delete that sample first")
            conn.execute("UPDATE samples SET name = ? WHERE id = ?", (new, sid))
            conn.execute("UPDATE sample_state SET name = ? WHERE name = ?", (new, old))
            conn.execute("UPDATE watched_files SET sample = ? WHERE sample = ?", (new, old))

    # -- daemon: ledger of watched files (logic in ledger.py) -----------------------------

    def ledger_lookup(self, paths: Sequence[str]) -> dict[str, LedgerRow]:
        """Ledger rows of these paths (those that have one), in chunks SQLite accepts."""
        out: dict[str, LedgerRow] = {}
        for start in range(0, len(paths), 500):
            chunk = list(paths[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT * FROM watched_files WHERE path IN ({marks})", chunk
            ):
                out[row["path"]] = LedgerRow(**row)
        return out

    def ledger_add_seen(
        self, items: Sequence[tuple[str, str, str, str | None, int, float]], now: float
    ) -> None:
        """(path, root, sample, metaphase, size, mtime): new rows, or rows reset to 'seen'."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO watched_files(path, root, sample, metaphase, size, mtime, state, "
                "first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'seen', ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET root = excluded.root, sample = excluded.sample, "
                "metaphase = excluded.metaphase, size = excluded.size, mtime = excluded.mtime, "
                "state = 'seen', attempts = 0, last_error = NULL, next_attempt_at = NULL, "
                "sha256 = NULL, image_id = NULL, duplicate = 0, crops = NULL, "
                "stable_at = NULL, started_at = NULL, finished_at = NULL, "
                "updated_at = excluded.updated_at",
                [(*item, now, now) for item in items],
            )

    def ledger_mark_stable(self, items: Sequence[tuple[str, int, float]], now: float) -> int:
        """(path, size, mtime) of files that stopped changing: 'seen' -> 'stable'."""
        with self.transaction() as conn:
            cur = conn.executemany(
                "UPDATE watched_files SET state = 'stable', size = ?, mtime = ?, stable_at = ?, "
                "updated_at = ? WHERE path = ? AND state = 'seen'",
                [(size, mtime, now, now, path) for path, size, mtime in items],
            )
            return cur.rowcount

    def ledger_claim(self, limit: int, now: float) -> list[LedgerRow]:
        """Up to `limit` files to process (retries that are due first): -> 'processing'."""
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM watched_files WHERE state = 'failed' AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, limit),
            ).fetchall()
            if len(rows) < limit:
                rows += conn.execute(
                    "SELECT * FROM watched_files WHERE state = 'stable' ORDER BY id LIMIT ?",
                    (limit - len(rows),),
                ).fetchall()
            conn.executemany(
                "UPDATE watched_files SET state = 'processing', started_at = ?, updated_at = ? "
                "WHERE id = ?",
                [(now, now, row["id"]) for row in rows],
            )
        return [LedgerRow(**row) for row in rows]

    def ledger_mark_done(
        self, path: str, *, sha256: str, image_id: int, crops: int, duplicate: bool, now: float
    ) -> None:
        """Called only after the image's results are committed (or found already stored)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE watched_files SET state = 'done', sha256 = ?, image_id = ?, crops = ?, "
                "duplicate = ?, last_error = NULL, next_attempt_at = NULL, finished_at = ?, "
                "updated_at = ? WHERE path = ?",
                (sha256, image_id, crops, int(duplicate), now, now, path),
            )

    def ledger_mark_failed(
        self,
        path: str,
        *,
        state: str,
        error: str,
        attempts: int,
        next_attempt_at: float | None,
        now: float,
    ) -> None:
        """A failed try: 'failed' (retried at next_attempt_at) or 'quarantined' (given up)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE watched_files SET state = ?, last_error = ?, attempts = ?, "
                "next_attempt_at = ?, finished_at = ?, updated_at = ? WHERE path = ?",
                (state, error, attempts, next_attempt_at, now, now, path),
            )

    def ledger_quarantine_new(
        self, path: str, root: str, sample: str, error: str, now: float
    ) -> None:
        """A file refused on sight (e.g. a link leading outside the watch root)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO watched_files(path, root, sample, state, last_error, first_seen_at, "
                "finished_at, updated_at) VALUES (?, ?, ?, 'quarantined', ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET state = 'quarantined', "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                (path, root, sample, error, now, now, now),
            )

    def ledger_release(self, paths: Sequence[str] | None, now: float) -> int:
        """Files in flight back to 'stable' (all of them when paths is None)."""
        with self.transaction() as conn:
            if paths is None:
                cur = conn.execute(
                    "UPDATE watched_files SET state = 'stable', started_at = NULL, updated_at = ? "
                    "WHERE state = 'processing'",
                    (now,),
                )
                return cur.rowcount
            cur = conn.executemany(
                "UPDATE watched_files SET state = 'stable', started_at = NULL, updated_at = ? "
                "WHERE path = ? AND state = 'processing'",
                [(now, p) for p in paths],
            )
            return cur.rowcount

    def ledger_forget(self, paths: Sequence[str]) -> int:
        """Drop rows of files that vanished before they were processed."""
        with self.transaction() as conn:
            cur = conn.executemany(
                "DELETE FROM watched_files "
                "WHERE path = ? AND state IN ('seen', 'stable', 'failed')",
                [(p,) for p in paths],
            )
            return cur.rowcount

    def ledger_retry(self, paths: Sequence[str] | None, now: float) -> int:
        """Failed or quarantined files (all when paths is None) back to 'stable', attempts 0."""
        sql = (
            "UPDATE watched_files SET state = 'stable', attempts = 0, last_error = NULL, "
            "next_attempt_at = NULL, stable_at = ?, updated_at = ? "
            "WHERE state IN ('failed', 'quarantined')"
        )
        with self.transaction() as conn:
            if paths is None:
                return conn.execute(sql, (now, now)).rowcount
            return conn.executemany(sql + " AND path = ?", [(now, now, p) for p in paths]).rowcount

    def ledger_counts(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self._conn.execute(
                "SELECT state, COUNT(*) FROM watched_files GROUP BY state"
            )
        }

    def ledger_finished_since(self, since: float) -> tuple[int, int]:
        """(files, crops) finished as done since this time."""
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(crops), 0) FROM watched_files "
            "WHERE finished_at >= ? AND state = 'done'",
            (since,),
        ).fetchone()
        return int(row[0]), int(row[1])

    def ledger_rows(self, states: Sequence[str], limit: int = 1000) -> list[LedgerRow]:
        marks = ",".join("?" * len(states))
        return [LedgerRow(**row) for row in self._conn.execute(
            f"SELECT * FROM watched_files WHERE state IN ({marks}) ORDER BY id LIMIT ?",
            (*states, limit),
        )]

    def ledger_open_samples(self) -> dict[str, int]:
        """Samples with files not yet finished (done or quarantined), and how many."""
        return {
            r[0]: int(r[1])
            for r in self._conn.execute(
                "SELECT sample, COUNT(*) FROM watched_files "
                "WHERE state NOT IN ('done', 'quarantined') GROUP BY sample"
            )
        }

    # -- daemon: sample completion ------------------------------------------------------

    def sample_state_touch(self, last_file_at: dict[str, float]) -> None:
        """New files arrived for these samples; a completed one is completed again later."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO sample_state(name, last_file_at) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET "
                "last_file_at = MAX(COALESCE(last_file_at, 0), excluded.last_file_at), "
                "completed_at = NULL",
                list(last_file_at.items()),
            )

    def sample_state_close(self, name: str, reason: str, now: float) -> bool:
        """Mark a sample closed (marker, quiet period, by hand); False when it already was."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO sample_state(name, closed_at, close_reason) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET closed_at = excluded.closed_at, "
                "close_reason = excluded.close_reason WHERE sample_state.closed_at IS NULL",
                (name, now, reason),
            )
            return cur.rowcount > 0

    def sample_state_rows(self) -> list[SampleState]:
        return [SampleState(**row)
                for row in self._conn.execute("SELECT * FROM sample_state ORDER BY name")]

    def sample_state_completed(
        self, name: str, *, hook_state: str, hook_error: str | None, now: float
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE sample_state SET completed_at = ?, hook_state = ?, hook_error = ? "
                "WHERE name = ?",
                (now, hook_state, hook_error, name),
            )
            conn.execute("UPDATE samples SET closed_at = ? WHERE name = ?", (now, name))

    # -- daemon: its own state, and scheduled jobs ---------------------------------------

    def daemon_state_write(
        self, *, pid: int, started_at: float, info: str, now: float, stopped: bool = False
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO daemon_state(id, pid, started_at, heartbeat_at, stopped_at, info) "
                "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
                "stopped_at = excluded.stopped_at, info = excluded.info",
                (pid, started_at, now, now if stopped else None, info),
            )

    def daemon_state_read(self) -> DaemonState | None:
        row = self._conn.execute("SELECT * FROM daemon_state WHERE id = 1").fetchone()
        return DaemonState(**row) if row else None

    def job_started(self, name: str, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO job_runs(name, last_started_at, last_status) VALUES (?, ?, 'running') "
                "ON CONFLICT(name) DO UPDATE SET last_started_at = excluded.last_started_at, "
                "last_status = 'running'",
                (name, now),
            )

    def job_finished(self, name: str, *, ok: bool, error: str | None, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE job_runs SET last_finished_at = ?, last_status = ?, last_error = ?, "
                "last_success_at = CASE WHEN ? THEN ? ELSE last_success_at END WHERE name = ?",
                (now, "ok" if ok else "failed", error, ok, now, name),
            )

    def job_row(self, name: str) -> JobRun | None:
        row = self._conn.execute("SELECT * FROM job_runs WHERE name = ?", (name,)).fetchone()
        return JobRun(**row) if row else None

    # -- report data, report versions and the mail outbox ---------------------------------

    def sample_crop_rows(self, sample: str) -> list[SampleCrop]:
        """Every crop of a sample's finished images with its image, latest prediction and
        confirmed label (NULL when none), in image then crop order."""
        self._require_sample(sample)
        rows = self._conn.execute(
            "SELECT c.id, c.image_id, c.idx, c.x, c.y, c.w, c.h, c.metaphase, c.file, c.flags, "
            "i.path AS image_path, p.label AS predicted, p.p_a, p.p_b, p.p_c, p.model_version, "
            "p.id AS pred_id, " + _SAMPLE_CROPS + "ORDER BY c.image_id, c.idx",
            (sample,),
        )
        return [SampleCrop(**row) for row in rows]

    def review_rows(self, sample: str) -> list[ReviewRow]:
        """Every crop of a sample's finished images as the review queue sees it."""
        self._require_sample(sample)
        return [ReviewRow(**row) for row in self._conn.execute(
            "SELECT c.id AS crop_id, c.file, i.path AS image_path, c.x, c.y, c.w, c.h, "
            "i.width AS image_width, i.height AS image_height, c.flags, p.label AS predicted, "
            "p.p_a, p.p_b, p.p_c, p.member_probs, p.model_version, " + _SAMPLE_CROPS +
            "ORDER BY c.id",
            (sample,),
        )]

    def enqueue_review(self, items: Sequence[tuple[int, str, float, str | None]]) -> None:
        """Queue crops for review: (crop id, reason, uncertainty, model version). A crop
        queued once keeps its first reason: an audit crop stays an audit crop."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO review_queue(crop_id, reason, score, model_version, "
                "queued_at) VALUES (?, ?, ?, ?, ?)",
                [(crop_id, reason, score, version, now) for crop_id, reason, score, version
                 in items],
            )

    def sample_images(self, sample: str) -> list[SampleImage]:
        """A sample's images (done and failed) with their crop counts, oldest first."""
        self._require_sample(sample)
        rows = self._conn.execute(
            "SELECT i.id, i.path, i.status, i.error, i.width, i.height, i.metaphases, i.note, "
            "i.processed_at, (SELECT COUNT(*) FROM crops c WHERE c.image_id = i.id) AS crops "
            "FROM images i JOIN samples s ON s.id = i.sample_id WHERE s.name = ? "
            "ORDER BY i.id",
            (sample,),
        )
        return [SampleImage(**row) for row in rows]

    def _require_sample(self, sample: str) -> int:
        """The sample's id; an unknown name is the user's mistake (a usage error, exit 2),
        answered with the names that would have worked."""
        row = self._conn.execute("SELECT id FROM samples WHERE name = ?", (sample,)).fetchone()
        if row is None:
            names = self.sample_names()
            shown = ", ".join(names[:20]) + (f" (and {len(names) - 20} more)"
                                             if len(names) > 20 else "")
            raise UsageError(
                f"no sample named {sample!r} in {self.path}",
                hint=f"known samples: {shown}" if names else
                "no sample is stored yet: chromowatch process PATH --sample NAME",
            )
        return int(row[0])

    def latest_report(self, sample: str) -> ReportVersion | None:
        """The newest recorded report version of a sample, or None."""
        row = self._conn.execute(
            "SELECT r.id, r.sample_id, r.version, r.fingerprint, r.model, r.control, "
            "r.html_path, r.pdf_path, r.created_at FROM reports r "
            "JOIN samples s ON s.id = r.sample_id "
            "WHERE s.name = ? ORDER BY r.version DESC LIMIT 1",
            (sample,),
        ).fetchone()
        return None if row is None else ReportVersion(**row)

    def reported_samples(self) -> list[str]:
        """Samples that have at least one recorded report version."""
        return [r[0] for r in self._conn.execute(
            "SELECT DISTINCT s.name FROM reports r JOIN samples s ON s.id = r.sample_id "
            "ORDER BY s.name")]

    def record_report(
        self,
        *,
        sample: str,
        version: int,
        fingerprint: str,
        model: str | None,
        control: str | None,
        html_path: str | None,
        pdf_path: str | None,
        mail: OutboxMail | None,
    ) -> int:
        """Record a rendered report version and, in the same transaction, queue its mail;
        an existing (sample, version) raises ReportVersionExists. Returns the report id."""
        now = time.time()
        with self.transaction() as conn:
            sid = self._sample_id(conn, sample)
            try:
                cur = conn.execute(
                    "INSERT INTO reports(sample_id, version, fingerprint, model, control, "
                    "html_path, pdf_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sid, version, fingerprint, model, control, html_path, pdf_path, now),
                )
            except sqlite3.IntegrityError as exc:
                raise ReportVersionExists(
                    f"report version {version} of {sample!r} is already recorded ({exc})",
                    hint="another process rendered it first; nothing is lost",
                ) from exc
            report_id = int(cur.lastrowid or 0)
            if mail is not None:
                conn.execute(
                    "INSERT INTO outbox(report_id, sender, recipients, subject, message, status, "
                    "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (report_id, mail.sender, json.dumps(list(mail.recipients)), mail.subject,
                     mail.message, now, now),
                )
        return report_id

    def due_mail(self, now: float, *, stale_after_s: float = 600.0) -> list[QueuedMail]:
        """Mail to try now: pending and due, or claimed by a sender that died long ago."""
        rows = self._conn.execute(
            "SELECT o.id, s.name AS sample, r.version, o.sender, o.recipients, o.subject, "
            "o.message, o.status, o.attempts FROM outbox o "
            "JOIN reports r ON r.id = o.report_id JOIN samples s ON s.id = r.sample_id "
            "WHERE (o.status = 'pending' AND o.next_attempt_at <= ?) "
            "OR (o.status = 'sending' AND o.claimed_at < ?) ORDER BY o.id",
            (now, now - stale_after_s),
        )
        return [QueuedMail(**{**row, "recipients": recipients_of(row["recipients"]),
                              "message": bytes(row["message"])}) for row in rows]

    def claim_mail(self, mail_id: int, now: float, *, stale_after_s: float = 600.0) -> bool:
        """Mark one mail as being sent; False when another sender got it first."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE outbox SET status = 'sending', claimed_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND (status = 'pending' "
                "OR (status = 'sending' AND claimed_at < ?))",
                (now, mail_id, now - stale_after_s),
            )
            return cur.rowcount == 1

    def mail_sent(self, mail_id: int, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ?, last_error = NULL WHERE id = ?",
                (now, mail_id),
            )

    def mail_retry_later(self, mail_id: int, error: str, next_attempt_at: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status = 'pending', last_error = ?, next_attempt_at = ?, "
                "claimed_at = NULL WHERE id = ?",
                (error, next_attempt_at, mail_id),
            )

    def mail_failed(self, mail_id: int, error: str) -> None:
        """Park a mail the server refused for good; `chromowatch outbox --retry` revives it."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status = 'failed', last_error = ?, claimed_at = NULL "
                "WHERE id = ?",
                (error, mail_id),
            )

    def outbox_rows(self, *, include_sent: bool = True) -> list[OutboxEntry]:
        """The outbox for `chromowatch outbox` (without message bodies)."""
        where = "" if include_sent else "WHERE o.status != 'sent' "
        rows = self._conn.execute(
            "SELECT o.id, s.name AS sample, r.version, o.recipients, o.subject, o.status, "
            "o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.sent_at "
            "FROM outbox o JOIN reports r ON r.id = o.report_id "
            "JOIN samples s ON s.id = r.sample_id " + where + "ORDER BY o.id"
        )
        return [OutboxEntry(**{**row, "recipients": recipients_of(row["recipients"])})
                for row in rows]

    def retry_mail(self, now: float, ids: Sequence[int] | None = None) -> int:
        """Make unsent mail (pending or failed) due now; returns how many."""
        with self.transaction() as conn:
            if ids is None:
                cur = conn.execute(
                    "UPDATE outbox SET status = 'pending', next_attempt_at = ? "
                    "WHERE status IN ('pending', 'failed')",
                    (now,),
                )
            else:
                cur = conn.executemany(
                    "UPDATE outbox SET status = 'pending', next_attempt_at = ? "
                    "WHERE id = ? AND status IN ('pending', 'failed')",
                    [(now, i) for i in ids],
                )
            return cur.rowcount

    # -- labels import and training (chromowatch.training) ---------------------------------

    def save_labelled_image(
        self, image: ImageRow, crops: Sequence[tuple[BBox, str, str]], *, source: str, who: str
    ) -> list[int]:
        """Store an image whose crops come with confirmed labels instead of predictions:
        (bbox, file, class) each, one transaction. Returns the crop ids in order."""
        now = time.time()
        with self.transaction() as conn:
            image_id = self._insert_done_image(conn, image, now)
            return self._insert_labelled_crops(conn, image_id, 0, crops, source, who, now)

    def add_labelled_crops(
        self, image_id: int, crops: Sequence[tuple[BBox, str, str]], *, source: str, who: str
    ) -> list[int]:
        """Append labelled crops (bbox, file, class) to a stored image; returns their ids."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(idx), -1) FROM crops WHERE image_id = ?", (image_id,)
            ).fetchone()
            return self._insert_labelled_crops(conn, image_id, int(row[0]) + 1, crops, source,
                                               who, now)

    def _insert_labelled_crops(
        self,
        conn: sqlite3.Connection,
        image_id: int,
        first_index: int,
        crops: Sequence[tuple[BBox, str, str]],
        source: str,
        who: str,
        now: float,
    ) -> list[int]:
        ids = []
        for offset, (bbox, file, cls) in enumerate(crops):
            if cls not in CLASS_NAMES:
                raise StoreError(f"unknown class {cls!r}", hint="use A, B or C")
            cur = conn.execute(
                "INSERT INTO crops(image_id, idx, x, y, w, h, metaphase, file, flags) "
                "VALUES (?, ?, ?, ?, ?, ?, -1, ?, '')",
                (image_id, first_index + offset, bbox.x, bbox.y, bbox.w, bbox.h, file),
            )
            crop_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO labels(crop_id, class, source, who, created_at) VALUES (?,?,?,?,?)",
                (crop_id, cls, source, who, now),
            )
            ids.append(crop_id)
        return ids

    def crops_without_pixel_hash(self) -> list[tuple[int, str]]:
        """(crop id, file) of crops whose content hash is not known yet."""
        return [(int(r[0]), str(r[1])) for r in self._conn.execute(
            "SELECT id, file FROM crops WHERE pixels_sha256 IS NULL ORDER BY id")]

    def set_pixel_hashes(self, items: Sequence[tuple[int, str]]) -> None:
        """(crop id, sha256 of its pixels; "" for a crop file that cannot be read)."""
        with self.transaction() as conn:
            conn.executemany("UPDATE crops SET pixels_sha256 = ? WHERE id = ?",
                             [(sha, crop_id) for crop_id, sha in items])

    def crops_with_pixels(self, pixels_sha256: str) -> list[int]:
        """Ids of the stored crops with exactly this content."""
        return [int(r[0]) for r in self._conn.execute(
            "SELECT id FROM crops WHERE pixels_sha256 = ? ORDER BY id", (pixels_sha256,))]

    def crops_of_image(self, image_id: int) -> list[ImageCrop]:
        """Every crop of an image (with or without predictions) and its confirmed label."""
        return [ImageCrop.from_row(r) for r in self._conn.execute(
            "SELECT c.*, (SELECT l.class FROM labels l WHERE l.crop_id = c.id "
            "AND l.superseded_at IS NULL) AS confirmed FROM crops c WHERE c.image_id = ? "
            "ORDER BY c.idx",
            (image_id,),
        )]

    def set_labels(self, items: Sequence[tuple[int, str]], *, source: str, who: str,
                   shown: Mapping[int, tuple[str | None, str | None]] | None = None
                   ) -> tuple[int, int]:
        """Confirm many crops' classes in one transaction, keeping history; a crop already
        confirmed as that class is left alone. Unknown crop ids are a StoreError (nothing is
        written). Returns (first labels of crops that had none, labels changed): a user
        must not read "changed" when nothing was there before. `shown` maps a crop id to
        (model version, probabilities JSON) of the prediction the person was shown."""
        now = time.time()
        first = changed = 0
        with self.transaction() as conn:
            for crop_id, cls in items:
                if cls not in CLASS_NAMES:
                    raise StoreError(f"crop {crop_id}: unknown class {cls!r}",
                                     hint="use A, B or C")
                if conn.execute("SELECT 1 FROM crops WHERE id = ?", (crop_id,)).fetchone() is None:
                    raise StoreError(f"no crop with id {crop_id} in {self.path}",
                                     hint="`chromowatch labels export-csv` lists the crop ids")
                row = conn.execute(
                    "SELECT class FROM labels WHERE crop_id = ? AND superseded_at IS NULL",
                    (crop_id,),
                ).fetchone()
                if row is not None and row[0] == cls:
                    continue
                write_label(conn, crop_id, cls, source=source, who=who, now=now,
                            shown=(shown or {}).get(crop_id, (None, None)))
                if row is None:
                    first += 1
                else:
                    changed += 1
        return first, changed

    def current_labels(self) -> list[CurrentLabel]:
        """Every crop's confirmed label with its crop file, sample and review reason (an
        audit crop must stay out of training), by crop id."""
        return [CurrentLabel.from_row(r) for r in self._conn.execute(
            "SELECT l.crop_id, l.class, l.source, l.who, l.created_at, c.file, c.x, c.y, c.w, "
            "c.h, i.path AS image_path, s.name AS sample, "
            "(SELECT q.reason FROM review_queue q WHERE q.crop_id = l.crop_id) AS review "
            "FROM labels l JOIN crops c ON c.id = l.crop_id JOIN images i ON i.id = c.image_id "
            "JOIN samples s ON s.id = i.sample_id "
            "WHERE l.superseded_at IS NULL ORDER BY l.crop_id"
        )]

    def labels_fingerprint(self) -> tuple[str, int]:
        """(sha256 over every crop's confirmed class, how many): changes exactly when a label
        is added or changed, so training can tell that nothing is new."""
        return fingerprint_labels((int(crop_id), str(cls)) for crop_id, cls in self._conn.execute(
            "SELECT crop_id, class FROM labels WHERE superseded_at IS NULL ORDER BY crop_id"
        ))

    def record_training_run(
        self,
        *,
        started_at: float,
        status: str,
        labels_fingerprint: str,
        labels: int,
        candidate: str | None,
        current_before: str | None,
        current_after: str | None,
        message: str,
        metrics: dict[str, object] | None,
    ) -> int:
        """Record a training run (its metrics as JSON); returns its id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO training_runs(started_at, finished_at, status, labels_fingerprint, "
                "labels, candidate, current_before, current_after, message, metrics) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (started_at, time.time(), status, labels_fingerprint, labels, candidate,
                 current_before, current_after, message,
                 json.dumps(metrics) if metrics is not None else None),
            )
            return int(cur.lastrowid or 0)

    def last_training_run(self, *, completed: bool = False) -> TrainingRun | None:
        """The newest training run; with `completed`, the newest that did not fail."""
        where = "WHERE status != 'failed' " if completed else ""
        row = self._conn.execute(
            "SELECT * FROM training_runs " + where + "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return TrainingRun.from_row(row) if row is not None else None
