"""Generated, not copied: every generated image is compared with the reference images of its class.

DreamBooth-style fine-tuning on 5-10 photos can memorise them; a "spurious" image that is one of the training
photos again tests nothing new. The literature measures copying two ways: Somepalli et al. 2023 ("Diffusion Art
or Digital Forgery?") with SSCD copy-detection descriptors (cosine >= 0.5 counted as a replication), and Carlini
et al. 2023 ("Extracting Training Data from Diffusion Models") with a pixel-space L2 taken tile by tile, the image's
distance being its *worst* tile's, so a copy must match everywhere, not just on average. SSCD's weights cannot be
fetched where spurbench is built offline, so the check here is Carlini's, weights-free and deterministic:

- each image is decoded (bounded first: `untrusted.open_image`), made RGB, resized to 64 x 64 (what survives a
  resize or a JPEG re-encode), and standardised per channel (brightness and contrast shifts do not matter);
- it is cut into a 4 x 4 grid of tiles; per tile, the mean squared difference to the other image;
- similarity = 1 - (worst tile's mean squared difference) / 2: 1 for identical images, about 0 for unrelated ones
  (two independent standardised images differ by 2 on average), lower when anti-correlated (clipped at -1).

Each reference image is also compared mirrored (fine-tuning often flips its photos). Every generated row records
`nearest_reference` (the file name of its class's closest reference image), `reference_similarity`, and
`near_duplicate` (similarity >= the threshold). `spurbench eval` leaves near-duplicates out like images that failed
verification (`--include-unverified` keeps them), and the review page shows them. Near-duplicates among a class's own
generated images (a model that keeps producing one picture) are counted per class in the card.

The threshold is the recipe's `copies: {threshold: X}` (not part of the recipe's hash: changing it re-checks,
never regenerates); DEFAULT_THRESHOLD's measurement is in its comment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spurbench.errors import SpurbenchError

SECTION = "copies"
#: resized side and tiles per side of the descriptor (Carlini et al. use 16 tiles)
SIDE, GRID = 64, 4
#: Measured on real photos (/tmp measurement in the branch report; tests/test_copies.py holds its ends): 119 planted
#: copies of 17 scikit-image / scikit-learn photos (exact, mirrored, resized to 30-80 % and JPEG-re-encoded at quality
#: 40-90) score >= 0.88 (median 0.996); distinct images of one class (the 100 LFW faces of `skimage.data.lfw_subset`,
#: 19,800 ordered pairs with mirrors) score <= 0.70 (99th percentile 0.30), the two views of `stereo_motorcycle` 0.22,
#: distinct photos <= 0. 0.8 lies between the two with room on both sides.
DEFAULT_THRESHOLD = 0.8
#: the methods whose images come from a model fine-tuned on the references (D3S and DDB edit the reference photos
#: themselves, so their images resemble them by construction: the check does not apply)
CHECKED_METHODS = ("sfsl", "dreambooth")
METHOD = (
    f"Carlini et al. 2023 tiled L2: {SIDE}x{SIDE} RGB standardised per channel, {GRID}x{GRID} tiles, "
    "similarity = 1 - worst tile's mean squared difference / 2; references also mirrored"
)


@dataclass
class CopiesSection:
    threshold: float = DEFAULT_THRESHOLD


def parse_copies_section(value: Any) -> CopiesSection:
    """The recipe's `copies:` section, checked (errors name the key); the defaults when absent."""
    from spurbench.generate.schema import convert

    if value is None:
        return CopiesSection()
    section = convert(CopiesSection, value, SECTION)
    if isinstance(section.threshold, bool) or not -1 <= float(section.threshold) <= 1:
        raise SpurbenchError(
            f"key '{SECTION}.threshold' must be a similarity between -1 and 1 (default {DEFAULT_THRESHOLD}), got {section.threshold}"
        )
    return section


def load_copies_section(recipe_path: str | Path) -> CopiesSection:
    from spurbench import resources

    _, data = resources.load_yaml("recipe", recipe_path)
    return parse_copies_section(data.get(SECTION) if isinstance(data, dict) else None)


