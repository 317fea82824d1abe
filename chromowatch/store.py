"""SQLite store: the only module that writes SQL.

WAL journal, foreign keys and a busy timeout; the schema is versioned (PRAGMA user_version)
and migrated forward at open. One image's results go in one transaction, so after a crash an
image is either fully stored or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chromowatch.errors import StoreError
from chromowatch.records import CLASS_NAMES, BBox, Prediction

# Each entry moves the schema from version i to i+1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE samples (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL,
        closed_at   REAL
    );
    CREATE TABLE images (
        id            INTEGER PRIMARY KEY,
        path          TEXT NOT NULL,
        size          INTEGER,
        sha256        TEXT UNIQUE,
        sample_id     INTEGER NOT NULL REFERENCES samples(id),
        metaphase     TEXT,
        status        TEXT NOT NULL CHECK (status IN ('done', 'failed')),
        error         TEXT,
        width         INTEGER,
        height        INTEGER,
        metaphases    INTEGER,
        note          TEXT,
        created_at    REAL NOT NULL,
        processed_at  REAL
    );
    CREATE INDEX images_sample ON images(sample_id);
    CREATE INDEX images_path ON images(path);
    CREATE TABLE crops (
        id          INTEGER PRIMARY KEY,
        image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        x           INTEGER NOT NULL,
        y           INTEGER NOT NULL,
        w           INTEGER NOT NULL,
        h           INTEGER NOT NULL,
        metaphase   INTEGER NOT NULL DEFAULT -1,
        file        TEXT NOT NULL,
        flags       TEXT NOT NULL DEFAULT '',
        UNIQUE (image_id, idx)
    );
    CREATE TABLE predictions (
        id              INTEGER PRIMARY KEY,
        crop_id         INTEGER NOT NULL REFERENCES crops(id) ON DELETE CASCADE,
        model_version   TEXT NOT NULL,
        label           TEXT NOT NULL CHECK (label IN ('A', 'B', 'C')),
        p_a             REAL NOT NULL,
        p_b             REAL NOT NULL,
        p_c             REAL NOT NULL,
        member_probs    TEXT NOT NULL,
        created_at      REAL NOT NULL,
        UNIQUE (crop_id, model_version)
    );
    CREATE TABLE labels (
        id          INTEGER PRIMARY KEY,
        crop_id     INTEGER NOT NULL REFERENCES crops(id) ON DELETE CASCADE,
        class       TEXT NOT NULL CHECK (class IN ('A', 'B', 'C')),
        source      TEXT NOT NULL,
        who         TEXT NOT NULL,
        created_at  REAL NOT NULL,
        superseded_at REAL
    );
    CREATE INDEX labels_crop ON labels(crop_id);
    """,
)


@dataclass(frozen=True)
class StoredCrop:
    """What the pipeline hands the store for one crop."""

    index: int
    bbox: BBox
    metaphase: int
    flags: frozenset[str]
    file: str
    prediction: Prediction


@dataclass(frozen=True)
class SampleCounts:
    """Per-sample counts over scored crops (flagged crops only when a person confirmed them)."""

    sample: str
    images: int
    failed_images: int
    crops: int
    excluded: int
    counts: dict[str, int]

    @property
    def scored(self) -> int:
        return sum(self.counts.values())

    def fraction(self, cls: str) -> float:
        return self.counts[cls] / self.scored if self.scored else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "sample": self.sample,
            "images": self.images,
            "failed_images": self.failed_images,
            "crops": self.crops,
            "excluded": self.excluded,
            "scored": self.scored,
            "counts": dict(self.counts),
            "fractions": {c: round(self.fraction(c), 4) for c in CLASS_NAMES},
        }


class Store:
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

    def find_image(self, sha256: str) -> sqlite3.Row | None:
        """A finished image with this content, whatever its name was."""
        return self._conn.execute(
            "SELECT images.*, samples.name AS sample FROM images "
            "JOIN samples ON samples.id = images.sample_id "
            "WHERE sha256 = ? AND status = 'done'",
            (sha256,),
        ).fetchone()

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

    def save_image(
        self,
        *,
        path: str,
        sample: str,
        sha256: str,
        size: int,
        width: int,
        height: int,
        metaphases: int,
        note: str | None,
        crops: Sequence[StoredCrop],
        metaphase_label: str | None = None,
    ) -> int:
        """Store one image with all its crops and predictions atomically; returns its id."""
        now = time.time()
        with self.transaction() as conn:
            sid = self._sample_id(conn, sample)
            conn.execute("DELETE FROM images WHERE status = 'failed' AND (path = ? OR sha256 = ?)",
                         (path, sha256))
            cur = conn.execute(
                "INSERT INTO images(path, size, sha256, sample_id, metaphase, status, width, "
                "height, metaphases, note, created_at, processed_at) "
                "VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, ?)",
                (path, size, sha256, sid, metaphase_label, width, height, metaphases, note,
                 now, now),
            )
            image_id = int(cur.lastrowid or 0)
            for crop in crops:
                b = crop.bbox
                ccur = conn.execute(
                    "INSERT INTO crops(image_id, idx, x, y, w, h, metaphase, file, flags) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image_id, crop.index, b.x, b.y, b.w, b.h, crop.metaphase, crop.file,
                     ",".join(sorted(crop.flags))),
                )
                p = crop.prediction
                conn.execute(
                    "INSERT INTO predictions(crop_id, model_version, label, p_a, p_b, p_c, "
                    "member_probs, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ccur.lastrowid, p.model_version, p.label, p.probs["A"], p.probs["B"],
                     p.probs["C"], json.dumps(p.member_probs), now),
                )
        return image_id

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

    def label_history(self, crop_id: int) -> list[sqlite3.Row]:
        return self._conn.execute(
            "SELECT * FROM labels WHERE crop_id = ? ORDER BY id", (crop_id,)
        ).fetchall()

    # -- queries ------------------------------------------------------------------------

    def image_crops(self, image_id: int) -> list[sqlite3.Row]:
        """Crops of one image with their latest prediction."""
        return self._conn.execute(
            "SELECT c.*, p.label, p.p_a, p.p_b, p.p_c, p.model_version FROM crops c "
            "JOIN predictions p ON p.id = (SELECT MAX(id) FROM predictions WHERE crop_id = c.id) "
            "WHERE c.image_id = ? ORDER BY c.idx",
            (image_id,),
        ).fetchall()

    def sample_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM samples ORDER BY name")]

    def sample_counts(self, sample: str | None = None) -> list[SampleCounts]:
        """A/B/C counts per sample: a confirmed label wins over the latest prediction;
        flagged crops count only once a person confirmed them."""
        names = [sample] if sample is not None else self.sample_names()
        out: list[SampleCounts] = []
        for name in names:
            row = self._conn.execute("SELECT id FROM samples WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(
                    f"no sample named {name!r} in {self.path}",
                    hint="`chromowatch results` lists the samples",
                )
            sid = row[0]
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
                )
            )
        return out
