"""Background templates for background-shift sets (method d3s): a folder of folders named by the
background word (`grass/`, `snow/`, ...), or built-in templates for offline smoke builds.

Built-in templates: scikit-image's texture photos where one fits (grass, gravel for a road, brick for
indoors, the Hubble deep field for night) and simple images drawn in code for the rest. They are
stand-ins that let a CPU build exercise all ten backgrounds; real builds use photographs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from spurbench.errors import SpurbenchError
from spurbench.files import atomic_path

if TYPE_CHECKING:
    import numpy as np

#: D3S's ten backgrounds: label word -> the phrase its prompts end with (the D3S paper's list)
D3S_BACKGROUNDS: dict[str, str] = {
    "grass": "on grass",
    "road": "on a road",
    "forest": "in a forest",
    "water": "in water",
    "sand": "in sand",
    "indoors": "indoors",
    "snow": "in snow",
    "rain": "in rain",
    "night": "at night",
    "cave": "in a cave",
}
_SIZE = 256  # built-in templates are drawn at this size (the build resizes them to its resolution)


def _tinted(gray: np.ndarray, rgb: tuple[float, float, float]) -> np.ndarray:
    import numpy as np

    g = gray.astype(np.float64) / 255.0
    return (g[..., None] * np.asarray(rgb)[None, None, :]).clip(0, 255).astype(np.uint8)


def _skimage(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError:
        raise SpurbenchError(
            "built-in backgrounds need scikit-image; `pip install scikit-image` or give backgrounds.folder"
        ) from None
    return getattr(skimage.data, name)()


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    import numpy as np

    return np.random.default_rng(seed).random(shape)


def _grass() -> np.ndarray:
    return _tinted(_skimage("grass"), (90, 200, 70))


def _road() -> np.ndarray:
    return _tinted(_skimage("gravel"), (170, 170, 175))


def _indoors() -> np.ndarray:
    return _tinted(_skimage("brick"), (230, 200, 170))


def _night() -> np.ndarray:
    return _skimage("hubble_deep_field")[..., :3]


def _forest() -> np.ndarray:
    import numpy as np

    img = np.zeros((_SIZE, _SIZE, 3))
    img[:] = (30, 90, 35)
    img += _noise(1, (_SIZE, _SIZE, 1)) * (40, 60, 30)
    for x in range(8, _SIZE, 37):  # tree trunks
        img[:, x : x + 9] = (70, 50, 30)
    return img.clip(0, 255).astype(np.uint8)


def _water() -> np.ndarray:
    import numpy as np

    y, x = np.mgrid[0:_SIZE, 0:_SIZE]
    wave = 0.5 + 0.5 * np.sin(y / 6.0 + 2.0 * np.sin(x / 23.0))
    return np.stack([20 + 30 * wave, 80 + 60 * wave, 150 + 80 * wave], axis=-1).astype(np.uint8)


def _sand() -> np.ndarray:
    import numpy as np

    n = _noise(2, (_SIZE, _SIZE, 1))
    return (np.asarray((215, 190, 140)) * (0.85 + 0.15 * n)).astype(np.uint8)


def _snow() -> np.ndarray:
    import numpy as np

    n = _noise(3, (_SIZE, _SIZE, 1))
    return (np.asarray((240, 245, 255)) * (0.92 + 0.08 * n)).astype(np.uint8)


def _rain() -> np.ndarray:
    import numpy as np

    y, x = np.mgrid[0:_SIZE, 0:_SIZE]
    streaks = ((x + y // 3) % 11 == 0) & (_noise(4, (_SIZE, _SIZE)) > 0.4)
    img = np.full((_SIZE, _SIZE, 3), (105, 110, 120), dtype=np.float64)
    img[streaks] = (190, 195, 205)
    return img.astype(np.uint8)


def _cave() -> np.ndarray:
    import numpy as np

    y, x = np.mgrid[0:_SIZE, 0:_SIZE] / (_SIZE - 1) - 0.5
    light = np.clip(1.0 - 2.2 * np.hypot(x, y + 0.1), 0, 1)[..., None]
    return (np.asarray((25, 18, 12)) + light * np.asarray((120, 95, 70))).astype(np.uint8)


#: built-in template makers, one per D3S background
BUILTIN: dict[str, Callable[[], np.ndarray]] = {
    "grass": _grass,
    "road": _road,
    "forest": _forest,
    "water": _water,
    "sand": _sand,
    "indoors": _indoors,
    "snow": _snow,
    "rain": _rain,
    "night": _night,
    "cave": _cave,
}


def materialise_builtin(word: str, out_dir: str | Path) -> list[Path]:
    """Write the built-in template of `word` as a PNG (deterministic bytes); return its path in a list."""
    from PIL import Image

    if word not in BUILTIN:
        raise SpurbenchError(
            f"background '{word}' has no built-in template (built-in: {', '.join(BUILTIN)}); give backgrounds.folder with a '{word}/' folder"
        )
    out = Path(out_dir) / word / "builtin.png"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Image.fromarray(BUILTIN[word]()).save(tmp, format="PNG")
    return [out]


def folder_templates(root: str | Path, word: str) -> list[Path]:
    """The template images of background `word` in a folder of folders; a missing one is one clear line."""
    from spurbench.generate.references import image_files

    folder = Path(root) / word
    if not folder.is_dir():
        raise SpurbenchError(
            f"backgrounds folder '{root}' has no folder '{word}/' for background '{word}'; add its template images there"
        )
    files = image_files(folder)
    if not files:
        raise SpurbenchError(f"background folder '{folder}' holds no image files; add template images of '{word}'")
    return files
