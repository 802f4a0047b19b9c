"""Score timm ImageNet-1k classifiers on a spurious-image dataset and record them in a leaderboard.

For every image of the split (each labelled with the class k it is spurious for, i.e. whose object
it does NOT contain), the classifier's softmax gives p_k and the top 5. The spurious rate of class k
is the fraction of its images with top-1 = k (lower is better); with --positives (real images of
the classes), the spurious score AP/AUROC says how well p_k separates real k from spurious k
(higher is better). Per-image predictions go to <leaderboard folder>/predictions/<model>.csv and the
model's entry is added to (or replaced in) the leaderboard JSON, whose cross-classifier consistency
is recomputed over every model in it.

Images are preprocessed exactly as timm evaluates each model (its resolved data config and eval
transform) unless --preprocessing spurious-imagenet asks for the released Spurious ImageNet code's.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from spurbench import dataset as ds_contract
from spurbench import imagenet
from spurbench.classifiers import ClassifierSpec, HeadMismatch, LoadedClassifier, check_model_name, create_classifier, load_panel
from spurbench.errors import SpurbenchError
from spurbench.evaluate.preprocessing import (  # noqa: F401  (build_transforms: the float per-image form, re-exported)
    PREPROCESSING, build_transforms, build_uint8_transforms, collate_by_shape, data_config_for, normalise_batch,
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TOPK = 5
#: worker processes decoding images by default: a few, never more than the machine has cores
DEFAULT_WORKERS = max(1, min(8, (os.cpu_count() or 2)))


def default_workers(device: torch.device) -> int:
    """`--workers` when unset. On a CPU with two cores or fewer, decoding in the main process is fastest:
    workers there compete with the model's threads (measured with benchmarks/eval_throughput.py on an idle
    2-core machine: 0.87 of forward-only images/s with 0 workers, 0.80 with 2)."""
    if device.type != "cuda" and (os.cpu_count() or 2) <= 2:
        return 0
    return DEFAULT_WORKERS


# ---------------------------------------------------------------------------------------------
# inputs: the spurious split and the optional positives


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

    @property
    def num_classes(self) -> int:
        """How many outputs a classifier of this set must have."""
        return imagenet.NUM_CLASSES if self.label_names is None else len(self.label_names)


def open_dataset(source: str | Path, split: str = ds_contract.DEFAULT_SPLIT, revision: str | None = None, limit: int | None = None,
                 include_unverified: bool = False, group_by: str | None = None) -> SpuriousSet:
    """Resolve, load and check a spurious-image split (columns, ImageNet labels); nothing is decoded yet.

    On a verified set (`spurbench verify`) the rows whose check failed are left out unless
    `include_unverified`; a person's keep/drop decisions override the detector's. `group_by`: the
    column whose values group the images (default on a shift set: `background`, see evaluate/shift.py)."""
    from datasets import ClassLabel, Image, Value

    from spurbench.evaluate import shift

    if limit is not None and limit < 1:
        raise SpurbenchError(f"--limit must be a positive number of images, got {limit}")
    folder = ds_contract.resolve_dataset(source, revision)
    # the rows come from the very Parquet bytes the fingerprint is computed over (never a stale cache)
    full, fingerprint = ds_contract.read_split(folder, split)
    label_feature = full.features["label"]
    label_names = _other_label_set(source, folder, label_feature)
    num_classes = imagenet.NUM_CLASSES if label_names is None else len(label_names)
    if isinstance(label_feature, ClassLabel):
        if label_names is None and list(label_feature.names) != list(imagenet.wnids()):
            raise SpurbenchError(
                f"dataset '{source}' column `label` is a ClassLabel over {label_feature.num_classes} names, not the 1000 "
                "ImageNet-1k WordNet ids in index order, and its card names no other label set (`label_set` in the "
                "card's spurbench block, as `spurbench import` writes it)"
            )
    elif not (isinstance(label_feature, Value) and label_feature.dtype.startswith(("int", "uint"))):
        raise SpurbenchError(f"dataset '{source}' column `label` has type {label_feature}; expected ImageNet-1k class indices")
    if not isinstance(full.features["image"], Image):
        raise SpurbenchError(f"dataset '{source}' column `image` has type {full.features['image']}; expected an Image column")
    all_labels = np.asarray(full["label"], dtype=np.int64)
    if len(all_labels) == 0:
        raise SpurbenchError(f"dataset '{source}' split '{split}' has no rows; nothing to evaluate")
    bad = np.flatnonzero((all_labels < 0) | (all_labels >= num_classes))
    if bad.size:
        raise SpurbenchError(f"dataset '{source}' row {int(bad[0])} has label {int(all_labels[bad[0]])}, not a class index 0..{num_classes - 1} of its label set")
    # decode=False: workers get the raw bytes and decode them themselves, so a bad image is named, not fatal
    rows = full.select_columns(["image", "label"]).cast_column("image", Image(decode=False))
    row_index, excluded = _verified_rows(full, folder, include_unverified)
    scored = all_labels if row_index is None else all_labels[row_index]
    if row_index is not None:
        rows = rows.select(row_index)
    if limit is not None and limit < len(rows):
        rows = rows.select(range(limit))
    info = {
        "id": ds_contract.dataset_display_name(source),  # never an absolute local path (published with the results)
        "revision": revision,
        "split": split,
        "fingerprint": fingerprint,
        "num_images": int(len(all_labels)),
        "classes": sorted(int(k) for k in np.unique(all_labels)),
        "provenance": ds_contract.read_provenance(folder),
    }
    if label_names is not None:
        info["label_set"] = ds_contract.read_provenance(folder).get("label_set")
    kind = ds_contract.read_kind(folder)
    # the reference split (un-shifted photos) has no groups of its own unless asked
    column = shift.group_column(full.column_names, kind if split != ds_contract.REFERENCE_SPLIT else ds_contract.DEFAULT_KIND,
                                group_by, str(source))
    groups = shift.group_values(full[column], column, str(source)) if column else None
    ref_index = np.asarray(full["reference_index"], dtype=np.int64) if kind == "shift" and "reference_index" in full.column_names else None
    return SpuriousSet(str(source), folder, split, revision, rows, scored[: len(rows)], info,
                       row_index=None if row_index is None else row_index[: len(rows)], num_excluded=excluded,
                       label_names=label_names, kind=kind, group_by=column, groups=groups, reference_index=ref_index)


def _other_label_set(source: Any, folder: Path, label_feature: Any) -> list[str] | None:
    """The class names of a set whose card names a label set other than ImageNet-1k; None for ImageNet-1k."""
    from datasets import ClassLabel

    named = ds_contract.read_provenance(folder).get("label_set", ds_contract.IMAGENET_LABEL_SET)
    if named == ds_contract.IMAGENET_LABEL_SET:
        return None
    if not isinstance(label_feature, ClassLabel):
        raise SpurbenchError(f"dataset '{source}' names label set {named!r} in its card but its `label` column is {label_feature}, not a ClassLabel of its names")
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


def _verified_rows(full: Any, folder: Path, include_unverified: bool) -> tuple[np.ndarray | None, int]:
    """(split rows to score, number left out) on a verified set; (None, 0) when all rows are scored."""
    from spurbench import verify

    if include_unverified or not verify.is_verified(full.column_names):
        return None, 0
    reviewed = full[verify.REVIEWED] if verify.REVIEWED in full.column_names else None
    out = verify.excluded_rows(ds_contract.read_kind(folder), full[verify.PRESENT], reviewed)
    if out.all():
        raise SpurbenchError(f"every image of '{folder}' failed its verification check; nothing to score (--include-unverified scores them anyway)")
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


def open_positives(source: str | Path, classes: Iterable[int], split: str | None = None, revision: str | None = None) -> Positives:
    """Positives for `classes`: a folder of `<wnid>/<image>` files, or a dataset folder / hub id with ImageNet `label`s.

    Images of other classes are skipped (they do not enter any class's score).
    """
    wanted = set(int(k) for k in classes)
    path = Path(source).expanduser()
    if path.is_dir() and not any(path.glob("**/*.parquet")) and not (path / "dataset_info.json").exists():
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

    # a dataset with ImageNet labels (a local Parquet folder or a hub id), e.g. ImageNet's validation split
    from datasets import ClassLabel, Image, get_dataset_split_names, load_dataset

    if not path.is_dir() and not ds_contract._HUB_ID.match(str(source)):
        raise SpurbenchError(f"positives '{source}' is neither a folder nor a hub dataset id; give <folder>/<WordNet id>/<image> or a dataset with ImageNet labels")
    where = str(path) if path.is_dir() else str(source)
    local = path.is_dir() and any(path.glob("data/*.parquet"))
    try:
        if split is None:
            names = ds_contract.split_names(path) if local else get_dataset_split_names(where, revision=revision)
            split = next((s for s in ("validation", "val", "test") if s in names), names[0] if len(names) == 1 else None)
            if split is None:
                raise SpurbenchError(f"positives dataset '{source}' has splits {', '.join(names)}; pick one with --positives-split")
        # a local Hub-layout folder is read from its files, never from `load_dataset`'s folder-name cache
        data = ds_contract.load_split(path, split) if local else load_dataset(where, split=split, revision=revision)
    except SpurbenchError:
        raise
    except Exception as err:
        raise SpurbenchError(
            f"cannot load positives dataset '{source}' ({err.__class__.__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "check the folder / hub id and --positives-split"
        ) from None
    ds_contract.check_columns(data.column_names, f"'{source}' (positives, split {split})")
    feature = data.features["label"]
    if isinstance(feature, ClassLabel) and feature.num_classes != imagenet.NUM_CLASSES:
        raise SpurbenchError(f"positives dataset '{source}' labels {feature.num_classes} classes, not ImageNet-1k's 1000")
    all_labels = np.asarray(data["label"], dtype=np.int64)
    keep = np.flatnonzero(np.isin(all_labels, sorted(wanted)))
    rows = data.select_columns(["image", "label"]).cast_column("image", Image(decode=False)).select(keep)
    return Positives(str(source), all_labels[keep], rows=rows)


# ---------------------------------------------------------------------------------------------
# decoding and preprocessing (runs inside the DataLoader workers)


class _ImageItems(torch.utils.data.Dataset):
    """Items (uint8 tensor, label, index, error) decoded on demand, so only the current batches are in memory.

    A failed decode yields a zero tensor and the error text; the main process names the image and stops.
    """

    def __init__(self, transform: Callable, labels: np.ndarray, rows: Any = None, paths: Sequence[Path] | None = None, size=(224, 224)):
        self.transform, self.labels, self.rows, self.paths, self.size = transform, labels, rows, paths, tuple(size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        try:
            if self.paths is not None:
                with Image.open(self.paths[i]) as im:
                    img = im.convert("RGB")
            else:
                cell = self.rows[i]["image"]
                if cell.get("bytes") is not None:
                    img = Image.open(io.BytesIO(cell["bytes"]))
                else:  # a row that points to a file instead of embedding it
                    img = Image.open(cell["path"])
                img = img.convert("RGB")
            return self.transform(img), int(self.labels[i]), i, ""
        except Exception as err:  # corrupt / truncated / missing image: reported by the main process
            return torch.zeros(3, *self.size, dtype=torch.uint8), int(self.labels[i]), i, f"{err.__class__.__name__}: {err}"

    def describe(self, i: int) -> str:
        if self.paths is not None:
            return f"'{self.paths[i]}'"
        path = self.rows[i]["image"].get("path")
        return f"row {i}" + (f" (path '{path}')" if path else "")


# ---------------------------------------------------------------------------------------------
# the prediction loop


@dataclass
class Predictions:
    """Per-image results, small arrays only (a few numbers per image)."""

    index: np.ndarray  # int[N] row index in the split
    label: np.ndarray  # int[N]
    target_prob: np.ndarray  # float[N] p_label
    top5: np.ndarray  # int[N, 5]
    top5_probs: np.ndarray  # float[N, 5]
    seconds: float = 0.0

    @property
    def fooled_top1(self) -> np.ndarray:
        return self.top5[:, 0] == self.label

    @property
    def fooled_top5(self) -> np.ndarray:
        return (self.top5 == self.label[:, None]).any(axis=1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SpurbenchError(f"--device '{device}' is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpurbenchError(f"--device {device} asked for, but this torch sees no CUDA GPU; use --device cpu")
    return dev


class ImageDecodeError(SpurbenchError):
    """An image of the data cannot be decoded: a problem of the data, not of the classifier being scored."""


def precision_for(device: torch.device, amp: bool) -> tuple[str, torch.dtype | None]:
    """(name recorded in the entry, autocast dtype or None). float32 unless --amp on CUDA (float16, as
    timm's validate.py --amp); CPU always runs float32."""
    if amp and device.type == "cuda":
        return "amp-float16", torch.float16
    return "float32", None


def predict(
    classifier: LoadedClassifier,
    items: _ImageItems,
    *,
    batch_size: int = 32,
    workers: int = DEFAULT_WORKERS,
    device: torch.device | str | None = None,
    amp: bool = False,
    what: str = "images",
    desc: str | None = None,
    data_config: dict | None = None,
) -> Predictions:
    """Run the classifier over `items` in batches; workers decode while the model runs.

    Workers hand over uint8 images grouped by shape (`collate_by_shape`); each group is normalised on
    the device and classified; logits are divided by the classifier's temperature before the softmax.
    `data_config` gives the mean/std to normalise with (default: the classifier's).
    """
    from tqdm.auto import tqdm

    device = resolve_device(device)
    cuda = device.type == "cuda"
    _, autocast_dtype = precision_for(device, amp)
    temperature = float(getattr(classifier, "temperature", 1.0) or 1.0)
    data_config = data_config or classifier.data_config
    # channels-last: faster convolutions on CUDA (tensor cores) and, measured here, on CPU (oneDNN) too
    model = classifier.model.to(device).to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        items, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=cuda, collate_fn=collate_by_shape,
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
    )
    n = len(items)
    out_index = np.empty(n, dtype=np.int64)
    out_label = np.empty(n, dtype=np.int64)
    out_target = np.empty(n, dtype=np.float64)
    out_top = np.empty((n, TOPK), dtype=np.int64)
    out_topp = np.empty((n, TOPK), dtype=np.float64)
    pos = 0
    start = time.perf_counter()
    with torch.inference_mode(), tqdm(total=n, desc=desc or classifier.spec.display_name, unit="img", disable=None, leave=False) as bar:
        for groups, y, idx, errors in loader:
            bad = next((j for j, e in enumerate(errors) if e), None)
            if bad is not None:
                i = int(idx[bad])
                raise ImageDecodeError(f"cannot decode {what} {items.describe(i)}: {errors[bad].splitlines()[0][:200]}; replace or remove that image")
            b = len(y)
            y_dev = y.to(device, non_blocking=cuda)
            packed = torch.empty(b, 1 + 2 * TOPK, device=device)
            for x, where in groups:  # one forward per image shape in the batch (one group unless shapes differ)
                x = x.to(device, non_blocking=cuda)
                if x.dtype == torch.uint8:  # float items (build_transforms) come normalised already
                    x = normalise_batch(x, data_config)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                    logits = model(x)
                logits = logits.float()
                if temperature != 1.0:
                    logits = logits / temperature
                probs = logits.softmax(dim=-1)
                top_p, top_i = probs.topk(min(TOPK, probs.shape[-1]), dim=-1)
                if top_i.shape[-1] < TOPK:  # a label set of fewer than 5 classes: pad with class -1 at probability 0
                    top_p = torch.nn.functional.pad(top_p, (0, TOPK - top_i.shape[-1]))
                    top_i = torch.nn.functional.pad(top_i, (0, TOPK - top_i.shape[-1]), value=-1)
                where = where.to(device)
                target = probs.gather(1, y_dev[where].view(-1, 1))
                # [p_label, top-5 probs, top-5 indices (exact in float32)]
                packed[where] = torch.cat([target, top_p, top_i.float()], dim=1)
            packed = packed.cpu().numpy()  # one small device-to-host copy per batch
            out_index[pos : pos + b] = idx.numpy()
            out_label[pos : pos + b] = y.numpy()
            out_target[pos : pos + b] = packed[:, 0]
            out_topp[pos : pos + b] = packed[:, 1 : 1 + TOPK]
            out_top[pos : pos + b] = packed[:, 1 + TOPK :].astype(np.int64)
            pos += b
            bar.update(b)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return Predictions(out_index, out_label, out_target, out_top, out_topp, seconds)


# ---------------------------------------------------------------------------------------------
# evaluation of one classifier -> leaderboard entry


def evaluate(
    classifier: ClassifierSpec | LoadedClassifier,
    data: SpuriousSet | str | Path,
    *,
    positives: Positives | str | Path | None = None,
    split: str = ds_contract.DEFAULT_SPLIT,
    revision: str | None = None,
    preprocessing: str = "timm",
    batch_size: int = 32,
    workers: int = DEFAULT_WORKERS,
    device: str | torch.device | None = None,
    limit: int | None = None,
    amp: bool = False,
    command: str | None = None,
    group_by: str | None = None,
) -> tuple[dict, Predictions]:
    """Score one classifier on a split; returns (leaderboard entry, per-image predictions).

    A `spurious` set gets spurious rates (and scores with positives); a `shift` set accuracy per group
    against its `reference` split (evaluate/shift.py). `group_by` applies when `data` is opened here.

    Nothing is written: see `record` for the predictions CSV and the leaderboard.
    """
    from spurbench.evaluate import metrics
    from spurbench.evaluate.leaderboard import predictions_relpath

    if preprocessing not in PREPROCESSING:
        raise SpurbenchError(f"unknown preprocessing '{preprocessing}'; use one of {', '.join(PREPROCESSING)}")
    if batch_size < 1:
        raise SpurbenchError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise SpurbenchError(f"--workers must be 0 (decode in the main process) or more, got {workers}")
    dev = resolve_device(device)
    if not isinstance(data, SpuriousSet):
        data = open_dataset(data, split=split, revision=revision, limit=limit, group_by=group_by)
    if positives is not None and not isinstance(positives, Positives):
        positives = open_positives(positives, data.info["classes"])
    clf = classifier if isinstance(classifier, LoadedClassifier) else create_classifier(classifier, "cpu", num_classes=data.num_classes)
    name = clf.spec.display_name
    check_outputs(clf, data)

    # the size actually used: for spurious-imagenet the model's test_input_size when declared
    data_config = data_config_for(clf.model, preprocessing)
    spurious_tf, positive_tf = build_uint8_transforms(data_config, preprocessing)
    size = tuple(data_config["input_size"][-2:])
    run = dict(batch_size=batch_size, workers=workers, device=dev, amp=amp, data_config=data_config)
    preds = predict(clf, _ImageItems(spurious_tf, data.labels, rows=data.rows, size=size), **run,
                    what=f"image of dataset '{data.source}' split '{data.split}'")
    if data.row_index is not None:  # predictions name split rows, also when verification left some out
        preds.index = data.row_index[preds.index]
    rates = metrics.spurious_rates(preds.label, preds.top5, preds.target_prob)
    pos_preds = None
    if positives is not None and len(positives):
        items = _ImageItems(positive_tf, positives.labels, rows=positives.rows, paths=positives.paths, size=size)
        pos_preds = predict(clf, items, **run, what=f"positive image of '{positives.source}'", desc=f"{name} (positives)")
    if pos_preds is not None:
        score = metrics.spurious_score_per_class(preds.label, preds.target_prob, pos_preds.label, pos_preds.target_prob)
    else:
        score = {"per_class": {}, "ap": None, "auroc": None}

    per_class = {}
    for k, c in rates["per_class"].items():
        s = score["per_class"].get(k, {})
        per_class[str(k)] = {
            "n": c["n"],
            "spurious_rate": c["spurious_rate"],
            "spurious_rate_top5": c["spurious_rate_top5"],
            "mean_target_prob": c["mean_target_prob"],
            "spurious_score_ap": s.get("ap"),
            "spurious_score_auroc": s.get("auroc"),
            "num_positives": s.get("num_positives", 0),
        }
    entry = {
        "model": name,
        "architecture": clf.spec.model,
        "weights": dict(clf.weights),
        "num_params": int(clf.num_params),
        "data_config": _jsonable(data_config),
        "preprocessing": preprocessing,
        "precision": precision_for(dev, amp)[0],
        **({"temperature": clf.temperature} if clf.temperature != 1.0 else {}),
        **({"note": clf.spec.note} if clf.spec.note else {}),
        "metrics": {
            "spurious_rate": rates["macro"]["spurious_rate"],
            "spurious_rate_micro": rates["micro"]["spurious_rate"],
            "spurious_rate_top5": rates["macro"]["spurious_rate_top5"],
            "spurious_rate_top5_micro": rates["micro"]["spurious_rate_top5"],
            "mean_target_prob": rates["macro"]["mean_target_prob"],
            "spurious_score_ap": score["ap"],
            "spurious_score_auroc": score["auroc"],
            "num_images": int(rates["num_images"]),
            "num_positives": int(len(pos_preds.label)) if pos_preds is not None else 0,
            "num_excluded": data.num_excluded,
        },
        "per_class": per_class,
        "predictions": predictions_relpath(name),
        "positives": ds_contract.dataset_display_name(positives.source) if positives is not None else None,
        "env": _env(dev),
        "date": _now(),
        "images_per_second": round(len(preds.label) / preds.seconds, 3) if preds.seconds > 0 else None,
        "command": command,
    }
    if data.kind != ds_contract.DEFAULT_KIND:
        entry["kind"] = data.kind
    if data.kind == "shift":
        entry.update(_shift_blocks(clf, data, preds, run, positive_tf, size, entry["metrics"]))
    elif data.groups is not None:  # --group-by on a spurious set: spurious rates per group
        entry["per_group"] = _spurious_groups(preds, data)
    return entry, preds


def _shift_blocks(clf: LoadedClassifier, data: SpuriousSet, preds: Predictions, run: dict, transform: Any, size: tuple,
                  counts: dict) -> dict[str, Any]:
    """A shift set's metrics, per_group, per_class and per_class_group (evaluate/shift.py): the model is
    also run on the set's `reference` split (the un-shifted photos), when there is one."""
    from spurbench.evaluate import shift

    reference, paired = None, None
    if data.split != ds_contract.REFERENCE_SPLIT and ds_contract.REFERENCE_SPLIT in ds_contract.split_names(data.folder):
        ref = open_dataset(data.folder, split=ds_contract.REFERENCE_SPLIT)
        ref_preds = predict(clf, _ImageItems(transform, ref.labels, rows=ref.rows, size=size), **run,
                            what=f"image of dataset '{data.source}' split '{ref.split}'", desc=f"{clf.spec.display_name} (reference)")
        rows = ref_preds.index if ref.row_index is None else ref.row_index[ref_preds.index]
        reference = {"labels": ref_preds.label, "top1": ref_preds.top5[:, 0]}
        if data.reference_index is not None:
            n_ref = ref.info["num_images"]
            behind = data.reference_index[preds.index]
            bad = np.flatnonzero((behind < 0) | (behind >= n_ref))
            if bad.size:
                raise SpurbenchError(f"dataset '{data.source}' row {int(preds.index[bad[0]])} names reference_index {int(behind[bad[0]])}, "
                                     f"but split '{ref.split}' has {n_ref} rows; the set is damaged: rebuild or re-export it")
            hit = np.full(n_ref, -1, np.int8)
            hit[rows] = ref_preds.top5[:, 0] == ref_preds.label
            if (hit[behind] >= 0).all():  # every photo behind a scored image was scored (not left out by verification)
                paired = hit[behind] == 1
    groups = data.groups[preds.index] if data.groups is not None else None
    parts = shift.entry_parts(preds.label, preds.top5, preds.target_prob, groups, data.group_by, reference, paired)
    keep = {k: counts[k] for k in ("num_images", "num_positives", "num_excluded")}
    return {**parts, "metrics": {**parts["metrics"], **_train_weighted(data, parts["per_group"]), **keep}}


def _train_weighted(data: SpuriousSet, per_group: dict) -> dict[str, Any]:
    """The mean of group accuracies weighted by the training split's group proportions (what Waterbirds
    papers call average accuracy; `accuracy` is the pooled one); {} without a training split carrying the
    group column."""
    from spurbench.evaluate import metrics
    from spurbench.evaluate.group_weights import TRAIN_SPLIT, training_group_counts

    counts = training_group_counts(data.folder, data.group_by) if data.group_by else None
    if counts is None:
        return {}
    w = metrics.train_weighted_accuracy(per_group, counts)
    return {"train_weighted_group_accuracy": w["train_weighted_accuracy"], "group_weights_from": TRAIN_SPLIT}


def _spurious_groups(preds: Predictions, data: SpuriousSet) -> dict[str, Any]:
    """Per group of a spurious set: images, top-1 and top-5 spurious rate (fraction predicting the label)."""
    from spurbench.evaluate import metrics

    groups = data.groups[preds.index]
    top1 = metrics.group_accuracy(preds.fooled_top1, groups)["per_group"]
    top5 = metrics.group_accuracy(preds.fooled_top5, groups)["per_group"]
    return {str(g): {"n": v["n"], "spurious_rate": v["accuracy"], "spurious_rate_top5": top5[g]["accuracy"]} for g, v in top1.items()}


def write_predictions(path: str | Path, preds: Predictions) -> Path:
    """The predictions CSV (columns `leaderboard.PREDICTION_COLUMNS`), written atomically."""
    from spurbench.evaluate.leaderboard import PREDICTION_COLUMNS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    f1, f5 = preds.fooled_top1, preds.fooled_top5
    try:
        with open(tmp, "w", newline="") as fh:
            fh.write(",".join(PREDICTION_COLUMNS) + "\n")
            for r in range(len(preds.index)):
                fh.write(
                    f"{preds.index[r]},{preds.label[r]},{preds.target_prob[r]:.6g},{preds.top5[r, 0]},{int(f1[r])},{int(f5[r])},"
                    f"{' '.join(str(int(v)) for v in preds.top5[r])},{' '.join(f'{v:.6g}' for v in preds.top5_probs[r])}\n"
                )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def record(leaderboard: str | Path, dataset_info: dict, entry: dict, preds: Predictions) -> dict:
    """Write the predictions CSV next to the leaderboard, then add/replace the entry (under its lock).

    If the leaderboard refuses the entry (another dataset, corrupt file), the model's previous
    predictions file is put back, so nothing that was there is damaged.
    """
    from spurbench.evaluate.leaderboard import load_leaderboard, predictions_relpath, record_entry

    leaderboard = Path(leaderboard)
    if (leaderboard.parent / entry["predictions"]).exists():
        # this model's earlier file, or (a board from before names were made distinct) another model's
        taken = {e.get("predictions") for e in load_leaderboard(leaderboard)["entries"] if e["model"] != entry["model"]}
        entry = {**entry, "predictions": predictions_relpath(entry["model"], taken)}
    csv_path = leaderboard.parent / entry["predictions"]
    backup = csv_path.with_name(csv_path.name + f".bak-{os.getpid()}")
    had_old = csv_path.exists()
    if had_old:
        os.replace(csv_path, backup)
    try:
        write_predictions(csv_path, preds)
        board = record_entry(leaderboard, dataset_info, entry)
    except BaseException:
        if had_old:
            os.replace(backup, csv_path)
        elif csv_path.exists():
            csv_path.unlink()
        raise
    if had_old:
        backup.unlink()
    return board


# ---------------------------------------------------------------------------------------------
# printing


def format_table(entry: dict, label_names: Sequence[str] | None = None) -> str:
    """Per-class table and a summary line for one model, as plain text (`label_names`: a non-ImageNet label set's)."""
    if entry.get("kind") == "shift":
        from spurbench.evaluate import shift

        return shift.format_table(entry, label_names)
    with_score = entry["metrics"].get("spurious_score_ap") is not None
    head = f"{'class':>5}  {'name':<24} {'n':>5} {'rate':>6} {'top-5':>6} {'mean p_k':>8}"
    if with_score:
        head += f" {'pos':>4} {'AP':>6} {'AUROC':>6}"
    lines = [f"== {entry['model']} ==", head]
    for k, c in sorted(entry["per_class"].items(), key=lambda kv: int(kv[0])):
        cname = label_names[int(k)] if label_names is not None else imagenet.class_name(int(k))
        line = f"{int(k):>5}  {cname[:24]:<24} {c['n']:>5} {c['spurious_rate']:>6.3f} {c['spurious_rate_top5']:>6.3f} {c['mean_target_prob']:>8.4f}"
        if with_score:
            line += f" {c['num_positives']:>4} {_f(c['spurious_score_ap']):>6} {_f(c['spurious_score_auroc']):>6}"
        lines.append(line)
    lines.append(summary_line(entry))
    return "\n".join(lines)


def summary_line(entry: dict) -> str:
    if entry.get("kind") == "shift":
        from spurbench.evaluate import shift

        return shift.summary_line(entry)
    m = entry["metrics"]
    text = (
        f"{entry['model']}: spurious rate {m['spurious_rate']:.3f} (micro {m['spurious_rate_micro']:.3f}), "
        f"top-5 {m['spurious_rate_top5']:.3f}, mean p_k {m['mean_target_prob']:.4f}"
    )
    if m.get("spurious_score_ap") is not None:
        text += f", spurious score AP {m['spurious_score_ap']:.3f} AUROC {m['spurious_score_auroc']:.3f}"
    ips = entry.get("images_per_second")
    return text + f"; {m['num_images']} images" + (f", {ips:.1f} img/s" if ips else "")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spurbench.evaluate.leaderboard import DEFAULT_LEADERBOARD

    g = parser.add_argument_group("classifiers (at least one --model, a --models-file or a --panel)")
    g.add_argument("--model", action="append", default=[], metavar="NAME|PATTERN",
                   help="timm model to score, repeatable: an architecture (resnet50), arch.tag (resnet50.a1_in1k), hf-hub:org/repo, "
                        "or a quoted wildcard pattern ('convnext*') expanded like timm.list_models(pattern, pretrained=True) to its "
                        "ImageNet-1k classifiers; weights are timm's pretrained ones from the Hugging Face Hub unless --weights")
    g.add_argument("--models-file", metavar="FILE", default=None,
                   help="text file of model names or patterns, one per line (# comments and blank lines ignored)")
    g.add_argument("--list", action="store_true", help="print the models this command would score (patterns expanded) and exit")
    g.add_argument("--weights", metavar="FILE", default=None,
                   help="local state dict for the single --model: .safetensors, or a torch file loadable with weights_only=True")
    g.add_argument("--key-map", default="none", metavar="MAP",
                   help="how --weights' tensor names map onto the timm model: none, positional, or strip_prefix:<prefix> "
                        "(e.g. strip_prefix:module.model. for a robustness-library checkpoint)")
    g.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="divide the single --model's logits by T before the softmax (a temperature-calibrated checkpoint)")
    g.add_argument("--name", default=None,
                   help="name to record the single --model under; unset: the model name, plus '+<file stem>' with --weights")
    g.add_argument("--panel", metavar="NAME|FILE", default=None,
                   help="score every classifier of a panel: a shipped name (offline, default, spurious-imagenet) or a YAML file "
                        "like classifiers/offline.yaml")
    d = parser.add_argument_group("data")
    d.add_argument("--dataset", default=None, metavar="ID|FOLDER", help="spurious-image dataset: a local folder or a Hugging Face Hub id (required unless --list)")
    d.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --dataset")
    d.add_argument("--split", default=ds_contract.DEFAULT_SPLIT, help="split of --dataset to score")
    d.add_argument("--positives", default=None, metavar="FOLDER|ID",
                   help="real images of the classes, for the spurious score (AP, AUROC): a folder of <WordNet id>/<image> "
                        "or a dataset (folder or Hub id) with an ImageNet-1k `label` column")
    d.add_argument("--positives-split", default=None,
                   help="split of a --positives dataset; unset: validation, val or test, or its only split")
    d.add_argument("--group-by", default=None, metavar="COLUMN",
                   help="report accuracy (shift sets) or spurious rate (spurious sets) per value of this column; default on a "
                        "shift set: its `background` column. Shift sets rank by the worst group's accuracy")
    d.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N images of the split (quick checks)")
    d.add_argument("--include-unverified", action="store_true",
                   help="on a verified set (`spurbench verify`), also score the images whose check failed (spurious set: object "
                        "present; shift set: object absent) and those a person dropped; by default they are left out and counted")
    r = parser.add_argument_group("run")
    r.add_argument("--leaderboard", default=DEFAULT_LEADERBOARD, metavar="FILE",
                   help="leaderboard JSON to add the entries to (a folder means FOLDER/leaderboard.json); predictions go to "
                        "<its folder>/predictions/")
    r.add_argument("--preprocessing", choices=PREPROCESSING, default="timm",
                   help="timm: each model's own eval transform; spurious-imagenet: the released Spurious ImageNet code's "
                        "(size = the model's test_input_size if declared, else input_size; spurious images: shorter side to that "
                        "size, no crop; positives: resize x256/224 + center crop; bicubic)")
    r.add_argument("--force", action="store_true",
                   help="re-score models already on the leaderboard for the same data, preprocessing and precision (default: skip them)")
    r.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    r.add_argument("--workers", type=int, default=None, help="DataLoader worker processes decoding images (0: in the main process); unset: min(8, CPU cores), or 0 on a CPU run with 2 cores or fewer")
    r.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads of the scoring process (unset: torch's default, one per core); on a CPU shared with "
                        "decoding --workers or other jobs, fewer threads avoid oversubscription (see benchmarks/eval_throughput.py)")
    r.add_argument("--device", default=None, help="torch device; unset: cuda (cuda:LOCAL_RANK under torchrun / accelerate launch) when available, else cpu")
    r.add_argument("--amp", action="store_true",
                   help="on CUDA, run the model under float16 autocast (faster; default float32, as timm's validate.py and the "
                        "published numbers); CPU always runs float32. The entry records its `precision`")


