"""Sampling images from a Stable Diffusion pipeline: class-prior images (stage 2) and the
spurious images of each class (stage 4).

Reproducibility rules:
- Every image has its own seed (`image_seed`, a hash of the recipe seed and the image's place), and
  its own CPU `torch.Generator`; a batch passes the list of generators to the pipeline, so the
  initial noise of an image does not depend on which batch it is in, nor on the device.
- Batches are a fixed chunking of the image list (the recipe's `generation.batch_size`). Results
  can differ in the last bit between batch sizes (matrix kernels sum in a different order for
  another batch shape), so a resumed run redoes whole unfinished batches with the same layout,
  never a partial batch. Same recipe, seed, machine and thread count: byte-identical PNGs.
- Every file is written to a temporary name and renamed, so a killed run leaves only whole images.

Class-prior images depend only on the base model and the noun, so they are generated once per noun
into `<work>/priors/<noun>/` and shared by every class using that noun. A file lock makes one
process generate them while others (an `accelerate launch` build) wait and reuse them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spurbench.errors import SpurbenchError
from spurbench.files import atomic_path, atomic_write

if TYPE_CHECKING:
    import torch

#: file recording a finished set of class-prior images
PRIOR_MARKER = "done.json"


def image_seed(*parts: Any) -> int:
    """A seed for one image from the recipe seed and the image's place (class, prompt, number...).

    A hash rather than arithmetic, so seeds of different classes/prompts never collide or shift when
    the number of images changes; 31 bits, so it is an ordinary int everywhere."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def slug(text: str) -> str:
    """A file-system-safe folder name for a noun."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_")
    return s or "_"


@dataclass(frozen=True)
class Job:
    """One image to make: its prompt, its seed and where it goes (and, for img2img, its init image)."""

    prompt: str
    seed: int
    path: Path
    #: the init image ("image guide") of an img2img job; None: text-to-image
    init: Path | None = None


def torch_dtype(mixed_precision: str, device: torch.device | str) -> torch.dtype:
    """Weights dtype for sampling: half precision only on an accelerator."""
    import torch

    if torch.device(device).type == "cpu":
        return torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def load_pipeline(
    model: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    scheduler: str | None = None,
    safety_checker: bool = False,
    img2img: bool = False,
):
    """A StableDiffusionPipeline (or, with `img2img`, a StableDiffusionImg2ImgPipeline from the same
    folder) ready to sample: on `device`, progress bar off (the caller shows one), optionally with
    another diffusers scheduler class (configured from the model's own)."""
    import diffusers
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    kwargs: dict[str, Any] = {}
    if dtype is not None and dtype != torch.float32:  # (newer diffusers warn about the keyword even for float32)
        kwargs["torch_dtype"] = dtype
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        cls = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
        pipe = cls.from_pretrained(str(model), revision=revision, **kwargs)
    except (OSError, ValueError) as err:
        raise SpurbenchError(
            f"cannot load Stable Diffusion from '{model}' (revision {revision}): {str(err).splitlines()[0]}; "
            "give a local diffusers folder, or a Hub id with network access"
        ) from None
    if scheduler:
        cls = getattr(diffusers, scheduler, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise SpurbenchError(
                f"generation.scheduler {scheduler!r} is not a diffusers scheduler class; use e.g. DDIMScheduler, "
                "DPMSolverMultistepScheduler, EulerDiscreteScheduler, or null for the model's own"
            )
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def batches(jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    return [list(jobs[i : i + batch_size]) for i in range(0, len(jobs), batch_size)]


def sample(
    pipe,
    jobs: Sequence[Job],
    *,
    batch_size: int,
    num_inference_steps: int,
    guidance_scale: float,
    resolution: int,
    progress: bool = True,
    desc: str = "generate",
    position: int | None = None,
    strength: float | None = None,
    eta: float | None = None,
) -> list[str]:
    """Make every job's image (batched, skipping batches already complete on disk).

    Jobs with an `init` image run img2img (`pipe` an img2img pipeline, `strength` its noise strength:
    int(strength x steps) denoising steps); the others text-to-image at `resolution`. `eta`: DDIM's eta.
    Returns the file names the safety checker blacked out (empty when it is off)."""
    import torch
    from tqdm.auto import tqdm

    flagged: list[str] = []
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False, position=position) as bar:
        for batch in batches(jobs, batch_size):
            if all(j.path.is_file() for j in batch):
                bar.update(len(batch))
                continue
            # CPU generators: the initial noise of an image is the same whatever the device.
            generators = [torch.Generator("cpu").manual_seed(j.seed) for j in batch]
            if batch[0].init is not None:
                from spurbench.generate.references import load_image

                size = dict(image=[load_image(j.init) for j in batch], strength=strength)
            else:
                size = dict(height=resolution, width=resolution)
            with torch.inference_mode():
                out = pipe(
                    prompt=[j.prompt for j in batch],
                    generator=generators,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    output_type="pil",
                    **size,
                    **({} if eta is None else {"eta": eta}),
                )
            nsfw = getattr(out, "nsfw_content_detected", None) or [False] * len(batch)
            for job, image, bad in zip(batch, out.images, nsfw):
                save_png(image, job.path)
                if bad:
                    flagged.append(job.path.name)
            bar.update(len(batch))
    return flagged


def save_png(image, path: Path) -> None:
    """PNG with fixed settings (deterministic bytes), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=False, compress_level=6)


def write_json(path: Path, data: Any) -> None:
    """JSON written atomically: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def prior_jobs(folder: Path, prompt: str, n: int, seed: int, noun: str) -> list[Job]:
    return [Job(prompt, image_seed(seed, "prior", noun, i), folder / f"{i:05d}.png") for i in range(n)]


def class_prior_images(
    cache_dir: str | Path,
    noun: str,
    prompt: str,
    n: int,
    seed: int,
    get_pipeline: Callable[[], Any],
    *,
    batch_size: int,
    num_inference_steps: int,
    guidance_scale: float,
    resolution: int,
    progress: bool = True,
) -> list[Path]:
    """The n class-prior images of a noun, generated with the base model on first use and reused.

    `get_pipeline` is called only when images must be made (loading the base model costs time).
    The marker records what the images are (prompt, count, seed), so a changed recipe does not
    reuse stale priors."""
    from filelock import FileLock

    folder = Path(cache_dir) / slug(noun)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = prior_jobs(folder, prompt, n, seed, noun)
    want = {"noun": noun, "prompt": prompt, "n": n, "seed": seed, "files": [j.path.name for j in jobs]}
    marker = folder / PRIOR_MARKER
    with FileLock(str(folder) + ".lock"):
        if marker.is_file():
            try:
                have = json.loads(marker.read_text())
            except ValueError:
                have = None
            if have == want and all(j.path.is_file() for j in jobs):
                return [j.path for j in jobs]
            # made for other settings: start this noun over
            marker.unlink()
            for f in folder.glob("*.png"):
                f.unlink()
        if n:
            sample(
                get_pipeline(),
                jobs,
                batch_size=batch_size,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                resolution=resolution,
                progress=progress,
                desc=f"priors '{noun}'",
            )
        write_json(marker, want)
    return [j.path for j in jobs]
