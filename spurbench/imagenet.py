"""ImageNet-1k class ids, WordNet ids and names, and the 100 Spurious ImageNet classes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from spurbench.errors import SpurbenchError

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _info():
    # timm ships the ImageNet-1k synset list in index order; evaluation depends on timm anyway.
    from timm.data import ImageNetInfo

    return ImageNetInfo("imagenet-1k")


@lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids in ImageNet-1k index order (unique, unlike the human-readable names)."""
    info = _info()
    ids = tuple(info.index_to_label_name(i) for i in range(NUM_CLASSES))
    assert len(set(ids)) == NUM_CLASSES
    return ids


def class_name(index: int) -> str:
    """Short human-readable name of an ImageNet class ("tench", "crane", ...); not unique."""
    check_index(index)
    return _info().index_to_description(index).split(",")[0].strip()


def wnid_to_index(wnid: str) -> int:
    try:
        return _wnid_index()[wnid]
    except KeyError:
        raise SpurbenchError(f"'{wnid}' is not an ImageNet-1k WordNet id (expected e.g. n01440764)") from None


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}


def check_index(index: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < NUM_CLASSES:
        raise SpurbenchError(f"class id {index!r} is not an ImageNet-1k class index (expected an integer 0..999)")
    return index


@dataclass(frozen=True)
class SpuriousClass:
    """One Spurious ImageNet class: the class k and the spurious feature that makes models predict k."""

    index: int
    wnid: str
    class_name: str
    spurious_feature: str


@lru_cache(maxsize=1)
def spurious_imagenet_classes() -> tuple[SpuriousClass, ...]:
    """The 100 classes of Spurious ImageNet (Neuhaus et al., ICCV 2023), in ImageNet index order."""
    text = resources.files("spurbench").joinpath("data", "spurious_imagenet_classes.tsv").read_text()
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    return tuple(
        SpuriousClass(int(r["imagenet_index"]), r["wnid"], r["class_name"], r["spurious_feature"]) for r in rows
    )


@lru_cache(maxsize=2)
def _timm_synset_table(kind: str) -> dict[str, str]:
    """timm's `imagenet_synset_to_<kind>.txt` (kind: lemma or definition) as {wnid: text}.

    Read from the installed timm, which ships WordNet lemmas and glosses for every synset it knows."""
    from pathlib import Path

    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / f"imagenet_synset_to_{kind}.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise SpurbenchError(f"the installed timm lacks '{path}'; install a timm that ships it (>= 0.9)") from None
    return {wnid: text.strip() for wnid, _, text in (line.partition("\t") for line in lines) if text.strip()}


def class_lemmas(index: int) -> list[str]:
    """WordNet lemmas of ImageNet class `index`, in timm's order ("tench", "Tinca tinca")."""
    wnid = wnids()[check_index(index)]
    return [lemma.strip() for lemma in _timm_synset_table("lemma")[wnid].split(",") if lemma.strip()]


def class_definition(index: int) -> str:
    """The WordNet gloss of ImageNet class `index` ("a domestic cat of Egypt")."""
    return _timm_synset_table("definition")[wnids()[check_index(index)]]
