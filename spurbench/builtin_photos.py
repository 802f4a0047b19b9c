"""The built-in sample photos (scikit-image's and scikit-learn's), read one way for everything that uses them:
a recipe's `samples:` references, the `sample-photos` importer, the tests. Below both the building and the
evaluating side, so an importer can read them without importing the generators."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spurbench.errors import SpurbenchError

if TYPE_CHECKING:
    import numpy as np


def sample_photo(spec: str) -> np.ndarray:
    """A built-in photo as an RGB uint8 array: `name` or `name:mirror` / `name:crop` (central 3/4)."""
    import numpy as np

    name, _, variant = spec.partition(":")
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        img = bunch.images[[Path(f).stem for f in bunch.filenames].index(name)]
    else:
        try:
            import skimage.data
        except ImportError:
            raise SpurbenchError(
                f"sample photo '{name}' ships with scikit-image, which is not installed; `pip install scikit-image`, "
                "or use scikit-learn's sample photos (china, flower)"
            ) from None
        img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) * (255.0 if img.max() <= 1 else 1.0)).clip(0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if variant == "mirror":
        img = img[:, ::-1]
    elif variant == "crop":
        h, w = img.shape[:2]
        img = img[h // 8 : h - h // 8, w // 8 : w - w // 8]
    return np.ascontiguousarray(img)
