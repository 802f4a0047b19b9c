"""spurbench's metrics: small pure numpy functions, one per quantity DESIGN.md ("Metrics") defines.

Nothing here touches models, files or torch; inputs are arrays (anything `np.asarray` accepts),
outputs are plain dicts of Python ints/floats (JSON-ready), with `None` where a quantity is
undefined (e.g. a kappa when every rating is the same, an AP for a class without positives).
Class keys in returned dicts are Python `int` ImageNet indices; the leaderboard stores them as strings.

Definitions (f a classifier with softmax p(x); D_k the images whose label is k):

- spurious rate of class k: fraction of x in D_k with argmax p(x) = k. Top-5 variant: k among the
  5 largest p(x). Mean target probability: mean of p_k(x) over D_k. Macro = unweighted mean over
  classes; micro = over all images pooled (i.e. weighted by class size).
- spurious score (Spurious ImageNet): positives = real images of class k (label 1), negatives = D_k
  (label 0), score = p_k. AP = sum over distinct score thresholds t (descending) of
  (R(t) - R(t_prev)) * P(t), P/R precision/recall of "score >= t" (scikit-learn's
  `average_precision_score`, no interpolation). AUROC = P(s_pos > s_neg) + 1/2 P(s_pos = s_neg)
  (Mann-Whitney U / (n_pos n_neg)). Higher = the classifier separates real k from spurious k better,
  i.e. relies less on the spurious feature.
- consistency over m classifiers: per image, fooled = top-1 is the image's label. all-fooled rate,
  at-least-half rate (fooled by >= ceil(m/2) classifiers), Cohen's kappa per pair of classifiers on the
  binary fooled vectors, Fleiss' kappa over the m raters with categories fooled / not fooled.
- group metrics: accuracy per group, worst-group accuracy, average (mean over groups) accuracy, overall
  accuracy, and the accuracy drop of shifted images against the original ones. Two averages are
  named for what they are: pooled accuracy (over all images: `overall_accuracy`, what DDB's code
  reports) and the train-weighted group accuracy (sum over groups of accuracy_g x n_train_g / n_train,
  what Waterbirds papers call "average accuracy").
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "spurious_rates",
    "average_precision",
    "auroc",
    "spurious_score",
    "spurious_score_per_class",
    "cohen_kappa",
    "fleiss_kappa",
    "consistency",
    "group_accuracy",
    "accuracy_drop",
    "train_weighted_accuracy",
]


def _py(x: Any) -> Any:
    """numpy scalar -> Python scalar; NaN -> None (JSON has no NaN)."""
    if x is None:
        return None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else x
    return x


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the defined (non-None) values; None when there is none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _as_1d(name: str, x: Any, dtype: Any = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------------------
# spurious rate
# --------------------------------------------------------------------------------------------------


def spurious_rates(labels: Any, topk_indices: Any, target_probs: Any) -> dict[str, Any]:
    """Per-class, macro and micro spurious rates of one classifier on a spurious-image set.

    Args:
        labels: int[N], the class k each image was made to trigger (its `label`).
        topk_indices: int[N, K] with K >= 5, class indices sorted by decreasing probability
            (column 0 is the top-1 prediction). Only the first 5 columns are used.
        target_probs: float[N], p_label(x), the softmax probability of the image's own label.

    Returns:
        ``{"per_class": {k: {"n", "spurious_rate", "spurious_rate_top5", "mean_target_prob"}},
        "macro": {"spurious_rate", "spurious_rate_top5", "mean_target_prob"},
        "micro": {same keys}, "num_images": N, "num_classes": C}`` where for class k with n images
        ``spurious_rate = #{top1 == k} / n``, ``spurious_rate_top5 = #{k in top5} / n``,
        ``mean_target_prob = mean p_k``; macro = unweighted mean of the per-class values; micro = the
        same fractions over all N images pooled. With N = 0 every rate is None.
    """
    labels = _as_1d("labels", labels).astype(np.int64)
    topk = np.asarray(topk_indices)
    probs = _as_1d("target_probs", target_probs, dtype=np.float64)
    n = labels.shape[0]
    if topk.ndim != 2 or topk.shape[0] != n or topk.shape[1] < 5:
        raise ValueError(f"topk_indices must have shape [N={n}, K>=5], got {topk.shape}")
    if probs.shape[0] != n:
        raise ValueError(f"target_probs has {probs.shape[0]} values for {n} labels")
    top1_hit = topk[:, 0] == labels
    top5_hit = (topk[:, :5] == labels[:, None]).any(axis=1)

    per_class: dict[int, dict[str, Any]] = {}
    for k in np.unique(labels):
        m = labels == k
        per_class[int(k)] = {
            "n": int(m.sum()),
            "spurious_rate": float(top1_hit[m].mean()),
            "spurious_rate_top5": float(top5_hit[m].mean()),
            "mean_target_prob": float(probs[m].mean()),
        }
    keys = ("spurious_rate", "spurious_rate_top5", "mean_target_prob")
    macro = {key: _mean_or_none([c[key] for c in per_class.values()]) for key in keys}
    micro = {
        "spurious_rate": float(top1_hit.mean()) if n else None,
        "spurious_rate_top5": float(top5_hit.mean()) if n else None,
        "mean_target_prob": float(probs.mean()) if n else None,
    }
    return {"per_class": per_class, "macro": macro, "micro": micro, "num_images": int(n), "num_classes": len(per_class)}


# --------------------------------------------------------------------------------------------------
# spurious score: AP and AUROC, written out here (tests hold them against scikit-learn)
# --------------------------------------------------------------------------------------------------


def _check_scores(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray]:
    pos = _as_1d("pos_scores", pos, dtype=np.float64)
    neg = _as_1d("neg_scores", neg, dtype=np.float64)
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("scores contain NaN")
    return pos, neg


def average_precision(pos_scores: Any, neg_scores: Any) -> float | None:
    """Average precision of ranking positives (label 1) above negatives (label 0) by score.

    Sort all scores descending and cut after every *distinct* score value t (tied scores enter
    together, as in scikit-learn). With TP(t), N(t) the positives / all items with score >= t and P the
    number of positives: AP = sum_t (TP(t) - TP(t_prev)) / P * TP(t) / N(t). Identical to
    `sklearn.metrics.average_precision_score`. None without positives; 1.0 without negatives.
    """
    pos, neg = _check_scores(pos_scores, neg_scores)
    if pos.size == 0:
        return None
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    # last position of every run of equal scores = the cut points
    cut = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tp = np.cumsum(is_pos)[cut]
    total = cut + 1
    new_tp = np.diff(np.concatenate([[0.0], tp]))
    return float(np.sum(new_tp / pos.size * (tp / total)))


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x ascending, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))
    ends = np.append(starts[1:], xs.size)  # exclusive
    mid = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mid, ends - starts)
    return ranks


def auroc(pos_scores: Any, neg_scores: Any) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic.

    AUROC = (R_pos - P(P+1)/2) / (P * N), R_pos the sum of the positives' mid-ranks among all scores
    (ascending), i.e. the fraction of (positive, negative) pairs ordered correctly, a tie counting 1/2.
    Equals `sklearn.metrics.roc_auc_score`. None without positives or without negatives.
    """
    pos, neg = _check_scores(pos_scores, neg_scores)
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = _midranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def spurious_score(pos_scores: Any, neg_scores: Any) -> dict[str, float | None]:
    """Spurious score of one class k: ``{"ap": average_precision, "auroc": auroc}``.

    pos_scores = p_k on real images of class k (positives), neg_scores = p_k on the spurious images
    of class k (negatives). Both None when either side is empty (the score is undefined then).
    """
    pos, neg = _check_scores(pos_scores, neg_scores)
    if pos.size == 0 or neg.size == 0:
        return {"ap": None, "auroc": None}
    return {"ap": average_precision(pos, neg), "auroc": auroc(pos, neg)}


