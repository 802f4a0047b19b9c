"""Time to compute an entry's `uncertainty` block (issue 23 §1): 7,500 images in 100 classes, B = 1,000 resamples,
for a spurious set (classes resampled) and a shift set (source photos resampled), median of 3 runs. The block is
computed from per-image predictions already in memory, so this is the whole cost eval adds per entry.

    python benchmarks/interval_cost.py
"""

from __future__ import annotations

import time

import numpy as np

from spurbench.evaluate import uncertainty


def main() -> None:
    rng = np.random.default_rng(0)
    n = 7500
    labels = np.repeat(np.arange(100), 75)
    hit1 = rng.random(n) < 0.3
    hit5 = hit1 | (rng.random(n) < 0.3)
    p_label = rng.random(n)
    per_class_ap = list(rng.random(100))
    groups = rng.choice(list("abcd"), n)
    photos = np.repeat(np.arange(750), 10)  # 10 shifted images per source photo, as D3S makes them
    correct = (rng.random(n) < 0.7).astype(int)
    cases = {
        "spurious set, classes resampled": lambda: uncertainty.spurious_uncertainty(
            labels, hit1, hit5, p_label, per_class_ap, per_class_ap
        ),
        "shift set, source photos resampled": lambda: uncertainty.shift_uncertainty(
            labels, hit1, hit5, groups, photos, correct, None, {"a": 0.5, "b": 0.5}
        ),
    }
    for name, run in cases.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(
            f"{name}: {n:,} images, B = {uncertainty.DEFAULT_RESAMPLES:,}: {sorted(times)[1]:.2f} s per entry (median of 3)"
        )


if __name__ == "__main__":
    main()
