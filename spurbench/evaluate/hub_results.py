"""A leaderboard in the formats other tools read: timm's results CSV and the Hub's evaluation results.

- `to_csv`: one row per model in rank order, timm's `results-*.csv` convention (`model`, the
  headline metrics of the board's kind of set, `param_count` in millions, `img_size`, `crop_pct`, `interpolation`), plus the
  `group` an entry is ranked in and what makes groups differ (`preprocessing`, `num_images`).
- `write_eval_results`: for each model, `<out>/<model slug>/.eval_results/<dataset slug>.yaml`, the
  file a model repository on the Hub carries (upload `<out>/<model slug>/.eval_results` into the
  model's repo): a list of `{dataset: {id, task_id[, revision]}, value, date, source, notes}`, one
  item per headline metric; the task ids are those of the dataset's `eval.yaml`
  (`spurbench.dataset.EVAL_TASKS`, written by every export). Only the canonical group is exported by
  default (`canonical_group`: every row a default eval scores, the set's default preprocessing, float32);
  what was left out is listed, with why. Other groups only when asked (`groups="all"` or their ids), each
  under task ids that name the group (`<task>--group-<key>`), so no two groups ever share
  (dataset id, task id, split).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spurbench.dataset import _HUB_ID, EVAL_TASKS
from spurbench.errors import SpurbenchError
from spurbench.evaluate.leaderboard import (
    _not_canonical,
    board_kind,
    comparable_groups,
    rank_intervals_of,
    slugify,
)
from spurbench.evaluate.uncertainty import entry_interval
from spurbench.files import safe_filename

#: the preprocessing and precision of the canonical group (what `spurbench eval` does by default)
#: the homepage a result's `source.url` names when the installed package's metadata has none
HOMEPAGE = "https://github.com/spurbench/spurbench"

#: the headline metrics in the CSV, by kind of set (the metric names the entries carry)
CSV_METRICS: dict[str, tuple[str, ...]] = {
    "spurious": (
        "spurious_rate",
        "spurious_rate_top5",
        "mean_target_prob",
        "spurious_score_ap",
        "spurious_score_auroc",
    ),
    "shift": ("accuracy", "accuracy_top5", "worst_group_accuracy", "mean_group_accuracy", "accuracy_drop"),
}


def _cell(x: Any) -> Any:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    return x


def to_csv(board: Mapping[str, Any]) -> str:
    """The ranked board as timm's results CSV (headline metrics as fractions, as in the JSON)."""
    columns = CSV_METRICS.get(board_kind(board), CSV_METRICS["spurious"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "model",
            *columns,
            "param_count",
            "img_size",
            "crop_pct",
            "interpolation",
            "group",
            "preprocessing",
            "num_images",
            *(f"{k}_{end}" for k in columns for end in ("lo", "hi")),
            "rank_lo",
            "rank_hi",
            "used_in_build",
        ]
    )
    for g in comparable_groups(board):
        ranks = rank_intervals_of(g)
        for i, e in enumerate(g["entries"]):
            m, dc = e["metrics"], e.get("data_config") or {}
            size = (dc.get("input_size") or [None])[-1]
            params = e.get("num_params")
            # the Spurious ImageNet transform resizes the shorter side and never crops: no crop_pct was used
            crop = None if e.get("preprocessing") == "spurious-imagenet" else dc.get("crop_pct")
            w.writerow(
                [
                    e["model"],
                    *(_cell(m.get(k)) for k in columns),
                    "" if params is None else round(params / 1e6, 2),
                    _cell(size),
                    _cell(crop),
                    _cell(dc.get("interpolation")),
                    g["id"],
                    g["preprocessing"],
                    _cell(g["num_images"]),
                    # the recorded 95 % interval ("" for an entry scored before intervals existed)
                    *(_cell(ci[j] if (ci := entry_interval(e, k)) else None) for k in columns for j in (0, 1)),
                    *(ranks[i] if ranks else ("", "")),
                    ";".join(e.get("used_in_build") or []),
                ]
            )
    return buf.getvalue()