def spurious_score_per_class(neg_labels: Any, neg_scores: Any, pos_labels: Any, pos_scores: Any) -> dict[str, Any]:
    """Spurious score for every class of the spurious set, and its mean over classes.

    Args:
        neg_labels, neg_scores: labels k of the spurious images and p_k on them (target_prob).
        pos_labels, pos_scores: labels k of the real in-class images and p_k on them.

    Returns:
        ``{"per_class": {k: {"ap", "auroc", "num_positives", "num_negatives"}}, "ap", "auroc",
        "num_classes_scored"}``. Classes are those of the spurious images; a class without positives
        gets ap = auroc = None and is left out of the means ("ap"/"auroc" = mean over the classes that
        have both positives and negatives; None when no class has). Positives of classes absent from
        the spurious set are ignored.
    """
    nl = _as_1d("neg_labels", neg_labels).astype(np.int64)
    ns = _as_1d("neg_scores", neg_scores, dtype=np.float64)
    pl = _as_1d("pos_labels", pos_labels).astype(np.int64)
    ps = _as_1d("pos_scores", pos_scores, dtype=np.float64)
    if nl.size != ns.size or pl.size != ps.size:
        raise ValueError("labels and scores must have the same length")
    per_class: dict[int, dict[str, Any]] = {}
    for k in np.unique(nl):
        pos, neg = ps[pl == k], ns[nl == k]
        s = spurious_score(pos, neg)
        per_class[int(k)] = {**s, "num_positives": int(pos.size), "num_negatives": int(neg.size)}
    scored = [c for c in per_class.values() if c["ap"] is not None]
    return {
        "per_class": per_class,
        "ap": _mean_or_none([c["ap"] for c in scored]),
        "auroc": _mean_or_none([c["auroc"] for c in scored]),
        "num_classes_scored": len(scored),
    }


