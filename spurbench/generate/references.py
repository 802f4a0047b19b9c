"""Stage 1 of a build: the reference images each class's model learns its spurious feature from.

Three sources (a class's `references:` in the recipe picks one):

- **Spurious ImageNet** (`spurious_imagenet: true`). The download unpacks into
  `<root>/images/<folder>/`, one folder per class/component pair, named as `spurbench.spurious_imagenet`
  describes (class at `_`-position 2, component last).
- **A plain folder** (`folder: <path>`): every image file directly inside it, by file name.
- **Built-in sample photos** (`samples: [flower, flower:mirror, astronaut:crop]`): the photos that
  scikit-image and scikit-learn ship, optionally mirrored or centre-cropped, for offline smoke builds.

Every image is decoded in full before anything trains on it: a corrupt or unreadable file is a
`SpurbenchError` naming the file. The result per class is a manifest (`<work>/references/<k>.json`)
listing the files with their sha256, which the export checks again, so a reference image changed
between stages is caught instead of silently exported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spurbench.builtin_photos import sample_photo  # noqa: F401  (the one reader of the built-in photos)
from spurbench.dataset import IMAGE_SUFFIXES
from spurbench.errors import SpurbenchError, first_line
from spurbench.files import atomic_path
from spurbench.spurious_imagenet import SpuriousFolder, scan
from spurbench.untrusted import open_image

if TYPE_CHECKING:
    from PIL import Image

    from spurbench.generate.recipe import ClassEntry, Recipe


@dataclass
class ClassReferences:
    """The reference images of one class, as recorded in its manifest."""

    index: int
    component: int
    source: str  # human-readable: where the images came from
    images: list[str]  # absolute paths, in training order
    sha256: list[str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClassReferences:
        return cls(**json.loads(text))


# ---------------------------------------------------------------------------------------------
# Spurious ImageNet


def spurious_folder_for(
    folders: list[SpuriousFolder], index: int, component: int | None, root: str | Path
) -> SpuriousFolder:
    matches = [f for f in folders if f.index == index and (component is None or f.component == component)]
    if not matches:
        have = sorted({f.index for f in folders})
        what = f"class {index}" + ("" if component is None else f" with component {component}")
        raise SpurbenchError(
            f"the Spurious ImageNet download at '{root}' has no folder for {what} "
            f"(it has {len(have)} classes: {', '.join(map(str, have[:12]))}{' ...' if len(have) > 12 else ''}); "
            "check the class index and component in the recipe"
        )
    if len(matches) > 1:
        comps = ", ".join(str(f.component) for f in matches)
        raise SpurbenchError(
            f"class {index} has several Spurious ImageNet folders (components {comps}); set the class's `component` in the recipe"
        )
    return matches[0]


# ---------------------------------------------------------------------------------------------
# Plain folders and built-in photos


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (hidden files skipped)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SpurbenchError(
            f"reference folder '{folder}' does not exist; create it with the class's reference images or fix the path"
        )
    files = image_files(folder)
    if not files:
        raise SpurbenchError(f"reference folder '{folder}' holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def image_files(folder: Path) -> list[Path]:
    """Image files (by suffix) directly inside an existing folder, sorted by name, hidden files skipped."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def materialise_samples(specs: Iterable[str], out_dir: str | Path) -> list[Path]:
    """Write built-in photos as PNG files (deterministic bytes) so later stages read files only."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        path = out_dir / (spec.replace(":", "_") + ".png")
        if not path.is_file():
            with atomic_path(path) as tmp:
                Image.fromarray(sample_photo(spec)).save(tmp, format="PNG")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Checking and loading


def check_image(path: str | Path) -> str:
    """Decode an image fully; return its file's sha256. Unreadable, or over `untrusted.MAX_IMAGE_PIXELS` by its
    header (checked before decoding) -> SpurbenchError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SpurbenchError(
            f"cannot read reference image '{path}': {err.strerror or err}; fix its permissions or remove it"
        ) from None
    try:
        with open_image(data, f"reference image '{path}'") as im:
            im.load()  # verify() alone misses truncated pixel data
    except (OSError, ValueError, SyntaxError) as err:
        raise SpurbenchError(
            f"reference image '{path}' is corrupt or not an image ({first_line(err)}); replace or remove the file"
        ) from None
    return hashlib.sha256(data).hexdigest()


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image (decoded in memory, the file handle closed), its size checked before decoding."""
    try:
        with open_image(path, f"image '{path}'") as im:
            return im.convert("RGB")
    except SpurbenchError:
        raise
    except Exception as err:
        raise SpurbenchError(f"cannot read image '{path}' ({first_line(err)}); replace or remove the file") from None


def resolve_class(
    recipe: Recipe,
    entry: ClassEntry,
    samples_dir: str | Path,
    spurious_root: str | Path | None = None,
    base_dir: str | Path | None = None,
    _scan_cache: dict | None = None,
) -> ClassReferences:
    """Find and check one class's reference images.

    `spurious_root` overrides the recipe's Spurious ImageNet root; relative folders are taken
    relative to `base_dir` (the working directory when None)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    ref = entry.references
    component = entry.component
    if ref.spurious_imagenet:
        root = Path(spurious_root or recipe.references.spurious_imagenet.root).expanduser()
        root = root if root.is_absolute() else base / root
        cache = _scan_cache if _scan_cache is not None else {}
        if str(root) not in cache:
            cache[str(root)] = scan(root, recipe.references.spurious_imagenet.url)
        folder = spurious_folder_for(cache[str(root)], entry.index, entry.component, root)
        component = folder.component
        files = list_images(folder.path)
        source = f"Spurious ImageNet {folder.path.name}"
    elif ref.folder is not None:
        folder = Path(ref.folder).expanduser()
        folder = folder if folder.is_absolute() else base / folder
        files = list_images(folder)
        source = f"folder {ref.folder}"
    else:
        files = materialise_samples(ref.samples or [], samples_dir)
        source = "sample photos " + ", ".join(ref.samples or [])
    if recipe.references.max_per_class is not None:
        files = files[: recipe.references.max_per_class]
    hashes = [check_image(f) for f in files]
    return ClassReferences(
        index=entry.index,
        component=-1 if component is None else int(component),
        source=source,
        images=[str(Path(f).resolve()) for f in files],
        sha256=hashes,
    )


def verify_unchanged(refs: ClassReferences) -> None:
    """The files still hold the bytes recorded in the manifest (else the export would not match stage 1)."""
    for path, sha in zip(refs.images, refs.sha256):
        if check_image(path) != sha:
            raise SpurbenchError(
                f"reference image '{path}' changed since the build recorded it; restore it, or delete the work dir to start over"
            )
