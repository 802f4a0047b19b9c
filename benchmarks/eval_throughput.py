"""Throughput of spurbench's evaluation against a plain timm loop, same data, same model, one invocation.

Builds a contract dataset of real photos (scikit-image / scikit-learn samples, flipped, cropped and
rotated into distinct images of varied sizes), then times, alternating and repeated:

- spurbench: `spurbench.evaluate.evaluation.predict` (the loop `spurbench eval` runs: DataLoader workers decoding
  the Parquet image bytes, timm eval transform, batched inference_mode, channels-last, softmax + top-5 +
  target probability kept per image);
- timm: `timm.data.create_dataset('hfds/<folder>', root=None, split='test')` + `timm.data.create_loader(...,
  **data_config)` + `torch.inference_mode()` forward and top-5, the way timm's own validate loop reads a
  Hugging Face dataset.

Both use the offline panel's tf_efficientnet_lite0 (real weights), the same batch size and worker count;
each timing covers creating the loader and one full pass. Prints images/s (median of the repeats) and
the ratio spurbench / timm (target on the 2-core CPU machine: >= 0.95). spurbench runs the model in
channels-last memory format, which the plain loop does not; a third loop, the same timm loop with the
model and batches in channels-last, isolates what the rest of spurbench's loop (per-image bookkeeping,
error capture) costs: its ratio is printed too.

    HF_HUB_OFFLINE=1 python benchmarks/eval_throughput.py [--images 192] [--repeats 5] [--batch-size 32] [--workers N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_dataset(root: Path, n: int) -> Path:
    """n distinct real-photo images in the dataset contract (labels cycle over four classes)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    from spurbench import imagenet
    from spurbench.dataset import DatasetCard, write_dataset

    photos = [getattr(skimage.data, name)() for name in ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "immunohistochemistry", "grass")]
    photos += list(load_sample_images().images)
    photos = [p[..., :3] if p.ndim == 3 else np.stack([p] * 3, -1) for p in photos]
    rng = np.random.default_rng(0)
    labels = [285, 967, 657, 0]
    rows = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        # a random crop of 50-100% per side, maybe mirrored / rotated: distinct images of varied sizes
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(np.rot90(crop, k=int(rng.integers(0, 4))))
        k = labels[i % len(labels)]
        rows.append(dict(image=crop, label=k, class_name=imagenet.class_name(k), spurious_feature="benchmark photo",
                         component=-1, source="reference", builder="photos", prompt="", seed=-1))
    return write_dataset(root / "bench", {"test": rows}, DatasetCard(pretty_name="spurbench throughput benchmark"), rows_per_shard=128)


def time_spurbench(clf, data, batch_size: int, workers: int) -> float:
    from spurbench.evaluate.evaluation import _ImageItems, build_uint8_transforms, predict

    tf, _ = build_uint8_transforms(clf.data_config, "timm")
    start = time.perf_counter()
    items = _ImageItems(tf, data.labels, rows=data.rows, size=clf.data_config["input_size"][-2:])
    preds = predict(clf, items, batch_size=batch_size, workers=workers, device="cpu")
    elapsed = time.perf_counter() - start
    assert len(preds.label) == len(data.labels)
    return len(preds.label) / elapsed


def time_timm(model, folder: Path, data_config: dict, batch_size: int, workers: int, channels_last: bool = False) -> float:
    import timm.data

    dataset = timm.data.create_dataset(f"hfds/{folder}", root=None, split="test")
    start = time.perf_counter()
    loader = timm.data.create_loader(dataset, batch_size=batch_size, is_training=False, num_workers=workers,
                                     use_prefetcher=False, device=torch.device("cpu"), **data_config)
    n = 0
    with torch.inference_mode():
        for x, _ in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            logits.topk(5, dim=-1)
            n += len(x)
    elapsed = time.perf_counter() - start
    assert n == len(dataset)
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=192, help="images in the generated dataset")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each loop (rotating order)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every loop")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of every loop (default: spurbench's default)")
    args = parser.parse_args(argv)

    import copy

    from spurbench.classifiers import create_classifier, load_panel
    from spurbench.evaluate.evaluation import DEFAULT_WORKERS, open_dataset

    workers = DEFAULT_WORKERS if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_dataset(Path(tmp), args.images)
        data = open_dataset(folder)
        clf = create_classifier(load_panel("offline")[0])
        # the timm loops get their own copies of the model, untouched by spurbench's channels-last conversion
        plain = copy.deepcopy(clf.model).to(memory_format=torch.contiguous_format)
        plain_cl = copy.deepcopy(clf.model).to(memory_format=torch.channels_last)
        loops = {
            "spurbench": lambda: time_spurbench(clf, data, args.batch_size, workers),
            "timm": lambda: time_timm(plain, folder, clf.data_config, args.batch_size, workers),
            "timm+channels_last": lambda: time_timm(plain_cl, folder, clf.data_config, args.batch_size, workers, channels_last=True),
        }
        print(f"{args.images} images, tf_efficientnet_lite0, batch {args.batch_size}, {workers} workers, "
              f"{torch.get_num_threads()} torch threads, torch {torch.__version__}", flush=True)
        for run in loops.values():  # warm-up pass of each (allocations, oneDNN kernel selection), not timed
            run()
        results: dict[str, list[float]] = {name: [] for name in loops}
        names = list(loops)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order: no loop always goes first
                results[name].append(loops[name]())
            print(f"repeat {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in results.items()) + " img/s", flush=True)
    med = {n: statistics.median(v) for n, v in results.items()}
    print("median img/s: " + ", ".join(f"{n} {v:.2f}" for n, v in med.items()))
    print(f"ratio spurbench / plain timm loop: {med['spurbench'] / med['timm']:.3f} (target >= 0.95)")
    print(f"ratio spurbench / timm loop with channels-last: {med['spurbench'] / med['timm+channels_last']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
