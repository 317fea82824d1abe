"""Typed rows: what goes into the store and what comes out of it, so that no caller reads a
`sqlite3.Row` by column name."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from chromowatch.errors import StoreError
from chromowatch.records import CLASS_NAMES, BBox, Prediction, is_demonstration


@dataclass(frozen=True)
class ImageRow:
    """What the store keeps of one processed image, whatever its crops are."""

    path: str
    sample: str
    sha256: str
    size: int
    width: int
    height: int
    metaphases: int = 0
    note: str | None = None
    metaphase_label: str | None = None


@dataclass(frozen=True)
class KnownImage:
    """A finished image found by its content: where it was stored and under which sample."""

    id: int
    path: str
    sample: str


@dataclass(frozen=True)
class SampleContents:
    """What deleting a sample takes with it: counted first, so a person can confirm."""

    sample: str
    images: int
    failed_images: int
    crops: int
    predictions: int
    labels: int  # confirmed labels (current ones; their history goes too)
    reports: int
    mails: int
    crop_files: tuple[str, ...] = ()

    def line(self) -> str:
        return (f"sample {self.sample}: {self.images} image(s), {self.failed_images} failed "
                f"file(s), {self.crops} crop(s), {self.predictions} prediction(s), "
                f"{self.labels} confirmed label(s), {self.reports} report version(s), "
                f"{self.mails} mail(s) in the outbox")


@dataclass(frozen=True)
class StoredCrop:
    """What the pipeline hands the store for one crop."""

    index: int
    bbox: BBox
    metaphase: int
    flags: frozenset[str]
    file: str
    prediction: Prediction
    pixels_sha256: str | None = None  # known for imported crops; else computed when needed


@dataclass(frozen=True)
class CropToScore:
    """A stored crop whose latest prediction is not by the current model (re-scoring)."""

    id: int
    file: str
    sample: str


@dataclass(frozen=True)
class LedgerRow:
    """One watched file in the daemon's ledger (table watched_files)."""

    id: int
    path: str
    root: str
    sample: str
    metaphase: str | None
    size: int | None
    mtime: float | None
    sha256: str | None
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    image_id: int | None
    duplicate: int
    crops: int | None
    first_seen_at: float
    stable_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float


@dataclass(frozen=True)
class SampleState:
    """A sample as the daemon tracks it: last file, closed (why), completed, report hook."""

    name: str
    last_file_at: float | None
    closed_at: float | None
    close_reason: str | None
    completed_at: float | None
    hook_state: str | None
    hook_error: str | None


@dataclass(frozen=True)
class DaemonState:
    """The daemon's last heartbeat; `info` is its JSON snapshot for `chromowatch status`."""

    id: int
    pid: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    info: str


@dataclass(frozen=True)
class JobRun:
    """The last run of a scheduled job (retraining), in the table's column order."""

    name: str
    last_started_at: float | None
    last_finished_at: float | None
    last_success_at: float | None
    last_status: str | None
    last_error: str | None


@dataclass(frozen=True)
class SampleCounts:
    """Per-sample counts over scored crops (flagged crops only when a person confirmed them)."""

    sample: str
    images: int
    failed_images: int
    crops: int
    excluded: int
    counts: dict[str, int]
    models: dict[str, int] = field(default_factory=dict)  # model version -> crops predicted

    @property
    def demonstration(self) -> bool:
        """Some of its crops were scored by a demonstration model (not a measurement)."""
        return any(is_demonstration(v) for v in self.models)

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
            "models": dict(self.models),
            "demonstration": self.demonstration,
        }


def fingerprint_labels(labels: Iterable[tuple[int, str]]) -> tuple[str, int]:
    """(sha256 over every (crop id, class) by crop id, how many): the one definition, so the
    store's "nothing new" check and a training run's record cannot drift apart."""
    h = hashlib.sha256()
    n = 0
    for crop_id, cls in sorted(labels):
        h.update(f"{crop_id}:{cls}\n".encode())
        n += 1
    return h.hexdigest(), n


def bbox_of(row: sqlite3.Row) -> BBox:
    return BBox(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))


@dataclass(frozen=True)
class LabelEntry:
    """One confirmation of a crop's class; `superseded_at` is None for the current one."""

    id: int
    crop_id: int
    cls: str
    source: str
    who: str
    created_at: float
    superseded_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> LabelEntry:
        return cls(id=int(row["id"]), crop_id=int(row["crop_id"]), cls=str(row["class"]),
                   source=str(row["source"]), who=str(row["who"]),
                   created_at=float(row["created_at"]), superseded_at=row["superseded_at"])


@dataclass(frozen=True)
class CurrentLabel:
    """A crop's confirmed label with what training and export need of the crop."""

    crop_id: int
    cls: str
    source: str
    who: str
    created_at: float
    file: str
    bbox: BBox
    image_path: str
    sample: str
    review: str | None = None  # why it was queued for review (uncertain / audit), if it was

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CurrentLabel:
        return cls(crop_id=int(row["crop_id"]), cls=str(row["class"]), source=str(row["source"]),
                   who=str(row["who"]), created_at=float(row["created_at"]),
                   file=str(row["file"]), bbox=bbox_of(row), image_path=str(row["image_path"]),
                   sample=str(row["sample"]), review=row["review"])


@dataclass(frozen=True)
class ImageCrop:
    """A stored crop of one image; `confirmed` is its current label (None: unlabelled)."""

    id: int
    image_id: int
    index: int
    bbox: BBox
    metaphase: int
    file: str
    flags: frozenset[str]
    confirmed: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ImageCrop:
        keys = row.keys()
        return cls(id=int(row["id"]), image_id=int(row["image_id"]), index=int(row["idx"]),
                   bbox=bbox_of(row), metaphase=int(row["metaphase"]), file=str(row["file"]),
                   flags=frozenset(f for f in str(row["flags"]).split(",") if f),
                   confirmed=row["confirmed"] if "confirmed" in keys else None)


