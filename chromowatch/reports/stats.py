"""Per-sample statistics: pure functions over plain data, no database, no I/O.

Chromosomes of one cell are not independent (a cell with a cohesion defect shows it in many
chromosomes), so beside the pooled counts with Wilson intervals there are per-metaphase
fractions and a comparison with a control that resamples whole cells. The model's known
errors (its holdout confusion matrix) are undone by adjusted classify-and-count, so that
B/C confusion does not bias a sample's fractions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from chromowatch.records import CLASS_NAMES

Z95 = 1.959963984540054
GROUPS: tuple[str, ...] = (*CLASS_NAMES, "B+C")
LOW_CONFIDENCE = "low confidence"
NO_PREDICTION = "no prediction"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (0, 0 when n is 0).

    Wilson rather than the normal approximation: it stays inside [0, 1] and keeps its
    coverage for the small counts and extreme fractions that class C often has.
    """
    if n <= 0:
        return (0.0, 0.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Proportion:
    """k of n with its Wilson 95% interval."""

    k: int
    n: int

    @property
    def fraction(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)


def proportions(counts: Mapping[str, int]) -> dict[str, Proportion]:
    """A, B, C and B+C as proportions of the scored total."""
    n = sum(counts.get(c, 0) for c in CLASS_NAMES)
    out = {c: Proportion(counts.get(c, 0), n) for c in CLASS_NAMES}
    out["B+C"] = Proportion(counts.get("B", 0) + counts.get("C", 0), n)
    return out


@dataclass(frozen=True)
class CropObservation:
    """One crop as the statistics see it (built from the store's rows)."""

    crop_id: int
    image_id: int
    metaphase: int  # index of its metaphase in the image; -1: not in any metaphase
    predicted: str | None  # the model's class (None: no prediction)
    confidence: float  # the model's top probability
    confirmed: str | None  # a person's class, which wins over the model's
    flags: frozenset[str] = frozenset()

    def counted_as(self, min_confidence: float = 0.0) -> tuple[str | None, str | None]:
        """(class it is counted as, None) or (None, why it is left out).

        A confirmed label always counts; otherwise flagged crops, crops without a
        prediction and crops below min_confidence are left out.
        """
        if self.confirmed:
            return self.confirmed, None
        if self.flags:
            return None, "flagged: " + "+".join(sorted(self.flags))
        if not self.predicted:
            return None, NO_PREDICTION
        if self.confidence < min_confidence:
            return None, LOW_CONFIDENCE
        return self.predicted, None


@dataclass(frozen=True)
class MetaphaseStats:
    image_id: int
    metaphase: int
    counts: dict[str, int]

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def fraction(self, group: str) -> float:
        if not self.n:
            return 0.0
        if group == "B+C":
            return (self.counts["B"] + self.counts["C"]) / self.n
        return self.counts[group] / self.n


@dataclass(frozen=True)
class Spread:
    """Five-number summary of per-metaphase fractions of one group."""

    n: int
    minimum: float
    q1: float
    median: float
    q3: float
    maximum: float


@dataclass(frozen=True)
class SampleStats:
    sample: str
    crops: int  # all crops of the sample's finished images
    counts: dict[str, int]  # counted (scored) crops per class
    confirmed: dict[str, int]  # of those, confirmed by a person
    excluded: dict[str, int]  # crops left out, by reason
    metaphases: tuple[MetaphaseStats, ...]
    outside_metaphases: int  # scored crops not in any metaphase (counted in the totals only)
    warnings: tuple[str, ...]

    @property
    def scored(self) -> int:
        return sum(self.counts.values())

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())

    @property
    def excluded_share(self) -> float:
        return self.excluded_total / self.crops if self.crops else 0.0

    @property
    def predicted_only(self) -> dict[str, int]:
        """Counted crops whose class is the model's (not confirmed by a person)."""
        return {c: self.counts[c] - self.confirmed[c] for c in CLASS_NAMES}

    @property
    def proportions(self) -> dict[str, Proportion]:
        return proportions(self.counts)

    def distribution(self, group: str = "B+C") -> Spread | None:
        values = [m.fraction(group) for m in self.metaphases if m.n]
        if not values:
            return None
        q = np.quantile(np.asarray(values, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0])
        return Spread(len(values), *(float(v) for v in q))


