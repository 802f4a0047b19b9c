"""One classifier on one split -> a leaderboard entry (metrics, per class, per group, what it was computed on).

Nothing is written here: evaluate/record.py writes the predictions CSV and adds the entry to the board.
A `spurious` set gets spurious rates (and scores with positives); a `shift` set accuracy per group against
its `reference` split (evaluate/shift.py).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spurbench import dataset as ds_contract
from spurbench import imagenet
from spurbench.classifiers import ClassifierSpec, LoadedClassifier, create_classifier
from spurbench.errors import SpurbenchError
from spurbench.evaluate import uncertainty
from spurbench.evaluate.inputs import (
    NothingVerified,
    Positives,
    SpuriousSet,
    check_outputs,
    open_dataset,
    open_positives,
)
from spurbench.evaluate.predict import (
    DEFAULT_WORKERS,
    ImageItems,
    Predictions,
    choose_batch,
    precision_for,
    predict,
    resolve_device,
)
from spurbench.evaluate.preprocessing import (
    DEFAULT_DECODE,
    build_uint8_transforms,
    check_preprocessing,
    data_config_for,
)
from spurbench.zoo import public_name

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
    batch_size: int | None = None,
    workers: int = DEFAULT_WORKERS,
    device: str | torch.device | None = None,
    limit: int | None = None,
    amp: bool = False,
    command: str | None = None,
    group_by: str | None = None,
    class_subset: Any = None,
    decode: str = DEFAULT_DECODE,
    resamples: int = uncertainty.DEFAULT_RESAMPLES,
) -> tuple[dict, Predictions]:
    """Score one classifier on a split; returns (leaderboard entry, per-image predictions).

    A `spurious` set gets spurious rates (and scores with positives); a `shift` set accuracy per group
    against its `reference` split (evaluate/shift.py). `group_by` applies when `data` is opened here.

    `resamples`: bootstrap resamples of the entry's intervals (`uncertainty`, evaluate/uncertainty.py).

    `class_subset` (evaluate/class_subset.py) restricts the softmax and the top 5 to its classes.

    `batch_size` None: chosen for the device with its memory format (`predict.choose_batch`: a short
    calibration on CPU); the entry's `loop` records what was used and why, and the decode path.
    Nothing is written: see `record` for the predictions CSV and the leaderboard.
    """
    from spurbench.evaluate import metrics

    _check_options(preprocessing, batch_size, workers)
    dev = resolve_device(device)
    data, positives, clf = _open_inputs(
        classifier, data, positives, split=split, revision=revision, limit=limit, group_by=group_by
    )
    class_mask = _class_mask(class_subset, data, positives)
    data_config, spurious_tf, positive_tf = _transforms(clf, preprocessing)
    loop, run, size = _plan_loop(clf, data, positives, data_config, batch_size, workers, dev, amp, class_mask)
    preds, loop["decode"] = _predict_rows(clf, data, spurious_tf, run, size, decode)
    preds.split = data.split
    rates = metrics.spurious_rates(preds.label, preds.top5, preds.target_prob)
    pos_preds = _predict_positives(clf, positives, positive_tf, run, size, decode)
    score = _positive_scores(preds, pos_preds)
    entry = _build_entry(
        clf, data, positives, preds, pos_preds, rates, score, run, loop, preprocessing, class_subset, command
    )
    _mark_validity(entry, data)
    if _scores_control(data):
        entry["control"] = _control_block(clf, data, preds, spurious_tf, run, size, decode)
    if data.kind == "shift":
        entry.update(_shift_blocks(clf, data, preds, run, positive_tf, size, entry["metrics"], decode, resamples))
    else:
        _add_spurious_uncertainty(entry, data, preds, pos_preds, score, resamples)
    return entry, preds


def _check_options(preprocessing: str, batch_size: int | None, workers: int) -> None:
    """The options checked before anything is opened or loaded."""
    check_preprocessing(preprocessing)
    check_batch_size(batch_size)
    if workers < 0:
        raise SpurbenchError(f"--workers must be 0 (decode in the main process) or more, got {workers}")


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise SpurbenchError(f"--batch-size must be at least 1, got {batch_size}")


def _open_inputs(
    classifier: ClassifierSpec | LoadedClassifier,
    data: SpuriousSet | str | Path,
    positives: Positives | str | Path | None,
    *,
    split: str,
    revision: str | None,
    limit: int | None,
    group_by: str | None,
) -> tuple[SpuriousSet, Positives | None, LoadedClassifier]:
    """Opens the split, the positives and the classifier (each unless already opened), and checks that the
    classifier's outputs fit the split's labels."""
    if not isinstance(data, SpuriousSet):
        data = open_dataset(data, split=split, revision=revision, limit=limit, group_by=group_by)
    if positives is not None and not isinstance(positives, Positives):
        positives = open_positives(positives, data.info["classes"])
    clf = (
        classifier
        if isinstance(classifier, LoadedClassifier)
        else create_classifier(classifier, "cpu", num_classes=data.num_classes, label_names=data.label_names)
    )
    check_outputs(clf, data)
    return data, positives, clf


def _class_mask(class_subset: Any, data: SpuriousSet, positives: Positives | None) -> Any:
    """The `--class-subset` mask over the logits (None without one), after checking every label is in it."""
    if class_subset is None:
        return None
    if data.label_names is not None:
        raise SpurbenchError(
            f"--class-subset names ImageNet classes, but dataset '{data.source}' has its own label set "
            f"{data.info.get('label_set')!r}; drop --class-subset"
        )
    class_subset.check_labels(data.labels, f"dataset '{data.source}' split '{data.split}'")
    if positives is not None:
        class_subset.check_labels(positives.labels, f"positives '{positives.source}'")
    return class_subset.mask()


def _transforms(clf: LoadedClassifier, preprocessing: str) -> tuple[dict, Any, Any]:
    """(data_config, transform of the split's images, transform of the positives)."""
    if clf.transform is not None and preprocessing == "timm":
        # another zoo's model: the library's own eval preprocessing (spurbench/zoo/), uint8 or float items
        data_config = dict(clf.data_config)
        spurious_tf = positive_tf = clf.transform
    else:
        # the size actually used: for spurious-imagenet the model's test_input_size when declared
        data_config = dict(clf.data_config) if clf.transform is not None else data_config_for(clf.model, preprocessing)
        spurious_tf, positive_tf = build_uint8_transforms(data_config, preprocessing)
    return data_config, spurious_tf, positive_tf


def _plan_loop(
    clf: LoadedClassifier,
    data: SpuriousSet,
    positives: Positives | None,
    data_config: dict,
    batch_size: int | None,
    workers: int,
    dev: torch.device,
    amp: bool,
    class_mask: Any,
) -> tuple[dict, dict, tuple]:
    """(loop, run, size): the batch size and memory format chosen for the device, the `predict` arguments
    every pass of this evaluation shares, and the input size."""
    size = tuple(data_config["input_size"][-2:])
    # the images this model will score (a shift set's reference photos aside): decides whether calibrating pays
    scored = len(data.labels) + (len(positives) if positives is not None else 0)
    loop = choose_batch(clf, dev, size, batch_size, num_images=scored)
    run = dict(
        batch_size=loop["batch_size"],
        workers=workers,
        device=dev,
        amp=amp,
        data_config=data_config,
        memory_format=loop["memory_format"],
        class_mask=class_mask,
    )
    return loop, run, size


def _predict_rows(
    clf: LoadedClassifier,
    data: SpuriousSet,
    transform: Any,
    run: dict,
    size: tuple,
    decode: str,
    desc: str | None = None,
) -> tuple[Predictions, str]:
    """The model's predictions on the rows of an opened split, and the decode path used."""
    items = ImageItems(transform, data.labels, rows=data.rows, size=size, decode=decode)
    preds = predict(clf, items, **run, what=f"image of dataset '{data.source}' split '{data.split}'", desc=desc)
    if data.row_index is not None:  # predictions name split rows, also when verification left some out
        preds.index = data.row_index[preds.index]
    return preds, items.decode


def _predict_positives(
    clf: LoadedClassifier, positives: Positives | None, transform: Any, run: dict, size: tuple, decode: str
) -> Predictions | None:
    """The model's predictions on the positives (None without any)."""
    if positives is None or not len(positives):
        return None
    items = ImageItems(
        transform, positives.labels, rows=positives.rows, paths=positives.paths, size=size, decode=decode
    )
    return predict(
        clf,
        items,
        **run,
        what=f"positive image of '{positives.source}'",
        desc=f"{clf.spec.display_name} (positives)",
    )


def _positive_scores(preds: Predictions, pos_preds: Predictions | None) -> dict[str, Any]:
    """Spurious score (AP, AUROC) per class and overall against the positives; empty without positives."""
    from spurbench.evaluate import metrics

    if pos_preds is None:
        return {"per_class": {}, "ap": None, "auroc": None}
    return metrics.spurious_score_per_class(preds.label, preds.target_prob, pos_preds.label, pos_preds.target_prob)


def _per_class(rates: dict, score: dict) -> dict[str, dict[str, Any]]:
    """The entry's `per_class`: the spurious rates of each class with its spurious score."""
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
    return per_class


def _build_entry(
    clf: LoadedClassifier,
    data: SpuriousSet,
    positives: Positives | None,
    preds: Predictions,
    pos_preds: Predictions | None,
    rates: dict,
    score: dict,
    run: dict,
    loop: dict,
    preprocessing: str,
    class_subset: Any,
    command: str | None,
) -> dict[str, Any]:
    """The leaderboard entry of the split's scores: the model, how it was run, metrics and per class."""
    from spurbench.evaluate.leaderboard import predictions_relpath

    name, dev = clf.spec.display_name, run["device"]
    entry = {
        "model": name,
        "architecture": clf.spec.model if clf.info is None else public_name(clf.spec.model),  # zoo: no local paths
        "weights": dict(clf.weights),
        "num_params": int(clf.num_params),
        "data_config": _jsonable(run["data_config"]),
        "preprocessing": preprocessing,
        "precision": precision_for(dev, run["amp"])[0],
        **({"temperature": clf.temperature} if clf.temperature != 1.0 else {}),
        **({"note": clf.spec.note} if clf.spec.note else {}),
        **({"zoo": clf.info} if clf.info else {}),
        **({"class_subset": class_subset.record()} if class_subset is not None else {}),
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
        "per_class": _per_class(rates, score),
        "rows": rows_block(data),
        "predictions": predictions_relpath(name),
        "positives": ds_contract.dataset_display_name(positives.source) if positives is not None else None,
        "env": _env(dev),
        "date": utc_now(),
        "images_per_second": round(len(preds.label) / preds.seconds, 3) if preds.seconds > 0 else None,
        "loop": loop,
        "command": command,
    }
    if data.kind != ds_contract.DEFAULT_KIND:
        entry["kind"] = data.kind
    return entry


def _mark_validity(entry: dict, data: SpuriousSet) -> None:
    """Adds `used_in_build` and `transfer` from the set's provenance (evaluate/validity.py) where they apply."""
    from spurbench.evaluate import validity

    roles = validity.used_in_build(entry, data.info.get("provenance"))
    if roles:  # its model chose or shaped the set's images: marked and ranked apart (evaluate/validity.py)
        entry["used_in_build"] = roles
    transfer = validity.transfer_block(entry, data.info.get("provenance"))
    if transfer:  # a mined set: a held-out model's rate is its transfer rate from the surrogates
        entry["transfer"] = transfer


def _scores_control(data: SpuriousSet) -> bool:
    """Whether the set's control split is scored beside this split (a spurious set's default split only)."""
    from spurbench.evaluate import validity

    return (
        data.kind == ds_contract.DEFAULT_KIND and data.split == ds_contract.DEFAULT_SPLIT and validity.has_control(data)
    )


def _control_block(
    clf: LoadedClassifier, data: SpuriousSet, preds: Predictions, transform: Any, run: dict, size: tuple, decode: str
) -> dict[str, Any]:
    """The control split scored beside test: the lift over what the pipeline alone does (evaluate/validity.py)."""
    from spurbench.evaluate import validity

    ctrl = open_dataset(
        data.dataset, split=validity.CONTROL_SPLIT, limit=data.limit, include_unverified=data.include_unverified
    )
    cp, _ = _predict_rows(clf, ctrl, transform, run, size, decode, desc=f"{clf.spec.display_name} (control)")
    return validity.control_block(data, preds.fooled_top1, preds.index, ctrl, cp.fooled_top1, cp.index)


def _add_spurious_uncertainty(
    entry: dict, data: SpuriousSet, preds: Predictions, pos_preds: Predictions | None, score: dict, resamples: int
) -> None:
    """A spurious set's intervals (evaluate/uncertainty.py) and, with --group-by, its rates per group."""
    classes = sorted(score["per_class"]) if pos_preds is not None else []
    entry["uncertainty"] = uncertainty.spurious_uncertainty(
        preds.label,
        preds.fooled_top1,
        preds.fooled_top5,
        preds.target_prob,
        [score["per_class"][k]["ap"] for k in classes] if classes else None,
        [score["per_class"][k]["auroc"] for k in classes] if classes else None,
        resamples=resamples,
    )
    if data.groups is not None:  # --group-by on a spurious set: spurious rates per group
        entry["per_group"] = _spurious_groups(preds, data)


def rows_block(data: SpuriousSet) -> dict[str, Any]:
    """The `rows` an entry records (leaderboard.rows_identity): the split rows scored, known before scoring."""
    from spurbench.evaluate.leaderboard import rows_identity

    rows = data.row_index if data.row_index is not None else np.arange(len(data.labels))
    return rows_identity(
        data.split, rows, limit=data.limit, num_excluded=data.num_excluded, include_unverified=data.include_unverified
    )


def probe_entry(
    data: SpuriousSet,
    positives: Positives | None,
    preprocessing: str,
    precision: str,
    class_subset: Any = None,
    decode: str = DEFAULT_DECODE,
) -> dict[str, Any]:
    """What an entry of this data would record that decides comparability (leaderboard.comparability_key),
    before anything is scored: the resume-skip compares it with the board's entry."""
    probe = {
        "rows": rows_block(data),
        "preprocessing": preprocessing,
        "precision": precision,
        "loop": {"decode": decode},
        "positives": ds_contract.dataset_display_name(positives.source) if positives is not None else None,
        "fingerprint": data.info["fingerprint"],
        "metrics": {
            "num_images": len(data.labels),
            "num_positives": len(positives) if positives is not None else 0,
            **({"group_by": data.group_by} if data.kind == "shift" else {}),
        },
    }
    if class_subset is not None:
        probe["class_subset"] = class_subset.record()
    if data.kind == "shift":
        ref, rows, excluded = reference_rows(data)
        if ref is not None or excluded:
            probe["reference_rows"] = _reference_identity(data, rows, excluded)
    return probe


def _reference_identity(data: SpuriousSet, rows: np.ndarray, excluded: int) -> dict[str, Any]:
    from spurbench.evaluate.leaderboard import rows_identity

    return rows_identity(
        ds_contract.REFERENCE_SPLIT, rows, num_excluded=excluded, include_unverified=data.include_unverified
    )


def reference_rows(data: SpuriousSet) -> tuple[SpuriousSet | None, np.ndarray, int]:
    """A shift set's reference split opened under the same rules as `data` (`--include-unverified` or not: a
    failed check or a person's drop leaves a reference photo out as it does a test image), and which of its
    rows to score: the photos behind the scored images (`reference_index`, D3S), else every row kept.
    Returns (the split or None, reference split rows to score, reference rows left out by verification);
    (None, [], 0) without a reference split, (None, [], n) when verification leaves none of its n rows."""
    none = np.zeros(0, np.int64)
    opened = ds_contract.open_dataset_folder(data.dataset if data.dataset is not None else data.folder)
    if data.split == ds_contract.REFERENCE_SPLIT or opened.reference_split is None:
        return None, none, 0
    try:  # read once, for every model of the run
        ref = open_dataset(opened, split=opened.reference_split, include_unverified=data.include_unverified)
    except NothingVerified as err:
        return None, none, err.num_excluded
    kept = ref.row_index if ref.row_index is not None else np.arange(len(ref.labels))
    if data.reference_index is None:
        return ref, kept, ref.num_excluded
    scored = data.row_index if data.row_index is not None else np.arange(len(data.labels))
    behind = data.reference_index[scored]
    n_ref = ref.info["num_images"]
    bad = np.flatnonzero((behind < 0) | (behind >= n_ref))
    if bad.size:
        raise SpurbenchError(
            f"dataset '{data.source}' row {int(scored[bad[0]])} names reference_index {int(behind[bad[0]])}, "
            f"but split '{ref.split}' has {n_ref} rows; the set is damaged: rebuild or re-export it"
        )
    return ref, kept[np.isin(kept, behind)], ref.num_excluded


def _shift_blocks(
    clf: LoadedClassifier,
    data: SpuriousSet,
    preds: Predictions,
    run: dict,
    transform: Any,
    size: tuple,
    counts: dict,
    decode: str = DEFAULT_DECODE,
    resamples: int = uncertainty.DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """A shift set's metrics, per_group, per_class and per_class_group (evaluate/shift.py): the model is
    also run on the set's `reference` split (the un-shifted photos), when there is one, under the same
    verification rules; with `reference_index` only on the photos behind the scored images, and the drop is
    paired image by image. The reference predictions ride along in `preds.reference` (the predictions CSV)."""
    from spurbench.evaluate import shift

    reference, paired, extra = None, None, {}
    ref, ref_rows, ref_excluded = reference_rows(data)
    if ref is not None and len(ref_rows):
        positions = np.searchsorted(ref.row_index, ref_rows) if ref.row_index is not None else ref_rows
        items = ImageItems(transform, ref.labels[positions], rows=ref.rows.select(positions), size=size, decode=decode)
        ref_preds = predict(
            clf,
            items,
            **run,
            what=f"image of dataset '{data.source}' split '{ref.split}'",
            desc=f"{clf.spec.display_name} (reference)",
        )
        ref_preds.index, ref_preds.split = ref_rows[ref_preds.index], ref.split
        preds.reference = ref_preds
        reference = {"labels": ref_preds.label, "top1": ref_preds.top5[:, 0]}
    if ref is not None or ref_excluded:
        extra["reference_rows"] = _reference_identity(data, ref_rows, ref_excluded)
        if data.reference_index is not None:  # per scored image: its photo right (1), wrong (0), not scored (-1)
            hit = np.full(ref.info["num_images"] if ref is not None else ref_excluded, -1, np.int8)
            if reference is not None:
                hit[preds.reference.index] = reference["top1"] == reference["labels"]
            paired = hit[data.reference_index[preds.index]]
    groups = data.groups[preds.index] if data.groups is not None else None
    parts = shift.entry_parts(preds.label, preds.top5, preds.target_prob, groups, data.group_by, reference, paired)
    keep = {k: counts[k] for k in ("num_images", "num_positives")}
    # verification's exclusions in both splits, and the reference split's on their own
    keep.update(num_excluded=counts["num_excluded"] + ref_excluded, num_reference_excluded=ref_excluded)
    weighted, weights = _train_weighted(data, parts["per_group"])
    block = uncertainty.shift_uncertainty(
        preds.label,
        preds.fooled_top1,
        preds.fooled_top5,
        groups if groups is not None else np.full(len(preds.label), "all"),
        data.reference_index[preds.index] if paired is not None else None,  # a drawn photo brings its images
        paired,
        reference["top1"] == reference["labels"] if reference is not None and paired is None else None,
        weights,
        resamples=resamples,
    )
    metrics = {**parts["metrics"], **weighted, **keep}
    return {**parts, "metrics": metrics, **extra, "uncertainty": block}


def _train_weighted(data: SpuriousSet, per_group: dict) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The mean of group accuracies weighted by the training split's group proportions (what Waterbirds
    papers call average accuracy; `accuracy` is the pooled one), and those proportions; ({}, None) without a
    training split carrying the group column."""
    from spurbench.evaluate import metrics
    from spurbench.evaluate.group_weights import TRAIN_SPLIT, training_group_counts

    counts = (
        training_group_counts(data.dataset if data.dataset is not None else data.folder, data.group_by)
        if data.group_by
        else None
    )
    if counts is None:
        return {}, None
    w = metrics.train_weighted_accuracy(per_group, counts)
    return {"train_weighted_group_accuracy": w["train_weighted_accuracy"], "group_weights_from": TRAIN_SPLIT}, {
        str(g): v for g, v in w["weights"].items()
    }


def _spurious_groups(preds: Predictions, data: SpuriousSet) -> dict[str, Any]:
    """Per group of a spurious set: images, top-1 and top-5 spurious rate (fraction predicting the label)."""
    from spurbench.evaluate import metrics

    groups = data.groups[preds.index]
    top1 = metrics.group_accuracy(preds.fooled_top1, groups)["per_group"]
    top5 = metrics.group_accuracy(preds.fooled_top5, groups)["per_group"]
    return {
        str(g): {"n": v["n"], "spurious_rate": v["accuracy"], "spurious_rate_top5": top5[g]["accuracy"]}
        for g, v in top1.items()
    }


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


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _env(device: torch.device) -> dict[str, Any]:
    import timm

    import spurbench

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine() or "cpu")
    )
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