# ---------------------------------------------------------------------------------------------
# Descriptors and similarity


def descriptor(image: bytes | str | Path, what: str) -> np.ndarray:
    """(GRID * GRID, tile values): the image resized to SIDE x SIDE, standardised per channel, cut into tiles."""
    from PIL import Image

    from spurbench import untrusted

    try:
        with untrusted.open_image(image, what) as im:  # the header bounded before anything is decoded
            im.draft("RGB", (SIDE * 2, SIDE * 2))  # JPEG: decode at a reduced size, it is resized anyway
            small = im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)
    except SpurbenchError:
        raise
    except Exception as err:  # a truncated or corrupt file: one line naming it
        raise SpurbenchError(f"cannot decode {what} ({err.__class__.__name__}); replace or remove it") from None
    x = np.asarray(small, dtype=np.float32)
    x = (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-3)  # a flat image stays near 0, never divides by 0
    t = SIDE // GRID
    return x.reshape(GRID, t, GRID, t, 3).transpose(0, 2, 1, 3, 4).reshape(GRID * GRID, -1)


def mirrored(desc: np.ndarray) -> np.ndarray:
    """The descriptor of the image flipped left to right (no second decode)."""
    t = SIDE // GRID
    tiles = desc.reshape(GRID, GRID, t, t, 3)[:, ::-1, :, ::-1, :]
    return np.ascontiguousarray(tiles).reshape(GRID * GRID, -1)


def similarity_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) similarities of stacked descriptors: 1 - worst tile's mean squared difference / 2.
    Per tile one matrix product (|x - y|^2 = |x|^2 + |y|^2 - 2 x.y), so thousands of images compare in seconds."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    worst = np.zeros((len(a), len(b)), dtype=np.float32)
    d = a.shape[2]
    for t in range(a.shape[1]):
        x, y = a[:, t, :], b[:, t, :]
        mse = ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T) / d
        np.maximum(worst, mse, out=worst)
    return np.clip(1.0 - worst / 2.0, -1.0, 1.0)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(similarity_matrix(a[None], b[None])[0, 0])


# ---------------------------------------------------------------------------------------------
# The check of a build's export


@dataclass
class ClassCopies:
    """One class's result: per generated image its nearest reference and similarity, and the self-duplicates."""

    nearest: list[str]
    similarity: list[float]
    near_duplicate: list[bool]
    self_duplicates: int  # generated images within the threshold of an earlier generated image of the class


def check_class(
    generated: Sequence[str | Path], references: Sequence[str | Path], threshold: float, what: str
) -> ClassCopies:
    """Compare a class's generated images with its reference images (and their mirrors) and with each other."""
    refs = [descriptor(p, f"reference image '{Path(p).name}' of {what}") for p in references]
    names = [Path(p).name for p in references] + [f"{Path(p).name} (mirrored)" for p in references]
    ref_stack = np.stack(refs + [mirrored(r) for r in refs]) if refs else np.zeros((0, GRID * GRID, 1), np.float32)
    gen = [descriptor(p, f"generated image '{Path(p).name}' of {what}") for p in generated]
    if not gen:
        return ClassCopies([], [], [], 0)
    gen_stack = np.stack(gen)
    if len(ref_stack):
        sims = similarity_matrix(gen_stack, ref_stack)
        best = sims.argmax(axis=1)
        nearest = [names[int(j)] for j in best]
        score = [round(float(sims[i, j]), 4) for i, j in enumerate(best)]
    else:
        nearest, score = [""] * len(gen), [float("nan")] * len(gen)
    among = similarity_matrix(gen_stack, gen_stack)
    earlier = np.tril(among >= threshold, k=-1)  # i repeats an earlier image j < i
    return ClassCopies(
        nearest=nearest,
        similarity=score,
        near_duplicate=[bool(s >= threshold) for s in score],
        self_duplicates=int(earlier.any(axis=1).sum()),
    )


