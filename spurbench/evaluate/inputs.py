"""What `spurbench eval` scores: one split of a dataset, opened and checked, and the optional positives.

`open_dataset` opens the dataset once (`spurbench.dataset.OpenDataset`, kept on the SpuriousSet for the
reference split and the group weights), reads the split's Parquet (the bytes its fingerprint is computed over),
checks the label set and leaves out rows whose verification check failed; `open_positives` gathers real in-class images for
the spurious score. Nothing is decoded here: evaluate/predict.py decodes in its workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spurbench import dataset as ds_contract
from spurbench import imagenet
from spurbench.classifiers import LoadedClassifier
from spurbench.errors import SpurbenchError, first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------
# inputs: the spurious split and the optional positives


class NothingVerified(SpurbenchError):
    """Every row of a split failed its verification check (`num_excluded` of them): nothing to score."""

    def __init__(self, message: str, num_excluded: int):
        super().__init__(message)
        self.num_excluded = num_excluded


@dataclass
class SpuriousSet:
    """One split of a spurious-image dataset, opened and checked, with its leaderboard identity."""

    source: str  # what the user passed (hub id or folder)
    folder: Path
    split: str
    revision: str | None
    rows: Any  # datasets.Dataset with columns image (undecoded bytes) and label, after --limit
    labels: np.ndarray  # label of every row in `rows`
    info: dict  # leaderboard "dataset" block (fingerprint and classes over the whole split)
    row_index: np.ndarray | None = None  # split row of each item of `rows` when verification left some out
    num_excluded: int = 0  # rows left out because their verification check failed (spurbench.verify)
    kind: str = ds_contract.DEFAULT_KIND  # the card's kind: spurious (object absent) or shift (object present)
    group_by: str | None = None  # the group column (shift sets: `background` unless --group-by)
    groups: np.ndarray | None = None  # str group of every split row (over the whole split)
    reference_index: np.ndarray | None = None  # int reference-split row behind every split row (D3S), else None
    #: names of the label set's classes when it is not ImageNet-1k (e.g. Waterbirds' two); None: ImageNet-1k
    label_names: list[str] | None = None
    #: the dataset opened once: card, splits read so far (the reference split, the group weights read it)
    dataset: ds_contract.OpenDataset | None = None
    limit: int | None = None  # --limit as given (the first N rows of those verification keeps)
    include_unverified: bool = False  # --include-unverified as given

    @property
    def num_classes(self) -> int:
        """How many outputs a classifier of this set must have."""
        return imagenet.NUM_CLASSES if self.label_names is None else len(self.label_names)


def open_dataset(
    source: str | Path | ds_contract.OpenDataset,
    split: str = ds_contract.DEFAULT_SPLIT,
    revision: str | None = None,
    limit: int | None = None,
    include_unverified: bool = False,
    group_by: str | None = None,
) -> SpuriousSet:
    """Resolve, load and check a spurious-image split (columns, ImageNet labels); nothing is decoded yet.

    `source`: a folder, a Hub id, or a dataset already opened (`spurbench.dataset.open_dataset_folder`, whose
    card and splits read so far are used, not read again; its own revision applies).

    On a verified set (`spurbench verify`) the rows whose check failed are left out unless
    `include_unverified`; a person's keep/drop decisions override the detector's. `group_by`: the
    column whose values group the images (default on a shift set: `background`, see evaluate/shift.py)."""
    if limit is not None and limit < 1:
        raise SpurbenchError(f"--limit must be a positive number of images, got {limit}")
    opened = ds_contract.open_dataset_folder(source, revision)
    source = opened.source
    # the rows come from the very Parquet bytes the fingerprint is computed over (never a stale cache)
    full, fingerprint = opened.read(split)
    label_names = _other_label_set(source, opened, full.features["label"])
    all_labels = _checked_labels(full, source, split, label_names)
    row_index, excluded = _verified_rows(full, opened, include_unverified)
    rows = _undecoded(full) if row_index is None else _undecoded(full).select(row_index)
    if limit is not None and limit < len(rows):
        rows = rows.select(range(limit))
    scored = all_labels if row_index is None else all_labels[row_index]
    info = _dataset_info(opened, split, fingerprint, all_labels, label_names)
    column, groups, ref_index = _groups(full, opened, split, group_by)
    return SpuriousSet(
        str(source),
        opened.folder,
        split,
        opened.revision,
        rows,
        scored[: len(rows)],
        info,
        row_index=None if row_index is None else row_index[: len(rows)],
        num_excluded=excluded,
        label_names=label_names,
        kind=opened.kind,
        group_by=column,
        groups=groups,
        reference_index=ref_index,
        dataset=opened,
        limit=limit,
        include_unverified=include_unverified,
    )


def _undecoded(data: Any) -> Any:
    """The image and label columns, images left as bytes: workers decode them themselves, so a bad image is
    named, not fatal."""
    from datasets import Image

    return data.select_columns(["image", "label"]).cast_column("image", Image(decode=False))


def _checked_labels(full: Any, source: Any, split: str, label_names: list[str] | None) -> np.ndarray:
    """Every row's label, once the `label` and `image` columns are checked to be what a classifier can score."""
    from datasets import ClassLabel, Image, Value

    label_feature = full.features["label"]
    num_classes = imagenet.NUM_CLASSES if label_names is None else len(label_names)
    if isinstance(label_feature, ClassLabel):
        if label_names is None and list(label_feature.names) != list(imagenet.wnids()):
            raise SpurbenchError(
                f"dataset '{source}' column `label` is a ClassLabel over {label_feature.num_classes} names, not the 1000 "
                "ImageNet-1k WordNet ids in index order, and its card names no other label set (`label_set` in the "
                "card's spurbench block, as `spurbench import` writes it)"
            )
    elif not (isinstance(label_feature, Value) and label_feature.dtype.startswith(("int", "uint"))):
        raise SpurbenchError(
            f"dataset '{source}' column `label` has type {label_feature}; expected ImageNet-1k class indices"
        )
    if not isinstance(full.features["image"], Image):
        raise SpurbenchError(
            f"dataset '{source}' column `image` has type {full.features['image']}; expected an Image column"
        )
    all_labels = np.asarray(full["label"], dtype=np.int64)
    if len(all_labels) == 0:
        raise SpurbenchError(f"dataset '{source}' split '{split}' has no rows; nothing to evaluate")
    bad = np.flatnonzero((all_labels < 0) | (all_labels >= num_classes))
    if bad.size:
        raise SpurbenchError(
            f"dataset '{source}' row {int(bad[0])} has label {int(all_labels[bad[0]])}, not a class index 0..{num_classes - 1} of its label set"
        )
    return all_labels


