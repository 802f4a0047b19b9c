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
        out[:, rows] = _draws(rng, rows.size, resamples)
    return out


def _draws(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """counts[b, i] of n rows drawn with replacement, per replicate: uniform indices counted (a multinomial draw,
    several times faster than `rng.multinomial` for many small strata)."""
    idx = rng.integers(0, n, size=(resamples, n))
    flat = (np.arange(resamples)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


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


# ---------------------------------------------------------------------------------------------
# an entry's `uncertainty` block: every headline figure's interval from the per-image results, all from one
# matrix of unit counts so that entries scored on the same rows share their resamples (paired: rank intervals
# and `leaderboard --compare` subtract replicates drawn from the same counts)

#: headline metrics of an entry, by the kind of its set (the names of `entry["metrics"]`)
SPURIOUS_HEADLINE = (
    "spurious_rate",
    "spurious_rate_micro",
    "spurious_rate_top5",
    "spurious_rate_top5_micro",
    "mean_target_prob",
    "spurious_score_ap",
    "spurious_score_auroc",
)
SHIFT_HEADLINE = (
    "worst_group_accuracy",
    "mean_group_accuracy",
    "train_weighted_group_accuracy",
    "accuracy",
    "accuracy_top5",
    "reference_accuracy",
    "accuracy_drop",
)
#: a figure for one class (or one group) resamples the images of that class (group)
PER_CLASS_UNIT = "image-within-class"
# Replicates are kept in the entry (for rank intervals and --compare) as uint16 over [-1, 1]: a step of 3e-5,
# far below any interval's width; 65535 stands for undefined (NaN).
_Q = 65534


def pack_replicates(values: np.ndarray) -> str:
    """float replicates in [-1, 1] (NaN allowed) -> compact base64 text for the entry."""
    import base64

    v = np.asarray(values, dtype=np.float64)
    q = np.where(np.isfinite(v), np.rint((np.clip(v, -1, 1) + 1) / 2 * _Q), _Q + 1).astype("<u2")
    return base64.b64encode(q.tobytes()).decode("ascii")


def unpack_replicates(text: Any, resamples: int) -> np.ndarray | None:
    """The replicates `pack_replicates` wrote; None when `text` is not that (an older or damaged entry)."""
    import base64
    import binascii

    if not isinstance(text, str) or len(text) > 4 * (2 * resamples + 2) // 3 + 4:
        return None
    try:
        q = np.frombuffer(base64.b64decode(text, validate=True), dtype="<u2")
    except (binascii.Error, ValueError):
        return None
    if q.size != resamples:
        return None
    return np.where(q > _Q, np.nan, q.astype(np.float64) / _Q * 2 - 1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _interval(reps: np.ndarray, method: Method) -> list[float] | None:
    lo, hi = percentile_interval(reps, method.level)
    return None if lo is None else [lo, hi]


def _units_sha(index: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(index, dtype="<i8").tobytes()).hexdigest()


def within_stratum_replicates(
    values: Sequence[np.ndarray], strata: Any, method: Method
) -> tuple[list[Any], list[np.ndarray]]:
    """(stratum names, [mean of each of `values` per stratum, float[B, S]]) with the rows resampled inside their
    stratum: the per-class (per-group) figures. The draws are `stratified_counts`' (same seed, same order), taken
    one stratum at a time so that no [B, N] matrix is built: one small matrix product per stratum."""
    names, index = np.unique(np.asarray(strata), return_inverse=True)
    index = index.reshape(-1)
    v = np.stack([np.asarray(x, dtype=np.float64).reshape(-1) for x in values], axis=1)  # [N, V]
    rng = np.random.default_rng(method.seed)
    out = np.empty((len(values), method.resamples, len(names)))
    for s in range(len(names)):
        rows = np.flatnonzero(index == s)
        draws = _draws(rng, rows.size, method.resamples).astype(np.float64)
        out[:, :, s] = ((draws @ v[rows]) / rows.size).T
    return list(names), list(out)


def _block(method: Method, index: np.ndarray, estimates: dict[str, np.ndarray], keep: Sequence[str]) -> dict[str, Any]:
    """The recorded block: the method, the unit's identity, each metric's interval, the kept replicates."""
    return {
        **method.record(),
        "num_units": int(index.max()) + 1 if index.size else 0,
        "units_sha256": _units_sha(index),
        "metrics": {k: _interval(v, method) for k, v in estimates.items()},
        "replicates": {k: pack_replicates(estimates[k]) for k in keep if k in estimates},
    }


def spurious_replicates(
    labels: Any,
    hit1: Any,
    hit5: Any,
    target_prob: Any,
    class_ap: Any = None,
    class_auroc: Any = None,
    method: Method | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(class index of each image, {metric: replicates float[B]}) of a spurious set's headline figures, classes
    resampled whole (`class_ap` / `class_auroc`: one value or None per class, in sorted class order)."""
    method = method or Method(unit="class")
    index, k = unit_index(labels)
    counts = bootstrap_counts(k, method.resamples, method.seed).astype(np.float64)
    n = np.bincount(index, minlength=k).astype(np.float64)
    drawn = counts.sum(axis=1)
    reps: dict[str, np.ndarray] = {}
    for name, v in (("spurious_rate", hit1), ("spurious_rate_top5", hit5), ("mean_target_prob", target_prob)):
        s = per_unit_sums(v, index, k)
        reps[name] = _ratio(counts @ (s / np.maximum(n, 1)), drawn)  # macro: mean over the drawn classes
        if name != "mean_target_prob":
            reps[name + "_micro"] = _ratio(counts @ s, counts @ n)  # micro: pooled over their images
    for name, per_class in (("spurious_score_ap", class_ap), ("spurious_score_auroc", class_auroc)):
        if per_class is not None:
            v = np.array([np.nan if x is None else x for x in per_class], dtype=np.float64)
            ok = np.isfinite(v)
            if ok.any():
                reps[name] = _ratio(counts @ np.where(ok, v, 0.0), counts @ ok.astype(np.float64))
    return index, reps


def spurious_uncertainty(
    labels: Any,
    hit1: Any,
    hit5: Any,
    target_prob: Any,
    class_ap: Any = None,
    class_auroc: Any = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """An entry's `uncertainty` block on a spurious set: headline intervals with classes resampled, per-class
    intervals with the class's images resampled."""
    method = Method(unit="class", resamples=resamples, seed=seed)
    index, reps = spurious_replicates(labels, hit1, hit5, target_prob, class_ap, class_auroc, method)
    out = _block(method, index, reps, SPURIOUS_HEADLINE)
    per_class = {"spurious_rate": hit1, "spurious_rate_top5": hit5, "mean_target_prob": target_prob}
    return {**out, "per_class_unit": PER_CLASS_UNIT, "per_class": _per_class(per_class, labels, method)}


def _per_class(values: dict[str, Any], labels: Any, method: Method) -> dict[str, dict[str, list[float] | None]]:
    """{class: {name: interval}} of the per-image `values`, each class's images resampled within it."""
    names, reps = within_stratum_replicates(list(values.values()), labels, method)
    return {str(int(k)): {v: _interval(r[:, j], method) for v, r in zip(values, reps)} for j, k in enumerate(names)}


def shift_replicates(
    labels: Any,
    hit1: Any,
    hit5: Any,
    groups: Any,
    units: Any | None,
    paired_reference: Any | None = None,
    reference_hits: Any | None = None,
    group_weights: dict[str, float] | None = None,
    method: Method | None = None,
) -> tuple[np.ndarray, list[Any], dict[str, np.ndarray]]:
    """(unit index of each row, group names, {metric: replicates float[B]}) of a shift set's headline figures.

    `units`: each image's source photo (`reference_index`): photos are drawn whole, with every shifted image
    made from them and their own reference result (`paired_reference`: 1 / 0 / -1 not scored). None: images
    are resampled within their group, and the reference split's images (`reference_hits`, unpaired) within
    a stratum of their own. `group_weights`: the training split's proportions (train-weighted accuracy)."""
    hit1 = np.asarray(hit1, dtype=np.float64)
    hit5 = np.asarray(hit5, dtype=np.float64)
    gnames, g = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    g = g.reshape(-1)
    n_img = hit1.size
    ref = np.zeros(0) if reference_hits is None or units is not None else np.asarray(reference_hits, np.float64)
    method = method or _shift_method(units)
    index, n_units, counts = _shift_counts(units, g, len(gnames), ref.size, method)
    img = index[:n_img]
    n_g = len(gnames)
    cell = img * n_g + g  # (unit, group) cells: a group's accuracy in a replicate is a ratio of cell sums
    s_cell = np.bincount(cell, weights=hit1, minlength=n_units * n_g).reshape(n_units, n_g)
    n_cell = np.bincount(cell, minlength=n_units * n_g).reshape(n_units, n_g).astype(np.float64)
    per_group = _ratio(counts @ s_cell, counts @ n_cell)  # [B, G]

    def drawn(values: np.ndarray) -> np.ndarray:  # each replicate's sum of per-image `values`
        return counts @ per_unit_sums(values, img, n_units)

    n_u = drawn(np.ones(n_img))
    reps = {
        "accuracy": _ratio(drawn(hit1), n_u),
        "accuracy_top5": _ratio(drawn(hit5), n_u),
        "worst_group_accuracy": np.min(np.where(np.isnan(per_group), np.inf, per_group), axis=1),
        "mean_group_accuracy": _ratio(np.nansum(per_group, axis=1), np.isfinite(per_group).sum(axis=1)),
    }
    reps["worst_group_accuracy"][~np.isfinite(reps["worst_group_accuracy"])] = np.nan
    if group_weights:
        w = np.array([float(group_weights.get(str(name), 0.0)) for name in gnames])
        # each replicate renormalises over the groups it drew (as the estimate does over the groups present)
        present = np.isfinite(per_group)
        reps["train_weighted_group_accuracy"] = _ratio(np.nan_to_num(per_group) @ w, present @ w)
    if paired_reference is not None:
        pr = np.asarray(paired_reference, dtype=np.int64)
        both = (pr >= 0).astype(np.float64)
        n_p = drawn(both)
        reps["reference_accuracy"] = _ratio(drawn(both * (pr == 1)), n_p)
        reps["accuracy_drop"] = reps["reference_accuracy"] - _ratio(drawn(both * hit1), n_p)
    elif ref.size:
        rows = index[n_img:]
        reps["reference_accuracy"] = _ratio(counts[:, rows] @ ref, counts[:, rows].sum(axis=1))
        reps["accuracy_drop"] = reps["reference_accuracy"] - reps["accuracy"]
    return index, list(gnames), reps | {f"group:{name}": per_group[:, j] for j, name in enumerate(gnames)}


def _shift_counts(
    units: Any | None, g: np.ndarray, n_groups: int, n_ref: int, method: Method
) -> tuple[np.ndarray, int, np.ndarray]:
    """(each row's unit, the number of units, counts float[B, units]): source photos drawn whole, else the images
    within their group and the `n_ref` reference images (after them) within a stratum of their own."""
    if units is not None:
        index, n_units = unit_index(units)
        return index, n_units, bootstrap_counts(n_units, method.resamples, method.seed).astype(np.float64)
    strata = np.concatenate([g, np.full(n_ref, n_groups)])
    counts = stratified_counts(strata, method.resamples, method.seed).astype(np.float64)
    return np.arange(strata.size), strata.size, counts


def _shift_method(units: Any | None, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Method:
    """A shift set's unit: its source photos when the set has them, else images within their group."""
    return Method(unit="reference_index" if units is not None else "image-within-group", resamples=resamples, seed=seed)


def shift_uncertainty(
    labels: Any,
    hit1: Any,
    hit5: Any,
    groups: Any,
    units: Any | None,
    paired_reference: Any | None = None,
    reference_hits: Any | None = None,
    group_weights: dict[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """An entry's `uncertainty` block on a shift set (see `shift_replicates` for the unit); per class, the
    class's images resampled."""
    method = _shift_method(units, resamples, seed)
    index, gnames, reps = shift_replicates(
        labels, hit1, hit5, groups, units, paired_reference, reference_hits, group_weights, method
    )
    headline = {k: v for k, v in reps.items() if not k.startswith("group:")}
    out = _block(method, index, headline, SHIFT_HEADLINE)
    out["per_group"] = {str(name): {"accuracy": _interval(reps[f"group:{name}"], method)} for name in gnames}
    out["per_class_unit"] = PER_CLASS_UNIT
    out["per_class"] = _per_class({"accuracy": hit1, "accuracy_top5": hit5}, labels, method)
    return out


# ---------------------------------------------------------------------------------------------
# reading the block back: what the md, csv, page and --compare show


def entry_interval(entry: Any, metric: str) -> list[float] | None:
    """The recorded 95 % interval of an entry's headline metric; None for an older entry without one."""
    block = entry.get("uncertainty") if isinstance(entry, dict) else None
    value = ((block or {}).get("metrics") or {}).get(metric)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
        return [float(value[0]), float(value[1])]
    return None


def entry_replicates(entry: Any, metric: str) -> np.ndarray | None:
    """The recorded paired replicates of a headline metric (None for an entry without them)."""
    block = (entry.get("uncertainty") if isinstance(entry, dict) else None) or {}
    resamples = block.get("resamples")
    if not isinstance(resamples, int) or not 0 < resamples <= 100_000:
        return None
    return unpack_replicates((block.get("replicates") or {}).get(metric), resamples)


def same_resamples(entries: Sequence[Any]) -> bool:
    """Whether every entry's replicates were drawn from the same unit counts (same units, resamples, seed): only
    then are they paired, replicate by replicate."""
    keys = {
        tuple(((e.get("uncertainty") or {}).get(k)) for k in ("unit", "units_sha256", "resamples", "seed"))
        for e in entries
    }
    return len(keys) == 1 and None not in next(iter(keys))


def group_rank_intervals(entries: Sequence[Any], metric: str, higher_is_better: bool) -> list[tuple[int, int]] | None:
    """Each entry's 95 % rank interval in its comparability group, from the shared (paired) replicates of the
    ranked metric; None when any entry lacks them or they were not drawn alike."""
    if not entries or not same_resamples(entries):
        return None
    reps = [entry_replicates(e, metric) for e in entries]
    if any(r is None for r in reps):
        return None
    return rank_intervals(np.stack(reps, axis=1), higher_is_better)


def method_note(entries: Sequence[Any]) -> str:
    """One sentence saying how the intervals of these entries were computed (stated once per md / page)."""
    blocks = [e.get("uncertainty") for e in entries if isinstance(e.get("uncertainty"), dict)]
    if not blocks:
        return "No entry records per-image intervals (scored before they existed): intervals show as n/a."
    units = sorted({str(b.get("unit")) for b in blocks})
    how = sorted({f"{b.get('method')}, {b.get('resamples')} resamples, seed {b.get('seed')}" for b in blocks})
    text = (
        f"Intervals in brackets are 95 % bootstrap intervals ({'; '.join(how)}) resampling whole "
        f"{' / '.join(UNIT_WORDS.get(u, u) for u in units)}; per-class figures resample the class's images. "
        "Rank intervals use the same resamples for every model of a group."
    )
    if len(blocks) < len(entries):
        text += f" {len(entries) - len(blocks)} older entr(ies) without per-image intervals show n/a."
    return text


UNIT_WORDS = {
    "class": "classes (their images move together)",
    "reference_index": "source photos (`reference_index`: a photo's shifted images move together)",
    "image-within-group": "images within each group (groups held fixed)",
    "image": "images",
}