def _specs_from_args(args: argparse.Namespace) -> tuple[list[ClassifierSpec], dict[str, list[str]], int]:
    """The classifiers to score (patterns expanded, --models-file read, panel appended); per pattern, the
    matches left out because they are not ImageNet-1k classifiers; how many of the specs come before the panel's."""
    from spurbench.evaluate.sweep import expand_models, is_pattern, read_models_file

    single_flags = [f for f, v in (("--weights", args.weights), ("--name", args.name), ("--temperature", args.temperature)) if v is not None]
    if single_flags and (len(args.model) != 1 or is_pattern(args.model[0]) or args.models_file):
        raise SpurbenchError(f"{single_flags[0]} applies to exactly one --model (not a pattern or --models-file); "
                             "give a single --model NAME with it (or use a --panel file)")
    if args.key_map != "none" and args.weights is None:
        raise SpurbenchError("--key-map applies to --weights; add --weights FILE")
    names = list(args.model) + (read_models_file(args.models_file) if args.models_file else [])
    expanded, left_out = expand_models(names)
    specs: list[ClassifierSpec] = []
    for model in expanded:
        weights, name = None, args.name
        if args.weights is not None:
            weights = {"file": args.weights, "key_map": args.key_map}
            name = name or f"{model}+{Path(args.weights).stem}"
        specs.append(ClassifierSpec(model=model, weights=weights, name=name, temperature=args.temperature))
    n_named = len(specs)
    if args.panel is not None:
        specs.extend(load_panel(args.panel))
    if not specs:
        raise SpurbenchError("no classifier given; pass --model NAME|PATTERN (repeatable), --models-file FILE and/or --panel NAME|FILE")
    names = [s.display_name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpurbenchError(f"classifier {', '.join(dupes)} given more than once; drop the repeat or give --name")
    return specs, left_out, n_named


def command_line(args: argparse.Namespace, model: str | None = None) -> str:
    """The `spurbench eval ...` command that reproduces this run (flags that change results, as given);
    with `model`, the command for that one model of a sweep."""
    parts = ["spurbench", "eval"]
    for m in [model] if model is not None else args.model:
        parts += ["--model", m]
    sweep_only = model is not None
    for flag, value, default in (
        ("--models-file", None if sweep_only else args.models_file, None),
        ("--weights", args.weights, None), ("--key-map", args.key_map, "none"), ("--temperature", args.temperature, None),
        ("--name", args.name, None), ("--panel", None if sweep_only else args.panel, None), ("--dataset", args.dataset, None),
        ("--revision", args.revision, None), ("--split", args.split, ds_contract.DEFAULT_SPLIT), ("--positives", args.positives, None),
        ("--positives-split", args.positives_split, None), ("--group-by", getattr(args, "group_by", None), None), ("--limit", args.limit, None),
        ("--preprocessing", args.preprocessing, "timm"), ("--leaderboard", args.leaderboard, None),
    ):
        if value is not None and value != default:
            if flag in ("--models-file", "--weights", "--dataset", "--positives", "--leaderboard"):
                value = ds_contract.dataset_display_name(value)  # recorded with the results: no absolute local path
            parts += [flag, str(value)]
    if args.amp:
        parts.append("--amp")
    if getattr(args, "include_unverified", False):
        parts.append("--include-unverified")
    return " ".join(shlex.quote(p) for p in parts)


def _sweep_device(requested: str | None, world: int, local_rank: int) -> torch.device:
    """The device of this process: --device if given, else cuda:LOCAL_RANK when several processes share GPUs."""
    if requested is None and world > 1 and torch.cuda.is_available():
        return resolve_device(f"cuda:{local_rank % torch.cuda.device_count()}")
    return resolve_device(requested)


def run(args: argparse.Namespace) -> int:
    from spurbench.evaluate import sweep
    from spurbench.evaluate.leaderboard import already_scored, load_leaderboard, record_failure

    if not sys.stderr.isatty():
        # piped / logged runs: no progress bars from `datasets`, so stderr holds only what matters
        import datasets

        datasets.disable_progress_bars()
    # Everything that can be wrong with the inputs is checked before anything is written.
    if args.batch_size < 1:
        raise SpurbenchError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise SpurbenchError(f"--workers must be 0 or more, got {args.workers}")
    if args.threads is not None:
        if args.threads < 1:
            raise SpurbenchError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    specs, left_out, n_named = _specs_from_args(args)
    named = {s.display_name for s in specs[:n_named]}
    if args.list:
        for pattern, names in left_out.items():
            print(f"# {pattern}: {len(names)} match(es) left out, their pretrained head is not ImageNet-1k's", file=sys.stderr)
        print("\n".join(s.display_name for s in specs))
        return 0
    if args.dataset is None:
        raise SpurbenchError("--dataset is required (a local folder or a Hugging Face Hub id); only --list runs without it")
    rank, world, local_rank = sweep.process_share()
    device = _sweep_device(args.device, world, local_rank)
    if args.workers is None:
        args.workers = default_workers(device)
    # one model named: its mistakes are input errors (exit 2, nothing written); a sweep records them and goes on
    single = len(specs) == 1 and not args.models_file and not any(sweep.is_pattern(m) for m in args.model)
    if single and not specs[0].model.startswith(("hf-hub:", "hf_hub:")):
        check_model_name(specs[0].model, pretrained=specs[0].weights is None)  # a typo should not wait for the dataset
    leaderboard = Path(args.leaderboard)
    if leaderboard.is_dir():
        leaderboard = leaderboard / "leaderboard.json"
    board = load_leaderboard(leaderboard)  # corrupt -> SpurbenchError, file untouched
    data = open_dataset(args.dataset, split=args.split, revision=args.revision, limit=args.limit,
                        include_unverified=args.include_unverified, group_by=args.group_by)
    held = board.get("dataset")
    if held and board["entries"] and held.get("fingerprint") != data.info["fingerprint"]:
        raise SpurbenchError(
            f"leaderboard '{leaderboard}' holds results for dataset {held.get('id')!r} (fingerprint {str(held.get('fingerprint'))[:12]}...), "
            f"not for '{args.dataset}' split '{args.split}' (fingerprint {data.info['fingerprint'][:12]}...); pass another --leaderboard file"
        )
    positives = None
    if args.positives is not None:
        positives = open_positives(args.positives, data.info["classes"], split=args.positives_split, revision=None)
        if not len(positives):
            raise SpurbenchError(
                f"--positives '{args.positives}' has no images of the dataset's classes ({', '.join(map(str, data.info['classes'][:10]))}"
                f"{' ...' if len(data.info['classes']) > 10 else ''}); point it at real images of those classes"
            )
    if single:  # loaded before anything is written, so a bad checkpoint is an input error
        try:
            specs = [create_classifier(specs[0], "cpu", num_classes=data.num_classes)]
        except HeadMismatch as err:
            if data.label_names is None:
                raise
            raise HeadMismatch(
                f"{err}; dataset '{args.dataset}' is labelled with label set {data.info.get('label_set')!r} "
                f"({data.num_classes} classes: {', '.join(data.label_names[:5])})"
            ) from None

    mine = sweep.my_share(specs, rank, world)
    precision = precision_for(device, args.amp)[0]
    total = data.info["num_images"] - data.num_excluded
    subset = f" (first {len(data.labels)} of {total})" if len(data.labels) < total else ""
    share = f"; process {rank} of {world}: {len(mine)} of {len(specs)} models" if world > 1 else ""
    print(f"dataset {data.source} split {data.split}: {len(data.labels)} images{subset}, {len(data.info['classes'])} classes"
          + (f"; kind {data.kind}" if data.kind != ds_contract.DEFAULT_KIND else "")
          + (f"; groups by `{data.group_by}`" if data.group_by else "")
          + (f"; {len(positives)} positives" if positives is not None else "")
          + (f"; {data.num_excluded} left out by verification (--include-unverified keeps them)" if data.num_excluded else "") + share)
    summaries, skipped, failed = [], [], {}
    for item in mine:
        spec = item.spec if isinstance(item, LoadedClassifier) else item
        name = spec.display_name
        if not args.force and already_scored(board, name, fingerprint=data.info["fingerprint"], preprocessing=args.preprocessing,
                                             precision=precision, num_images=len(data.labels),
                                             positives=ds_contract.dataset_display_name(positives.source) if positives is not None else None) \
                and _same_groups(board, name, data.group_by):
            print(f"skip {name}: already on the leaderboard for this data, positives, preprocessing and precision (--force re-scores it)")
            skipped.append(name)
            continue
        # a model named on the command line (or matched by a pattern) gets its own one-model command
        command = command_line(args, spec.model) if not single and name in named else command_line(args)
        try:
            clf = item if isinstance(item, LoadedClassifier) else create_classifier(spec, "cpu", num_classes=data.num_classes)
            entry, preds = evaluate(clf, data, positives=positives, preprocessing=args.preprocessing, batch_size=args.batch_size,
                                    workers=args.workers, device=device, amp=args.amp, command=command)
        except (ImageDecodeError, KeyboardInterrupt):
            raise  # the data is broken, or the user stopped: not this model's failure
        except Exception as err:
            reason = sweep.failure_reason(err)
            if single:
                raise SpurbenchError(f"cannot score '{name}': {reason}") from None
            failed[name] = reason
            print(f"FAILED {name}: {reason}", file=sys.stderr)
            record_failure(leaderboard, data.info, {"model": name, "reason": reason, "preprocessing": args.preprocessing,
                                                    "precision": precision, "date": _now(), "command": command})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        finally:
            clf = None  # one model in memory at a time  # noqa: F841
        if world > 1:
            entry["process"] = {"rank": rank, "world_size": world}
        record(leaderboard, data.info, entry, preds)
        print(format_table(entry, data.label_names))
        print()
        summaries.append(summary_line(entry))
    if len(summaries) > 1 or skipped or failed:
        print("summary:")
        for s in summaries:
            print(f"  {s}")
        if skipped:
            print(f"  skipped {len(skipped)} already scored: {', '.join(skipped)}")
        for name, reason in failed.items():
            print(f"  FAILED {name}: {reason}")
    print(f"leaderboard: {leaderboard}")
    return 1 if failed else 0


def _same_groups(board: dict, model: str, group_by: str | None) -> bool:
    """Whether the model's entry was grouped by the same column (another --group-by re-scores it)."""
    entry = next((e for e in board.get("entries", []) if e.get("model") == model), {})
    return (entry.get("metrics") or {}).get("group_by") == group_by


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _env(device: torch.device) -> dict[str, Any]:
    import timm

    import spurbench

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine() or "cpu")
    return {
        "spurbench": spurbench.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "device": f"{device.type}: {name}",
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