@dataclass(frozen=True)
class PredictedCrop:
    """A stored crop with its latest prediction."""

    crop: ImageCrop
    label: str
    probs: dict[str, float]
    model_version: str

    @property
    def id(self) -> int:
        return self.crop.id

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PredictedCrop:
        return cls(crop=ImageCrop.from_row(row), label=str(row["label"]),
                   probs={"A": float(row["p_a"]), "B": float(row["p_b"]), "C": float(row["p_c"])},
                   model_version=str(row["model_version"]))


@dataclass(frozen=True)
class TrainingRun:
    """One finished or failed `chromowatch train` run and the labels it saw."""

    id: int
    started_at: float
    finished_at: float
    status: str  # promoted, kept, failed
    labels_fingerprint: str
    labels: int
    candidate: str | None
    current_before: str | None
    current_after: str | None
    message: str | None
    metrics: dict[str, object] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TrainingRun:
        metrics = row["metrics"]
        return cls(id=int(row["id"]), started_at=float(row["started_at"]),
                   finished_at=float(row["finished_at"]), status=str(row["status"]),
                   labels_fingerprint=str(row["labels_fingerprint"]), labels=int(row["labels"]),
                   candidate=row["candidate"], current_before=row["current_before"],
                   current_after=row["current_after"], message=row["message"],
                   metrics=json.loads(metrics) if metrics is not None else None)


@dataclass(frozen=True)
class OutboxMail:
    """A mail ready for the outbox: the whole message, so it survives its report's files."""

    sender: str
    recipients: tuple[str, ...]
    subject: str
    message: bytes


class ReportVersionExists(StoreError):
    """Another process recorded this report version of the sample first."""


@dataclass(frozen=True)
class SampleCrop:
    """One crop of a sample's finished image, with its latest prediction (None: none) and
    its confirmed label, as reports and exports read it."""

    id: int
    image_id: int
    idx: int
    x: int
    y: int
    w: int
    h: int
    metaphase: int
    file: str
    flags: str  # as stored: sorted, comma-separated ("" when none)
    image_path: str
    predicted: str | None
    p_a: float | None
    p_b: float | None
    p_c: float | None
    model_version: str | None
    pred_id: int | None
    confirmed: str | None
    review: str | None = None  # why it was queued for review (uncertain / audit), if it was

    @property
    def flag_set(self) -> frozenset[str]:
        return frozenset(f for f in self.flags.split(",") if f)


@dataclass(frozen=True)
class ReviewRow:
    """One crop of a sample as the review queue sees it: where it comes from, the latest
    prediction with each member's probabilities, its answer and whether it was queued."""

    crop_id: int
    file: str
    image_path: str
    x: int
    y: int
    w: int
    h: int
    image_width: int | None
    image_height: int | None
    flags: str
    predicted: str | None
    p_a: float | None
    p_b: float | None
    p_c: float | None
    member_probs: str | None  # JSON {member: [pA, pB, pC]}
    model_version: str | None
    confirmed: str | None
    review: str | None

    @property
    def probs(self) -> tuple[float, float, float]:
        return (float(self.p_a or 0), float(self.p_b or 0), float(self.p_c or 0))

    @property
    def members(self) -> tuple[tuple[float, float, float], ...]:
        if not self.member_probs:
            return ()
        raw = json.loads(self.member_probs)
        return tuple((float(v[0]), float(v[1]), float(v[2])) for v in raw.values())

    @property
    def source(self) -> str:
        """The imported file, or the spread and the box the crop was cut from."""
        whole = (self.x, self.y) == (0, 0) and (self.w, self.h) == (self.image_width,
                                                                    self.image_height)
        return self.image_path if whole else (
            f"{self.image_path} (box x={self.x} y={self.y} w={self.w} h={self.h})")


@dataclass(frozen=True)
class SampleImage:
    """One image of a sample (done or failed) with its number of crops."""

    id: int
    path: str
    status: str
    error: str | None
    width: int | None
    height: int | None
    metaphases: int | None
    note: str | None
    processed_at: float | None
    crops: int


@dataclass(frozen=True)
class ReportVersion:
    """One recorded report version of a sample."""

    id: int
    sample_id: int
    version: int
    fingerprint: str
    model: str | None
    control: str | None
    html_path: str | None
    pdf_path: str | None
    created_at: float


@dataclass(frozen=True)
class QueuedMail:
    """A mail in the outbox that is due to be sent, with what it carries."""

    id: int
    sample: str
    version: int
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message: bytes
    status: str
    attempts: int


@dataclass(frozen=True)
class OutboxEntry:
    """One mail of the outbox as `chromowatch outbox` lists it (no message body)."""

    id: int
    sample: str
    version: int
    recipients: tuple[str, ...]
    subject: str
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    sent_at: float | None


def recipients_of(stored: str) -> tuple[str, ...]:
    """The outbox keeps a mail's recipients as a JSON list."""
    return tuple(str(r) for r in json.loads(stored))


ROLES = ("viewer", "reviewer", "admin")


@dataclass(frozen=True)
class UserRow:
    """A person who may log in to the web app, with the role that says what they may do."""

    name: str
    role: str  # one of ROLES
    password_hash: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ReviewEvent:
    """One review action in the web app: a label, a crop marked "not one chromosome", or
    the undo of an earlier event (`undoes`). What the action replaced (`prev_label_id`,
    `prev_flags`) is kept so an undo can put it back."""

    id: int
    crop_id: int
    action: str  # "label", "not-one" or "undo"
    cls: str | None
    who: str
    created_at: float
    undoes: int | None
    undone_at: float | None
