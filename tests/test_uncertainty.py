"""spurbench.evaluate.uncertainty against independent computations (statsmodels, scipy) and against simulations
with a known truth: the 95 % interval resampled by the set's unit covers the truth about 95 % of the time on
clustered data, where a plain image-level bootstrap does not."""

from __future__ import annotations

import numpy as np
import pytest

from spurbench.evaluate import uncertainty as u
from spurbench.evaluate.metrics import average_precision

REPLICATES = 500  # simulated data sets per coverage figure of the interval spurbench computes
BASELINE_REPLICATES = 200  # for the image-level bootstrap it is compared with (only shown to fall short)


def test_wilson_equals_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in [(0, 10), (3, 120), (7, 7), (50, 100), (1, 1)]:
        lo, hi = u.wilson_interval(k, n)
        ref = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12)
    assert u.wilson_interval(0, 0) == (None, None)


def test_mcnemar_equals_statsmodels_exact():
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(3)
    for n, pa, pb in [(40, 0.5, 0.5), (200, 0.3, 0.45), (15, 0.9, 0.1), (30, 0.5, 0.5)]:
        a = rng.random(n) < pa
        b = rng.random(n) < pb
        ours = u.mcnemar_exact(a, b)
        table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
        assert ours["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
        assert (ours["only_a"], ours["only_b"]) == (table[0][1], table[1][0])
    assert u.mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_unclustered_interval_agrees_with_scipy_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(11)
    x = (rng.random(300) < 0.3).astype(float)
    method = u.Method(unit="image", resamples=4000, seed=5)
    lo, hi = u.pooled_mean_interval(x, np.arange(x.size), method)
    ref = bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=7).confidence_interval
    # Monte Carlo error of a 2.5 % quantile from 4000 resamples of a mean with sd ~0.026: well under 0.01
    assert abs(lo - ref.low) < 0.01 and abs(hi - ref.high) < 0.01
    assert lo < x.mean() < hi


def _clustered_rates(rng, n_classes=100, per_class=20):
    """Per-image hits of a spurious set: each class's generator fools the model at its own rate p_k ~ Beta(2, 5)
    (a random effect), images of a class drawn from it. Truth of the macro rate: E[p_k] = 2 / 7."""
    p = rng.beta(2, 5, size=n_classes)
    hits = rng.random((n_classes, per_class)) < p[:, None]
    labels = np.repeat(np.arange(n_classes), per_class)
    return hits.reshape(-1).astype(float), labels


@pytest.mark.slow
def test_class_resampled_interval_covers_the_macro_rate_and_an_image_bootstrap_does_not():
    rng = np.random.default_rng(2026)
    truth = 2 / 7
    method = u.Method(unit="class", resamples=1000, seed=0)
    covered_class = covered_image = 0
    for r in range(REPLICATES):
        hits, labels = _clustered_rates(rng)
        # the function an entry's block uses (spurious_uncertainty): classes drawn whole
        _, reps = u.spurious_replicates(labels, hits, hits, hits, method=u.Method(unit="class", seed=r))
        lo, hi = u.percentile_interval(reps["spurious_rate"])
        covered_class += lo <= truth <= hi
        if r < BASELINE_REPLICATES:  # the plain image-level bootstrap: every image its own unit
            lo_i, hi_i = u.pooled_mean_interval(
                hits, np.arange(hits.size), u.Method(unit="image", resamples=500, seed=r)
            )
            covered_image += lo_i <= truth <= hi_i
    class_coverage = covered_class / REPLICATES
    image_coverage = covered_image / BASELINE_REPLICATES
    print(f"macro spurious rate: class-resampled coverage {class_coverage:.3f}, image-level {image_coverage:.3f}")
    assert 0.93 <= class_coverage <= 0.97
    assert image_coverage < 0.90
    assert method.record()["unit"] == "class"


@pytest.mark.slow
def test_class_resampled_interval_covers_the_mean_ap():
    """Spurious score AP per class (real positives vs the class's spurious images), a random class effect on how
    far apart they score; truth = the population mean AP, from 20,000 simulated classes."""

    def class_ap(rng, n_classes):
        shift = rng.normal(1.0, 0.8, size=n_classes)
        out = []
        for k in range(n_classes):
            pos = rng.normal(shift[k], 1.0, size=10)
            neg = rng.normal(0.0, 1.0, size=15)
            out.append(average_precision(pos, neg))
        return np.array(out)

    truth = class_ap(np.random.default_rng(99), 20_000).mean()
    rng = np.random.default_rng(7)
    covered = 0
    for r in range(REPLICATES):
        labels = np.arange(100)  # one stand-in image per class: the AP enters per class, as in an entry
        _, reps = u.spurious_replicates(
            labels, labels * 0.0, labels * 0.0, labels * 0.0, class_ap(rng, 100), None, u.Method(unit="class", seed=r)
        )
        lo, hi = u.percentile_interval(reps["spurious_score_ap"])
        covered += lo <= truth <= hi
    coverage = covered / REPLICATES
    print(f"mean spurious-score AP: class-resampled coverage {coverage:.3f}")
    assert 0.93 <= coverage <= 0.97