def annotate_rows(
    rows: Iterable[dict[str, Any]], references: Mapping[int, Sequence[str]], threshold: float, by: str = "label"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows with the copy columns added (generated rows checked against `references[row[by]]`, other rows empty),
    and the card's summary: threshold, method, per class checked / near-duplicates / self-duplicates."""
    from spurbench.verification import NEAR_DUPLICATE, NEAREST, SIMILARITY

    rows = list(rows)  # paths, not pixels: a split of rows is small
    per_class: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        row.update({NEAREST: None, SIMILARITY: None, NEAR_DUPLICATE: False})
        if row.get("source") == "generated":
            per_class.setdefault(int(row[by]), []).append(i)
    classes = {}
    for k, idx in sorted(per_class.items()):
        result = check_class([rows[i]["image"] for i in idx], references.get(k, []), threshold, f"class {k}")
        for i, n, s, d in zip(idx, result.nearest, result.similarity, result.near_duplicate):
            rows[i].update({NEAREST: n or None, SIMILARITY: None if s != s else s, NEAR_DUPLICATE: d})
        classes[str(k)] = {
            "checked": len(idx),
            "near_duplicates": sum(result.near_duplicate),
            "self_duplicates": result.self_duplicates,
            "max_similarity": max((s for s in result.similarity if s == s), default=None),
        }
    summary = {
        "method": METHOD,
        "threshold": float(threshold),
        "classes": classes,
        "near_duplicates": sum(c["near_duplicates"] for c in classes.values()),
        "self_duplicates": sum(c["self_duplicates"] for c in classes.values()),
    }
    return rows, summary


def copy_features() -> dict[str, Any]:
    from datasets import Value

    from spurbench.verification import NEAR_DUPLICATE, NEAREST, SIMILARITY

    return {NEAREST: Value("string"), SIMILARITY: Value("float32"), NEAR_DUPLICATE: Value("bool")}


def card_section(summary: Mapping[str, Any]) -> str:
    """The card's copy-check section: the method, the threshold, and per class the near-duplicates of a reference
    image and of the class's own images."""
    lines = [
        "## Copies of the reference images",
        "",
        f"Every generated image was compared with its class's reference images ({summary['method']}). "
        f"`near_duplicate` marks a similarity >= {summary['threshold']:g} to the nearest one (`nearest_reference`, "
        "`reference_similarity`); `spurbench eval` leaves those images out like images that failed verification "
        "(`--include-unverified` keeps them). Self-duplicates: generated images as close to an earlier image of their "
        "own class (a model that keeps producing one picture).",
        "",
        "| split | class | generated | near-duplicates of a reference | self-duplicates | highest similarity |",
        "|---|---|---|---|---|---|",
    ]
    for split, part in summary["splits"].items():
        for k, c in part["classes"].items():
            top = "" if c["max_similarity"] is None else f"{c['max_similarity']:.2f}"
            lines.append(
                f"| {split} | {k} | {c['checked']} | {c['near_duplicates']} | {c['self_duplicates']} | {top} |"
            )
    return "\n".join(lines)


def check_export(ctx, splits: dict[str, Iterable[dict]], refs: Mapping[int, Any], extra_features: Any):
    """The build's hook (stage_export): for a method that fine-tunes on the references, its splits with the copy
    columns, its extra features with theirs, and the summary for the card; unchanged (and None) for other methods."""
    if str(getattr(ctx.recipe, "method", "")) not in CHECKED_METHODS:
        return splits, extra_features, None
    section = load_copies_section(ctx.recipe_path)
    references = {int(k): list(r.images) for k, r in refs.items()}
    summary: dict[str, Any] = {"method": METHOD, "threshold": float(section.threshold), "splits": {}}
    out: dict[str, Iterable[dict]] = {}
    for name, rows in splits.items():
        checked, s = annotate_rows(rows, references, section.threshold)
        out[name] = iter(checked)
        if s["classes"]:  # a split of generated images
            summary["splits"][name] = {k: s[k] for k in ("classes", "near_duplicates", "self_duplicates")}
    for name, s in summary["splits"].items():
        ctx.log(
            f"stage 5/5 copies: {name}: {s['near_duplicates']} generated image(s) within similarity "
            f"{section.threshold:g} of a reference image, {s['self_duplicates']} of an earlier image of their class"
        )
    return out, {**dict(extra_features or {}), **copy_features()}, summary