def summarize(
    sample: str,
    crops: Iterable[CropObservation],
    *,
    min_confidence: float = 0.0,
    min_chromosomes: int = 50,
    min_metaphases: int = 10,
) -> SampleStats:
    """Counts, exclusions and per-metaphase counts of one sample, with plain warnings."""
    counts = dict.fromkeys(CLASS_NAMES, 0)
    confirmed = dict.fromkeys(CLASS_NAMES, 0)
    excluded: Counter[str] = Counter()
    per_cell: dict[tuple[int, int], dict[str, int]] = {}
    total = outside = 0
    for crop in crops:
        total += 1
        label, reason = crop.counted_as(min_confidence)
        if label is None:
            excluded[reason or NO_PREDICTION] += 1
            continue
        counts[label] += 1
        if crop.confirmed:
            confirmed[label] += 1
        if crop.metaphase < 0:
            outside += 1
            continue
        cell = per_cell.setdefault((crop.image_id, crop.metaphase), dict.fromkeys(CLASS_NAMES, 0))
        cell[label] += 1
    cells = tuple(
        MetaphaseStats(image_id, metaphase, cell)
        for (image_id, metaphase), cell in sorted(per_cell.items())
    )
    scored = sum(counts.values())
    warnings: list[str] = []
    if scored < min_chromosomes:
        warnings.append(
            f"only {scored} scored chromosomes (fewer than {min_chromosomes}): fractions are "
            "imprecise; score more spreads"
        )
    if len(cells) < min_metaphases:
        warnings.append(
            f"only {len(cells)} metaphases (fewer than {min_metaphases}): cell-to-cell "
            "variation is poorly known; score more cells"
        )
    if total and sum(excluded.values()) / total > 0.2:
        warnings.append(
            f"{sum(excluded.values())} of {total} crops ({sum(excluded.values()) / total:.0%}) "
            "are left out; review the flagged ones"
        )
    return SampleStats(
        sample=sample,
        crops=total,
        counts=counts,
        confirmed=confirmed,
        excluded=dict(sorted(excluded.items())),
        metaphases=cells,
        outside_metaphases=outside,
        warnings=tuple(warnings),
    )


# -- comparison with a control ---------------------------------------------------------


