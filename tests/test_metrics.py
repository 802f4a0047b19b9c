"""spurbench.evaluate.metrics against independent computations: scikit-learn, exact fractions worked by hand,
and (only as an extra check, if installed) statsmodels."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score

from spurbench.evaluate import metrics as M

# ------------------------------------------------------------------------------------------ rates


def _topk(rows: list[list[int]]) -> np.ndarray:
    """Pad hand-written top lists to 5 columns with classes that appear nowhere else (900+)."""
    return np.array([r + list(range(900, 900 + 5 - len(r))) for r in rows])


def test_spurious_rates_hand_counts():
    labels = [1, 1, 1, 2, 2, 7]
    topk = _topk(
        [
            [1],  # class 1: top-1 hit
            [3, 1],  # class 1: top-5 hit only
            [3, 4],  # class 1: miss
            [2],  # class 2: top-1 hit
            [5, 6, 8, 9, 2],  # class 2: top-5 hit at rank 5
            [7],  # class 7: top-1 hit
        ]
    )
    probs = [0.9, 0.3, 0.0, 0.5, 0.1, 0.6]
    r = M.spurious_rates(labels, topk, probs)
    assert r["num_images"] == 6 and r["num_classes"] == 3
    assert r["per_class"][1] == pytest.approx(
        {"n": 3, "spurious_rate": 1 / 3, "spurious_rate_top5": 2 / 3, "mean_target_prob": 0.4}
    )
    assert r["per_class"][2] == pytest.approx(
        {"n": 2, "spurious_rate": 1 / 2, "spurious_rate_top5": 1.0, "mean_target_prob": 0.3}
    )
    assert r["per_class"][7] == pytest.approx(
        {"n": 1, "spurious_rate": 1.0, "spurious_rate_top5": 1.0, "mean_target_prob": 0.6}
    )
    # macro: mean over the 3 classes; micro: over the 6 images
    assert r["macro"]["spurious_rate"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert r["macro"]["spurious_rate_top5"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert r["macro"]["mean_target_prob"] == pytest.approx((0.4 + 0.3 + 0.6) / 3)
    assert r["micro"]["spurious_rate"] == pytest.approx(3 / 6)  # images 0, 3, 5
    assert r["micro"]["spurious_rate_top5"] == pytest.approx(5 / 6)
    assert r["micro"]["mean_target_prob"] == pytest.approx(2.4 / 6)
    assert all(isinstance(k, int) for k in r["per_class"])


def test_spurious_rates_uses_only_first_five_columns_and_checks_shapes():
    labels = [4]
    topk = np.array([[0, 1, 2, 3, 5, 4]])  # label at rank 6: not a top-5 hit
    assert M.spurious_rates(labels, topk, [0.01])["micro"]["spurious_rate_top5"] == 0.0
    with pytest.raises(ValueError):
        M.spurious_rates([1, 2], np.zeros((2, 3), int), [0.1, 0.2])  # fewer than 5 columns
    with pytest.raises(ValueError):
        M.spurious_rates([1, 2], np.zeros((2, 5), int), [0.1])


def test_spurious_rates_empty():
    r = M.spurious_rates(np.zeros(0, int), np.zeros((0, 5), int), np.zeros(0))
    assert r["per_class"] == {} and r["macro"]["spurious_rate"] is None and r["micro"]["spurious_rate"] is None


def test_spurious_rates_random_against_direct_loops():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 200)
    topk = np.stack([rng.permutation(10)[:5] for _ in range(200)])
    probs = rng.random(200)
    r = M.spurious_rates(labels, topk, probs)
    for k in set(labels.tolist()):
        idx = [i for i in range(200) if labels[i] == k]
        assert r["per_class"][k]["n"] == len(idx)
        assert r["per_class"][k]["spurious_rate"] == pytest.approx(sum(topk[i][0] == k for i in idx) / len(idx))
        assert r["per_class"][k]["spurious_rate_top5"] == pytest.approx(sum(k in topk[i] for i in idx) / len(idx))


# ---------------------------------------------------------------------------------- AP and AUROC


def _sk(pos, neg):
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg]
    return average_precision_score(y, s), roc_auc_score(y, s)


def test_spurious_score_hand_example_with_ties():
    # ranked: 0.9 P | 0.8 N | 0.4 P, 0.4 N (tied) | 0.1 N
    # AP   = 1/2 * 1/1 (cut at 0.9) + 1/2 * 2/4 (cut at 0.4) = 0.75
    # AUROC: pairs (P, N) correctly ordered: 0.9 beats 3; 0.4 beats 0.1, ties 0.4 (1/2) -> 4.5 / 6 = 0.75
    s = M.spurious_score([0.9, 0.4], [0.8, 0.4, 0.1])
    assert s["ap"] == pytest.approx(0.75) and s["auroc"] == pytest.approx(0.75)
    ap, auc = _sk([0.9, 0.4], [0.8, 0.4, 0.1])
    assert s["ap"] == pytest.approx(ap) and s["auroc"] == pytest.approx(auc)


@pytest.mark.parametrize("levels", [3, 10, 1000])  # few levels -> many ties
def test_spurious_score_random_against_sklearn(levels):
    rng = np.random.default_rng(levels)
    for _ in range(300):
        pos = rng.integers(0, levels, rng.integers(1, 30)) / levels
        neg = rng.integers(0, levels, rng.integers(1, 30)) / levels
        s = M.spurious_score(pos, neg)
        ap, auc = _sk(pos, neg)
        assert s["ap"] == pytest.approx(ap, abs=1e-12)
        assert s["auroc"] == pytest.approx(auc, abs=1e-12)


def test_spurious_score_extremes_and_undefined():
    assert M.spurious_score([0.9, 0.8], [0.1, 0.2]) == {"ap": 1.0, "auroc": 1.0}
    assert M.spurious_score([0.1], [0.2, 0.3])["auroc"] == 0.0
    # everything tied: AUROC 1/2, AP = base rate
    s = M.spurious_score([0.5] * 2, [0.5] * 6)
    assert s["auroc"] == 0.5 and s["ap"] == pytest.approx(2 / 8)
    assert M.spurious_score([], [0.1]) == {"ap": None, "auroc": None}
    assert M.spurious_score([0.1], []) == {"ap": None, "auroc": None}
    with pytest.raises(ValueError):
        M.spurious_score([float("nan")], [0.1])


def test_spurious_score_per_class_against_sklearn():
    rng = np.random.default_rng(7)
    neg_labels = np.repeat([3, 5, 9], [10, 8, 6])
    neg_scores = rng.random(neg_labels.size)
    pos_labels = np.repeat([3, 5, 11], [4, 7, 5])  # 9 has no positives, 11 is not in the spurious set
    pos_scores = rng.random(pos_labels.size)
    r = M.spurious_score_per_class(neg_labels, neg_scores, pos_labels, pos_scores)
    assert sorted(r["per_class"]) == [3, 5, 9]
    aps, aucs = [], []
    for k in (3, 5):
        ap, auc = _sk(pos_scores[pos_labels == k], neg_scores[neg_labels == k])
        assert r["per_class"][k]["ap"] == pytest.approx(ap)
        assert r["per_class"][k]["auroc"] == pytest.approx(auc)
        aps.append(ap)
        aucs.append(auc)
    assert r["per_class"][9] == {"ap": None, "auroc": None, "num_positives": 0, "num_negatives": 6}
    assert r["per_class"][3]["num_positives"] == 4 and r["per_class"][3]["num_negatives"] == 10
    assert r["ap"] == pytest.approx(np.mean(aps)) and r["auroc"] == pytest.approx(np.mean(aucs))
    assert r["num_classes_scored"] == 2
    none = M.spurious_score_per_class(neg_labels, neg_scores, [], [])
    assert none["ap"] is None and none["auroc"] is None and none["num_classes_scored"] == 0


# ------------------------------------------------------------------------------------------ kappas


def test_cohen_kappa_random_against_sklearn():
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(400):
        n = int(rng.integers(1, 25))
        a = rng.random(n) < rng.random()
        b = rng.random(n) < rng.random()
        k = M.cohen_kappa(a, b)
        if k is None:  # only when both raters are constant and agree
            assert (a == a[0]).all() and (b == a[0]).all()
            continue
        assert k == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
        checked += 1
    assert checked > 300


def test_cohen_kappa_degenerate():
    assert M.cohen_kappa([1, 1, 1], [1, 1, 1]) is None  # p_e = 1: undefined (sklearn: NaN)
    assert M.cohen_kappa([0, 0], [0, 0]) is None
    assert M.cohen_kappa([], []) is None
    # one constant rater: defined, and 0 (agreement is exactly chance)
    assert M.cohen_kappa([1, 1, 1, 1], [1, 0, 1, 0]) == pytest.approx(0.0)
    assert M.cohen_kappa([1, 1, 1, 1], [1, 0, 1, 0]) == pytest.approx(cohen_kappa_score([1, 1, 1, 1], [1, 0, 1, 0]))
    assert M.cohen_kappa([1, 1], [0, 0]) == pytest.approx(0.0)
    assert M.cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


# Fleiss (1971)-style worked example as tabulated on Wikipedia's "Fleiss' kappa" page: 10 subjects,
# 14 raters, 5 categories. Worked by hand with exact fractions below; the quoted result is 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_worked_example():
    # column totals 20, 28, 39, 21, 32 of 140 ratings: P_e = (20^2+28^2+39^2+21^2+32^2) / 140^2 = 4170/19600
    # P_i = (sum_j n_ij^2 - 14) / (14 * 13): numerators 182, 46, 56, 80, 60, 84, 44, 32, 52, 52 (sum 688)
    # P_bar = 688 / (10 * 182) = 688/1820
    p_e = Fraction(4170, 19600)
    p_bar = Fraction(688, 1820)
    expected = (p_bar - p_e) / (1 - p_e)
    assert float(expected) == pytest.approx(0.20993, abs=1e-5)
    assert M.fleiss_kappa(FLEISS_TABLE) == pytest.approx(float(expected), abs=1e-12)


def test_fleiss_kappa_two_raters_equals_scotts_pi():
    # With n = 2 raters Fleiss' kappa reduces to Scott's pi: (p_o - p_e) / (1 - p_e) with p_e from the
    # pooled marginals of both raters. An independent formula, checked on random binary data.
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(2, 30))
        a, b = rng.random(n) < 0.4, rng.random(n) < 0.6
        pooled = (a.sum() + b.sum()) / (2 * n)
        p_e = pooled**2 + (1 - pooled) ** 2
        if p_e == 1:
            continue
        pi = ((a == b).mean() - p_e) / (1 - p_e)
        votes = a.astype(int) + b.astype(int)
        assert M.fleiss_kappa(np.stack([votes, 2 - votes], 1)) == pytest.approx(pi, abs=1e-12)


def test_fleiss_kappa_degenerate_and_invalid():
    assert M.fleiss_kappa([[3, 0], [3, 0]]) is None  # every rating in one category: P_e = 1
    assert M.fleiss_kappa([[1, 0], [0, 1]]) is None  # one rater
    assert M.fleiss_kappa(np.zeros((0, 2), int)) is None
    assert M.fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)  # perfect agreement
    with pytest.raises(ValueError):
        M.fleiss_kappa([[2, 0], [1, 0]])  # unequal numbers of raters


def test_fleiss_kappa_against_statsmodels():
    from statsmodels.stats import inter_rater as sm  # in the test extra: an independent implementation

    assert M.fleiss_kappa(FLEISS_TABLE) == pytest.approx(sm.fleiss_kappa(np.array(FLEISS_TABLE), method="fleiss"))
    rng = np.random.default_rng(1)
    for _ in range(50):
        raters = int(rng.integers(2, 7))
        table = rng.multinomial(raters, [0.3, 0.7], size=int(rng.integers(3, 30)))
        ours = M.fleiss_kappa(table)
        if ours is not None:
            assert ours == pytest.approx(sm.fleiss_kappa(table, method="fleiss"))


# ------------------------------------------------------------------------------------- consistency

# 4 images x 3 classifiers a, b, c (1 = fooled). Worked by hand:
#   votes 3, 2, 0, 1 -> all fooled 1/4; at least ceil(3/2) = 2: 2/4
#   a=[1,1,0,1] b=[1,1,0,0] c=[1,0,0,0]
#   a vs b: p_o 3/4, p_e 3/4*1/2 + 1/4*1/2 = 1/2 -> kappa 1/2
#   a vs c: p_o 1/2, p_e 3/4*1/4 + 1/4*3/4 = 3/8 -> kappa (1/8)/(5/8) = 1/5
#   b vs c: p_o 3/4, p_e 1/2*1/4 + 1/2*3/4 = 1/2 -> kappa 1/2;  mean 2/5
#   Fleiss: p_fooled = 6/12, P_e = 1/2; P_i = 1, 1/3, 1, 1/3 -> P_bar 2/3; kappa (2/3-1/2)/(1/2) = 1/3
HAND_FOOLED = [[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]]
HAND_LABELS = [10, 10, 20, 20]


def test_consistency_hand_example():
    c = M.consistency(HAND_FOOLED, HAND_LABELS, ["a", "b", "c"])
    assert c["models"] == ["a", "b", "c"] and c["num_images"] == 4
    assert c["all_fooled_rate"] == pytest.approx(0.25)
    assert c["at_least_half_rate"] == pytest.approx(0.5)
    assert c["pairwise_kappa"] == pytest.approx({"a vs b": 0.5, "a vs c": 0.2, "b vs c": 0.5})
    assert c["mean_pairwise_kappa"] == pytest.approx(0.4)
    assert c["fleiss_kappa"] == pytest.approx(1 / 3)
    # class 10: images [1,1,1], [1,1,0]: both fooled by >= 2; a vs b identical constant -> undefined
    c10 = c["per_class"][10]
    assert c10["num_images"] == 2 and c10["all_fooled_rate"] == 0.5 and c10["at_least_half_rate"] == 1.0
    assert c10["pairwise_kappa"]["a vs b"] is None
    assert c10["pairwise_kappa"]["a vs c"] == pytest.approx(cohen_kappa_score([1, 1], [1, 0]))
    # mean only over defined pairs
    assert c10["mean_pairwise_kappa"] == pytest.approx(
        np.mean([c10["pairwise_kappa"]["a vs c"], c10["pairwise_kappa"]["b vs c"]])
    )
    # Fleiss, class 10: votes 3, 2 of 3 -> p_fooled 5/6, P_e 26/36; P_i 1, 1/3 -> P_bar 2/3
    assert c10["fleiss_kappa"] == pytest.approx((2 / 3 - 26 / 36) / (1 - 26 / 36))


def test_consistency_random_against_sklearn():
    rng = np.random.default_rng(11)
    n, m = 60, 4
    fooled = rng.random((n, m)) < np.array([0.2, 0.5, 0.5, 0.8])
    labels = rng.integers(0, 3, n)
    names = ["w", "x", "y", "z"]
    c = M.consistency(fooled, labels, names)
    kappas = []
    for i in range(m):
        for j in range(i + 1, m):
            k = cohen_kappa_score(fooled[:, i], fooled[:, j])
            assert c["pairwise_kappa"][f"{names[i]} vs {names[j]}"] == pytest.approx(k)
            kappas.append(k)
    assert c["mean_pairwise_kappa"] == pytest.approx(np.mean(kappas))
    votes = fooled.sum(1)
    assert c["all_fooled_rate"] == pytest.approx(np.mean(votes == 4))
    assert c["at_least_half_rate"] == pytest.approx(np.mean(votes >= 2))
    for k in range(3):
        sel = labels == k
        assert c["per_class"][k]["num_images"] == sel.sum()
        assert c["per_class"][k]["all_fooled_rate"] == pytest.approx(np.mean(votes[sel] == 4))


def test_consistency_odd_and_single_panels():
    # m = 5: at least half means >= 3
    f = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    assert M.consistency(f, [0, 0])["at_least_half_rate"] == 0.5
    # m = 1: no pairs, Fleiss undefined, rates still defined
    c = M.consistency([[1], [0], [1]], [0, 0, 1], ["only"])
    assert c["pairwise_kappa"] == {} and c["mean_pairwise_kappa"] is None and c["fleiss_kappa"] is None
    assert c["all_fooled_rate"] == pytest.approx(2 / 3) and c["at_least_half_rate"] == pytest.approx(2 / 3)
    # nobody fooled anywhere: kappas undefined, rates 0
    z = M.consistency(np.zeros((4, 3), bool), [0, 0, 1, 1])
    assert z["all_fooled_rate"] == 0.0 and z["fleiss_kappa"] is None and z["mean_pairwise_kappa"] is None
    with pytest.raises(ValueError):
        M.consistency(np.zeros((2, 2)), [0, 0], ["a", "a"])
    with pytest.raises(ValueError):
        M.consistency(np.zeros((2, 2)), [0], ["a", "b"])


# ------------------------------------------------------------------------------------------ groups


def test_group_accuracy_hand_counts():
    correct = [1, 1, 0, 1, 0, 0, 1]
    groups = ["water", "water", "water", "land", "land", "sky", "sky"]
    g = M.group_accuracy(correct, groups)
    assert g["per_group"] == {
        "land": {"n": 2, "accuracy": 0.5},
        "sky": {"n": 2, "accuracy": 0.5},
        "water": {"n": 3, "accuracy": pytest.approx(2 / 3)},
    }
    assert g["worst_group"] == "land" and g["worst_group_accuracy"] == 0.5  # tie: first in sorted order
    assert g["worst_groups"] == ["land", "sky"]  # every tied group is reported
    assert g["average_accuracy"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
    assert g["overall_accuracy"] == pytest.approx(4 / 7)
    assert all(type(k) is str for k in g["per_group"])
    ints = M.group_accuracy([1, 0], np.array([3, 4]))
    assert all(type(k) is int for k in ints["per_group"])
    empty = M.group_accuracy([], [])
    assert empty["worst_group"] is None and empty["average_accuracy"] is None and empty["worst_groups"] == []


def test_accuracy_drop_hand_counts():
    d = M.accuracy_drop([1, 0, 0, 1, 0], [1, 1, 1, 0], groups=["a", "a", "b", "b", "b"])
    assert d["original_accuracy"] == 0.75 and d["shifted_accuracy"] == pytest.approx(0.4)
    assert d["drop"] == pytest.approx(0.35)
    assert d["per_group"]["a"] == {"n": 2, "accuracy": 0.5, "drop": 0.25}
    assert d["per_group"]["b"]["drop"] == pytest.approx(0.75 - 1 / 3)
    assert d["worst_group"] == "b" and d["max_drop"] == pytest.approx(0.75 - 1 / 3)
    plain = M.accuracy_drop([1, 1], [1, 0])
    assert plain["drop"] == -0.5 and "per_group" not in plain


def test_outputs_are_plain_python_for_json():
    import json

    c = M.consistency(HAND_FOOLED, HAND_LABELS, ["a", "b", "c"])
    r = M.spurious_rates([1, 2], _topk([[1], [3]]), [0.5, 0.25])
    s = M.spurious_score_per_class([1, 2], [0.5, 0.25], [1], [0.9])
    for obj in (c, r, s):
        text = json.dumps(obj, allow_nan=False)  # no numpy types, no NaN
        assert "NaN" not in text
    assert not math.isnan(c["fleiss_kappa"])


def test_pooled_and_train_weighted_group_accuracy_on_a_hand_worked_table():
    from spurbench.evaluate.metrics import group_accuracy, train_weighted_accuracy

    # Waterbirds' training group sizes; a test table of 25 images worked by hand:
    #   group            images  correct  accuracy   train images
    #   landbird/land      10       9       0.90        3498
    #   landbird/water      5       2       0.40         184
    #   waterbird/land      4       1       0.25          56
    #   waterbird/water     6       6       1.00        1057
    # pooled = 18 / 25 = 0.72; unweighted mean = (0.9 + 0.4 + 0.25 + 1.0) / 4 = 0.6375
    # train-weighted = (0.9*3498 + 0.4*184 + 0.25*56 + 1.0*1057) / 4795 = 4292.8 / 4795
    groups = ["landbird/land"] * 10 + ["landbird/water"] * 5 + ["waterbird/land"] * 4 + ["waterbird/water"] * 6
    correct = [1] * 9 + [0] + [1] * 2 + [0] * 3 + [1] + [0] * 3 + [1] * 6
    train = {"landbird/land": 3498, "landbird/water": 184, "waterbird/land": 56, "waterbird/water": 1057}
    g = group_accuracy(correct, groups)
    assert g["overall_accuracy"] == pytest.approx(0.72)
    assert g["average_accuracy"] == pytest.approx(0.6375)
    assert g["worst_group"] == "waterbird/land" and g["worst_group_accuracy"] == pytest.approx(0.25)
    w = train_weighted_accuracy(g["per_group"], train)
    assert w["train_weighted_accuracy"] == pytest.approx(4292.8 / 4795)
    assert w["weights"]["waterbird/land"] == pytest.approx(56 / 4795) and w["groups_without_training_images"] == []
    # a group never seen in training gets weight 0 and is named; the rest renormalise
    w = train_weighted_accuracy({**g["per_group"], "other/place": {"n": 3, "accuracy": 0.0}}, train)
    assert w["train_weighted_accuracy"] == pytest.approx(4292.8 / 4795)
    assert w["groups_without_training_images"] == ["other/place"]
    assert train_weighted_accuracy({"a": 1.0}, {"b": 3})["train_weighted_accuracy"] is None