# --------------------------------------------------------------------------------------------------
# cross-classifier consistency
# --------------------------------------------------------------------------------------------------


def cohen_kappa(a: Any, b: Any) -> float | None:
    """Cohen's kappa between two binary rating vectors (here: fooled / not fooled).

    kappa = (p_o - p_e) / (1 - p_e), p_o the fraction of items where a and b agree,
    p_e = P(a=1)P(b=1) + P(a=0)P(b=0) the agreement expected by chance. Undefined (None) when
    p_e = 1, i.e. both raters give one and the same rating to every item (scikit-learn returns NaN
    there), and for zero items. Equals `sklearn.metrics.cohen_kappa_score` otherwise.
    """
    a = _as_1d("a", a).astype(bool)
    b = _as_1d("b", b).astype(bool)
    if a.size != b.size:
        raise ValueError("rating vectors differ in length")
    n = a.size
    if n == 0:
        return None
    pa, pb = a.mean(), b.mean()
    p_e = pa * pb + (1 - pa) * (1 - pb)
    # p_e == 1 exactly iff both vectors are constant and equal; test on counts, not floats
    if (a.all() and b.all()) or (not a.any() and not b.any()):
        return None
    p_o = (a == b).mean()
    return float((p_o - p_e) / (1 - p_e))


