"""Choosing the crops a person reviews next.

Most are the least certain crops (a person's answer there changes the counts most, and
they are the crops retraining learns most from); some are drawn at random, an audit, so the
sample's own error rate on the crops nobody looks at can be estimated without bias (the
uncertain crops are not a random sample, so their errors say nothing about the rest).

The audit order is a fixed pseudo-random permutation of crop ids (sha256 of seed and id):
asking twice gives the same crops, and an audit drawn once is never redrawn, so nobody can
"re-roll" an audit until it looks good.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from chromowatch.records import CLASS_NAMES
from chromowatch.settings import ReviewSettings
from chromowatch.store import Store

Measure = Literal["margin", "entropy", "disagreement"]
UNCERTAIN = "uncertain"
AUDIT = "audit"


@dataclass(frozen=True)
class Candidate:
    """One crop as the queue sees it: the current model's probabilities (A, B, C), each
    member's, and whether it is answered, already queued, or flagged by segmentation."""

    crop_id: int
    probs: tuple[float, float, float]
    members: tuple[tuple[float, float, float], ...] = ()
    confirmed: str | None = None
    queued: str | None = None  # the reason it was queued, when it was
    flagged: bool = False


@dataclass(frozen=True)
class Pick:
    crop_id: int
    reason: str  # UNCERTAIN or AUDIT
    score: float  # the uncertainty when picked (higher: less certain)
    new: bool  # picked now (False: queued earlier and still unanswered)


def uncertainty(c: Candidate, measure: Measure) -> float:
    """Higher is less certain. margin: 1 - (top - second probability); entropy: of the
    ensemble's probabilities, in bits; disagreement: mean KL divergence of the members from
    the ensemble mean (members that agree on a wrong answer score low; margin does not)."""
    p = np.clip(np.asarray(c.probs, dtype=float), 1e-12, 1.0)
    if measure == "margin":
        top = np.sort(p)[::-1]
        return float(1.0 - (top[0] - top[1]))
    if measure == "entropy":
        return float(-(p * np.log2(p)).sum())
    if not c.members:
        return float(-(p * np.log2(p)).sum())  # one member: nothing to disagree with
    m = np.clip(np.asarray(c.members, dtype=float), 1e-12, 1.0)
    mean = m.mean(axis=0)
    return float((m * np.log(m / mean)).sum(axis=1).mean())


def audit_key(seed: int, crop_id: int) -> str:
    return hashlib.sha256(f"{seed}:{crop_id}".encode()).hexdigest()


def split_count(count: int, audit_share: float) -> tuple[int, int]:
    """(uncertain, audit) for `count` new picks; an audit share above 0 gets at least one
    audit crop once there are two picks or more, so a small batch still audits."""
    audits = math.floor(count * audit_share + 0.5)
    if audit_share > 0 and count >= 2:
        audits = max(audits, 1)
    if audit_share < 1 and count >= 2:
        audits = min(audits, count - 1)
    return count - audits, audits


def choose(candidates: Sequence[Candidate], count: int, *, audit_share: float,
           measure: Measure = "margin", seed: int = 0) -> list[Pick]:
    """The next `count` crops: those queued earlier and still unanswered first (a queue is
    a promise; in the order they were given), then new uncertain picks, then new audit
    picks from what is left.

    Only crops with a prediction, not confirmed and not flagged are eligible (a flagged crop
    is a segmentation question, not an A/B/C one); a queued crop flagged since (marked "not
    one chromosome" in the web app) leaves the queue too."""
    if count <= 0:
        return []
    pending = sorted((Pick(c.crop_id, c.queued, uncertainty(c, measure), False)
                      for c in candidates if c.queued and not c.confirmed and not c.flagged),
                     key=lambda p: (p.reason != UNCERTAIN, -p.score if p.reason == UNCERTAIN
                                    else 0.0, audit_key(seed, p.crop_id)))
    picks = pending[:count]
    n_uncertain, n_audit = split_count(count - len(picks), audit_share)
    pool = [c for c in candidates if not c.queued and not c.confirmed and not c.flagged]
    by_doubt = sorted(pool, key=lambda c: (-uncertainty(c, measure), c.crop_id))
    chosen = {c.crop_id for c in by_doubt[:n_uncertain]}
    picks += [Pick(c.crop_id, UNCERTAIN, uncertainty(c, measure), True)
              for c in by_doubt[:n_uncertain]]
    rest = sorted((c for c in pool if c.crop_id not in chosen),
                  key=lambda c: audit_key(seed, c.crop_id))
    picks += [Pick(c.crop_id, AUDIT, uncertainty(c, measure), True) for c in rest[:n_audit]]
    return picks


@dataclass(frozen=True)
class QueueEntry:
    """One crop to review, as `review queue --json` prints it."""

    crop_id: int
    source: str
    file: str
    label: str
    probs: dict[str, float]
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"crop_id": self.crop_id, "source": self.source, "file": self.file,
                "label": self.label, "probs": self.probs, "reason": self.reason}


def next_for_review(store: Store, settings: ReviewSettings, sample: str,
                    count: int) -> list[QueueEntry]:
    """The sample's next `count` crops to review; new picks are recorded, so the same crops
    come back until they are answered and an audit crop stays an audit crop."""
    rows = {r.crop_id: r for r in store.review_rows(sample) if r.predicted}
    members = settings.measure == "disagreement"  # parsed only where they are used
    candidates = [Candidate(r.crop_id, r.probs, r.members if members else (), r.confirmed,
                            r.review, bool(r.flags)) for r in rows.values()]
    picks = choose(candidates, count, audit_share=settings.audit_share,
                   measure=settings.measure, seed=settings.seed)
    store.enqueue_review([(p.crop_id, p.reason, p.score, rows[p.crop_id].model_version)
                          for p in picks if p.new])
    return [QueueEntry(p.crop_id, rows[p.crop_id].source, rows[p.crop_id].file,
                       str(rows[p.crop_id].predicted),
                       {c: round(v, 4) for c, v in zip(CLASS_NAMES, rows[p.crop_id].probs,
                                                        strict=True)},
                       p.reason) for p in picks]
