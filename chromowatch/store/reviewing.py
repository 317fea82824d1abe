"""The store's part for the web app: users, review events (label, not-one, undo) and the
leases that keep two reviewers of one sample on different crops. Mixed into `Store`."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from chromowatch.errors import StoreError, UsageError
from chromowatch.records import CLASS_NAMES, BBox
from chromowatch.store.rows import ROLES, ReportVersion, ReviewEvent, UserRow, bbox_of

NOT_ONE = "not-one"  # the crop flag of a crop a person said is not one chromosome
WEB = "web"


def write_label(conn: sqlite3.Connection, crop_id: int, cls: str, *, source: str, who: str,
                now: float, shown: tuple[str | None, str | None] = (None, None)) -> int:
    """Supersede the crop's current label and insert this one; returns its row id.
    `shown` is (model version, probabilities JSON) of the prediction the person saw."""
    conn.execute("UPDATE labels SET superseded_at = ? WHERE crop_id = ? AND superseded_at IS NULL",
                 (now, crop_id))
    cur = conn.execute(
        "INSERT INTO labels(crop_id, class, source, who, created_at, model_version, probs) "
        "VALUES (?,?,?,?,?,?,?)", (crop_id, cls, source, who, now, shown[0], shown[1]))
    return int(cur.lastrowid or 0)


def _flags_with(flags: str, flag: str, on: bool) -> str:
    items = {f for f in flags.split(",") if f}
    if on:
        items.add(flag)
    else:
        items.discard(flag)
    return ",".join(sorted(items))


class ReviewingMixin:
    """Users, review events and leases; needs the `Store`'s connection and transaction."""

    _conn: sqlite3.Connection
    path: Path
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]  # the Store's

    # -- users ----------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str) -> None:
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}", hint="use " + ", ".join(ROLES))
        now = time.time()
        try:
            with self.transaction() as conn:
                conn.execute("INSERT INTO users(name, role, password_hash, created_at, updated_at)"
                             " VALUES (?,?,?,?,?)", (name, role, password_hash, now, now))
        except sqlite3.IntegrityError:
            raise UsageError(f"a user named {name!r} exists",
                             hint="`chromowatch users passwd NAME` sets a new password") from None

    def user(self, name: str) -> UserRow | None:
        row = self._conn.execute("SELECT name, role, password_hash, created_at, updated_at "
                                 "FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else UserRow(**row)

    def users(self) -> list[UserRow]:
        return [UserRow(**r) for r in self._conn.execute(
            "SELECT name, role, password_hash, created_at, updated_at FROM users ORDER BY name")]

    def remove_user(self, name: str) -> bool:
        """Remove a user (their labels stay, under their name); False when there was none."""
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM review_leases WHERE who = ?", (name,))
        return n > 0

    def set_password(self, name: str, password_hash: str) -> bool:
        with self.transaction() as conn:
            n = conn.execute("UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?",
                             (password_hash, time.time(), name)).rowcount
        return n > 0

    # -- crops, reports -------------------------------------------------------------------

    def crop_file(self, crop_id: int) -> str | None:
        row = self._conn.execute("SELECT file FROM crops WHERE id = ?", (crop_id,)).fetchone()
        return None if row is None else str(row[0])

    def crop_sample(self, crop_id: int) -> str | None:
        row = self._conn.execute(
            "SELECT s.name FROM crops c JOIN images i ON i.id = c.image_id "
            "JOIN samples s ON s.id = i.sample_id WHERE c.id = ?", (crop_id,)).fetchone()
        return None if row is None else str(row[0])

    def report_versions(self, sample: str) -> list[ReportVersion]:
        """Every recorded report version of a sample, newest first."""
        return [ReportVersion(**r) for r in self._conn.execute(
            "SELECT r.id, r.sample_id, r.version, r.fingerprint, r.model, r.control, "
            "r.html_path, r.pdf_path, r.created_at FROM reports r "
            "JOIN samples s ON s.id = r.sample_id WHERE s.name = ? ORDER BY r.version DESC",
            (sample,))]

    def report_version(self, report_id: int) -> ReportVersion | None:
        row = self._conn.execute(
            "SELECT id, sample_id, version, fingerprint, model, control, html_path, pdf_path, "
            "created_at FROM reports WHERE id = ?", (report_id,)).fetchone()
        return None if row is None else ReportVersion(**row)

    # -- leases ---------------------------------------------------------------------------

    def leased_to_others(self, who: str, now: float, sample: str | None = None) -> set[int]:
        """Crops (of one sample, or all) leased to someone else until after `now`."""
        sql = ("SELECT l.crop_id FROM review_leases l JOIN crops c ON c.id = l.crop_id "
               "JOIN images i ON i.id = c.image_id JOIN samples s ON s.id = i.sample_id "
               "WHERE l.who != ? AND l.expires_at > ?")
        rows = (self._conn.execute(sql + " AND s.name = ?", (who, now, sample))
                if sample is not None else self._conn.execute(sql, (who, now)))
        return {int(r[0]) for r in rows}

    def lease(self, crop_ids: Sequence[int], who: str, now: float, expires_at: float
              ) -> list[int]:
        """Lease crops to `who` until `expires_at`, unless another holds a lease that has not
        expired; returns the ids now leased to `who`, in the order given."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM review_leases WHERE expires_at <= ?", (now,))
            conn.executemany(
                "INSERT INTO review_leases(crop_id, who, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(crop_id) DO UPDATE SET who = excluded.who, "
                "expires_at = excluded.expires_at "
                "WHERE review_leases.who = excluded.who OR review_leases.expires_at <= ?",
                [(c, who, expires_at, now) for c in crop_ids])
            held = {int(r[0]) for r in conn.execute(
                "SELECT crop_id FROM review_leases WHERE who = ?", (who,))}
        return [c for c in crop_ids if c in held]

    # -- review events ----------------------------------------------------------------------

    def _shown(self, conn: sqlite3.Connection, crop_id: int) -> tuple[str | None, str | None]:
        row = conn.execute("SELECT model_version, p_a, p_b, p_c FROM predictions "
                           "WHERE crop_id = ? ORDER BY id DESC LIMIT 1", (crop_id,)).fetchone()
        if row is None:
            return None, None
        probs = dict(zip(CLASS_NAMES, (row[1], row[2], row[3]), strict=True))
        return str(row[0]), json.dumps(probs)

    def review_action(self, crop_id: int, action: str, cls: str | None, *, who: str) -> int:
        """Record one web action on a crop, in one transaction: `label` (cls A/B/C, clears a
        not-one flag) or `not-one` (flags the crop, supersedes its label: it leaves the
        statistics and the queue). Returns the event id."""
        if action == "label" and cls not in CLASS_NAMES:
            raise StoreError(f"unknown class {cls!r}", hint="use A, B or C")
        if action not in ("label", NOT_ONE):
            raise StoreError(f"unknown review action {action!r}", hint="label or not-one")
        now = time.time()
        with self.transaction() as conn:
            crop = conn.execute("SELECT flags FROM crops WHERE id = ?", (crop_id,)).fetchone()
            if crop is None:
                raise StoreError(f"no crop with id {crop_id}", hint="reload the page")
            prev = conn.execute("SELECT id FROM labels WHERE crop_id = ? AND superseded_at IS "
                                "NULL", (crop_id,)).fetchone()
            shown = self._shown(conn, crop_id)
            if action == "label":
                write_label(conn, crop_id, str(cls), source=WEB, who=who, now=now, shown=shown)
            else:
                conn.execute("UPDATE labels SET superseded_at = ? WHERE crop_id = ? AND "
                             "superseded_at IS NULL", (now, crop_id))
            conn.execute("UPDATE crops SET flags = ? WHERE id = ?",
                         (_flags_with(crop["flags"], NOT_ONE, action == NOT_ONE), crop_id))
            cur = conn.execute(
                "INSERT INTO review_events(crop_id, action, class, who, source, model_version, "
                "probs, prev_label_id, prev_flags, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (crop_id, action, cls if action == "label" else None, who, WEB, shown[0],
                 shown[1], prev[0] if prev else None, crop["flags"], now))
        return int(cur.lastrowid or 0)

    def undo_last(self, who: str) -> ReviewEvent | None:
        """Undo `who`'s last action not undone yet, as a new `undo` event: the crop's label
        and flags go back to what they were (the earlier label is recorded again, or the
        crop has none). Returns the undo event, or None when there is nothing to undo."""
        now = time.time()
        with self.transaction() as conn:
            last = conn.execute(
                "SELECT * FROM review_events WHERE who = ? AND action != 'undo' AND undone_at "
                "IS NULL ORDER BY id DESC LIMIT 1", (who,)).fetchone()
            if last is None:
                return None
            conn.execute("UPDATE labels SET superseded_at = ? WHERE crop_id = ? AND "
                         "superseded_at IS NULL", (now, last["crop_id"]))
            if last["prev_label_id"] is not None:
                old = conn.execute("SELECT * FROM labels WHERE id = ?",
                                   (last["prev_label_id"],)).fetchone()
                write_label(conn, int(old["crop_id"]), str(old["class"]), source=old["source"],
                            who=old["who"], now=now, shown=(old["model_version"], old["probs"]))
            conn.execute("UPDATE crops SET flags = ? WHERE id = ?",
                         (last["prev_flags"], last["crop_id"]))
            conn.execute("UPDATE review_events SET undone_at = ? WHERE id = ?", (now, last["id"]))
            cur = conn.execute(
                "INSERT INTO review_events(crop_id, action, who, source, undoes, created_at) "
                "VALUES (?, 'undo', ?, ?, ?, ?)", (last["crop_id"], who, WEB, last["id"], now))
            event_id = int(cur.lastrowid or 0)
        return ReviewEvent(event_id, int(last["crop_id"]), "undo", None, who, now,
                           int(last["id"]), None)

    def review_events(self, who: str | None = None) -> Iterator[ReviewEvent]:
        sql = ("SELECT id, crop_id, action, class AS cls, who, created_at, undoes, undone_at "
               "FROM review_events")
        rows = (self._conn.execute(sql + " WHERE who = ? ORDER BY id", (who,)) if who
                else self._conn.execute(sql + " ORDER BY id"))
        for r in rows:
            yield ReviewEvent(**r)

    def predicted_class(self, crop_id: int) -> str | None:
        """The crop's latest predicted class (what "accept" confirms), or None."""
        row = self._conn.execute("SELECT label FROM predictions WHERE crop_id = ? "
                                 "ORDER BY id DESC LIMIT 1", (crop_id,)).fetchone()
        return None if row is None else str(row[0])

    def crop_answer(self, crop_id: int) -> tuple[str | None, str]:
        """(the crop's confirmed class or None, its flags)."""
        row = self._conn.execute(
            "SELECT (SELECT class FROM labels WHERE crop_id = c.id AND superseded_at IS NULL), "
            "c.flags FROM crops c WHERE c.id = ?", (crop_id,)).fetchone()
        return (None, "") if row is None else (row[0], str(row[1]))

    def crop_place(self, crop_id: int) -> tuple[int, str, BBox] | None:
        """(image id, the spread's file, the box) a crop was cut from, or None."""
        row = self._conn.execute(
            "SELECT c.image_id, i.path, c.x, c.y, c.w, c.h FROM crops c "
            "JOIN images i ON i.id = c.image_id WHERE c.id = ?", (crop_id,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), bbox_of(row))

    def image_place(self, image_id: int) -> tuple[str, str, int, int] | None:
        """(sample, the spread's file, width, height) of a finished image, or None."""
        row = self._conn.execute(
            "SELECT s.name, i.path, i.width, i.height FROM images i "
            "JOIN samples s ON s.id = i.sample_id WHERE i.id = ? AND i.status = 'done'",
            (image_id,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2] or 0),
                                         int(row[3] or 0))

    def next_crop_index(self, image_id: int) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(idx), -1) FROM crops WHERE image_id = ?",
                                 (image_id,)).fetchone()
        return int(row[0]) + 1

    def reviewers(self, sample: str) -> dict[str, int]:
        """Who confirmed the sample's current labels: name -> crops, most first."""
        rows = self._conn.execute(
            "SELECT l.who, COUNT(*) FROM labels l JOIN crops c ON c.id = l.crop_id "
            "JOIN images i ON i.id = c.image_id JOIN samples s ON s.id = i.sample_id "
            "WHERE s.name = ? AND l.superseded_at IS NULL GROUP BY l.who "
            "ORDER BY COUNT(*) DESC, l.who", (sample,))
        return {str(who): int(n) for who, n in rows}