def fleiss_kappa(counts: Any) -> float | None:
    """Fleiss' kappa of a table counts[i, j] = raters putting subject i in category j.

    Every row must sum to the same number of raters n >= 2. With N subjects:
    p_j = sum_i counts[i, j] / (N n), P_i = (sum_j counts[i, j]^2 - n) / (n (n - 1)),
    P_bar = mean_i P_i, P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
    Undefined (None) when P_e = 1 (every rating falls in one category), when n < 2, or N = 0.
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 2:
        raise ValueError(f"counts must be 2-D [subjects, categories], got shape {c.shape}")
    if c.shape[0] == 0:
        return None
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    n_raters = c.sum(axis=1)
    if (n_raters != n_raters[0]).any():
        raise ValueError("every subject must be rated by the same number of raters")
    n = int(n_raters[0])
    if n < 2:
        return None
    totals = c.sum(axis=0)
    if (totals == totals.sum()).any():  # one category holds every rating: P_e = 1
        return None
    p = totals / totals.sum()
    p_i = ((c.astype(np.float64) ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), float((p**2).sum())
    return float((p_bar - p_e) / (1 - p_e))


def _consistency_block(fooled: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    n, m = fooled.shape
    votes = fooled.sum(axis=1)
    half = math.ceil(m / 2)
    pairwise: dict[str, float | None] = {}
    for i in range(m):
        for j in range(i + 1, m):
            pairwise[f"{names[i]} vs {names[j]}"] = cohen_kappa(fooled[:, i], fooled[:, j]) if n else None
    return {
        "num_images": int(n),
        "all_fooled_rate": float((votes == m).mean()) if n else None,
        "at_least_half_rate": float((votes >= half).mean()) if n else None,
        "mean_pairwise_kappa": _mean_or_none(list(pairwise.values())),
        "pairwise_kappa": pairwise,
        "fleiss_kappa": fleiss_kappa(np.stack([votes, m - votes], axis=1)) if n else None,
    }


def consistency(fooled: Any, labels: Any, model_names: Sequence[str] | None = None) -> dict[str, Any]:
    """How consistently a set of images fools a panel of m classifiers.

    Args:
        fooled: bool[N, m]; fooled[i, j] = classifier j's top-1 on image i is the image's label.
        labels: int[N], the image labels (for the per-class breakdown).
        model_names: the m classifier names, used in the pairwise keys "a vs b" (default "0", "1", ...).

    Returns:
        ``{"models": [...], "num_images", "all_fooled_rate", "at_least_half_rate",
        "mean_pairwise_kappa", "pairwise_kappa": {"a vs b": kappa}, "fleiss_kappa",
        "per_class": {k: {same keys except models/per_class}}}``.
        all_fooled_rate = fraction of images fooling all m; at_least_half_rate = fraction fooling at
        least ceil(m/2); pairwise_kappa = `cohen_kappa` of the two fooled columns; mean_pairwise_kappa
        = mean over the pairs whose kappa is defined (None if none is, or m < 2); fleiss_kappa =
        `fleiss_kappa` of the [N, 2] table (#fooled, #not fooled) per image (None if m < 2 or if every
        rating is the same). Per class: the same over that class's images.
    """
    f = np.asarray(fooled)
    if f.ndim != 2:
        raise ValueError(f"fooled must be 2-D [images, models], got shape {f.shape}")
    f = f.astype(bool)
    labels = _as_1d("labels", labels).astype(np.int64)
    if labels.size != f.shape[0]:
        raise ValueError(f"{labels.size} labels for {f.shape[0]} images")
    m = f.shape[1]
    if m == 0:
        raise ValueError("consistency needs at least one classifier")
    names = [str(x) for x in model_names] if model_names is not None else [str(j) for j in range(m)]
    if len(names) != m:
        raise ValueError(f"{len(names)} model names for {m} classifiers")
    if len(set(names)) != m:
        raise ValueError("model names must be distinct")
    out: dict[str, Any] = {"models": names, **_consistency_block(f, names)}
    out["per_class"] = {int(k): _consistency_block(f[labels == k], names) for k in np.unique(labels)}
    return out


# --------------------------------------------------------------------------------------------------
# group / background-shift metrics
# --------------------------------------------------------------------------------------------------


def group_accuracy(correct: Any, groups: Any) -> dict[str, Any]:
    """Accuracy per group (e.g. per background), worst-group and average accuracy.

    Args:
        correct: bool[N], the classifier's top-1 equals the true class.
        groups: hashable[N], the group of every image.

    Returns:
        ``{"per_group": {g: {"n", "accuracy"}}, "worst_group": g, "worst_groups": [g, ...], "worst_group_accuracy",
        "average_accuracy", "overall_accuracy"}``: average = unweighted mean of per-group accuracies,
        overall = over all images pooled, worst = the lowest per-group accuracy; `worst_groups` lists every
        group tied at it (sorted), `worst_group` is the first of them. All None (`worst_groups` []) for N = 0.
        Group keys are converted to Python scalars.
    """
    correct = _as_1d("correct", correct).astype(bool)
    groups = _as_1d("groups", groups)
    if groups.size != correct.size:
        raise ValueError(f"{groups.size} groups for {correct.size} images")
    per_group: dict[Hashable, dict[str, Any]] = {}
    for g in np.unique(groups):
        m = groups == g
        per_group[_py(g.item() if hasattr(g, "item") else g)] = {
            "n": int(m.sum()),
            "accuracy": float(correct[m].mean()),
        }
    worst = min(per_group, key=lambda g: per_group[g]["accuracy"]) if per_group else None
    tied = [g for g in per_group if per_group[g]["accuracy"] == per_group[worst]["accuracy"]] if per_group else []
    return {
        "per_group": per_group,
        "worst_group": worst,
        "worst_groups": tied,
        "worst_group_accuracy": per_group[worst]["accuracy"] if per_group else None,
        "average_accuracy": _mean_or_none([v["accuracy"] for v in per_group.values()]),
        "overall_accuracy": float(correct.mean()) if correct.size else None,
    }


def accuracy_drop(correct_shifted: Any, correct_original: Any, groups: Any | None = None) -> dict[str, Any]:
    """Accuracy lost when the background (or another nuisance) is shifted.

    Args:
        correct_shifted: bool[N_s], top-1 correct on the shifted images.
        correct_original: bool[N_o], top-1 correct on the un-shifted images (need not be paired).
        groups: optional hashable[N_s], the shift (e.g. background) of every shifted image.

    Returns:
        ``{"original_accuracy", "shifted_accuracy", "drop"}`` with drop = original - shifted (positive =
        the shift hurts), plus ``"per_group": {g: {"n", "accuracy", "drop"}}`` (drop = original - group
        accuracy), ``"worst_group"``, ``"worst_group_accuracy"``, ``"max_drop"`` when groups are given.
    """
    s = _as_1d("correct_shifted", correct_shifted).astype(bool)
    o = _as_1d("correct_original", correct_original).astype(bool)
    orig = float(o.mean()) if o.size else None
    shifted = float(s.mean()) if s.size else None
    out: dict[str, Any] = {
        "original_accuracy": orig,
        "shifted_accuracy": shifted,
        "drop": (orig - shifted) if orig is not None and shifted is not None else None,
    }
    if groups is not None:
        g = group_accuracy(s, groups)
        out["per_group"] = {
            k: {**v, "drop": (orig - v["accuracy"]) if orig is not None else None} for k, v in g["per_group"].items()
        }
        out["worst_group"] = g["worst_group"]
        out["worst_group_accuracy"] = g["worst_group_accuracy"]
        out["max_drop"] = (orig - g["worst_group_accuracy"]) if orig is not None and g["per_group"] else None
    return out


def train_weighted_accuracy(per_group: Any, train_counts: Any) -> dict[str, Any]:
    """Mean of group accuracies weighted by the training split's group proportions.

    Args:
        per_group: {group: accuracy} or {group: {"accuracy": ...}} (e.g. `group_accuracy(...)["per_group"]`).
        train_counts: {group: number of training images}.

    Returns:
        ``{"train_weighted_accuracy", "weights": {g: w}, "groups_without_training_images": [g, ...]}``:
        sum_g acc_g * n_g / sum_g n_g over the evaluated groups that have training images (the weights are
        renormalised over those groups); evaluated groups with no training images get weight 0 and are
        listed. None when no evaluated group has training images.
    """
    acc = {g: float(v["accuracy"] if isinstance(v, dict) else v) for g, v in dict(per_group).items()}
    counts = {g: int(n) for g, n in dict(train_counts).items()}
    if any(n < 0 for n in counts.values()):
        raise ValueError("training counts must be >= 0")
    missing = sorted((g for g in acc if counts.get(g, 0) == 0), key=str)
    total = sum(counts.get(g, 0) for g in acc)
    weights = {g: (counts.get(g, 0) / total if total else 0.0) for g in acc}
    return {
        "train_weighted_accuracy": sum(acc[g] * weights[g] for g in acc) if total else None,
        "weights": weights,
        "groups_without_training_images": missing,
    }


def shift_metrics(
    labels: Any,
    topk_indices: Any,
    groups: Any,
    reference_correct: Any | None = None,
    paired_reference_correct: Any | None = None,
) -> dict[str, Any]:
    """What a `shift` set (object present, context changed) reports for one classifier.

    Args:
        labels: int[N], the class of the object in each image.
        topk_indices: int[N, k], the classifier's top-k classes (column 0 = top-1), k >= 1.
        groups: hashable[N], each image's group (e.g. its background).
        reference_correct: optional bool[M], top-1 correct on the un-shifted reference images.
        paired_reference_correct: optional int[N], per shifted image: 1 / 0 = the reference photo it was
            made from (D3S's pasted photo) is / is not classified correctly, -1 = that photo was not scored
            (left out by verification). Pairs the drop image by image.

    Returns:
        ``{"accuracy", "accuracy_top5", "worst_group", "worst_groups", "worst_group_accuracy",
        "mean_group_accuracy", "reference_accuracy", "accuracy_drop", "num_paired", "per_group": {g: {"n",
        "accuracy", "accuracy_top5", "reference_accuracy", "accuracy_drop", "num_paired"}}}``. Top-5 uses the
        first min(5, k) columns. Drop = reference - shifted accuracy (positive: the shift hurts).
        Paired (`paired_reference_correct` given): reference accuracy = mean over the shifted images that have
        a scored reference photo of "that photo is right", drop = reference accuracy - accuracy over those
        same images (overall and per group), so the overall drop is the mean of the per-group drops weighted
        by their paired images; `num_paired` counts them. Unpaired: the whole reference split's accuracy
        (`reference_correct`) against each group's and the pooled accuracy (`num_paired` None). None
        without reference images. Mean group accuracy is the unweighted mean over groups.
    """
    labels = _as_1d("labels", labels, np.int64)
    top = np.asarray(topk_indices)
    if top.ndim != 2 or top.shape[0] != labels.size:
        raise ValueError(f"topk_indices must be [N, k] with N = {labels.size}, got shape {top.shape}")
    hit1 = top[:, 0] == labels
    hit5 = (top[:, :5] == labels[:, None]).any(axis=1)
    groups = _as_1d("groups", groups)
    g = group_accuracy(hit1, groups)
    ref = None if reference_correct is None else _as_1d("reference_correct", reference_correct).astype(bool)
    ref_acc = float(ref.mean()) if ref is not None and ref.size else None
    paired = _paired_flags(paired_reference_correct, labels.size)
    per_group: dict[Hashable, dict[str, Any]] = {}
    for key, v in g["per_group"].items():
        m = groups == key
        r, d, n_p = _drop_over(hit1, m, ref_acc, paired)
        per_group[key] = {
            "n": v["n"],
            "accuracy": v["accuracy"],
            "accuracy_top5": float(hit5[m].mean()),
            "reference_accuracy": r,
            "accuracy_drop": d,
            **({"num_paired": n_p} if paired is not None else {}),
        }
    r_all, d_all, n_all = _drop_over(hit1, np.ones(labels.size, bool), ref_acc, paired)
    return {
        "accuracy": float(hit1.mean()) if hit1.size else None,
        "accuracy_top5": float(hit5.mean()) if hit5.size else None,
        "worst_group": g["worst_group"],
        "worst_groups": g["worst_groups"],
        "worst_group_accuracy": g["worst_group_accuracy"],
        "mean_group_accuracy": g["average_accuracy"],
        "reference_accuracy": r_all,
        "accuracy_drop": d_all,
        "num_paired": n_all,
        "per_group": per_group,
    }


def _paired_flags(paired_reference_correct: Any | None, n: int) -> np.ndarray | None:
    """`shift_metrics`' per-image reference flags, checked (None: the drop is not paired)."""
    if paired_reference_correct is None:
        return None
    paired = _as_1d("paired_reference_correct", paired_reference_correct).astype(np.int64)
    if paired.size != n:
        raise ValueError(f"{paired.size} paired reference flags for {n} images")
    if not np.isin(paired, (-1, 0, 1)).all():
        raise ValueError("paired reference flags must be 1 (right), 0 (wrong) or -1 (not scored)")
    return paired


def _drop_over(
    hit1: np.ndarray, m: np.ndarray, ref_acc: float | None, paired: np.ndarray | None
) -> tuple[float | None, float | None, int | None]:
    """(reference accuracy, drop, paired images) over the images selected by `m`: against the whole reference
    split's accuracy `ref_acc`, or image by image when the flags are `paired`."""
    if paired is None:
        a = float(hit1[m].mean()) if m.any() else None
        return ref_acc, (ref_acc - a) if ref_acc is not None and a is not None else None, None
    both = m & (paired >= 0)
    if not both.any():
        return None, None, 0
    r = float((paired[both] == 1).mean())
    return r, r - float(hit1[both].mean()), int(both.sum())
