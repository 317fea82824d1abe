"""Statistics against values computed by hand or by scipy."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pytest
from scipy import stats

from chromowatch.reports.stats import (
    CropObservation,
    Proportion,
    adjust_for_confusion,
    bootstrap_difference,
    compare,
    fisher_exact_kx2,
    summarize,
    wilson_interval,
)


def _obs(cells: list[str], *, image: int = 0, start: int = 0) -> list[CropObservation]:
    out: list[CropObservation] = []
    for m, labels in enumerate(cells):
        for lab in labels:
            out.append(CropObservation(start + len(out), image, m, lab, 0.9, None))
    return out


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 50), (49, 50), (50, 50), (1, 1)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_by_hand() -> None:
    # k=10, n=50: p=0.2, z^2/n = 0.076829; centre 0.222... ; half 0.1081...
    z = 1.959963984540054
    p, n = 0.2, 50
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(10, 50) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(10, 50) == pytest.approx((0.1124, 0.3304), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    assert Proportion(10, 50).fraction == 0.2


def test_summarize_counts_fractions_and_metaphases() -> None:
    crops = [
        *_obs(["AABC", "ABBB"]),
        CropObservation(100, 0, -1, "C", 0.9, None),  # outside any metaphase
        CropObservation(101, 0, 0, "A", 0.9, None, frozenset({"touching"})),  # flagged: out
        CropObservation(102, 0, 0, "A", 0.9, "C", frozenset({"touching"})),  # confirmed: in
        CropObservation(103, 0, 1, "B", 0.4, None),  # low confidence with min_confidence 0.5
        CropObservation(104, 0, 1, None, 0.0, None),  # no prediction
    ]
    s = summarize("s", crops, min_confidence=0.5, min_chromosomes=5, min_metaphases=2)
    assert s.counts == {"A": 3, "B": 4, "C": 3}
    assert s.confirmed == {"A": 0, "B": 0, "C": 1}
    assert s.predicted_only == {"A": 3, "B": 4, "C": 2}
    assert s.scored == 10 and s.crops == 13 and s.outside_metaphases == 1
    assert s.excluded == {"flagged: touching": 1, "low confidence": 1, "no prediction": 1}
    assert s.excluded_share == pytest.approx(3 / 13)
    assert [m.counts for m in s.metaphases] == [{"A": 2, "B": 1, "C": 2},
                                               {"A": 1, "B": 3, "C": 0}]
    assert s.metaphases[0].fraction("B+C") == pytest.approx(3 / 5)
    p = s.proportions
    assert (p["B+C"].k, p["B+C"].n) == (7, 10)
    assert s.warnings[-1].startswith("3 of 13 crops (23%) are left out")
    d = s.distribution("B+C")
    assert d is not None and (d.n, d.minimum, d.maximum) == (2, 0.6, 0.75)
    assert d.median == pytest.approx(0.675)


def test_warnings_below_50_chromosomes_or_10_metaphases() -> None:
    s = summarize("s", _obs(["AB"] * 9))
    assert any("only 18 scored chromosomes" in w for w in s.warnings)
    assert any("only 9 metaphases" in w for w in s.warnings)
    ok = summarize("s", _obs(["AAAAB"] * 10))
    assert ok.warnings == ()


def _brute_force_fisher(table: list[list[int]]) -> float:
    rows = [sum(r) for r in table]
    col = sum(r[0] for r in table)
    total = sum(rows)

    def prob(xs: tuple[int, ...]) -> float:
        return math.prod(comb(r, x) for r, x in zip(rows, xs, strict=True)) / comb(total, col)

    observed = prob(tuple(r[0] for r in table))
    tables = [(a, b, col - a - b) for a in range(rows[0] + 1) for b in range(rows[1] + 1)
              if 0 <= col - a - b <= rows[2]]
    return sum(prob(t) for t in tables if prob(t) <= observed * (1 + 1e-7))


@pytest.mark.parametrize("table", [[[3, 1], [1, 3], [0, 2]], [[5, 0], [2, 4], [1, 7]],
                                   [[0, 3], [9, 1], [2, 2]], [[12, 2], [1, 9], [30, 25]]])
def test_fisher_3x2_matches_exhaustive_enumeration(table: list[list[int]]) -> None:
    assert fisher_exact_kx2(table) == pytest.approx(_brute_force_fisher(table), rel=1e-9)


@pytest.mark.parametrize("table", [[[3, 1], [1, 5]], [[8, 2], [1, 5]], [[0, 10], [10, 0]]])
def test_fisher_2x2_matches_scipy(table: list[list[int]]) -> None:
    assert fisher_exact_kx2(table) == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9)


def test_compare_uses_chi_square_for_large_counts() -> None:
    sample = summarize("s", _obs(["AABBC" * 4] * 10))
    control = summarize("c", _obs(["AAAAB" * 4] * 10, image=1))
    cmp = compare(sample, control, bootstrap=500)
    table = [[sample.counts[c], control.counts[c]] for c in "ABC"]
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert cmp.test == "chi-square" and cmp.dof == dof == 2
    assert cmp.statistic == pytest.approx(chi2) and cmp.p_value == pytest.approx(p)
    assert cmp.difference_bc == pytest.approx(0.6 - 0.2)
    mw = stats.mannwhitneyu([0.6] * 10, [0.2] * 10, alternative="two-sided")
    assert cmp.mann_whitney_p == pytest.approx(mw.pvalue)
    # Every cell has the same fraction: resampling cells cannot move the difference.
    assert cmp.difference_interval == pytest.approx((0.4, 0.4))


def test_compare_switches_to_fisher_with_small_expected_counts() -> None:
    sample = summarize("s", _obs(["AABC"]))
    control = summarize("c", _obs(["AAAA", "AAB"], image=1))
    cmp = compare(sample, control)
    assert cmp.test == "Fisher's exact"
    assert cmp.p_value == pytest.approx(_brute_force_fisher([[2, 6], [1, 1], [1, 0]]))
    assert cmp.mann_whitney_p is None and cmp.difference_interval is None
    assert any("fewer than 2 metaphases" in n for n in cmp.notes)


def test_compare_with_a_class_absent_everywhere_drops_that_row() -> None:
    sample = summarize("s", _obs(["AB" * 20] * 3))
    control = summarize("c", _obs(["AAAB" * 10] * 3, image=1))
    cmp = compare(sample, control)
    chi2, p, dof, _ = stats.chi2_contingency([[60, 90], [60, 30]], correction=False)
    assert cmp.table[2] == (0, 0) and (cmp.dof, cmp.statistic) == (dof, pytest.approx(chi2))
    assert cmp.p_value == pytest.approx(p)


def test_bootstrap_difference_widens_with_cell_to_cell_variation() -> None:
    even = bootstrap_difference([(5, 10)] * 10, [(2, 10)] * 10, n_boot=1000)
    varied = bootstrap_difference([(1, 10), (9, 10)] * 5, [(0, 10), (4, 10)] * 5, n_boot=1000)
    assert even == pytest.approx((0.3, 0.3))
    assert varied[0] < 0.3 < varied[1] and varied[1] - varied[0] > 0.1


def test_adjusted_classify_and_count_recovers_true_fractions() -> None:
    # True fractions 0.5/0.3/0.2 seen through a model that calls 20% of B as C:
    # q = M^T p = (0.45, 0.31, 0.24) by hand.
    confusion = [[90, 10, 0], [0, 80, 20], [0, 10, 90]]
    adj = adjust_for_confusion({"A": 450, "B": 310, "C": 240}, confusion, n_boot=300)
    assert adj.fractions["A"] == pytest.approx(0.5)
    assert adj.fractions["B"] == pytest.approx(0.3)
    assert adj.fractions["C"] == pytest.approx(0.2)
    assert adj.fractions["B+C"] == pytest.approx(0.5)
    for k, v in adj.fractions.items():
        lo, hi = adj.intervals[k]
        assert lo <= v <= hi and hi - lo < 0.2
    assert adj.holdout == {"A": 100, "B": 100, "C": 100} and not adj.clipped


def test_adjusted_identity_matrix_changes_nothing_and_confirmed_are_added() -> None:
    adj = adjust_for_confusion({"A": 30, "B": 10, "C": 0}, np.eye(3) * 50,
                               confirmed={"C": 10}, n_boot=200)
    assert adj.fractions == pytest.approx({"A": 0.6, "B": 0.2, "C": 0.2, "B+C": 0.4})
    assert (adj.n_predicted, adj.n_confirmed) == (40, 10)


def test_adjusted_projects_back_onto_the_simplex() -> None:
    # Fewer B predicted than the model's B->B rate allows: the raw solution is negative.
    adj = adjust_for_confusion({"A": 95, "B": 0, "C": 5}, [[80, 20, 0], [0, 90, 10],
                                                          [0, 5, 95]], n_boot=200)
    assert adj.clipped
    assert all(v >= 0 for v in adj.fractions.values())
    assert sum(adj.fractions[c] for c in "ABC") == pytest.approx(1.0)


def test_adjusted_with_rates_skips_the_holdout_resampling() -> None:
    rates = [[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.0, 0.1, 0.9]]
    adj = adjust_for_confusion({"A": 450, "B": 310, "C": 240}, rates, n_boot=200)
    assert adj.holdout is None and adj.fractions["B"] == pytest.approx(0.3)


@pytest.mark.parametrize(("matrix", "message"), [
    ([[1, 0, 0], [0, 0, 0], [0, 0, 1]], "no crops of class B"),
    ([[1, 1, 0], [1, 1, 0], [0, 0, 1]], "singular"),
    ([[1, 0], [0, 1]], "3x3"),
])
def test_adjusted_refuses_unusable_matrices(matrix: list[list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adjust_for_confusion({"A": 1, "B": 1, "C": 1}, matrix)
