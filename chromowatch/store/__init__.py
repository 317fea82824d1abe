"""The store: the only SQL. `Store` (database.py) opens the SQLite file and migrates it
(schema.py); every row it takes or gives back is a frozen dataclass (rows.py)."""

from chromowatch.store.database import Store
from chromowatch.store.rows import (
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
    SampleCounts,
    SampleCrop,
    SampleImage,
    SampleState,
    StoredCrop,
    TrainingRun,
    fingerprint_labels,
)
from chromowatch.store.schema import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "CurrentLabel",
    "DaemonState",
    "ImageCrop",
    "ImageRow",
    "JobRun",
    "KnownImage",
    "LabelEntry",
    "LedgerRow",
    "OutboxEntry",
    "OutboxMail",
    "PredictedCrop",
    "QueuedMail",
    "ReportVersion",
    "ReportVersionExists",
    "SampleCounts",
    "SampleCrop",
    "SampleImage",
    "SampleState",
    "Store",
    "StoredCrop",
    "TrainingRun",
    "fingerprint_labels",
]