def _dataset_info(
    opened: ds_contract.OpenDataset, split: str, fingerprint: str, all_labels: np.ndarray, label_names: list | None
) -> dict:
    """The leaderboard's "dataset" block: the split's identity, fingerprint and classes (over the whole split)."""
    info = {
        "id": ds_contract.dataset_display_name(
            opened.source
        ),  # never an absolute local path (published with the results)
        "revision": opened.revision,
        "split": split,
        "fingerprint": fingerprint,
        "num_images": int(len(all_labels)),
        "classes": sorted(int(k) for k in np.unique(all_labels)),
        "provenance": opened.provenance,
    }
    if label_names is not None:
        info["label_set"] = opened.provenance.get("label_set")
    return info


def _groups(
    full: Any, opened: ds_contract.OpenDataset, split: str, group_by: str | None
) -> tuple[str | None, np.ndarray | None, np.ndarray | None]:
    """(group column, every row's group, every row's reference-split row on a shift set) of the split."""
    from spurbench.evaluate import shift

    kind, source = opened.kind, str(opened.source)
    # the reference split (un-shifted photos) has no groups of its own unless asked
    column = shift.group_column(
        full.column_names, kind if split != ds_contract.REFERENCE_SPLIT else ds_contract.DEFAULT_KIND, group_by, source
    )
    groups = shift.group_values(full[column], column, source) if column else None
    ref_index = (
        np.asarray(full["reference_index"], dtype=np.int64)
        if kind == "shift" and "reference_index" in full.column_names
        else None
    )
    return column, groups, ref_index


def _other_label_set(source: Any, opened: ds_contract.OpenDataset, label_feature: Any) -> list[str] | None:
    """The class names of a set whose card names a label set other than ImageNet-1k; None for ImageNet-1k."""
    from datasets import ClassLabel

    named = opened.label_set
    if named == ds_contract.IMAGENET_LABEL_SET:
        return None
    if not isinstance(label_feature, ClassLabel):
        raise SpurbenchError(
            f"dataset '{source}' names label set {named!r} in its card but its `label` column is {label_feature}, not a ClassLabel of its names"
        )
    return list(label_feature.names)


def check_outputs(clf: LoadedClassifier, data: SpuriousSet) -> None:
    """One line when the classifier's number of outputs is not the size of the dataset's label set."""
    n = getattr(clf.model, "num_classes", None)
    if n != data.num_classes:
        what = f"label set {data.info.get('label_set')!r}" if data.label_names is not None else "ImageNet-1k"
        raise SpurbenchError(
            f"classifier '{clf.spec.display_name}' has {n} outputs but dataset '{data.source}' is labelled with {what} "
            f"({data.num_classes} classes); score it with a classifier of that label set (e.g. from `spurbench finetune`)"
        )


