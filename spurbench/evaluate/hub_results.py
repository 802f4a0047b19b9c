"""A leaderboard in the formats other tools read: timm's results CSV and the Hub's evaluation results.

- `to_csv`: one row per model in rank order, timm's `results-*.csv` convention (`model`, the
  headline metrics of the board's kind of set, `param_count` in millions, `img_size`, `crop_pct`, `interpolation`), plus the
  `group` an entry is ranked in and what makes groups differ (`preprocessing`, `num_images`).
- `write_eval_results`: for each model, `<out>/<model slug>/.eval_results/<dataset slug>.yaml`, the
  file a model repository on the Hub carries (upload `<out>/<model slug>/.eval_results` into the
  model's repo): a list of `{dataset: {id, task_id[, revision]}, value, date, source, notes}`, one
  item per headline metric; the task ids are those of the dataset's `eval.yaml`
  (`spurbench.dataset.EVAL_TASKS`, written by every export).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

import yaml

from spurbench.dataset import _HUB_ID, EVAL_TASKS
from spurbench.errors import SpurbenchError
from spurbench.evaluate.leaderboard import _write_atomic, comparable_groups, slugify

#: the headline metrics in the CSV, by kind of set (the metric names the entries carry)
CSV_METRICS: dict[str, tuple[str, ...]] = {
    "spurious": ("spurious_rate", "spurious_rate_top5", "mean_target_prob", "spurious_score_ap", "spurious_score_auroc"),
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
    kind = str(((board.get("dataset") or {}).get("provenance") or {}).get("kind", "spurious"))
    columns = CSV_METRICS.get(kind, CSV_METRICS["spurious"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", *columns, "param_count", "img_size", "crop_pct", "interpolation", "group", "preprocessing", "num_images"])
    for g in comparable_groups(board):
        for e in g["entries"]:
            m, dc = e["metrics"], e.get("data_config") or {}
            size = (dc.get("input_size") or [None])[-1]
            params = e.get("num_params")
            w.writerow([e["model"], *(_cell(m.get(k)) for k in columns),
                        "" if params is None else round(params / 1e6, 2), _cell(size), _cell(dc.get("crop_pct")),
                        _cell(dc.get("interpolation")), g["id"], g["preprocessing"], _cell(g["num_images"])])
    return buf.getvalue()


def eval_results(board: Mapping[str, Any], entry: Mapping[str, Any], dataset_id: str, group: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Hub evaluation-results items of one entry: one per headline metric it has a value for."""
    ds = board.get("dataset") or {}
    kind = str((ds.get("provenance") or {}).get("kind", "spurious"))
    notes = f"spurbench eval, {group['description']}, split {ds.get('split', 'test')}"
    if entry.get("positives"):
        notes += f", positives {entry['positives']}"
    items = []
    for task in EVAL_TASKS.get(kind, ()):
        value = (entry.get("metrics") or {}).get(task)
        if value is None:
            continue
        dataset = {"id": dataset_id, "task_id": task}
        if ds.get("revision"):
            dataset["revision"] = ds["revision"]
        items.append({
            "dataset": dataset,
            "value": float(value),
            "date": str(entry.get("date") or "")[:10] or None,
            "source": _source(),
            "notes": notes,
        })
    return items


def _source() -> dict[str, str]:
    """Attribution of a result: spurbench and its version, with the project's homepage when installed."""
    from importlib import metadata

    import spurbench

    source = {"name": f"spurbench {spurbench.__version__}"}
    try:
        urls = [u.split(",", 1)[1].strip() for u in metadata.metadata("spurbench").get_all("Project-URL") or [] if "," in u]
    except metadata.PackageNotFoundError:
        urls = []
    if urls:
        source["url"] = urls[0]
    return source


def write_eval_results(board: Mapping[str, Any], out: str | Path, dataset_id: str | None = None) -> list[Path]:
    """Write every model's `.eval_results/<dataset slug>.yaml` under `out/<model slug>/`; returns the files.

    Everything is checked before anything is written."""
    ds = board.get("dataset") or {}
    dataset_id = dataset_id or str(ds.get("id") or "")
    if not _HUB_ID.match(dataset_id) or "/" not in dataset_id or Path(dataset_id).expanduser().exists():
        raise SpurbenchError(
            f"the Hub's evaluation results name the dataset by its Hub id (org/name), and this board's dataset is {dataset_id!r}; "
            "pass --dataset-id org/name (the repo you pushed the dataset to)"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpurbenchError(f"--out '{out}' is a file; give a folder for the per-model .eval_results files")
    files: dict[Path, str] = {}
    for g in comparable_groups(board):
        for e in g["entries"]:
            items = eval_results(board, e, dataset_id, g)
            if items:
                path = out / slugify(e["model"]) / ".eval_results" / f"{slugify(dataset_id.replace('/', '__'))}.yaml"
                files[path] = yaml.safe_dump(items, sort_keys=False, allow_unicode=True, width=1000)
    if not files:
        raise SpurbenchError("no entry has a value for the dataset's headline metrics; nothing to write")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, text)
    return list(files)
