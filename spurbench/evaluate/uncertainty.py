"""How sure a number is: bootstrap intervals resampled by the set's own unit, paired differences, exact McNemar,
Wilson intervals and rank intervals. Each function is small, pure numpy, and computed from per-image results alone
(never by re-running a model); tests hold them against statsmodels, scipy and simulations with a known truth.

The resampling unit follows how a set was made, because its images are not independent:
- a spurious set: the class (one fine-tuned generator per class, so images of a class move together). Classes are
  drawn with replacement and keep their images: resampling the images inside a drawn class as well would count the
  within-class spread twice (Davison & Hinkley 1997, section 3.8) and widen the interval beyond its level;
- a shift set: the source photo (`reference_index`; all shifted versions of one photo move together, paired with
  the photo itself);
- a group set (Waterbirds): images within each group, the groups held fixed (stratified).
A figure for one class alone resamples that class's images.

Replicates are drawn as counts: `counts[b, u]` is how often unit u is drawn in replicate b, so a statistic that is a
ratio of sums over units is one matrix product for all B replicates at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: resamples per interval unless asked otherwise
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Method:
    """What an interval was computed with, recorded beside it (`uncertainty` in an entry) so it can be recomputed."""

    unit: str  # "class", "reference_index", "image-within-group", "image"
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    level: float = LEVEL
    method: str = "percentile"

    def record(self) -> dict[str, Any]:
        return asdict(self)


def unit_index(units: Sequence[Any]) -> tuple[np.ndarray, int]:
    """(each row's unit as 0..U-1, U) for any hashable unit ids (class labels, reference indices)."""
    _, inverse = np.unique(np.asarray(units), return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse.astype(np.int64), int(inverse.max()) + 1 if inverse.size else 0


def bootstrap_counts(n_units: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """counts[b, u]: how often unit u is drawn (with replacement, n_units draws) in replicate b; int32[B, U]."""
    rng = np.random.default_rng(seed)
    if n_units == 0:
        return np.zeros((resamples, 0), dtype=np.int32)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=resamples).astype(np.int32)


def stratified_counts(
    strata: Sequence[Any], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """counts[b, i] for rows resampled within their stratum (each stratum keeps its size); int32[B, N]."""
    index, n_strata = unit_index(strata)
    rng = np.random.default_rng(seed)
    out = np.zeros((resamples, index.size), dtype=np.int32)
    for s in range(n_strata):
        rows = np.flatnonzero(index == s)
        out[:, rows] = rng.multinomial(rows.size, np.full(rows.size, 1.0 / rows.size), size=resamples)
    return out


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float | None, float | None]:
    """The (1-level)/2 and (1+level)/2 quantiles of the finite replicates; (None, None) when there are none."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return None, None
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def per_unit_sums(values: Any, units: np.ndarray, n_units: int) -> np.ndarray:
    """Sum of `values` (float[N]) over the rows of each unit: float[U]."""
    return np.bincount(units, weights=np.asarray(values, dtype=np.float64), minlength=n_units)


def ratio_replicates(counts: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """sum_u counts[b,u] numerator[u] / sum_u counts[b,u] denominator[u] for every replicate b (NaN where the
    denominator is 0): a pooled mean under resampling of whole units."""
    num = counts @ numerator
    den = counts @ denominator
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def pooled_mean_interval(values: Any, units: Sequence[Any], method: Method) -> tuple[float | None, float | None]:
    """Interval of the mean of `values` over all rows (e.g. the micro spurious rate: values = top-1 hits), whole
    units resampled."""
    index, n_units = unit_index(units)
    counts = bootstrap_counts(n_units, method.resamples, method.seed)
    reps = ratio_replicates(counts, per_unit_sums(values, index, n_units), np.bincount(index, minlength=n_units))
    return percentile_interval(reps, method.level)


def unit_mean_interval(per_unit: Any, method: Method) -> tuple[float | None, float | None]:
    """Interval of the unweighted mean of one value per unit (the macro spurious rate over classes, the mean
    spurious-score AP over classes), units resampled. Units whose value is undefined (None / NaN) are left out
    of each replicate's mean, as they are of the estimate."""
    v = np.array([np.nan if x is None else x for x in per_unit], dtype=np.float64)
    defined = np.isfinite(v)
    counts = bootstrap_counts(v.size, method.resamples, method.seed)
    reps = ratio_replicates(counts, np.where(defined, v, 0.0), defined.astype(np.float64))
    return percentile_interval(reps, method.level)


def paired_difference_interval(
    a: Any, b: Any, units: Sequence[Any], method: Method
) -> tuple[float | None, float | None]:
    """Interval of mean(a) - mean(b) over rows both were measured on (two models' hits on the same images, or a
    photo's shifted hits against its original's), the same units drawn for both sides so the pairing is kept."""
    index, n_units = unit_index(units)
    counts = bootstrap_counts(n_units, method.resamples, method.seed)
    sizes = np.bincount(index, minlength=n_units).astype(np.float64)
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    reps = ratio_replicates(counts, per_unit_sums(diff, index, n_units), sizes)
    return percentile_interval(reps, method.level)


def drop_interval(
    shifted_correct: Any,
    shifted_units: Sequence[Any],
    original_correct: Any,
    original_units: Sequence[Any],
    method: Method,
) -> tuple[float | None, float | None]:
    """Interval of the paired accuracy drop (original accuracy minus shifted accuracy) of a shift set, source photos
    resampled: a drawn photo brings its original and all its shifted versions."""
    all_units = np.concatenate([np.asarray(shifted_units), np.asarray(original_units)])
    index, n_units = unit_index(all_units)
    s_idx, o_idx = index[: len(shifted_units)], index[len(shifted_units) :]
    counts = bootstrap_counts(n_units, method.resamples, method.seed)
    orig = ratio_replicates(
        counts, per_unit_sums(original_correct, o_idx, n_units), np.bincount(o_idx, minlength=n_units).astype(float)
    )
    shifted = ratio_replicates(
        counts, per_unit_sums(shifted_correct, s_idx, n_units), np.bincount(s_idx, minlength=n_units).astype(float)
    )
    return percentile_interval(orig - shifted, method.level)


def group_accuracy_replicates(correct: Any, groups: Sequence[Any], method: Method) -> tuple[list[Any], np.ndarray]:
    """(group names, accuracy[B, G]) with images resampled within each group (groups fixed): the replicates of
    every per-group accuracy, from which worst-group and mean-group intervals follow."""
    names, index = np.unique(np.asarray(groups), return_inverse=True)
    index = index.reshape(-1)
    counts = stratified_counts(index, method.resamples, method.seed).astype(np.float64)
    c = np.asarray(correct, dtype=np.float64)
    acc = np.stack([(counts[:, index == g] @ c[index == g]) / (index == g).sum() for g in range(len(names))], axis=1)
    return list(names), acc


def statistic_interval(
    statistic: Callable[[np.ndarray], float | None], n: int, method: Method
) -> tuple[float | None, float | None]:
    """Interval of any statistic of rows 0..n-1 (independent rows: a class's own images for a per-class AP),
    `statistic(indices)` evaluated on each resample of row indices."""
    rng = np.random.default_rng(method.seed)
    reps = []
    for _ in range(method.resamples):
        value = statistic(rng.integers(0, n, size=n))
        reps.append(np.nan if value is None else value)
    return percentile_interval(np.asarray(reps), method.level)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float | None, float | None]:
    """Wilson score interval of a binomial proportion (statsmodels' `proportion_confint(method="wilson")`)."""
    from scipy.stats import norm

    if n <= 0:
        return None, None
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def mcnemar_exact(a_hits: Any, b_hits: Any) -> dict[str, Any]:
    """Exact McNemar test of two models' per-image hits on the same images: the discordant pairs (a hit where b
    missed, and the reverse) and the two-sided binomial p-value (statsmodels' `mcnemar(table, exact=True)`)."""
    from scipy.stats import binom

    a = np.asarray(a_hits, dtype=bool)
    b = np.asarray(b_hits, dtype=bool)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(min(1.0, 2 * binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def rank_intervals(replicates: np.ndarray, higher_is_better: bool, level: float = LEVEL) -> list[tuple[int, int]]:
    """Each model's (best, worst) rank over paired replicates (`replicates[b, m]`: model m's metric in replicate
    b, every model on the same resample): the (1-level)/2 and (1+level)/2 quantiles of its rank, 1 = best."""
    r = np.asarray(replicates, dtype=np.float64)
    key = -r if higher_is_better else r
    key = np.where(np.isfinite(key), key, np.inf)
    # rank 1 + the number of models strictly better in that replicate (ties share the better rank)
    ranks = 1 + (key[:, None, :] < key[:, :, None]).sum(axis=2)
    lo = np.floor(np.quantile(ranks, (1 - level) / 2, axis=0)).astype(int)
    hi = np.ceil(np.quantile(ranks, (1 + level) / 2, axis=0)).astype(int)
    return [(int(a), int(b)) for a, b in zip(lo, hi)]


def indistinguishable(intervals: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Groups of models (by position) whose rank intervals overlap, chained: models a page should mark as not told
    apart. Singletons are left out."""
    order = sorted(range(len(intervals)), key=lambda m: intervals[m])
    groups: list[list[int]] = []
    reach = -1
    for m in order:
        lo, hi = intervals[m]
        if groups and lo <= reach:
            groups[-1].append(m)
            reach = max(reach, hi)
        else:
            groups.append([m])
            reach = hi
    return [sorted(g) for g in groups if len(g) > 1]
