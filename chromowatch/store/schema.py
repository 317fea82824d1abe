"""The database schema, as numbered migrations applied forward at open (PRAGMA user_version)."""

from __future__ import annotations

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
    # 2: the daemon's ledger of watched files, sample completion, its own state and jobs.
    """
    CREATE TABLE watched_files (
        id              INTEGER PRIMARY KEY,
        path            TEXT NOT NULL UNIQUE,
        root            TEXT NOT NULL,
        sample          TEXT NOT NULL,
        metaphase       TEXT,
        size            INTEGER,
        mtime           REAL,
        sha256          TEXT,
        state           TEXT NOT NULL CHECK (state IN
                          ('seen', 'stable', 'processing', 'done', 'failed', 'quarantined')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        next_attempt_at REAL,
        image_id        INTEGER,
        duplicate       INTEGER NOT NULL DEFAULT 0,
        crops           INTEGER,
        first_seen_at   REAL NOT NULL,
        stable_at       REAL,
        started_at      REAL,
        finished_at     REAL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX watched_files_state ON watched_files(state, id);
    CREATE INDEX watched_files_sample ON watched_files(sample, state);
    CREATE INDEX watched_files_finished ON watched_files(finished_at);
    CREATE TABLE sample_state (
        name          TEXT PRIMARY KEY,
        last_file_at  REAL,
        closed_at     REAL,
        close_reason  TEXT,
        completed_at  REAL,
        hook_state    TEXT,
        hook_error    TEXT
    );
    CREATE TABLE daemon_state (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        pid           INTEGER NOT NULL,
        started_at    REAL NOT NULL,
        heartbeat_at  REAL NOT NULL,
        stopped_at    REAL,
        info          TEXT NOT NULL
    );
    CREATE TABLE job_runs (
        name          TEXT PRIMARY KEY,
        last_started_at  REAL,
        last_finished_at REAL,
        last_success_at  REAL,
        last_status   TEXT,
        last_error    TEXT
    );
    """,
    # 3: report versions and the mail outbox.
    """
    CREATE TABLE reports (
        id           INTEGER PRIMARY KEY,
        sample_id    INTEGER NOT NULL REFERENCES samples(id),
        version      INTEGER NOT NULL,
        fingerprint  TEXT NOT NULL,
        model        TEXT,
        control      TEXT,
        html_path    TEXT,
        pdf_path     TEXT,
        created_at   REAL NOT NULL,
        UNIQUE (sample_id, version)
    );
    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY,
        report_id        INTEGER NOT NULL UNIQUE REFERENCES reports(id),
        sender           TEXT NOT NULL,
        recipients       TEXT NOT NULL,
        subject          TEXT NOT NULL,
        message          BLOB NOT NULL,
        status           TEXT NOT NULL
                         CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        claimed_at       REAL,
        last_error       TEXT,
        created_at       REAL NOT NULL,
        sent_at          REAL
    );
    CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
    """,
    # 4: training runs (what labels each saw, what came of it) and current labels by crop.
    """
    CREATE TABLE training_runs (
        id                  INTEGER PRIMARY KEY,
        started_at          REAL NOT NULL,
        finished_at         REAL NOT NULL,
        status              TEXT NOT NULL CHECK (status IN ('promoted', 'kept', 'failed')),
        labels_fingerprint  TEXT NOT NULL,
        labels              INTEGER NOT NULL,
        candidate           TEXT,
        current_before      TEXT,
        current_after       TEXT,
        message             TEXT,
        metrics             TEXT
    );
    CREATE INDEX labels_current ON labels(superseded_at, crop_id);
    """,
    # 5: each crop's content (sha256 of its decoded pixels), so a stored crop sorted into a
    # class folder is recognised; NULL until computed from the crop file (labels import).
    """
    ALTER TABLE crops ADD COLUMN pixels_sha256 TEXT;
    CREATE INDEX crops_pixels ON crops(pixels_sha256);
    """,
    # 6: the review queue: crops handed to a person, and why (the least certain, or a random
    # audit whose answers estimate the model's error on the sample without bias).
    """
    CREATE TABLE review_queue (
        crop_id        INTEGER PRIMARY KEY REFERENCES crops(id) ON DELETE CASCADE,
        reason         TEXT NOT NULL CHECK (reason IN ('uncertain', 'audit')),
        score          REAL NOT NULL,
        model_version  TEXT,
        queued_at      REAL NOT NULL
    );
    """,
    # 7: the web app. Users (password hashes), what each label showed (the model version and
    # its probabilities), every review action as an event (label, not-one, undo), and leases
    # so two reviewers of one sample are shown different crops.
    """
    CREATE TABLE users (
        id             INTEGER PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        role           TEXT NOT NULL CHECK (role IN ('viewer', 'reviewer', 'admin')),
        password_hash  TEXT NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL
    );
    ALTER TABLE labels ADD COLUMN model_version TEXT;
    ALTER TABLE labels ADD COLUMN probs TEXT;
    CREATE TABLE review_events (
        id             INTEGER PRIMARY KEY,
        crop_id        INTEGER NOT NULL REFERENCES crops(id) ON DELETE CASCADE,
        action         TEXT NOT NULL CHECK (action IN ('label', 'not-one', 'undo')),
        class          TEXT CHECK (class IN ('A', 'B', 'C')),
        who            TEXT NOT NULL,
        source         TEXT NOT NULL,
        model_version  TEXT,
        probs          TEXT,
        prev_label_id  INTEGER,
        prev_flags     TEXT,
        undoes         INTEGER,
        undone_at      REAL,
        created_at     REAL NOT NULL
    );
    CREATE INDEX review_events_who ON review_events(who, id);
    CREATE TABLE review_leases (
        crop_id     INTEGER PRIMARY KEY REFERENCES crops(id) ON DELETE CASCADE,
        who         TEXT NOT NULL,
        expires_at  REAL NOT NULL
    );
    """,
)
