"""Detection throughput (images/s) of `spurbench.detection.detect` batched against one image per call,
same detector, same images, same queries, one invocation.

  batched     detect(..., batch_size=B): what `spurbench verify` and the build's verify stage run
  per-image   detect(..., batch_size=1): one processor + model call per image

Models (no weights are downloaded; random weights cost the same compute as trained ones):
  tiny            spurbench's tiny OWLv2 (64 px inputs): measures the per-call overhead
  owlv2-base      OWLv2 at the size of google/owlv2-base-patch16-ensemble (ViT-B/16, 960 px inputs),
                  built from transformers' default Owlv2Config with random weights: the real cost
  grounding-dino-tiny-arch  spurbench's tiny Grounding DINO (toy width)

Images are real photos (scikit-image, scikit-learn) of different sizes, each with its ImageNet class's
lemma queries. Rounds alternate between the variants so machine noise hits both alike; each figure is
the median over rounds. Prints images/s and the ratio batched / per-image.

    HF_HUB_OFFLINE=1 python benchmarks/detection.py [--model tiny --images 32 --batch-size 8 --rounds 5 --device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _photos(n: int):
    import numpy as np
    import skimage.data
    from sklearn.datasets import load_sample_images

    base = [
        skimage.data.chelsea(),
        skimage.data.coffee(),
        skimage.data.rocket(),
        skimage.data.astronaut(),
        *load_sample_images().images,
    ]
    # (photo, ImageNet class it shows or might): Egyptian cat, espresso, missile, tench (nothing fishy), palace, daisy
    labels = [285, 967, 657, 0, 698, 985]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        if (i // len(base)) % 2:
            img = img[:, ::-1].copy()
        out.append((np.ascontiguousarray(img[..., :3]), labels[i % len(base)]))
    return out


def _detector(name: str, root: Path, device: str):
    from spurbench import detection

    if name == "tiny":
        return detection.load_detector("owlv2", model=detection.make_tiny_owlv2(root / "tiny"), device=device)
    if name == "grounding-dino-tiny-arch":
        return detection.load_detector(
            "grounding-dino", model=detection.make_tiny_grounding_dino(root / "gdino"), device=device
        )
    if name == "owlv2-base":
        import torch
        from transformers import (
            CLIPTokenizer,
            Owlv2Config,
            Owlv2ForObjectDetection,
            Owlv2ImageProcessor,
            Owlv2Processor,
        )

        from spurbench.tiny_models import tiny_clip_tokenizer

        torch.manual_seed(0)
        folder = root / "owlv2-base"
        config = Owlv2Config(vision_config={"image_size": 960, "patch_size": 16})  # ViT-B/16 at 960 px, CLIP text
        Owlv2ForObjectDetection(config).save_pretrained(str(folder))
        # the real tokenizer needs the Hub; a byte-level one costs the same per call at this size
        tok: CLIPTokenizer = tiny_clip_tokenizer(folder, model_max_length=16)
        Owlv2Processor(image_processor=Owlv2ImageProcessor(), tokenizer=tok).save_pretrained(str(folder))
        return detection.load_detector("owlv2", model=folder, device=device)
    raise SystemExit(f"unknown --model {name!r}; use tiny, owlv2-base or grounding-dino-tiny-arch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | owlv2-base | grounding-dino-tiny-arch")
    parser.add_argument("--images", type=int, default=32, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=8, help="images per call in the batched variant")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (after one warm-up each)")
    parser.add_argument("--device", default="cpu", help="torch device")
    args = parser.parse_args()

    import torch

    from spurbench import detection

    with tempfile.TemporaryDirectory(prefix="spurbench-bench-det-") as tmp:
        det = _detector(args.model, Path(tmp), args.device)
        photos = _photos(args.images)
        images = [p for p, _ in photos]
        queries = [detection.class_queries(k, det.family) for _, k in photos]

        def run(batch_size: int) -> float:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            detection.detect(det, images, queries, batch_size=batch_size, progress=False)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - start

        # identical results either way (checked once, outside the timing)
        a = detection.detect(det, images, queries, batch_size=args.batch_size, progress=False)
        b = detection.detect(det, images, queries, batch_size=1, progress=False)
        worst = max(abs(x.score - y.score) for x, y in zip(a, b))
        variants = {"batched": args.batch_size, "per-image": 1}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for bs in variants.values():
            run(bs)  # warm-up
        for _ in range(args.rounds):
            for name, bs in variants.items():
                times[name].append(run(bs))
        ips = {k: args.images / statistics.median(v) for k, v in times.items()}
        print(
            f"model {args.model} on {args.device}, {args.images} images ({len(set(im.shape for im in images))} sizes), "
            f"torch threads {torch.get_num_threads()}, median of {args.rounds} rounds"
        )
        print(f"  batched (batch {args.batch_size}): {ips['batched']:8.2f} images/s")
        print(f"  per-image (batch 1):   {ips['per-image']:8.2f} images/s")
        print(
            f"  ratio batched / per-image: {ips['batched'] / ips['per-image']:.2f}x   (max score difference {worst:.1e})"
        )


if __name__ == "__main__":
    main()
