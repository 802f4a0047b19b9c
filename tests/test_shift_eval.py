"""Evaluating `shift` sets (object present, context changed): the metrics against a hand-worked example,
and `spurbench eval` on a real d3s export with the real EfficientNet-Lite0 (offline panel)."""

from __future__ import annotations

import numpy as np
import pytest

from spurbench.evaluate import metrics


def test_shift_metrics_match_a_hand_computation():
    # six images of classes 1 and 2 on two backgrounds
    labels = [1, 1, 1, 2, 2, 2]
    groups = ["snow", "snow", "grass", "grass", "snow", "grass"]
    top5 = np.array([
        [1, 0, 3, 4, 5],  # snow, top-1 right
        [3, 1, 0, 4, 5],  # snow, wrong; label in top-5
        [1, 2, 3, 4, 5],  # grass, right
        [2, 0, 1, 3, 4],  # grass, right
        [0, 3, 4, 5, 6],  # snow, wrong; not in top-5
        [5, 2, 0, 1, 3],  # grass, wrong; in top-5
    ])
    reference = [True, True, False, True]  # 3 of 4 reference photos right
    paired = [True, True, False, True, True, False]  # the reference photo behind each image
    m = metrics.shift_metrics(labels, top5, groups, reference, paired)
    # by hand: snow rows 0, 1, 4 -> 1 of 3 right, 2 of 3 in the top 5; grass rows 2, 3, 5 -> 2 of 3, 3 of 3
    assert m["per_group"]["snow"]["accuracy"] == pytest.approx(1 / 3)
    assert m["per_group"]["snow"]["accuracy_top5"] == pytest.approx(2 / 3)
    assert m["per_group"]["grass"]["accuracy"] == pytest.approx(2 / 3)
    assert m["per_group"]["grass"]["accuracy_top5"] == pytest.approx(1.0)
    assert (m["per_group"]["snow"]["n"], m["per_group"]["grass"]["n"]) == (3, 3)
    assert m["accuracy"] == pytest.approx(3 / 6) and m["accuracy_top5"] == pytest.approx(5 / 6)
    assert m["worst_group"] == "snow" and m["worst_group_accuracy"] == pytest.approx(1 / 3)
    assert m["mean_group_accuracy"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert m["reference_accuracy"] == pytest.approx(0.75) and m["accuracy_drop"] == pytest.approx(0.25)
    # paired: snow's images came from photos the model gets right (3 of 3), grass's from 1 of 3
    assert m["per_group"]["snow"]["reference_accuracy"] == pytest.approx(1.0)
    assert m["per_group"]["snow"]["accuracy_drop"] == pytest.approx(2 / 3)
    assert m["per_group"]["grass"]["reference_accuracy"] == pytest.approx(1 / 3)
    assert m["per_group"]["grass"]["accuracy_drop"] == pytest.approx(-1 / 3)
    # unpaired: every group is held against the whole reference split
    u = metrics.shift_metrics(labels, top5, groups, reference)
    assert u["per_group"]["grass"]["reference_accuracy"] == pytest.approx(0.75)
    assert u["per_group"]["grass"]["accuracy_drop"] == pytest.approx(0.75 - 2 / 3)
    # no reference images at all
    n = metrics.shift_metrics(labels, top5, groups)
    assert n["reference_accuracy"] is None and n["accuracy_drop"] is None and n["per_group"]["snow"]["accuracy_drop"] is None
