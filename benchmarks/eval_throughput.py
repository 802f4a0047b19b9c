"""Throughput of spurbench's evaluation loop against forward-only and a plain timm loop, one invocation.

Builds a contract dataset of real photos (scikit-image / scikit-learn samples, flipped, cropped and
rotated into distinct images of varied sizes; PNG as `spurbench build` writes them, or `--encoding jpeg`
as the Spurious ImageNet release ships them), then times, alternating and repeated (median reported):

- forward-only: the model (channels-last, inference_mode) on batches decoded, transformed and normalised
  beforehand, with torch's default threads and with one thread: the better of the two is the most any
  loop can reach on this machine, the reference of the headline ratio;
- spurbench: `spurbench.evaluate.predict.predict`, the loop `spurbench eval` runs (DataLoader workers
  decoding the Parquet bytes with timm's eval transform, uint8 tensors grouped by shape, normalised per
  batch in the main process, softmax + top-5 + target probability kept per image), from creating the
  loader (worker start included) to the last prediction;
- timm: `timm.data.create_dataset('hfds/<folder>')` + `create_loader` + `inference_mode` forward and top-5,
  the loop a user would write after timm's validate.py;
- ablations of spurbench's loop, to see what matters: float32 transfer (workers normalise, as timm's
  loader does) instead of uint8, and other worker / main-thread counts (oversubscription: decoding
  workers and the model's threads sharing the cores).

Start-up is reported apart (not in any ratio): importing spurbench + torch + timm in a fresh interpreter,
loading the classifier, opening the dataset.

    HF_HUB_OFFLINE=1 python benchmarks/eval_throughput.py [--images 192] [--repeats 5] [--batch-size 32]
        [--workers N] [--encoding png|jpeg] [--no-ablations]

Target (issue 10): spurbench >= 0.85 of forward-only images/s. On a shared machine the numbers move
with the load: the load average before and after is printed; compare ratios from one invocation only.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_dataset(root: Path, n: int, encoding: str = "png") -> Path:
    """n distinct real-photo images in the dataset contract (labels cycle over four classes)."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from spurbench import imagenet
    from spurbench.dataset import DatasetCard, write_dataset

    photos = [getattr(skimage.data, name)() for name in ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "immunohistochemistry", "grass")]
    photos += list(load_sample_images().images)
    photos = [p[..., :3] if p.ndim == 3 else np.stack([p] * 3, -1) for p in photos]
    rng = np.random.default_rng(0)
    labels = [285, 967, 657, 0]
    rows = []
    files = root / "jpeg"
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
        image: object = crop
        if encoding == "jpeg":  # JPEG files are embedded as they are
            files.mkdir(parents=True, exist_ok=True)
            image = files / f"{i:05d}.jpg"
            Image.fromarray(crop).save(image, quality=90)
        k = labels[i % len(labels)]
        rows.append(dict(image=image, label=k, class_name=imagenet.class_name(k), spurious_feature="benchmark photo",
                         component=-1, source="reference", builder="photos", prompt="", seed=-1))
    return write_dataset(root / "bench", {"test": rows}, DatasetCard(pretty_name="spurbench throughput benchmark"), rows_per_shard=128)


