"""The audit correction: unbiased whatever the model's errors, intervals that cover."""

from __future__ import annotations

import numpy as np
import pytest

from chromowatch.review.correct import audit_correction

TRUE = np.array([0.2, 0.55, 0.25])


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """True classes, and a model that calls 40% of C crops B (the phenotype half erased)."""
    y = rng.choice(3, size=n, p=TRUE)
    probs = np.zeros((n, 3))
    for i, t in enumerate(y):
        called = 1 if t == 2 and rng.random() < 0.4 else t
        probs[i] = 0.1
        probs[i, called] = 0.8
    return y, probs


@pytest.mark.parametrize("answer", ["soft", "hard", "strata"])
def test_corrected_fractions_are_unbiased_and_the_interval_covers(answer: str) -> None:
    rng = np.random.default_rng(0)
    errors, raw_errors, covered = [], [], 0
    runs = 300
    for _ in range(runs):
        y, probs = _population(rng, 400)
        audit = rng.choice(400, size=60, replace=False)
        rest = np.setdiff1d(np.arange(400), audit)
        confirmed = {c: int((y[audit] == i).sum()) for i, c in enumerate("ABC")}
        a = audit_correction(confirmed, probs[rest], probs[audit],
                             ["ABC"[t] for t in y[audit]], answer=answer, shrink=False)
        truth = np.bincount(y, minlength=3) / 400
        est = np.array([a.fractions[c] for c in "ABC"])
        errors.append(est - truth)
        raw = (confirmed["C"] + (probs[rest].argmax(1) == 2).sum()) / 400
        raw_errors.append(raw - truth[2])
        lo, hi = a.intervals["C"]
        covered += lo <= truth[2] <= hi
    bias = np.mean(errors, axis=0)
    assert np.abs(bias).max() < 0.01  # the model's 10% C deficit is gone on average
    assert np.mean(raw_errors) < -0.07  # which it would not be without the correction
    assert 0.88 <= covered / runs <= 0.995


def test_shrinking_keeps_a_large_correction_and_drops_a_small_one() -> None:
    rng = np.random.default_rng(1)
    y, probs = _population(rng, 400)
    audit = rng.choice(400, size=80, replace=False)
    rest = np.setdiff1d(np.arange(400), audit)
    confirmed = {c: int((y[audit] == i).sum()) for i, c in enumerate("ABC")}
    truth_a = ["ABC"[t] for t in y[audit]]
    kept = audit_correction(confirmed, probs[rest], probs[audit], truth_a)  # the defaults
    plain = audit_correction(confirmed, probs[rest], probs[audit], truth_a, shrink=False)
    assert kept.fractions["C"] == pytest.approx(plain.fractions["C"], abs=0.02)
    # a model that is right: nothing to correct, and the audit's noise is not added
    exact = np.eye(3)[y] * 0.8 + 0.2 / 3
    fine = audit_correction(confirmed, exact[rest], exact[audit], truth_a)
    counted = (np.bincount(y[rest], minlength=3) + [confirmed[c] for c in "ABC"]) / 400
    assert [fine.fractions[c] for c in "ABC"] == pytest.approx(list(counted), abs=1e-9)


def test_counts_and_bc() -> None:
    a = audit_correction({"A": 5, "B": 0, "C": 0}, np.array([[0.1, 0.8, 0.1]] * 10),
                         np.array([[0.1, 0.8, 0.1]] * 5), ["A", "A", "A", "A", "A"],
                         answer="hard")
    # every audited "B" was an A: the 10 unreviewed crops are estimated A too
    assert a.fractions["A"] == pytest.approx(1.0)
    assert a.fractions["B+C"] == pytest.approx(0.0)
    assert (a.n_confirmed, a.n_unreviewed, a.n_audit) == (5, 10, 5)


def test_no_audit_is_an_error() -> None:
    with pytest.raises(ValueError, match="no audit"):
        audit_correction({"A": 1}, np.zeros((0, 3)), np.zeros((0, 3)), [])
