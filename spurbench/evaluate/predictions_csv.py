"""The per-image predictions CSV `spurbench eval` writes next to the leaderboard: its columns, writing and reading.

One row per scored image, `split` naming its split: the scored split's rows first, then (a shift set) the
`reference` rows scored with them, so every figure of an entry (the paired drop too) can be recomputed from
the file. The leaderboard's consistency (hitstore.py) and the page read the scored split's rows back.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spurbench.errors import SpurbenchError

if TYPE_CHECKING:
    from spurbench.evaluate.predict import Predictions

#: columns of a predictions CSV (written by `spurbench eval`, one row per image of the split)
PREDICTION_COLUMNS = (
    "index",
    "label",
    "target_prob",
    "top1",
    "fooled_top1",
    "fooled_top5",
    "top5",
    "top5_probs",
    "split",
)


def format_predictions(preds: Predictions) -> str:
    """The predictions CSV's text (columns PREDICTION_COLUMNS): `preds`' rows, then those of `preds.reference`
    (a shift set's reference rows), each named by its split."""
    lines = [",".join(PREDICTION_COLUMNS) + "\n"]
    for part in (preds, preds.reference):
        if part is None:
            continue
        f1, f5, split = part.fooled_top1, part.fooled_top5, part.split or ""
        for r in range(len(part.index)):
            lines.append(
                f"{part.index[r]},{part.label[r]},{part.target_prob[r]:.6g},{part.top5[r, 0]},{int(f1[r])},{int(f5[r])},"
                f"{' '.join(str(int(v)) for v in part.top5[r])},{' '.join(f'{v:.6g}' for v in part.top5_probs[r])},{split}\n"
            )
    return "".join(lines)


def looks_like_predictions(path: str | Path) -> bool:
    """Whether `path` is a file starting with a predictions CSV's header (a previous board's own CSV)."""
    try:
        with open(path, "rb") as fh:
            head = fh.readline(4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return head.split(",")[:3] == ["index", "label", "target_prob"] or head.startswith("index,label,")


def read_predictions(
    csv_path: str | Path, optional: Iterable[str] | None = None, split: str | None = None
) -> dict[str, np.ndarray]:
    """Read a predictions CSV into arrays: index, label, fooled_top1 (required), and target_prob, top1,
    fooled_top5 (int/float[N]), top5 (int[N, 5]), top5_probs (float[N, 5]) when present.

    Only the rows of one split: `split`, or by default the scored split (the first row's; a file without a
    `split` column, written before it existed, is all one split).

    `optional` limits which of the optional columns are parsed (default: all present); the consistency
    only needs the required ones, and skipping the rest makes reading several times faster.

    Raises SpurbenchError naming the file when it is missing, lacks a required column or has a bad value.
    """
    path = Path(csv_path)
    fields, rows = _read_rows(path, split)

    def col(name: str, conv: Any) -> np.ndarray:
        try:
            return np.array([conv(r[name]) for r in rows])
        except (TypeError, ValueError):
            raise SpurbenchError(
                f"predictions file '{path}' has a bad value in column '{name}'; re-run `spurbench eval` for that model"
            ) from None

    def flag(v: str) -> int:
        v = v.strip().lower()
        if v in ("1", "true"):
            return 1
        if v in ("0", "false"):
            return 0
        raise ValueError(v)

    out: dict[str, np.ndarray] = {
        "index": col("index", int).astype(np.int64).reshape(-1),
        "label": col("label", int).astype(np.int64).reshape(-1),
        "fooled_top1": col("fooled_top1", flag).astype(bool).reshape(-1),
    }
    wanted = set(PREDICTION_COLUMNS if optional is None else optional)
    for name, conv in {"target_prob": float, "top1": int, "fooled_top5": flag}.items():
        if name in fields and name in wanted:
            out[name] = col(name, conv).reshape(-1)
    if "fooled_top5" in out:
        out["fooled_top5"] = out["fooled_top5"].astype(bool)
    for name, conv in (("top5", int), ("top5_probs", float)):
        if name in fields and name in wanted:
            arr = col(name, lambda v, c=conv: [c(x) for x in v.split()])
            out[name] = arr.reshape(len(rows), -1) if rows else arr.reshape(0, 5)
    return out


def _read_rows(path: Path, split: str | None) -> tuple[list[str], list[dict[str, str]]]:
    """(the header, the rows of one split as text) of a predictions CSV with the required columns."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            missing = [c for c in ("index", "label", "fooled_top1") if c not in fields]
            if missing:
                raise SpurbenchError(
                    f"predictions file '{path}' lacks column(s) {', '.join(missing)}; re-run `spurbench eval` for that model"
                )
            rows = list(reader)
            if "split" in fields and rows:
                want = rows[0]["split"] if split is None else split
                rows = [r for r in rows if r["split"] == want]
    except FileNotFoundError:
        raise SpurbenchError(f"predictions file '{path}' is missing; re-run `spurbench eval` for that model") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SpurbenchError(
            f"cannot read predictions file '{path}': {err}; re-run `spurbench eval` for that model"
        ) from None
    return list(fields), rows
