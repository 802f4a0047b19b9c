"""Scoring `shift` sets (object present, context changed: D3S backgrounds, group-labelled sets).

A shift set's card says `kind: shift` (spurbench.dataset.read_kind). Predicting `label` is the success,
so a model is scored by accuracy: top-1 and top-5, per group (the `background` column by default, any
column with `spurbench eval --group-by COLUMN`), the worst group and the mean over groups; and against
the same model's accuracy on the set's `reference` split (the un-shifted photos), overall and per group:
a group's reference accuracy is over the reference photos its images were made from when the set has a
`reference_index` column (D3S), else the whole reference split's. Leaderboards of shift sets rank by
worst-group accuracy, higher first, and count a wrong prediction as an image's failure in the
consistency figures.

The functions here are pure reading and formatting; evaluate/entry.py runs the models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spurbench.errors import SpurbenchError

#: the group column of a shift set when --group-by is not given
DEFAULT_GROUP_COLUMN = "background"
#: what ranks a shift leaderboard (higher first)
RANKED_BY = "worst_group_accuracy"


def group_column(columns: Sequence[str], kind: str, group_by: str | None, source: str) -> str | None:
    """The column to group by: --group-by if given (it must exist), else `background` on a shift set that has one."""
    if group_by is not None:
        if group_by not in columns:
            raise SpurbenchError(
                f"--group-by {group_by!r}: dataset '{source}' has no such column; its columns are {', '.join(columns)}"
            )
        return group_by
    return DEFAULT_GROUP_COLUMN if kind == "shift" and DEFAULT_GROUP_COLUMN in columns else None


def group_values(values: Sequence[Any], column: str, source: str) -> np.ndarray:
    """A group column as strings (the keys of `per_group`); a missing value is an input error."""
    out = []
    for i, v in enumerate(values):
        if v is None:
            raise SpurbenchError(
                f"dataset '{source}' row {i} has no value in group column `{column}`; give every row a group or another --group-by"
            )
        if isinstance(v, (list, dict)):
            raise SpurbenchError(
                f"--group-by `{column}` of dataset '{source}' holds {type(v).__name__}s; group by a column of single values"
            )
        out.append(str(v))
    return np.asarray(out, dtype=object)


def entry_parts(
    labels: np.ndarray,
    top5: np.ndarray,
    target_prob: np.ndarray,
    groups: np.ndarray | None,
    group_by: str | None,
    reference: Mapping[str, np.ndarray] | None,
    paired_reference: np.ndarray | None,
) -> dict[str, Any]:
    """The `metrics`, `per_group`, `per_class` and `per_class_group` blocks of a shift entry.

    `labels`, `top5`, `target_prob`, `groups`: per scored image. `reference`: {"labels", "top1"} of the
    reference split (None without one). `paired_reference`: per scored image, its reference photo's top-1
    hit, 1 / 0, or -1 when that photo was not scored (None without `reference_index`): the drops are then
    paired image by image (metrics.shift_metrics), per class too."""
    from spurbench.evaluate import metrics

    groups = groups if groups is not None else np.asarray(["all"] * len(labels), dtype=object)
    ref_hit = None if reference is None else reference["top1"] == reference["labels"]
    m = metrics.shift_metrics(labels, top5, groups, ref_hit, paired_reference)
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(axis=1)
    per_class, per_class_group = {}, {}
    for k in np.unique(labels):
        mk = labels == k
        if paired_reference is not None:  # the photos behind this class's scored images, image by image
            behind = np.asarray(paired_reference)[mk]
            ref_k = behind[behind >= 0] == 1
        else:
            ref_k = None if reference is None else ref_hit[reference["labels"] == k]
        per_class[str(int(k))] = {
            "n": int(mk.sum()),
            "accuracy": float(hit1[mk].mean()),
            "accuracy_top5": float(hit5[mk].mean()),
            "mean_target_prob": float(target_prob[mk].mean()),
            "reference_accuracy": float(ref_k.mean()) if ref_k is not None and ref_k.size else None,
        }
        per_class_group[str(int(k))] = {str(g): float(hit1[mk & (groups == g)].mean()) for g in np.unique(groups[mk])}
    return {
        "metrics": {
            "accuracy": m["accuracy"],
            "accuracy_top5": m["accuracy_top5"],
            "worst_group_accuracy": m["worst_group_accuracy"],
            "worst_group": m["worst_group"],
            "worst_groups": m["worst_groups"],
            "mean_group_accuracy": m["mean_group_accuracy"],
            "reference_accuracy": m["reference_accuracy"],
            "accuracy_drop": m["accuracy_drop"],
            **({"num_paired": m["num_paired"]} if m["num_paired"] is not None else {}),
            "mean_target_prob": float(target_prob.mean()) if len(target_prob) else None,
            "group_by": group_by,
            "num_groups": len(m["per_group"]),
            "num_reference": 0 if reference is None else int(len(reference["labels"])),
        },
        "per_group": {str(g): v for g, v in m["per_group"].items()},
        "per_class": per_class,
        "per_class_group": per_class_group,
    }


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def format_table(entry: Mapping[str, Any], label_names: Sequence[str] | None = None) -> str:
    """Per-group and per-class accuracy tables and a summary line for one model, as plain text
    (`label_names`: the class names of a label set other than ImageNet-1k)."""
    g = entry["metrics"].get("group_by") or "group"
    w = max([16, len(g)] + [len(name) for name in entry.get("per_group", {})])  # group names are never cut
    lines = [f"== {entry['model']} ==", f"{g:<{w}} {'n':>5} {'acc':>6} {'top-5':>6} {'ref':>6} {'drop':>6}"]
    for name, v in sorted(entry.get("per_group", {}).items(), key=lambda kv: kv[1]["accuracy"]):
        lines.append(
            f"{name:<{w}} {v['n']:>5} {_f(v['accuracy']):>6} {_f(v['accuracy_top5']):>6} "
            f"{_f(v['reference_accuracy']):>6} {_f(v.get('accuracy_drop')):>6}"
        )
    lines.append(f"{'class':>5}  {'name':<24} {'n':>5} {'acc':>6} {'top-5':>6} {'ref':>6}")
    from spurbench import imagenet

    for k, c in sorted(entry["per_class"].items(), key=lambda kv: int(kv[0])):
        name = label_names[int(k)] if label_names is not None else imagenet.class_name(int(k))
        lines.append(
            f"{int(k):>5}  {name[:24]:<24} {c['n']:>5} {_f(c['accuracy']):>6} "
            f"{_f(c['accuracy_top5']):>6} {_f(c.get('reference_accuracy')):>6}"
        )
    lines.append(summary_line(entry))
    return "\n".join(lines)


def summary_line(entry: Mapping[str, Any]) -> str:
    m = entry["metrics"]
    text = (
        f"{entry['model']}: worst-group accuracy {_f(m['worst_group_accuracy'])} ({worst_names(m)}), "
        f"mean over {m.get('num_groups')} groups {_f(m['mean_group_accuracy'])}, pooled accuracy {_f(m['accuracy'])} "
        f"(top-5 {_f(m['accuracy_top5'])})"
    )
    if m.get("train_weighted_group_accuracy") is not None:
        text += f", train-weighted group accuracy {_f(m['train_weighted_group_accuracy'])}"
    if m.get("reference_accuracy") is not None:
        text += f", reference {_f(m['reference_accuracy'])} (drop {_f(m['accuracy_drop'])})"
    ips = entry.get("images_per_second")
    return text + f"; {m['num_images']} images" + (f", {ips:.1f} img/s" if ips else "")


def worst_names(m: Mapping[str, Any]) -> str:
    """Every group tied at the worst accuracy (`worst_groups`), or the one `worst_group` of an older entry."""
    return ", ".join(str(g) for g in (m.get("worst_groups") or [m.get("worst_group")]))


# ---------------------------------------------------------------------------------------------
# leaderboards


def is_shift_entries(entries: Sequence[Mapping[str, Any]]) -> bool:
    """Entries of a shift set carry the worst-group accuracy."""
    return bool(entries) and all(RANKED_BY in e.get("metrics", {}) for e in entries)


def rank(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Best first: worst-group accuracy descending (None last), then accuracy descending, then name."""

    def key(e: Mapping[str, Any]) -> tuple:
        m = e["metrics"]
        w, a = m.get(RANKED_BY), m.get("accuracy")
        return (-w if w is not None else math.inf, -a if a is not None else math.inf, e["model"])

    return sorted(entries, key=key)  # type: ignore[arg-type]