def _log_comb(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    from scipy.special import gammaln

    n_arr = np.asarray(n, dtype=float)
    k_arr = np.asarray(k, dtype=float)
    return np.asarray(gammaln(n_arr + 1) - gammaln(k_arr + 1) - gammaln(n_arr - k_arr + 1))


def fisher_exact_kx2(table: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Two-sided exact test (Freeman-Halton) of a k x 2 table, k = 2 or 3.

    Sums the probabilities of all tables with the same margins that are no more likely
    than the observed one. The two smallest rows are enumerated, the largest follows
    from the column total, so small rows keep this quick even for large samples.
    """
    t = np.asarray(table, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] not in (2, 3) or (t < 0).any():
        raise ValueError("fisher_exact_kx2 takes a 2x2 or 3x2 table of non-negative counts")
    rows = t.sum(axis=1)
    col = int(t[:, 0].sum())
    total = int(rows.sum())
    if col in (0, total):
        return 1.0
    order = np.argsort(rows, kind="stable")
    r = rows[order]
    x_obs = t[order, 0]
    log_denominator = _log_comb(total, col)

    def log_p(xs: list[np.ndarray]) -> np.ndarray:
        return sum(_log_comb(int(r[i]), x) for i, x in enumerate(xs)) - log_denominator

    if len(r) == 2:
        x0 = np.arange(0, min(int(r[0]), col) + 1)
        x1 = col - x0
        ok = (x1 >= 0) & (x1 <= r[1])
        grid = log_p([x0[ok], x1[ok]])
    else:
        g0, g1 = np.meshgrid(np.arange(0, min(int(r[0]), col) + 1),
                             np.arange(0, min(int(r[1]), col) + 1), indexing="ij")
        g2 = col - g0 - g1
        ok = (g2 >= 0) & (g2 <= r[2])
        grid = log_p([g0[ok], g1[ok], g2[ok]])
    observed = float(log_p([np.asarray(v) for v in x_obs]))
    # Relative tolerance as in scipy: tables as likely as the observed one count as extreme.
    extreme = grid <= observed + 1e-7
    return float(min(1.0, np.exp(grid[extreme]).sum()))


@dataclass(frozen=True)
class Comparison:
    """A sample against its control: pooled counts and whole cells."""

    sample: str
    control: str
    table: tuple[tuple[int, int], ...]  # rows A, B, C; columns sample, control
    test: str  # "chi-square" or "Fisher's exact"
    statistic: float | None
    dof: int | None
    p_value: float
    difference_bc: float  # sample minus control, fraction B+C
    difference_interval: tuple[float, float] | None  # bootstrap over metaphases, 95%
    mann_whitney_u: float | None
    mann_whitney_p: float | None
    cells: tuple[int, int]  # metaphases in sample, control
    notes: tuple[str, ...] = field(default_factory=tuple)


def compare(
    sample: SampleStats,
    control: SampleStats,
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    min_expected: float = 5.0,
) -> Comparison:
    """Chi-square on the 3x2 table (Fisher's exact when an expected count is below
    min_expected), and two tests over whole cells: Mann-Whitney on per-metaphase B+C
    fractions and a bootstrap over metaphases of the difference in pooled B+C."""
    from scipy import stats

    table = tuple((sample.counts[c], control.counts[c]) for c in CLASS_NAMES)
    notes: list[str] = []
    kept = np.asarray([row for row in table if sum(row) > 0], dtype=np.int64)
    statistic: float | None = None
    dof: int | None = None
    if sample.scored == 0 or control.scored == 0 or len(kept) < 2:
        test, p_value = "none", 1.0
        notes.append("the counts cannot differ (a sample has no scored chromosomes, or only "
                     "one class occurs)")
    else:
        expected = np.outer(kept.sum(axis=1), kept.sum(axis=0)) / kept.sum()
        if (expected < min_expected).any():
            test = "Fisher's exact"
            p_value = fisher_exact_kx2(kept)
            notes.append(f"an expected count is below {min_expected:g}: exact test used")
        else:
            test = "chi-square"
            res = stats.chi2_contingency(kept, correction=False)
            statistic, p_value, dof = float(res[0]), float(res[1]), int(res[2])
    diff = sample.proportions["B+C"].fraction - control.proportions["B+C"].fraction
    s_cells = [m for m in sample.metaphases if m.n]
    c_cells = [m for m in control.metaphases if m.n]
    interval: tuple[float, float] | None = None
    u = p_u = None
    if len(s_cells) >= 2 and len(c_cells) >= 2:
        interval = bootstrap_difference(
            [(m.counts["B"] + m.counts["C"], m.n) for m in s_cells],
            [(m.counts["B"] + m.counts["C"], m.n) for m in c_cells],
            n_boot=bootstrap,
            seed=seed,
        )
        mw = stats.mannwhitneyu(
            [m.fraction("B+C") for m in s_cells],
            [m.fraction("B+C") for m in c_cells],
            alternative="two-sided",
        )
        u, p_u = float(mw.statistic), float(mw.pvalue)
    else:
        notes.append("fewer than 2 metaphases in a sample: no test over whole cells")
    return Comparison(
        sample=sample.sample,
        control=control.sample,
        table=table,
        test=test,
        statistic=statistic,
        dof=dof,
        p_value=float(p_value),
        difference_bc=diff,
        difference_interval=interval,
        mann_whitney_u=u,
        mann_whitney_p=p_u,
        cells=(len(s_cells), len(c_cells)),
        notes=tuple(notes),
    )


def bootstrap_difference(
    sample: Sequence[tuple[int, int]],
    control: Sequence[tuple[int, int]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of pooled fraction(sample) - pooled fraction(control), resampling
    whole cells (k, n) with replacement, so within-cell correlation widens it as it should."""
    rng = np.random.default_rng(seed)

    def pooled(cells: Sequence[tuple[int, int]]) -> np.ndarray:
        arr = np.asarray(cells, dtype=float)
        idx = rng.integers(0, len(arr), size=(n_boot, len(arr)))
        k = arr[idx, 0].sum(axis=1)
        n = arr[idx, 1].sum(axis=1)
        return np.divide(k, n, out=np.zeros_like(k), where=n > 0)

    diffs = pooled(sample) - pooled(control)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return float(lo), float(hi)


# -- adjusted classify-and-count --------------------------------------------------------


@dataclass(frozen=True)
class Adjusted:
    """Fractions corrected for the model's confusion, with bootstrap 95% intervals."""

    fractions: dict[str, float]  # A, B, C, B+C
    intervals: dict[str, tuple[float, float]]
    n_predicted: int  # crops whose class came from the model (these are corrected)
    n_confirmed: int  # crops with a person's class (taken as they are)
    holdout: dict[str, int] | None  # holdout crops per true class (None: given as rates)
    clipped: bool  # the raw solution left the simplex and was projected back


def _solve_simplex(q: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, bool]:
    """p >= 0, sum p = 1 minimising |m.T p - q|: exact when that has a solution inside."""
    from scipy.optimize import nnls

    try:
        p = np.linalg.solve(m.T, q)
        if (p >= -1e-12).all():
            p = np.clip(p, 0.0, None)
            return p / p.sum(), False
    except np.linalg.LinAlgError:
        pass
    weight = 1e3
    a = np.vstack([m.T, weight * np.ones(m.shape[0])])
    b = np.concatenate([q, [weight]])
    p, _ = nnls(a, b)
    s = p.sum()
    return (p / s if s > 0 else np.full(len(p), 1 / len(p))), True


def adjust_for_confusion(
    predicted: Mapping[str, int],
    confusion: Sequence[Sequence[float]] | np.ndarray,
    *,
    confirmed: Mapping[str, int] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Adjusted:
    """Adjusted classify-and-count.

    `confusion` is the model's holdout confusion matrix in counts, rows the true class and
    columns the predicted class, both in the order A, B, C. With M[i, j] = P(predicted j |
    true i), the expected predicted fractions are q = M.T p; we solve for the true fractions
    p on the simplex. Intervals resample both the sample's predicted counts and each row of
    the holdout matrix, so a small holdout widens them. Confirmed labels are added as they are.
    Raises ValueError when the matrix cannot support a correction.
    """
    c = np.asarray(confusion, dtype=float)
    if c.shape != (3, 3) or (c < 0).any():
        raise ValueError("the confusion matrix must be 3x3 counts (rows true A, B, C)")
    row_totals = c.sum(axis=1)
    if (row_totals <= 0).any():
        missing = [CLASS_NAMES[i] for i in np.flatnonzero(row_totals <= 0)]
        raise ValueError(f"the holdout has no crops of class {', '.join(missing)}")
    m = c / row_totals[:, None]
    if abs(np.linalg.det(m)) < 1e-6:
        raise ValueError("the confusion matrix is singular: classes cannot be told apart")
    pred = np.asarray([predicted.get(k, 0) for k in CLASS_NAMES], dtype=float)
    conf = np.asarray([(confirmed or {}).get(k, 0) for k in CLASS_NAMES], dtype=float)
    n_pred, n_conf = int(pred.sum()), int(conf.sum())
    if n_pred + n_conf == 0:
        raise ValueError("no scored chromosomes to correct")

    def combine(p: np.ndarray) -> np.ndarray:
        return (conf + n_pred * p) / (n_conf + n_pred)

    if n_pred:
        p_hat, clipped = _solve_simplex(pred / n_pred, m)
    else:
        p_hat, clipped = np.zeros(3), False
    point = combine(p_hat)

    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, 3))
    int_rows = np.rint(row_totals).astype(np.int64)
    # A matrix of rates (not counts) carries no holdout size: only the sample is resampled.
    counts_known = bool(np.allclose(c, np.rint(c)) and (int_rows >= 1).all())
    for b in range(n_boot):
        if n_pred:
            q_b = rng.multinomial(n_pred, pred / n_pred) / n_pred
            m_b = (
                np.vstack([rng.multinomial(int_rows[i], m[i]) / int_rows[i] for i in range(3)])
                if counts_known
                else m
            )
            p_b, _ = _solve_simplex(q_b, m_b)
        else:
            p_b = p_hat
        samples[b] = combine(p_b)
    bc = samples[:, 1] + samples[:, 2]
    fractions = {k: float(point[i]) for i, k in enumerate(CLASS_NAMES)}
    fractions["B+C"] = float(point[1] + point[2])
    intervals: dict[str, tuple[float, float]] = {}
    for i, k in enumerate(CLASS_NAMES):
        lo, hi = np.quantile(samples[:, i], [0.025, 0.975])
        intervals[k] = (float(lo), float(hi))
    lo, hi = np.quantile(bc, [0.025, 0.975])
    intervals["B+C"] = (float(lo), float(hi))
    return Adjusted(
        fractions=fractions,
        intervals=intervals,
        n_predicted=n_pred,
        n_confirmed=n_conf,
        holdout=(
            {k: int(int_rows[i]) for i, k in enumerate(CLASS_NAMES)} if counts_known else None
        ),
        clipped=clipped,
    )
