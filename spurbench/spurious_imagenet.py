"""The Spurious ImageNet release (Neuhaus et al., ICCV 2023): where it is, how its folders are named.

Shared by the build side (reference images for a recipe, `spurbench.generate.references`) and the
importer (`spurbench import spurious-imagenet`), so it needs neither diffusers nor torch.

The download (`RELEASE_URL`, as the release repository's `setup_download.sh` names it) unpacks into
`images/<folder>/<75 images>`, one folder per class/component pair. Split by `_`, a folder's name
carries the ImageNet class at position 2 (an index, as in the release, or a WordNet id) and the
neural-PCA component id as its last part, e.g. `class_spurious_309_..._2` -> class 309, component 2.
Plain files next to the folders (the release has a `timestamp.txt`) are not classes and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from spurbench import imagenet
from spurbench.errors import SpurbenchError

#: the release archive, as github.com/YanNeu/spurious_imagenet's setup_download.sh fetches it
RELEASE_URL = "https://nc.mlcloud.uni-tuebingen.de/index.php/s/xBtTG9jnACJDxSg/download/images_100_classes.zip"
RELEASE_REPOSITORY = "https://github.com/YanNeu/spurious_imagenet"
CITATION = (
    "@inproceedings{neuhaus2023spurious,\n"
    "  title={Spurious Features Everywhere -- Large-Scale Detection of Harmful Spurious Features in ImageNet},\n"
    "  author={Neuhaus, Yannic and Augustin, Maximilian and Boreiko, Valentyn and Hein, Matthias},\n"
    "  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},\n"
    "  year={2023}\n"
    "}"
)
LICENCE_NOTE = (
    "The images were collected by the authors from Open Images (photos from Flickr, each under its "
    "photographer's licence, mostly CC BY 2.0, as Open Images lists them); the release repository's code is "
    "MIT-licensed and the release states no separate licence for the image collection. Check those terms "
    "before redistributing the images."
)
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class SpuriousFolder:
    """One class/component folder of the release."""

    path: Path
    index: int
    component: int


def parse_folder_name(name: str) -> tuple[int, int]:
    """(ImageNet index, component id) from a release folder name; ValueError if it does not parse."""
    parts = name.split("_")
    if len(parts) < 4:
        raise ValueError("too few '_'-separated parts")
    cls, comp = parts[2], parts[-1]
    if _WNID.match(cls):
        index = imagenet.wnid_to_index(cls)
    elif cls.isdigit():
        index = imagenet.check_index(int(cls))
    else:
        raise ValueError(f"part 3 {cls!r} is neither an ImageNet index nor a WordNet id")
    if not comp.isdigit():
        raise ValueError(f"last part {comp!r} is not a component id")
    return index, int(comp)


def images_dir(root: str | Path, url: str = RELEASE_URL) -> Path:
    """The `images/` folder of an unpacked release: `root` itself, `root/images`, or `root/<one folder>/images`."""
    root = Path(root).expanduser()
    candidates = [root / "images", root if root.name == "images" else None]
    if root.is_dir():
        candidates += sorted(p / "images" for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for candidate in candidates:
        if candidate is not None and candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    raise SpurbenchError(
        f"Spurious ImageNet not found at '{root}' (expected {root}/images/<...>_<...>_<class>_..._<component>/); "
        f"download {url} and unzip it into {root} (`spurbench import spurious-imagenet {root} --download --out DIR` does that)"
    )


def scan(root: str | Path, url: str = RELEASE_URL) -> list[SpuriousFolder]:
    """Every class/component folder of the release, sorted by class then component; a folder whose
    name does not parse is a SpurbenchError naming it."""
    base = images_dir(root, url)
    out = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        try:
            index, component = parse_folder_name(sub.name)
        except (ValueError, SpurbenchError) as err:
            raise SpurbenchError(
                f"folder '{sub}' does not follow Spurious ImageNet's naming (<..>_<..>_<class>_..._<component>): {err}; "
                "remove it or fix the path"
            ) from None
        out.append(SpuriousFolder(sub, index, component))
    return sorted(out, key=lambda f: (f.index, f.component, f.path.name))
