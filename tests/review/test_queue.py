"""The review queue's choice: least certain first, a fixed random audit, answered crops gone."""

from __future__ import annotations

import pytest

from chromowatch.review.queue import AUDIT, UNCERTAIN, Candidate, choose, split_count, uncertainty


def _cands(n: int = 40) -> list[Candidate]:
    # crop i's top probability falls with i: higher ids are less certain
    out = []
    for i in range(n):
        top = 0.98 - i * 0.45 / n
        out.append(Candidate(i, (top, 1 - top - 0.01, 0.01)))
    return out


def test_uncertain_picks_are_the_least_certain_and_audits_come_from_the_rest() -> None:
    picks = choose(_cands(), 10, audit_share=0.5, measure="margin", seed=3)
    uncertain = [p.crop_id for p in picks if p.reason == UNCERTAIN]
    audit = [p.crop_id for p in picks if p.reason == AUDIT]
    assert sorted(uncertain) == [35, 36, 37, 38, 39]
    assert len(audit) == 5 and not set(audit) & set(uncertain)
    # the audit is not simply the next least certain crops
    assert sorted(audit) != [30, 31, 32, 33, 34]


def test_audit_order_is_fixed_by_the_seed() -> None:
    a = choose(_cands(), 6, audit_share=1.0, seed=1)
    b = choose(_cands(), 6, audit_share=1.0, seed=1)
    c = choose(_cands(), 6, audit_share=1.0, seed=2)
    assert [p.crop_id for p in a] == [p.crop_id for p in b]
    assert [p.crop_id for p in a] != [p.crop_id for p in c]


def test_pending_come_back_first_and_answered_or_flagged_never() -> None:
    cands = _cands(10)
    cands[9] = Candidate(9, cands[9].probs, confirmed="B", queued=UNCERTAIN)  # answered
    cands[8] = Candidate(8, cands[8].probs, flagged=True)  # a segmentation question
    cands[2] = Candidate(2, cands[2].probs, queued=AUDIT)  # queued, not answered
    picks = choose(cands, 3, audit_share=0.0)
    assert picks[0].crop_id == 2 and picks[0].reason == AUDIT and not picks[0].new
    assert [p.crop_id for p in picks[1:]] == [7, 6]
    assert all(p.new for p in picks[1:])


def test_split_count() -> None:
    assert split_count(10, 0.5) == (5, 5)
    assert split_count(3, 0.1) == (2, 1)  # a small batch still audits
    assert split_count(4, 1.0) == (0, 4)
    assert split_count(4, 0.0) == (4, 0)
    assert split_count(1, 0.5) == (0, 1) or split_count(1, 0.5) == (1, 0)


@pytest.mark.parametrize("measure", ["margin", "entropy", "disagreement"])
def test_measures_rank_a_split_vote_above_a_sure_one(measure: str) -> None:
    sure = Candidate(1, (0.9, 0.05, 0.05), ((0.9, 0.05, 0.05), (0.9, 0.05, 0.05)))
    split = Candidate(2, (0.5, 0.45, 0.05), ((0.9, 0.05, 0.05), (0.1, 0.85, 0.05)))
    assert uncertainty(split, measure) > uncertainty(sure, measure)  # type: ignore[arg-type]


def test_disagreement_sees_members_that_differ_behind_a_confident_mean() -> None:
    agree = Candidate(1, (0.6, 0.35, 0.05), ((0.6, 0.35, 0.05),) * 2)
    differ = Candidate(2, (0.6, 0.35, 0.05), ((0.95, 0.0, 0.05), (0.25, 0.7, 0.05)))
    assert uncertainty(differ, "disagreement") > uncertainty(agree, "disagreement")
    assert uncertainty(differ, "margin") == uncertainty(agree, "margin")