def _shift_set(rng, n_photos=150, per_photo=10):
    """A shift set: photo j is recognised on its original with probability e_j ~ Beta(4, 2) and on each of its
    shifted versions with v_j ~ Beta(0.5, 0.5) (how much its new backgrounds hurt varies by photo, so its shifted
    versions move together). Truth of the drop: E[e] - E[v] = 2/3 - 1/2."""
    e = rng.beta(4, 2, size=n_photos)
    v = rng.beta(0.5, 0.5, size=n_photos)
    original = (rng.random(n_photos) < e).astype(float)
    shifted = (rng.random((n_photos, per_photo)) < v[:, None]).reshape(-1).astype(float)
    return shifted, np.repeat(np.arange(n_photos), per_photo), original, np.arange(n_photos)


@pytest.mark.slow
def test_photo_resampled_interval_covers_the_paired_drop_and_an_image_bootstrap_does_not():
    rng = np.random.default_rng(5)
    truth = 2 / 3 - 1 / 2
    covered_photo = covered_image = 0
    for r in range(REPLICATES):
        s, s_units, o, o_units = _shift_set(rng)
        # the function an entry's block uses (shift_uncertainty): photos drawn with their shifted images, each
        # shifted image paired with its photo's own result
        _, _, reps = u.shift_replicates(
            s_units,
            s,
            s,
            np.zeros(s.size),
            s_units,
            o[s_units].astype(int),
            None,
            None,
            u.Method(unit="reference_index", seed=r),
        )
        lo, hi = u.percentile_interval(reps["accuracy_drop"])
        covered_photo += lo <= truth <= hi
        if r < BASELINE_REPLICATES:  # every image its own unit: the shifted versions of a photo taken as independent
            image = u.Method(unit="image", resamples=500, seed=r)
            lo_i, hi_i = u.drop_interval(s, np.arange(s.size), o, np.arange(s.size, s.size + o.size), image)
            covered_image += lo_i <= truth <= hi_i
    photo_coverage, image_coverage = covered_photo / REPLICATES, covered_image / BASELINE_REPLICATES
    print(f"paired drop: photo-resampled coverage {photo_coverage:.3f}, image-level {image_coverage:.3f}")
    assert 0.93 <= photo_coverage <= 0.97
    assert image_coverage < 0.92


def test_paired_difference_keeps_the_pairing():
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.5).astype(float)
    b = a.copy()
    b[:20] = 1 - b[:20]  # two models that differ on 20 of 400 images only
    units = np.repeat(np.arange(40), 10)
    lo, hi = u.paired_difference_interval(a, b, units, u.Method(unit="class"))
    diff = a.mean() - b.mean()
    assert lo <= diff <= hi
    assert hi - lo < 0.08  # paired: far narrower than two separate intervals (each ~0.2 wide at 40 units)


def test_group_accuracy_replicates_hold_the_groups_fixed():
    correct = np.array([1, 1, 0, 1] * 25 + [0, 0, 1, 0] * 25, dtype=float)
    groups = ["land"] * 100 + ["water"] * 100
    names, acc = u.group_accuracy_replicates(correct, groups, u.Method(unit="image-within-group"))
    assert names == ["land", "water"]
    assert acc.mean(axis=0) == pytest.approx([0.75, 0.25], abs=0.01)
    lo, hi = u.percentile_interval(acc.min(axis=1))
    assert lo < 0.25 < hi


def test_rank_intervals_and_which_models_cannot_be_told_apart():
    # models 0 and 1 swap places in the replicates, model 2 is always last
    reps = np.array([[0.9, 0.8, 0.1], [0.8, 0.9, 0.2], [0.85, 0.86, 0.1], [0.9, 0.7, 0.3]] * 10)
    ranks = u.rank_intervals(reps, higher_is_better=True)
    assert ranks == [(1, 2), (1, 2), (3, 3)]
    assert u.indistinguishable(ranks) == [[0, 1]]
    assert u.rank_intervals(reps, higher_is_better=False)[2] == (1, 1)


def test_statistic_interval_of_a_per_class_ap_is_around_it():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30), rng.normal(0, 1, 30)
    scores = np.concatenate([pos, neg])
    is_pos = np.r_[np.ones(30, bool), np.zeros(30, bool)]

    def ap(idx):
        p, n = scores[idx][is_pos[idx]], scores[idx][~is_pos[idx]]
        return average_precision(p, n) if p.size and n.size else None

    lo, hi = u.statistic_interval(ap, 60, u.Method(unit="image", resamples=300))
    assert lo < average_precision(pos, neg) < hi