def forward_batches(clf, data, batch_size: int) -> list[torch.Tensor]:
    """The whole split decoded, transformed and normalised beforehand, in channels-last batches."""
    from PIL import Image

    from spurbench.evaluate.preprocessing import build_transforms

    tf, _ = build_transforms(clf.data_config, "timm")
    images = [tf(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")) for r in data.rows]
    return [torch.stack(images[i : i + batch_size]).contiguous(memory_format=torch.channels_last) for i in range(0, len(images), batch_size)]


def time_forward(model, batches: list[torch.Tensor]) -> float:
    n = sum(len(b) for b in batches)
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x).softmax(-1).topk(5, dim=-1)
    return n / (time.perf_counter() - start)


def _one_thread(fn):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def time_spurbench(clf, data, batch_size: int, workers: int, threads: int, transfer: str = "uint8") -> float:
    from spurbench.evaluate.predict import ImageItems, predict
    from spurbench.evaluate.preprocessing import build_transforms, build_uint8_transforms

    tf, _ = (build_uint8_transforms if transfer == "uint8" else build_transforms)(clf.data_config, "timm")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        items = ImageItems(tf, data.labels, rows=data.rows, size=clf.data_config["input_size"][-2:])
        preds = predict(clf, items, batch_size=batch_size, workers=workers, device="cpu")
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    assert len(preds.label) == len(data.labels)
    return len(preds.label) / elapsed


def time_timm(model, folder: Path, data_config: dict, batch_size: int, workers: int) -> float:
    import timm.data

    dataset = timm.data.create_dataset(f"hfds/{folder}", root=None, split="test")
    start = time.perf_counter()
    loader = timm.data.create_loader(dataset, batch_size=batch_size, is_training=False, num_workers=workers,
                                     use_prefetcher=False, device=torch.device("cpu"), **data_config)
    n = 0
    with torch.inference_mode():
        for x, _ in loader:
            model(x).topk(5, dim=-1)
            n += len(x)
    assert n == len(dataset)
    return n / (time.perf_counter() - start)


def cpu_costs(clf, data, batches: list[torch.Tensor]) -> dict[str, float]:
    """CPU milliseconds per image, in one thread: decoding + transforming (what a worker does) and the forward.

    CPU time, unlike wall time, hardly moves with other processes' load, so D / F bound any loop on this
    machine: with both spread over all cores, the best loop reaches F / (F + D) of forward-only.
    """
    from PIL import Image

    from spurbench.evaluate.preprocessing import build_uint8_transforms

    tf, _ = build_uint8_transforms(clf.data_config, "timm")
    raw = [r["image"]["bytes"] for r in data.rows]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decode, forward = [], []
        for _ in range(3):
            start = time.thread_time()
            for b in raw:
                tf(Image.open(io.BytesIO(b)).convert("RGB"))
            decode.append((time.thread_time() - start) / len(raw) * 1000)
            with torch.inference_mode():
                start = time.process_time()
                for x in batches:
                    clf.model(x)
                forward.append((time.process_time() - start) / len(raw) * 1000)
    finally:
        torch.set_num_threads(before)
    return {"decode+transform": min(decode), "forward": min(forward)}


def import_seconds() -> float:
    """Wall time of a fresh interpreter importing what `spurbench eval` needs (median of 3)."""
    code = "import torch, timm, datasets, spurbench.evaluate.cli"
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=192, help="images in the generated dataset")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each loop (rotating order)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every loop")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of spurbench and timm (default: spurbench's CPU default)")
    parser.add_argument("--encoding", choices=("png", "jpeg"), default="png", help="how the images are stored in the Parquet shards")
    parser.add_argument("--no-ablations", action="store_true", help="time only forward-only, spurbench and timm")
    args = parser.parse_args(argv)

    import copy

    from spurbench.classifiers import create_classifier, load_panel
    from spurbench.evaluate.inputs import open_dataset
    from spurbench.evaluate.predict import default_workers

    workers = default_workers(torch.device("cpu")) if args.workers is None else args.workers
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_dataset(Path(tmp), args.images, args.encoding)
        startup = {"import (fresh interpreter)": import_seconds()}
        start = time.perf_counter()
        clf = create_classifier(load_panel("offline")[0])
        startup["load classifier"] = time.perf_counter() - start
        start = time.perf_counter()
        data = open_dataset(folder)
        startup["open dataset"] = time.perf_counter() - start
        batches = forward_batches(clf, data, args.batch_size)
        # the timm loop gets its own copy of the model, untouched by spurbench's channels-last conversion
        plain = copy.deepcopy(clf.model).to(memory_format=torch.contiguous_format)
        model_cl = clf.model.to(memory_format=torch.channels_last)
        loops = {
            "forward-only": lambda: time_forward(model_cl, batches),
            "spurbench": lambda: time_spurbench(clf, data, args.batch_size, workers, threads),
            "timm": lambda: time_timm(plain, folder, clf.data_config, args.batch_size, workers),
        }
        if threads > 1:  # on a loaded machine one thread can beat several (threads spin-waiting on preempted peers)
            loops["forward-only threads=1"] = lambda: _one_thread(lambda: time_forward(model_cl, batches))
        if not args.no_ablations:
            loops["spurbench float32 transfer"] = lambda: time_spurbench(clf, data, args.batch_size, workers, threads, "float32")
            for w, t in sorted({(0, threads), (1, threads), (2, threads), (1, max(1, threads - 1)), (2, max(1, threads - 1))} - {(workers, threads)}):
                loops[f"spurbench workers={w} threads={t}"] = lambda w=w, t=t: time_spurbench(clf, data, args.batch_size, w, t)
        print(f"{args.images} images ({args.encoding}), tf_efficientnet_lite0, batch {args.batch_size}, {workers} workers, "
              f"{threads} torch threads, {os.cpu_count()} cores, torch {torch.__version__}; load average {load_before[0]:.2f}", flush=True)
        for run in loops.values():  # warm-up pass of each (allocations, oneDNN kernel selection), not timed
            run()
        results: dict[str, list[float]] = {name: [] for name in loops}
        names = list(loops)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order: no loop always goes first
                results[name].append(loops[name]())
            print(f"repeat {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in results.items()) + " img/s", flush=True)
        costs = cpu_costs(clf, data, batches)
    med = {n: statistics.median(v) for n, v in results.items()}
    ref = max(v for n, v in med.items() if n.startswith("forward-only"))  # the best forward-only: the honest reference
    print("\nstart-up (not in any ratio): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()))
    print(f"median img/s and ratio to the best forward-only ({ref:.1f} img/s):")
    for name, v in med.items():
        print(f"  {name:<36} {v:8.1f}  {v / ref:.3f}")
    d, f = costs["decode+transform"], costs["forward"]
    print(f"CPU per image, one thread: decode+transform {d:.2f} ms, forward {f:.2f} ms -> "
          f"ceiling for any decoding loop on these cores F/(F+D) = {f / (f + d):.3f}")
    print(f"ratio spurbench (defaults) / best forward-only: {med['spurbench'] / ref:.3f} (target >= 0.85)")
    best = max((v, n) for n, v in med.items() if n.startswith("spurbench"))
    print(f"ratio best spurbench configuration ({best[1]}) / best forward-only: {best[0] / ref:.3f}")
    print(f"ratio spurbench / plain timm loop: {med['spurbench'] / med['timm']:.3f}")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (other processes share these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
