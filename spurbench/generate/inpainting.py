"""Stable Diffusion inpainting for DDB: repaint only inside an object's mask.

`repaint` runs a `StableDiffusionInpaintPipeline` on (photo, mask, prompt, seed) jobs at the recipe's
resolution, one generator per image, so an image depends only on its own seed. The result is later
composited onto the full-size original (spurbench.generate.compositing), so the context stays the photo.

`make_tiny_inpainting` builds an SD-2-style inpainting pipeline at toy width with random weights (a
9-channel UNet: latents, mask, masked-image latents) for CPU smoke builds and tests. Its text encoder
and tokenizer are the tiny text-to-image model's of the same seed (spurbench.tiny_models), as SD-2
inpainting shares SD-2-base's: a token learned by textual inversion on one loads into the other.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spurbench.errors import SpurbenchError, hub_failure_reason


def make_tiny_inpainting(
    out_dir: str | Path, prediction_type: str = "v_prediction", seed: int = 0, image_size: int = 64
) -> Path:
    """Build a random tiny inpainting pipeline into `out_dir` (diffusers layout, safetensors)."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel

    from spurbench.tiny_models import TEXT_HIDDEN, make_tiny_stable_diffusion

    scratch = Path(tempfile.mkdtemp(prefix=".tiny-inpaint-"))
    try:
        base = StableDiffusionPipeline.from_pretrained(
            str(
                make_tiny_stable_diffusion(
                    scratch / "sd", prediction_type=prediction_type, seed=seed, image_size=image_size
                )
            )
        )
        torch.manual_seed(seed + 3)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=image_size // 2,
            in_channels=9,
            out_channels=4,  # noisy latents + mask + masked-image latents, as SD-2 inpainting
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            norm_num_groups=2,
            attention_head_dim=2,
        )
        pipe = StableDiffusionInpaintPipeline(
            unet=unet,
            vae=base.vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            scheduler=base.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Path(out_dir)


def load_inpainting(source: str | Path, device: Any = "cpu", dtype: Any = None, revision: str | None = None):
    """A StableDiffusionInpaintPipeline from a local folder or a Hub id (at `revision`), progress bar off."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    try:
        pipe = StableDiffusionInpaintPipeline.from_pretrained(
            str(source),
            revision=None if Path(str(source)).is_dir() else revision,
            dtype=dtype or torch.float32,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError) as err:
        raise SpurbenchError(
            f"cannot load the inpainting model '{source}' ({hub_failure_reason(err, str(err).splitlines()[0] if str(err) else None)}); "
            "give a local diffusers inpainting folder, or a Hub id with network access"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def repaint(
    pipe,
    images: Sequence[Any],
    masks: Sequence[np.ndarray],
    prompts: Sequence[str],
    seeds: Sequence[int],
    resolution: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 4,
) -> list[Any]:
    """Inpaint `images[i]` inside `masks[i]` (bool HxW, white = repaint) with `prompts[i]` and `seeds[i]`.

    Images and masks are resized to `resolution` x `resolution`; returns PIL images of that size.
    """
    import torch
    from PIL import Image

    if not (len(images) == len(masks) == len(prompts) == len(seeds)):
        raise ValueError("images, masks, prompts and seeds must have the same length")
    out: list[Any] = []
    for start in range(0, len(images), max(1, batch_size)):
        sl = slice(start, start + max(1, batch_size))
        imgs = [im.convert("RGB").resize((resolution, resolution), Image.BICUBIC) for im in images[sl]]
        msks = [
            Image.fromarray(np.asarray(m, dtype=np.uint8) * 255).resize((resolution, resolution), Image.NEAREST)
            for m in masks[sl]
        ]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[sl]]
        result = pipe(
            prompt=list(prompts[sl]),
            image=imgs,
            mask_image=msks,
            height=resolution,
            width=resolution,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generators,
        )
        out.extend(result.images)
    return out