def _verified_rows(
    full: Any, opened: ds_contract.OpenDataset, include_unverified: bool
) -> tuple[np.ndarray | None, int]:
    """(split rows to score, number left out) on a verified set; (None, 0) when all rows are scored."""
    from spurbench import verification as verify

    cols = (verify.PRESENT, verify.REVIEWED, verify.NEAR_DUPLICATE)  # the copy check's verdict counts as a failed check
    out = (
        None
        if include_unverified
        else verify.excluded_in(opened.kind, {c: full[c] for c in cols if c in full.column_names})
    )
    if out is None:
        return None, 0
    if out.all():
        raise NothingVerified(
            f"every image of '{opened.folder}' failed its verification check; nothing to score (--include-unverified scores them anyway)",
            int(out.sum()),
        )
    return np.flatnonzero(~out), int(out.sum())


@dataclass
class Positives:
    """Real in-class images ("positives" of the spurious score): an image folder or a dataset."""

    source: str
    labels: np.ndarray  # ImageNet class of every item
    paths: list[Path] | None = None  # image-folder form
    rows: Any = None  # dataset form: datasets.Dataset (image undecoded, label), already filtered

    def __len__(self) -> int:
        return len(self.labels)


def open_positives(
    source: str | Path, classes: Iterable[int], split: str | None = None, revision: str | None = None
) -> Positives:
    """Positives for `classes`: a folder of `<wnid>/<image>` files, or a dataset folder / hub id with ImageNet `label`s.

    Images of other classes are skipped (they do not enter any class's score).
    """
    wanted = set(int(k) for k in classes)
    path = Path(source).expanduser()
    if path.is_dir() and not any(path.glob("**/*.parquet")) and not (path / "dataset_info.json").exists():
        return _positives_folder(source, path, wanted)
    # a dataset with ImageNet labels (a local Parquet folder or a hub id), e.g. ImageNet's validation split
    from datasets import ClassLabel

    if not path.is_dir() and not ds_contract._HUB_ID.match(str(source)):
        raise SpurbenchError(
            f"positives '{source}' is neither a folder nor a hub dataset id; give <folder>/<WordNet id>/<image> or a dataset with ImageNet labels"
        )
    data, split = _positives_split(source, path, split, revision)
    ds_contract.check_columns(data.column_names, f"'{source}' (positives, split {split})")
    feature = data.features["label"]
    if isinstance(feature, ClassLabel) and feature.num_classes != imagenet.NUM_CLASSES:
        raise SpurbenchError(
            f"positives dataset '{source}' labels {feature.num_classes} classes, not ImageNet-1k's 1000"
        )
    all_labels = np.asarray(data["label"], dtype=np.int64)
    keep = np.flatnonzero(np.isin(all_labels, sorted(wanted)))
    return Positives(str(source), all_labels[keep], rows=_undecoded(data).select(keep))


def _positives_folder(source: str | Path, path: Path, wanted: set[int]) -> Positives:
    """The images of the wanted classes in a folder of `<wnid>/<image>` files."""
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if not class_dirs:
        raise SpurbenchError(
            f"positives folder '{source}' has no class sub-folders; expected <folder>/<WordNet id>/<image>, e.g. n01440764/x.jpg"
        )
    paths, labels = [], []
    for d in class_dirs:
        try:
            k = imagenet.wnid_to_index(d.name)
        except SpurbenchError:
            raise SpurbenchError(
                f"positives sub-folder '{d}' is not named by an ImageNet-1k WordNet id (like n01440764); rename or remove it"
            ) from None
        if k not in wanted:
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(f)
                labels.append(k)
    return Positives(str(source), np.asarray(labels, dtype=np.int64), paths=paths)


def _positives_split(source: str | Path, path: Path, split: str | None, revision: str | None) -> tuple[Any, str]:
    """(the rows, the split's name) of a positives dataset; unset split: validation, val or test, or its only one."""
    from datasets import get_dataset_split_names, load_dataset

    where = str(path) if path.is_dir() else str(source)
    local = path.is_dir() and any(path.glob("data/*.parquet"))
    try:
        if split is None:
            names = ds_contract.split_names(path) if local else get_dataset_split_names(where, revision=revision)
            split = next(
                (s for s in ("validation", "val", "test") if s in names), names[0] if len(names) == 1 else None
            )
            if split is None:
                raise SpurbenchError(
                    f"positives dataset '{source}' has splits {', '.join(names)}; pick one with --positives-split"
                )
        # a local Hub-layout folder is read from its files, never from `load_dataset`'s folder-name cache
        data = ds_contract.load_split(path, split) if local else load_dataset(where, split=split, revision=revision)
    except SpurbenchError:
        raise
    except Exception as err:
        raise SpurbenchError(
            f"cannot load positives dataset '{source}' ({first_line(err)}); "
            "check the folder / hub id and --positives-split"
        ) from None
    return data, split
