"""Put an inpainted object back into the real photo it came from (DDB's counterfactuals).

The inpainting model repaints a whole (resized) image, and its VAE round trip changes every pixel a
little, even where nothing was asked for. DDB's context must stay the real photo, so the generated
image is only *blended in*: weight 1 inside the object mask, falling linearly to 0 across a feather
margin of `feather` pixels around it, and exactly 0 beyond. Every pixel farther than `feather` pixels
(Euclidean) from the mask is the original's, bit for bit.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: default width in pixels of the band around the mask where generated and original pixels blend
DEFAULT_FEATHER = 8


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance in pixels from each pixel to the nearest mask pixel (0 inside the mask)."""
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return distance_transform_edt(~mask)


def feather_alpha(mask: np.ndarray, feather: int = DEFAULT_FEATHER) -> np.ndarray:
    """Blend weight of the generated image: 1 - d/(feather+1) at distance d <= feather from the mask (1 inside), else 0."""
    if feather < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    d = distance_to_mask(mask)
    return np.where(d <= feather, 1.0 - d / (feather + 1), 0.0)


def grow_mask(mask: np.ndarray, feather: int = DEFAULT_FEATHER) -> np.ndarray:
    """The mask plus its feather margin: every pixel the generated image may touch."""
    return feather_alpha(mask, feather) > 0


def composite(
    original: Image.Image, generated: Image.Image, mask: np.ndarray, feather: int = DEFAULT_FEATHER
) -> Image.Image:
    """`generated` blended into `original` inside `mask` + feather margin; the original everywhere else, exactly.

    `generated` is resized (bicubic) to the original's size first; `mask` must have the original's size.
    """
    orig = np.asarray(original.convert("RGB"))
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != orig.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}, the original image {orig.shape[:2]}")
    gen_img = generated.convert("RGB")
    if gen_img.size != original.size:
        gen_img = gen_img.resize(original.size, Image.BICUBIC)
    gen = np.asarray(gen_img)
    alpha = feather_alpha(mask, feather)[..., None]
    blended = np.rint(alpha * gen.astype(np.float64) + (1.0 - alpha) * orig.astype(np.float64)).astype(np.uint8)
    # alpha == 0 must give the original's bytes, not a float round trip of them
    out = np.where(alpha > 0, blended, orig)
    return Image.fromarray(out)
