"""Images/s of spurbench's batched sampling against one pipeline call per image, same model, same
prompts, same seeds, one invocation.

  batched     `spurbench.generate.sampling.sample` (what `spurbench build` runs in stages 2 and 4): one
              StableDiffusionPipeline call per batch of `--batch-size` images, a CPU
              torch.Generator per image, PNGs written atomically.
  per-image   the same pipeline called once per image (prompt, generator of that image's seed),
              PNGs written the same way.

With `--mode img2img` both variants run what the d3s method runs instead: a
StableDiffusionImg2ImgPipeline (DDIM, eta 0, guidance 5) from D3S image guides (a real photo pasted on a
background template, spurbench.generate.methods.d3s.make_guide) at `--strength` (0.9: int(0.9 x steps)
denoising steps).

The model is spurbench's tiny Stable Diffusion (random weights; the point is the pipeline overhead
and the batching, not image quality). Rounds alternate between the two so machine noise hits both
alike; each figure is the median over rounds. Prints images/s and the ratio batched / per-image.

    HF_HUB_OFFLINE=1 python benchmarks/generate.py [--images 16 --batch-size 8 --steps 10 --resolution 64 --rounds 5]
    HF_HUB_OFFLINE=1 python benchmarks/generate.py --mode img2img --steps 50 --strength 0.9
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=8, help="images per pipeline call in the batched variant")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--resolution", type=int, default=64, help="image size in pixels")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (after one warm-up each)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument(
        "--mode",
        choices=("txt2img", "img2img"),
        default="txt2img",
        help="txt2img: what sfsl samples; img2img: what d3s runs (image guides, DDIM, guidance 5)",
    )
    parser.add_argument("--strength", type=float, default=0.9, help="img2img noise strength")
    args = parser.parse_args()

    import torch

    from spurbench.generate.sampling import Job, image_seed, load_pipeline, sample, save_png
    from spurbench.tiny_models import make_tiny_stable_diffusion

    root = Path(tempfile.mkdtemp(prefix="spurbench-bench-gen-"))
    try:
        model = make_tiny_stable_diffusion(root / "model", image_size=args.resolution)
        img2img = args.mode == "img2img"
        pipe = load_pipeline(model, args.device, scheduler="DDIMScheduler" if img2img else None, img2img=img2img)
        prompts = ["a photo of a sks flower", "a photo of a sks flower on the beach"]
        guidance = 5.0 if img2img else 7.5
        inits = _guides(root / "guides", args.images, args.resolution) if img2img else [None] * args.images
        if img2img:
            prompts = [
                "a photo of a Egyptian cat, a domestic cat of Egypt, in snow",
                "a photo of a espresso, strong black coffee, on grass",
            ]
        call = dict(strength=args.strength, eta=0.0) if img2img else {}

        def jobs(out: Path) -> list[Job]:
            return [
                Job(prompts[i % 2], image_seed(0, "bench", i), out / f"{i:04d}.png", inits[i])
                for i in range(args.images)
            ]

        def batched(out: Path) -> None:
            sample(
                pipe,
                jobs(out),
                batch_size=args.batch_size,
                num_inference_steps=args.steps,
                guidance_scale=guidance,
                resolution=args.resolution,
                progress=False,
                **call,
            )

        def per_image(out: Path) -> None:
            from spurbench.generate.references import load_image

            for job in jobs(out):
                size = (
                    dict(image=load_image(job.init), **call)
                    if img2img
                    else dict(height=args.resolution, width=args.resolution)
                )
                with torch.inference_mode():
                    image = pipe(
                        prompt=job.prompt,
                        generator=torch.Generator("cpu").manual_seed(job.seed),
                        num_inference_steps=args.steps,
                        guidance_scale=guidance,
                        output_type="pil",
                        **size,
                    ).images[0]
                save_png(image, job.path)

        variants = {"batched": batched, "per-image": per_image}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for rnd in range(args.rounds + 1):  # round 0 warms up caches and allocators
            for name, fn in variants.items():
                out = root / f"{name}-{rnd}"
                start = time.perf_counter()
                fn(out)
                elapsed = time.perf_counter() - start
                shutil.rmtree(out)
                if rnd:
                    times[name].append(elapsed)

        rate = {name: args.images / statistics.median(t) for name, t in times.items()}
        print(
            f"tiny Stable Diffusion {args.mode}, {args.images} images of {args.resolution}px, {args.steps} steps"
            + (f" at strength {args.strength} ({int(args.strength * args.steps)} denoising)" if img2img else "")
            + ", "
            f"device {args.device}, torch threads {torch.get_num_threads()}, {args.rounds} rounds"
        )
        for name in variants:
            spread = ", ".join(f"{args.images / t:.1f}" for t in times[name])
            print(f"  {name:10s} median {rate[name]:7.2f} images/s   (rounds: {spread})")
        print(f"  ratio batched (batch size {args.batch_size}) / per-image: {rate['batched'] / rate['per-image']:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _guides(folder: Path, n: int, resolution: int) -> list[Path]:
    """D3S image guides from real photos on built-in background templates, as PNG files."""
    import numpy as np
    from PIL import Image

    from spurbench.generate.backgrounds import BUILTIN
    from spurbench.generate.methods.d3s import make_guide
    from spurbench.generate.references import sample_photo
    from spurbench.generate.sampling import save_png

    photos = [Image.fromarray(sample_photo(name)) for name in ("chelsea", "coffee")]
    backgrounds = [Image.fromarray(make()) for make in BUILTIN.values()]
    paths = []
    for i in range(n):
        guide, _ = make_guide(
            backgrounds[i % len(backgrounds)], photos[i % 2], resolution, 0.4, np.random.default_rng(i)
        )
        save_png(guide, folder / f"{i:04d}.png")
        paths.append(folder / f"{i:04d}.png")
    return paths


if __name__ == "__main__":
    main()