def canonical_group(board: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(the canonical group, {model: why it is left out}): the largest comparable group whose entries scored
    every row a default eval scores (no --limit, verification's exclusions as by default), with the default
    preprocessing and float32; None when no group qualifies. Entries of other groups are listed with why."""
    ds = board.get("dataset") or {}
    canonical, left_out = None, {}
    for g in comparable_groups(board):  # the largest first
        why = _not_canonical(g["entries"][0], ds)
        if why is None and canonical is None:
            canonical = g
            continue
        for e in g["entries"]:
            left_out[e["model"]] = why or f"another group: {g['description']} (the canonical group is the larger one)"
    return canonical, left_out


def eval_results(
    board: Mapping[str, Any],
    entry: Mapping[str, Any],
    dataset_id: str,
    group: Mapping[str, Any],
    canonical: bool = True,
) -> list[dict[str, Any]]:
    """The Hub evaluation-results items of one entry: one per headline metric it has a value for; a group
    other than the canonical one names itself in the task id (`<task>--group-<key>`)."""
    ds = board.get("dataset") or {}
    notes = f"spurbench eval, {group['description']}, split {ds.get('split', 'test')}"
    if entry.get("positives"):
        notes += f", positives {entry['positives']}"
    items = []
    for task in EVAL_TASKS.get(board_kind(board), ()):
        value = (entry.get("metrics") or {}).get(task)
        if value is None:
            continue
        dataset = {"id": dataset_id, "task_id": task if canonical else f"{task}--group-{group['key']}"}
        if ds.get("revision"):
            dataset["revision"] = ds["revision"]
        items.append(
            {
                "dataset": dataset,
                "value": float(value),
                "date": str(entry.get("date") or "")[:10] or None,
                "source": _source(),
                "notes": notes,
            }
        )
    return items


def _source() -> dict[str, str]:
    """Attribution of a result: spurbench and its version, and always a `url` (the Hub requires one with
    `source`): the installed package's homepage, else the project's."""
    from importlib import metadata

    import spurbench

    try:
        urls = [
            u.split(",", 1)[1].strip() for u in metadata.metadata("spurbench").get_all("Project-URL") or [] if "," in u
        ]
    except metadata.PackageNotFoundError:
        urls = []
    return {"name": f"spurbench {spurbench.__version__}", "url": urls[0] if urls else HOMEPAGE}


def _chosen_groups(
    board: Mapping[str, Any], groups: str | list[int], canonical: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The groups `write_eval_results` exports (`groups`: "canonical", "all" or group ids, checked)."""
    every = comparable_groups(board)
    if groups == "canonical":
        return [canonical] if canonical is not None else []
    if groups == "all":
        return every
    ids = {g["id"] for g in every}
    unknown = sorted(set(groups) - ids)
    if unknown:
        raise SpurbenchError(
            f"--groups {','.join(map(str, unknown))}: the board has groups {', '.join(map(str, sorted(ids)))} "
            "(see `spurbench leaderboard`)"
        )
    return [g for g in every if g["id"] in set(groups)]


def write_eval_results(
    board: Mapping[str, Any], out: str | Path, dataset_id: str | None = None, groups: str | list[int] = "canonical"
) -> tuple[list[Path], dict[str, str]]:
    """Write each exported model's `.eval_results/<dataset slug>.yaml` under `out/<model slug>/` (`out` claimed as
    `files.write_claimed` does: a new or empty folder, or one spurbench wrote); returns (the files, {model: why it
    was left out}).

    `groups`: "canonical" (default: `canonical_group` only), "all", or a list of group ids (as
    `spurbench leaderboard` numbers them); any group other than the canonical one goes under task ids
    naming it. Everything is checked before anything is written."""
    ds = board.get("dataset") or {}
    dataset_id = dataset_id or str(ds.get("id") or "")
    if not _HUB_ID.match(dataset_id) or "/" not in dataset_id or Path(dataset_id).expanduser().exists():
        raise SpurbenchError(
            f"the Hub's evaluation results name the dataset by its Hub id (org/name), and this board's dataset is {dataset_id!r}; "
            "pass --dataset-id org/name (the repo you pushed the dataset to)"
        )
    out = Path(out)
    canonical, left_out = canonical_group(board)
    chosen = _chosen_groups(board, groups, canonical)
    if not chosen:
        why = "; ".join(f"{m}: {w}" for m, w in list(left_out.items())[:5])
        raise SpurbenchError(
            f"no canonical group to export (every entry was scored on other rows or settings: {why}); "
            "pass --groups all or a group id to export those under task ids naming their group"
        )
    # a Hub id keeps its readable name (capitals and all): it is one file per dataset in the model's repo
    name = safe_filename(dataset_id.replace("/", "__"))
    files: dict[str, str] = {}
    for g in chosen:
        for e in g["entries"]:
            left_out.pop(e["model"], None)
            # by key: canonical_group built its own copy of the groups, so identity never holds
            is_canonical = canonical is not None and g["key"] == canonical["key"]
            items = eval_results(board, e, dataset_id, g, canonical=is_canonical)
            if items:
                # safe_filename on top of slugify: a model named `..` or `.x` must not leave or hide in --out
                path = f"{safe_filename(slugify(e['model']))}/.eval_results/{name}.yaml"
                if path in files:  # a bug, not a user mistake: a model has one entry and slugs are distinct
                    raise RuntimeError(f"two exported entries would write '{path}'")
                files[path] = yaml.safe_dump(items, sort_keys=False, allow_unicode=True, width=1000)
    if not files:
        raise SpurbenchError("no entry has a value for the dataset's headline metrics; nothing to write")
    from spurbench.files import write_claimed

    return write_claimed(out, files), left_out
