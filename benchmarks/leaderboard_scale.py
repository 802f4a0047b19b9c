"""Cost of recording one more leaderboard entry on a board of 10 entries against one of 1,000.

A board the size of a timm-zoo sweep on Spurious ImageNet: 7,500 images in 100 classes, every entry
with its 100-class table and a predictions CSV of 7,500 rows (the format `spurbench eval` writes),
random hits. Each board is first filled in one go (entries written, the store built once); then
`leaderboard.record_entry` appends new models one at a time and each append is timed, in the same
invocation for both sizes, interleaved (small, large, small, ...), medians reported. The store's
share (`hitstore.update`: read the new CSV, append its row and kappas) is timed apart from the rest
(reading and rewriting the board JSON, which grows with the entries).

For scale, the cost before the store: every record re-read every entry's CSV; that figure is the
measured time to read one CSV times the number of entries.

Run:  python benchmarks/leaderboard_scale.py [--small 10 --large 1000 --images 7500 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from spurbench.evaluate import hitstore
from spurbench.evaluate import leaderboard as lb
from spurbench.evaluate import predictions_csv

CLASSES = 100


def dataset(n_images: int) -> dict:
    return {"id": "bench/spurious-imagenet", "revision": None, "split": "test", "fingerprint": "f" * 64,
            "num_images": n_images, "classes": list(range(CLASSES)), "provenance": {"kind": "spurious"}}


def write_csv(root: Path, model: str, labels: np.ndarray, rng: np.random.Generator) -> str:
    rel = lb.predictions_relpath(model)
    hit = rng.random(len(labels)) < rng.uniform(0.1, 0.6)
    top1 = np.where(hit, labels, (labels + 1) % 1000)
    lines = [",".join(predictions_csv.PREDICTION_COLUMNS)]
    for i, (lab, t, h) in enumerate(zip(labels.tolist(), top1.tolist(), hit.tolist())):
        lines.append(f"{i},{lab},{0.5 if h else 0.01:.6g},{t},{int(h)},1,{t} {lab + 1} {lab + 2} {lab + 3} {lab + 4},0.5 0.2 0.1 0.05 0.01")
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("\n".join(lines) + "\n")
    return rel


def entry(model: str, rel: str, n_images: int, rng: np.random.Generator) -> dict:
    rate = float(rng.uniform(0.05, 0.6))
    per_class = {str(k): {"n": n_images // CLASSES, "spurious_rate": rate, "spurious_rate_top5": rate, "mean_target_prob": rate / 2,
                          "spurious_score_ap": None, "spurious_score_auroc": None, "num_positives": 0} for k in range(CLASSES)}
    return {"model": model, "architecture": model, "weights": {"source": "bench", "sha256": "0" * 64}, "num_params": 25_000_000,
            "data_config": {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "preprocessing": "timm", "metrics": {"spurious_rate": rate, "spurious_rate_micro": rate, "spurious_rate_top5": rate,
                                                 "spurious_rate_top5_micro": rate, "mean_target_prob": rate / 2, "spurious_score_ap": None,
                                                 "spurious_score_auroc": None, "num_images": n_images, "num_positives": 0},
            "per_class": per_class, "predictions": rel, "positives": None,
            "env": {"spurbench": "bench", "torch": "x", "timm": "y", "python": "3", "device": "cpu"},
            "date": "2026-01-01T00:00:00+00:00", "images_per_second": 100.0, "command": f"spurbench eval --model {model}"}


class Board:
    """A filled board of `size` entries in its own folder, and the next models to append."""

    def __init__(self, root: Path, size: int, n_images: int, extra: int, seed: int):
        self.root, self.path, self.ds = root, root / "leaderboard.json", dataset(n_images)
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(CLASSES), n_images // CLASSES)
        entries = [entry(f"model_{j}", write_csv(root, f"model_{j}", labels, rng), n_images, rng) for j in range(size)]
        board = {"schema_version": lb.SCHEMA_VERSION, "dataset": self.ds, "entries": entries, "consistency": None}
        t = time.perf_counter()
        board["consistency"] = hitstore.update(root, board)  # the one full build
        self.build_s = time.perf_counter() - t
        self.path.write_text(lb.dumps_board(board))
        self.pending = [entry(f"new_{j}", write_csv(root, f"new_{j}", labels, rng), n_images, rng) for j in range(extra)]
        self.csv = root / entries[0]["predictions"]


def timed_append(board: Board) -> tuple[float, float]:
    """(seconds of record_entry, seconds of it spent in hitstore.update) for the next pending model."""
    spent = []
    real = hitstore.update

    def wrapped(root, b):
        t = time.perf_counter()
        try:
            return real(root, b)
        finally:
            spent.append(time.perf_counter() - t)

    hitstore.update = wrapped
    try:
        t = time.perf_counter()
        out = lb.record_entry(board.path, board.ds, board.pending.pop(0))
        total = time.perf_counter() - t
    finally:
        hitstore.update = real
    assert out["consistency"]["excluded"] == {}, out["consistency"]["excluded"]
    return total, spent[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=10, help="entries on the small board")
    ap.add_argument("--large", type=int, default=1000, help="entries on the large board")
    ap.add_argument("--images", type=int, default=7500, help="images in the split (a multiple of 100)")
    ap.add_argument("--repeats", type=int, default=5, help="appends timed on each board")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"filling boards of {args.small} and {args.large} entries ({args.images} images, {CLASSES} classes) ...", flush=True)
        small = Board(Path(tmp) / "small", args.small, args.images, args.repeats, seed=1)
        large = Board(Path(tmp) / "large", args.large, args.images, args.repeats, seed=2)
        print(f"  one-off store build: {small.build_s:.2f} s (small), {large.build_s:.1f} s (large)")
        times: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}
        for _ in range(args.repeats):
            times["small"].append(timed_append(small))
            times["large"].append(timed_append(large))
        reads = []
        for _ in range(5):
            t = time.perf_counter()
            predictions_csv.read_predictions(large.csv, optional=())
            reads.append(time.perf_counter() - t)
        size_kb = {k: b.path.stat().st_size / 1024 for k, b in (("small", small), ("large", large))}

    med = {k: (statistics.median(t for t, _ in v), statistics.median(s for _, s in v)) for k, v in times.items()}
    print(f"\nrecording one more entry (median of {args.repeats}):")
    print(f"{'board':>8} {'entries':>8} {'JSON KiB':>9} {'record_entry ms':>16} {'of it: store ms':>16}")
    for k, n in (("small", args.small), ("large", args.large)):
        print(f"{k:>8} {n:>8} {size_kb[k]:>9.0f} {med[k][0] * 1e3:>16.1f} {med[k][1] * 1e3:>16.1f}")
    print(f"\nratio entry {args.large + 1} / entry {args.small + 1}: record_entry {med['large'][0] / med['small'][0]:.2f}x, "
          f"store (consistency) {med['large'][1] / med['small'][1]:.2f}x")
    per_csv = statistics.median(reads)
    print(f"before the store, each record re-read every CSV: {per_csv * 1e3:.0f} ms per CSV, so ~{per_csv * args.large:.1f} s "
          f"per record at {args.large} entries ({per_csv * args.large / med['large'][0]:.0f}x the store's record_entry)")
    print(json.dumps({"record_ratio": med["large"][0] / med["small"][0], "store_ratio": med["large"][1] / med["small"][1]}))


if __name__ == "__main__":
    main()
