"""The consistency figures count each model once (its canonical entry) and carry class-resampled intervals that
equal a direct recomputation (loops over the resampled images and metrics.fleiss_kappa's own definition)."""

from __future__ import annotations

import math

import numpy as np
from test_leaderboard import DATASET, LABELS, independent_consistency, make_entry, write_csv

from spurbench.evaluate import hitstore, uncertainty
from spurbench.evaluate import leaderboard as lb


def _fooled(seed: int, m: int) -> np.ndarray:
    return np.random.default_rng(seed).random((len(LABELS), m)) < 0.5


def test_extra_entries_of_one_model_are_left_out_of_the_consistency(tmp_path):
    fooled = _fooled(1, 3)
    names = ["a", "b", "c"]
    path = tmp_path / "board" / "leaderboard.json"
    path.parent.mkdir()
    for j, name in enumerate(names):
        entry = make_entry(name, float(fooled[:, j].mean()), predictions=write_csv(path.parent, name, fooled[:, j]))
        lb.record_entry(path, DATASET, {**entry, "architecture": f"arch-{name}", "weights": {"sha256": str(j) * 64}})
    before = lb.load_leaderboard(path)["consistency"]
    # a second entry of model "a" (same architecture and weights), scored with --limit under another name
    again = make_entry("a-limit", 0.5, predictions=write_csv(path.parent, "a-limit", fooled[:, 0]))
    again.update(architecture="arch-a", weights={"sha256": "0" * 64}, rows={"limit": 6, "count": 6})
    lb.record_entry(path, DATASET, again)
    after = lb.load_leaderboard(path)["consistency"]
    assert after["models"] == names and "a-limit" in after["excluded"]
    assert "each model once" in after["excluded"]["a-limit"]
    want = independent_consistency(fooled, names)
    for key in ("all_fooled_rate", "mean_pairwise_kappa", "fleiss_kappa"):
        assert math.isclose(after[key], want[key], abs_tol=1e-12) and math.isclose(before[key], after[key])
    assert "each model is counted once" in lb.to_markdown(lb.load_leaderboard(path))


def test_agreement_intervals_equal_a_recomputation_by_class_resampling():
    m = 3
    votes = _fooled(2, m).sum(axis=1)
    got = hitstore._agreement_intervals(votes, LABELS, m)
    units, n_units = uncertainty.unit_index(LABELS)
    counts = uncertainty.bootstrap_counts(n_units)
    classes = [np.flatnonzero(units == u) for u in range(n_units)]
    rates, kappas = [], []
    for b in range(counts.shape[0]):
        rows = np.concatenate([np.repeat(classes[u], counts[b, u]) for u in range(n_units)])
        v = votes[rows]
        rates.append(float((v == m).mean()))
        table = np.stack([v, m - v], axis=1)
        from spurbench.evaluate.metrics import fleiss_kappa

        k = fleiss_kappa(table)
        kappas.append(np.nan if k is None else k)
    for key, reps in (("all_fooled_rate", rates), ("fleiss_kappa", kappas)):
        r = np.asarray(reps, dtype=float)
        lo, hi = np.quantile(r[np.isfinite(r)], [0.025, 0.975])
        assert np.allclose(got[key], [lo, hi], atol=1e-12), (key, got[key], lo, hi)
    assert got["uncertainty"]["unit"] == "class" and got["uncertainty"]["resamples"] == counts.shape[0]