#: the md ranking table's columns between the model and `images` (`leaderboard._ranking_table`)
TABLE_TITLES = "worst group | mean group | accuracy | top-5 | reference | drop"


def table_cells(e: Mapping[str, Any], fmt) -> list[str]:
    """A shift entry's cells under `TABLE_TITLES` (`fmt` formats a cell)."""
    m = e["metrics"]
    rest = ("mean_group_accuracy", "accuracy", "accuracy_top5", "reference_accuracy", "accuracy_drop")
    return [f"{fmt(m.get('worst_group_accuracy'))} ({fmt(worst_names(m))})", *(fmt(m.get(k)) for k in rest)]


#: a shift set's control is its reference split (issue 24 §2: the same "lift" reading as a control split)
CONTROL_NOTE = (
    "The reference split (the un-shifted source photos) is this set's control: the drop (reference minus shifted "
    "accuracy, paired by source photo) is what the shift adds over the photos alone, its lift; a drop whose "
    "interval reaches 0 is not an effect of the shift."
)
RANKING_NOTE = (
    "Ranked by worst-group accuracy (the lowest accuracy over the groups, e.g. backgrounds; higher is better). "
    + CONTROL_NOTE
)
CONSISTENCY_NOTE = "Wrong = top-1 is not the image's label (on a shift set a wrong prediction is the failure)."
