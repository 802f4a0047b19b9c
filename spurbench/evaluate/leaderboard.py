"""The leaderboard store: its typed schema, reading and recording entries, consistency and ranking.
`spurbench.evaluate.report` (the `spurbench leaderboard` command) prints or renders it.

A leaderboard is one folder per dataset (`spurbench eval --leaderboard FILE` names it by its JSON
path, default `leaderboard/leaderboard.json`, or by the folder). Since schema 2 the folder holds a
store of small files, so recording entry 10,001 costs what recording entry 11 does:

- `store/entries/<model slug>-<content hash>.json`: one file per entry (the `Entry` below, as is);
- `store/index.json`: the board without the entries' contents: the dataset, the entries in order
  (`model`, its entry file, its predictions CSV), the failures and the cross-classifier consistency;
  replacing it (write a temporary file, `os.replace`) is the one commit point of a record;
- `predictions/<model>.csv`, `hits/` (`spurbench.evaluate.hitstore`): the per-image predictions and
  the compact per-model hit flags the consistency is updated from, reading only the new model's CSV;
- `leaderboard.json` (the path given): the readable export of the whole board, rewritten on every
  record while the board has at most `EXPORT_MAX_ENTRIES` entries, else written on request
  (`spurbench leaderboard --export`). The store is the truth: when it exists it is what is read.

A schema-1 board (everything in `leaderboard.json`) is still read as it is, and migrated into the
store, losslessly, by the first record into it. Ranking: by spurious score AP (higher is better)
when every entry has one, else by spurious rate (lower is better).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from spurbench.errors import SpurbenchError
from spurbench.evaluate import hitstore, shift

#: version of the layout below (2: the per-entry store); a file with a version not in READS is refused, never rewritten
SCHEMA_VERSION = 2
#: the versions this spurbench reads (1: one JSON file, migrated into the store on the first record)
READS = (1, 2)
#: the store's folder, next to the leaderboard JSON
STORE_DIR = "store"
#: up to this many entries every record rewrites the readable export `leaderboard.json`; above, it is written on request
EXPORT_MAX_ENTRIES = 100
#: where `spurbench eval` writes by default: one board per dataset (and split), so scoring several sets with the
#: defaults never mixes them (see `default_leaderboard`)
DEFAULT_LEADERBOARD = "leaderboard/<dataset name>/leaderboard.json"
#: how long `record_entry` waits for another process holding the lock before giving up
LOCK_TIMEOUT_S = 600.0

_SLUG = re.compile(r"[^A-Za-z0-9._-]")


def default_leaderboard(dataset: str, split: str = "test") -> Path:
    """The board `spurbench eval --dataset DATASET --split SPLIT` writes without --leaderboard:
    `leaderboard/<dataset name>/leaderboard.json` (relative to the working directory), the name being a local
    folder's own name or a Hub id with `/` as `--`; a split other than `test` gets `<dataset name>-<split>`."""
    path = Path(dataset)
    name = path.resolve().name if path.exists() else dataset.strip("/").replace("/", "--")
    name = _SLUG.sub("_", name) or "dataset"
    if split != "test":
        name = f"{name}-{_SLUG.sub('_', split)}"
    return Path("leaderboard") / name / "leaderboard.json"


# --------------------------------------------------------------------------------------------------
# schema v1 (documentation as types; the file is plain JSON)
# --------------------------------------------------------------------------------------------------


class DatasetInfo(TypedDict, total=False):
    """`board["dataset"]`: which data every entry was scored on."""

    id: str  #: hub id or local path, as the user gave it to `--dataset`
    revision: str | None  #: hub revision (None: default branch / a local folder)
    split: str  #: the split scored (`test` by default)
    fingerprint: str  #: sha256 over the split's Parquet shards (`spurbench.dataset.fingerprint`); the identity
    num_images: int  #: rows in the split
    classes: list[int]  #: ImageNet class indices present, sorted
    provenance: dict[str, Any]  #: the `spurbench:` block of the dataset card (builder, recipe, ...)


class Weights(TypedDict, total=False):
    source: str  #: where the weights came from (timm hub tag, local file, PyPI package path, hub repo)
    sha256: str  #: sha256 of the weights file (or of the state dict) actually loaded


class EntryMetrics(TypedDict, total=False):
    """`entry["metrics"]`: headline numbers (definitions in `spurbench.evaluate.metrics`)."""

    spurious_rate: float  #: macro mean over classes of the top-1 spurious rate (the headline; lower is better)
    spurious_rate_micro: float  #: top-1 spurious rate over all images pooled
    spurious_rate_top5: float  #: macro mean of the top-5 spurious rate
    spurious_rate_top5_micro: float  #: top-5 spurious rate over all images pooled
    mean_target_prob: float  #: macro mean of the mean p_k over class k's images
    spurious_score_ap: float | None  #: mean over classes of AP(real k vs spurious k, score p_k); None without positives
    spurious_score_auroc: float | None  #: same with AUROC
    num_images: int  #: images scored (fewer than the split with `--limit`)


class ClassMetrics(TypedDict, total=False):
    """`entry["per_class"][str(k)]`."""

    n: int  #: spurious images of class k scored
    spurious_rate: float  #: fraction of them with top-1 = k
    spurious_rate_top5: float  #: fraction with k in the top 5
    mean_target_prob: float  #: mean p_k over them
    spurious_score_ap: float | None  #: AP of real (positives) vs spurious images of k; None without positives
    spurious_score_auroc: float | None  #: AUROC of the same
    num_positives: int  #: real images of class k used as positives (0: no spurious score)


class Entry(TypedDict, total=False):
    """One scored classifier; `model` is its identity (re-scoring the same name replaces the entry)."""

    model: str  #: display name (a timm name such as `resnet50.a1_in1k`, or a panel entry's `name`)
    weights: Weights
    num_params: int  #: parameter count
    data_config: dict[str, Any]  #: timm's resolved data config (input size, interpolation, crop, mean, std)
    preprocessing: str  #: "timm" (timm's eval transform) or "spurious-imagenet" (the released code's)
    metrics: EntryMetrics
    per_class: dict[str, ClassMetrics]  #: keyed by the ImageNet class index as a string
    predictions: str  #: per-image predictions CSV, relative to the leaderboard's folder
    env: dict[str, Any]  #: versions (spurbench, torch, timm, python) and device
    date: str  #: ISO 8601 UTC time of the evaluation
    images_per_second: float  #: throughput of the evaluation
    loop: dict[
        str, Any
    ]  #: how it ran: batch_size, memory_format, batch_size_from (--batch-size / cpu calibration / default), decode
    command: str  #: the command line that produced the entry


class Consistency(TypedDict, total=False):
    """`board["consistency"]`: how consistently the images fool the whole panel (`metrics.consistency`).

    Recomputed from every entry's predictions CSV on each `record_entry`. Images are aligned by
    `index`; only images present in every CSV are compared (`num_images`; `images_per_model` and
    `note` say so when some CSV covers fewer). Entries whose CSV is missing or malformed are left out
    and listed in `excluded` with the reason.
    """

    models: list[str]  #: the models compared, in entry order
    num_images: int  #: images every compared model has predictions for
    all_fooled_rate: float | None  #: fraction of images whose top-1 is k for every model
    at_least_half_rate: float | None  #: fraction fooling at least ceil(m/2) of the m models
    mean_pairwise_kappa: float | None  #: mean of the defined pairwise Cohen's kappas
    pairwise_kappa: dict[str, float | None]  #: "a vs b" -> Cohen's kappa of their fooled/not-fooled vectors
    fleiss_kappa: float | None  #: Fleiss' kappa over the m models (categories fooled / not); None if undefined
    per_class: dict[str, dict[str, Any]]  #: the same keys (without models) per class, keyed str(k)
    images_per_model: dict[str, int]  #: images in each compared model's CSV
    excluded: dict[str, str]  #: model -> why its predictions could not be used
    note: str | None  #: human-readable remark (e.g. the intersection was used), else None


class Failure(TypedDict, total=False):
    """`board["failures"][i]`: a model a sweep could not score (its later success removes it)."""

    model: str  #: the name it would have been recorded under
    reason: str  #: one line: why (no weights, unknown name, out of memory, ...)
    fingerprint: str  #: the dataset it was tried on
    preprocessing: str
    precision: str
    date: str  #: ISO 8601 UTC time of the attempt
    command: str


class Board(TypedDict):
    """The whole leaderboard file."""

    schema_version: int  #: SCHEMA_VERSION
    dataset: DatasetInfo | None  #: None only in an empty board
    entries: list[Entry]  #: in insertion order (see `ranked_entries` for the ranking)
    consistency: Consistency | None  #: None while there is no entry
    failures: list[Failure]  #: models that failed to be scored (absent in older files: read as [])


# --------------------------------------------------------------------------------------------------
# predictions files
# --------------------------------------------------------------------------------------------------


def slugify(model: str) -> str:
    """File-name-safe form of a model name, distinct for distinct names: every char outside
    [A-Za-z0-9._-] becomes `_`, and a name that needed that (or has capitals, which case-insensitive
    file systems fold) gets the first 8 hex digits of its SHA-256 appended, so `a+b` and `a b` (and
    `a_b`) never share a file."""
    slug = _SLUG.sub("_", model)
    if slug != model or model != model.lower():
        slug += "-" + hashlib.sha256(model.encode()).hexdigest()[:8]
    return slug


def predictions_relpath(model: str, taken: Iterable[str] = ()) -> str:
    """Where a model's predictions CSV lives, relative to the leaderboard's folder; `taken`: paths other
    entries already use (a board written before names were made distinct), which are never reused."""
    rel = f"predictions/{slugify(model)}.csv"
    if rel in set(taken):
        rel = f"predictions/{slugify(model)}-{hashlib.sha256(model.encode()).hexdigest()[:8]}.csv"
    return rel


def empty_board() -> Board:
    """A leaderboard with no dataset and no entry (what a missing file reads as)."""
    return {"schema_version": SCHEMA_VERSION, "dataset": None, "entries": [], "consistency": None, "failures": []}


def _invalid(path: Path, why: str) -> SpurbenchError:
    return SpurbenchError(
        f"leaderboard '{path}' {why}; it was left untouched: fix or move it away, or pass another --leaderboard file"
    )


def _validate(board: Any, path: Path) -> Board:
    if not isinstance(board, dict):
        raise _invalid(path, "is not a JSON object")
    version = board.get("schema_version")
    if version not in READS:
        raise _invalid(path, f"has schema_version {version!r}, this spurbench reads {' and '.join(map(str, READS))}")
    if not isinstance(board.get("entries"), list):
        raise _invalid(path, "has no 'entries' list")
    if board.get("dataset") is not None and not isinstance(board["dataset"], dict):
        raise _invalid(path, "has a 'dataset' that is not an object")
    if board["entries"] and not isinstance((board.get("dataset") or {}).get("fingerprint"), str):
        raise _invalid(path, "has entries but no dataset fingerprint")
    names = set()
    for i, e in enumerate(board["entries"]):
        if not isinstance(e, dict) or not isinstance(e.get("model"), str) or not isinstance(e.get("metrics"), dict):
            raise _invalid(path, f"has a malformed entry #{i} (needs 'model' and 'metrics')")
        if e["model"] in names:
            raise _invalid(path, f"has two entries for model '{e['model']}'")
        names.add(e["model"])
    board.setdefault("consistency", None)
    if not isinstance(board.setdefault("failures", []), list):
        raise _invalid(path, "has a 'failures' that is not a list")
    return board  # type: ignore[return-value]


def load_leaderboard(path: str | Path, models: Iterable[str] | None = None) -> Board:
    """Read and check a leaderboard: its store (`store/index.json` and the entry files) when there is
    one, else the JSON file at `path` (schema 1, or an export). Nothing at all is an empty board.

    `models`: read only these models' entries (what `spurbench eval` needs to skip what is already
    scored, without reading every entry of a big board); the board then says how many entries it
    holds in all under `num_entries`.
    Raises SpurbenchError (naming the file, saying it was left untouched) for unreadable or corrupt JSON
    and for a schema_version this spurbench does not read.
    """
    path = Path(path)
    wanted = None if models is None else set(models)
    for _ in range(20):  # an entry file replaced between reading the index and reading it: read again
        index = _read_index(path)
        if index is None:
            break
        try:
            return _board_from_index(path, index, wanted)
        except FileNotFoundError:
            continue
    else:
        raise _invalid(_index_path(path), "names entry files that do not exist")
    text = _read_text(path)
    board = empty_board() if text is None else _parse(text, path)
    if wanted is not None:
        board["num_entries"] = len(board["entries"])  # type: ignore[typeddict-unknown-key]
        board["entries"] = [e for e in board["entries"] if e["model"] in wanted]
    return board


def board_exists(path: str | Path) -> bool:
    """Whether there is a leaderboard at `path` (a store next to it, or the JSON file itself)."""
    return _index_path(Path(path)).is_file() or Path(path).is_file()


def entry_files(path: str | Path) -> dict[str, str]:
    """{model: its predictions CSV (relative to the board's folder)} for every entry, from the index alone."""
    index = _read_index(Path(path))
    if index is None:
        return {e["model"]: e.get("predictions") for e in load_leaderboard(path)["entries"]}
    return {row["model"]: row.get("predictions") for row in index["entries"]}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise _invalid(path, f"cannot be read ({err.__class__.__name__})") from None


def _parse(text: str, path: Path) -> Board:
    try:
        board = json.loads(text)
    except json.JSONDecodeError as err:
        raise _invalid(path, f"is not valid JSON (line {err.lineno}, column {err.colno})") from None
    return _validate(board, path)


# --------------------------------------------------------------------------------------------------
# record
# --------------------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    """numpy -> Python, NaN/inf -> None, mapping keys -> str, tuples -> lists."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _write_atomic(path: Path, text: str) -> None:
    """Write next to the target, flush to disk, then rename over it: readers see old or new, never half."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def dumps_board(board: Mapping[str, Any], known: Mapping[int, str] | None = None) -> str:
    """The board as JSON text: indented, but each entry on one line. Entries are most of the file (their
    per-class tables), and one line each keeps the text diff of a re-scored model to one line, lets
    the fast C encoder write them, and lets `record_entry` copy the lines of unchanged entries
    (`known`: {id(entry): text}, see `_entry_lines`) instead of encoding them again."""
    known = known or {}
    parts = []
    for key, value in board.items():
        if key == "entries" and value:
            text = (
                "[\n"
                + ",\n".join("    " + (known.get(id(e)) or json.dumps(e, allow_nan=False)) for e in value)
                + "\n  ]"
            )
        else:
            text = json.dumps(value, indent=2, allow_nan=False).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# --------------------------------------------------------------------------------------------------
# the store (schema 2): an index and one file per entry
# --------------------------------------------------------------------------------------------------


def store_path(path: str | Path) -> Path:
    """The store's folder of the leaderboard at `path` (its JSON path)."""
    return Path(path).parent / STORE_DIR


def _index_path(path: Path) -> Path:
    return store_path(path) / "index.json"


def _read_index(path: Path) -> dict[str, Any] | None:
    """The store's index, checked; None when the board has no store (yet)."""
    ipath = _index_path(path)
    text = _read_text(ipath)
    if text is None:
        return None
    try:
        index = json.loads(text)
    except json.JSONDecodeError as err:
        raise _invalid(ipath, f"is not valid JSON (line {err.lineno}, column {err.colno})") from None
    if not isinstance(index, dict) or index.get("schema_version") != SCHEMA_VERSION:
        raise _invalid(ipath, f"is not a schema-{SCHEMA_VERSION} leaderboard index")
    rows = index.get("entries")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("model"), str) and isinstance(r.get("file"), str) for r in rows
    ):
        raise _invalid(ipath, "has a malformed 'entries' list (each needs 'model' and 'file')")
    if len({r["model"] for r in rows}) != len(rows):
        raise _invalid(ipath, "has two entries for one model")
    index.setdefault("failures", [])
    index.setdefault("consistency", None)
    return index


def _board_from_index(path: Path, index: Mapping[str, Any], wanted: set[str] | None = None) -> Board:
    store = store_path(path)
    entries = []
    for row in index["entries"]:
        if wanted is not None and row["model"] not in wanted:
            continue
        efile = store / row["file"]
        text = _read_text(efile)
        if text is None:
            raise FileNotFoundError(efile)
        try:
            entries.append(json.loads(text))
        except json.JSONDecodeError as err:
            raise _invalid(efile, f"is not valid JSON (line {err.lineno}, column {err.colno})") from None
    board = {k: v for k, v in index.items() if k not in ("entries", "export")}
    board["entries"] = entries
    if wanted is not None:
        board["num_entries"] = len(index["entries"])
    return board  # type: ignore[return-value]


def _write_entry(store: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Write one entry's file (named by model and content, so a replaced entry never overwrites the file
    the committed index names) and return its index row."""
    text = json.dumps(entry, allow_nan=False)
    rel = f"entries/{slugify(entry['model'])}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    target = store / rel
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(target, text + "\n")
    return {"model": entry["model"], "file": rel, "predictions": entry.get("predictions")}


def _commit(path: Path, index: dict[str, Any]) -> None:
    _write_atomic(_index_path(path), dumps_board(index))


def _migrate(path: Path) -> dict[str, Any]:
    """The index of a board that has no store yet: built from `leaderboard.json` (schema 1, or an export)
    when there is one, entry by entry and unchanged, and committed; else an empty index (not written)."""
    text = _read_text(path)
    if text is None:
        return {**{k: v for k, v in empty_board().items() if k != "entries"}, "entries": [], "export": False}
    board = _parse(text, path)
    store = store_path(path)
    index: dict[str, Any] = {k: v for k, v in board.items() if k != "entries"}
    index["schema_version"] = SCHEMA_VERSION
    index["entries"] = [_write_entry(store, e) for e in board["entries"]]
    # the old file stays the export while the board is small (the next export rewrites it with the same
    # figures); a big one is kept, renamed, rather than left looking current
    index["export"] = len(index["entries"]) <= EXPORT_MAX_ENTRIES
    _commit(path, index)  # from here the store is the board
    if not index["export"]:
        os.replace(path, path.with_name(path.stem + ".schema1" + path.suffix))
    return index


def _prepare_export(path: Path, index: dict[str, Any]) -> tuple[Board | None, bool]:
    """Before the commit: (the whole board, read for the export while the board has at most
    EXPORT_MAX_ENTRIES entries, else None; whether an export this store wrote must go). A missing entry
    file raises here, so nothing is committed over a broken store."""
    if len(index["entries"]) <= EXPORT_MAX_ENTRIES:
        try:
            board = _board_from_index(path, index)
        except FileNotFoundError:
            raise _invalid(_index_path(path), "names entry files that do not exist") from None
        index["export"] = True
        return board, False
    stale = bool(index.get("export"))
    index["export"] = False
    return None, stale


def _finish_export(path: Path, board: Board | None, stale: bool) -> None:
    """After the commit: rewrite the export, or remove the one this store wrote, so no stale copy looks current."""
    if board is not None:
        _write_atomic(path, dumps_board(board))
    elif stale:
        path.unlink(missing_ok=True)


def export(path: str | Path) -> Path:
    """Write the readable export `leaderboard.json` (the whole board in one file) from the store, at any size.
    The store keeps its entries: the export is a copy (the store wins where they differ)."""
    from filelock import FileLock

    path = Path(path)
    if not _index_path(path).is_file():
        if path.is_file():
            return path  # a schema-1 board is its own readable file
        raise SpurbenchError(f"no leaderboard at '{path}'; create one with `spurbench eval --leaderboard {path}`")
    with FileLock(str(store_path(path) / "lock"), timeout=LOCK_TIMEOUT_S):
        board = load_leaderboard(path)
        _write_atomic(path, dumps_board(board))
    return path


def _locked(path: Path):
    from filelock import FileLock

    store_path(path).mkdir(parents=True, exist_ok=True)
    return FileLock(str(store_path(path) / "lock"), timeout=LOCK_TIMEOUT_S)


def _held_elsewhere(path: Path) -> SpurbenchError:
    return SpurbenchError(
        f"another process has held '{store_path(path) / 'lock'}' for {LOCK_TIMEOUT_S:.0f} s; wait for it to finish and re-run"
    )


def _check_dataset(path: Path, index: Mapping[str, Any], dataset: Mapping[str, Any]) -> None:
    held = index["dataset"]
    # a board without entries has nothing to protect: it takes the new dataset
    if held is not None and index["entries"] and held.get("fingerprint") != dataset["fingerprint"]:
        raise SpurbenchError(
            f"leaderboard '{path}' holds dataset {held.get('id')!r} (fingerprint {str(held.get('fingerprint'))[:12]}...); "
            f"use another --leaderboard file for dataset {dataset.get('id')!r} (fingerprint {dataset['fingerprint'][:12]}...)"
        )


def record_entry(path: str | Path, dataset: Mapping[str, Any], entry: Mapping[str, Any], *, full: bool = True) -> Board:
    """Add `entry` to the leaderboard at `path` (created if missing), or replace the entry of the same model.

    Under an exclusive `filelock.FileLock` on `store/lock` it reads the store's index (migrating a
    schema-1 `leaderboard.json` into the store first), refuses a dataset whose fingerprint differs
    from the board's, writes the entry's own file, updates `consistency` through `hitstore` (only new
    or changed predictions CSVs are read), and commits by replacing `store/index.json`; a process
    killed before that leaves the board as it was, and the record can simply be redone.
    Returns the board as written (`full=False`: only the recorded entry, with `num_entries`, which
    costs nothing on a big board). Raises SpurbenchError (nothing written) on a fingerprint mismatch
    or a corrupt / other-version file.
    """
    from filelock import Timeout

    path = Path(path)
    if not isinstance(dataset.get("fingerprint"), str) or not dataset["fingerprint"]:
        raise ValueError("dataset must carry its 'fingerprint'")
    if not isinstance(entry.get("model"), str) or not entry["model"]:
        raise ValueError("entry must carry a 'model' name")
    if not isinstance(entry.get("metrics"), Mapping):
        raise ValueError("entry must carry 'metrics'")
    new_entry = _jsonable(entry)
    try:
        with _locked(path):
            index = _read_index(path) or _migrate(path)
            _check_dataset(path, index, dataset)
            if index["dataset"] is None or not index["entries"]:
                index["dataset"] = _jsonable(dataset)
            index["failures"] = [
                f
                for f in index["failures"]
                if f.get("model") != new_entry["model"] and f.get("fingerprint") == dataset["fingerprint"]
            ]
            store = store_path(path)
            row = _write_entry(store, new_entry)
            rows, old_file = index["entries"], None
            for i, r in enumerate(rows):
                if r["model"] == new_entry["model"]:
                    old_file, rows[i] = r["file"], row  # keep its place: re-scoring replaces
                    break
            else:
                rows.append(row)
            index["consistency"] = _jsonable(
                hitstore.update(path.parent, {"dataset": index["dataset"], "entries": rows})
            )
            board, stale = _prepare_export(path, index)
            _commit(path, index)
            if old_file is not None and old_file != row["file"]:
                (store / old_file).unlink(missing_ok=True)
            _finish_export(path, board, stale)
            if full:
                return board if board is not None else _board_from_index(path, index)
            out = {k: v for k, v in index.items() if k not in ("entries", "export")}
            return {**out, "entries": [new_entry], "num_entries": len(rows)}  # type: ignore[return-value]
    except Timeout:
        raise _held_elsewhere(path) from None


def record_failure(path: str | Path, dataset: Mapping[str, Any], failure: Mapping[str, Any]) -> Board:
    """Record (or replace) `failure` (a `Failure` with at least `model` and `reason`) under the board's lock.

    The model's entry, if any, stays. Refuses a dataset other than the board's as `record_entry` does.
    Returns the board without its entries (with `num_entries`).
    """
    from filelock import Timeout

    path = Path(path)
    new = _jsonable({**failure, "fingerprint": dataset["fingerprint"]})
    try:
        with _locked(path):
            index = _read_index(path) or _migrate(path)
            _check_dataset(path, index, dataset)
            if not index["entries"]:
                index["dataset"] = _jsonable(dataset)
            index["failures"] = [
                f
                for f in index["failures"]
                if f.get("model") != new["model"] and f.get("fingerprint") == dataset["fingerprint"]
            ]
            index["failures"].append(new)
            board, stale = _prepare_export(path, index)
            _commit(path, index)
            _finish_export(path, board, stale)
            out = {k: v for k, v in index.items() if k not in ("entries", "export")}
            return {**out, "entries": [], "num_entries": len(index["entries"])}  # type: ignore[return-value]
    except Timeout:
        raise _held_elsewhere(path) from None


def already_scored(board: Mapping[str, Any], model: str, probe: Mapping[str, Any]) -> bool:
    """Whether `board` holds an entry for `model` with the same `comparability_key` as `probe` (an entry, or
    what one would record before scoring: `rows`, preprocessing, precision, positives, ...): what a resumed
    sweep skips. Another set of rows (not merely another count) is scored again."""
    held = board.get("dataset") or {}
    if probe.get("fingerprint", held.get("fingerprint")) != held.get("fingerprint"):
        return False
    for e in board.get("entries", []):
        if e.get("model") == model:
            return comparability_key(e, held) == comparability_key(probe, held)
    return False


# --------------------------------------------------------------------------------------------------
# what an entry was computed on
# --------------------------------------------------------------------------------------------------


def rows_identity(
    split: str,
    indices: Iterable[int],
    *,
    limit: int | None = None,
    num_excluded: int = 0,
    include_unverified: bool = False,
) -> dict[str, Any]:
    """The `rows` block of an entry: which rows of the split it scored. `sha256` is the hex SHA-256 of the
    ASCII text `<split>:<i0>,<i1>,...` over the sorted split row indices (recomputable from the predictions
    CSV); `count` how many; `limit`, `num_excluded` (left out by verification) and `include_unverified` say
    how they were chosen (they describe the group; the hash identifies it)."""
    idx = sorted(int(i) for i in indices)
    text = f"{split}:" + ",".join(map(str, idx))
    return {
        "split": split,
        "count": len(idx),
        "sha256": hashlib.sha256(text.encode("ascii")).hexdigest(),
        "limit": limit,
        "num_excluded": int(num_excluded),
        "include_unverified": bool(include_unverified),
    }


def comparability_key(entry: Mapping[str, Any], dataset: Mapping[str, Any] | None = None) -> tuple:
    """Everything that must agree for two entries to be computed on the same data, and so be ranked together,
    skipped as already scored and exported to the Hub under one group: the dataset fingerprint (`dataset`:
    the board's block), the split and the identity of the rows scored (`rows`; an entry from before rows were
    recorded falls back to its number of images), the preprocessing, the precision, the positives (source and
    count: the AP is over them), the group column, the class subset the softmax ran over (`--class-subset`: its sha256; None: every class), and on a shift set
    the identity of the reference rows scored with it (`reference_rows`: the paired drop is over them). The one
    place that decides "same data": add a field here and every use follows."""
    m = entry.get("metrics") or {}
    rows = entry.get("rows") or {}
    ident = rows.get("sha256") or f"count:{m.get('num_images')}"
    positives = (entry.get("positives"), int(m.get("num_positives") or 0)) if entry.get("positives") else None
    return (
        (dataset or {}).get("fingerprint"),
        rows.get("split") or (dataset or {}).get("split"),
        ident,
        str(entry.get("preprocessing") or "timm"),
        str(entry.get("precision") or "float32"),
        positives,
        m.get("group_by"),
        (entry.get("class_subset") or {}).get("sha256"),
        (entry.get("reference_rows") or {}).get("sha256"),
    )


def describe_rows(entry: Mapping[str, Any], dataset: Mapping[str, Any] | None = None) -> str:
    """What rows an entry scored, in words: "all 12 images", "5 of 12 images: 7 left out by verification",
    "the first 5 rows (--limit) of 12 images"."""
    m, rows = entry.get("metrics") or {}, entry.get("rows") or {}
    n, total = rows.get("count", m.get("num_images")), (dataset or {}).get("num_images")
    excluded, limit = int(rows.get("num_excluded", m.get("num_excluded")) or 0), rows.get("limit")
    if n is None:
        return "an unknown number of images"
    of = f" of {_fmt(total)} images" if total is not None else " images"
    if limit is not None and (total is None or n < total - excluded):
        text = f"the first {_fmt(n)} rows (--limit){of}"
        return text + (f", after verification left out {_fmt(excluded)}" if excluded else "")
    if excluded:
        return f"{_fmt(n)}{of}: {_fmt(excluded)} left out by verification"
    if total is not None and n != total:  # an entry from before `rows` was recorded
        return f"the first {_fmt(n)}{of} (--limit)"
    return f"all {_fmt(n)} images" + (
        ", those that failed verification included" if rows.get("include_unverified") else ""
    )


# --------------------------------------------------------------------------------------------------
# ranking and rendering
# --------------------------------------------------------------------------------------------------


def board_kind(board: Mapping[str, Any]) -> str:
    """The kind of the set the board was scored on (its card's, recorded in the dataset block)."""
    return str(((board.get("dataset") or {}).get("provenance") or {}).get("kind", "spurious"))


def ranked_by_score(board: Mapping[str, Any]) -> bool:
    """True when the board's entries rank by spurious score AP (every entry has one), False for spurious rate."""
    return _by_score(board["entries"])


def _by_score(entries: Sequence[Mapping[str, Any]]) -> bool:
    return bool(entries) and all(e["metrics"].get("spurious_score_ap") is not None for e in entries)


def _rank(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Best first: by `spurious_score_ap` descending when every entry has it, else by `spurious_rate`
    ascending (entries without one last). Ties by spurious rate, then by model name."""

    def rate(e: Mapping[str, Any]) -> float:
        r = e["metrics"].get("spurious_rate")
        return math.inf if r is None else float(r)

    if shift.is_shift_entries(entries):  # shift sets: worst-group accuracy, higher first
        return shift.rank(entries)
    if _by_score(entries):
        key = lambda e: (-float(e["metrics"]["spurious_score_ap"]), rate(e), e["model"])  # noqa: E731
    else:
        key = lambda e: (rate(e), e["model"])  # noqa: E731
    return sorted(entries, key=key)  # type: ignore[arg-type]


def comparable_groups(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries split into groups computed on the same data (`comparability_key`), the largest group first
    (ties: the group whose first entry came first), each ranked on its own:
    `[{"id", "key", "preprocessing", "precision", "num_images", "rows", "positives", "description", "ranked_by",
    "entries"}]`."""
    ds = board.get("dataset") or {}
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for e in board["entries"]:
        groups.setdefault(comparability_key(e, ds), []).append(e)
    out = []
    for i, (key, members) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
        first = members[0]
        prep, precision, positives = key[3], key[4], key[5]
        text = f"{prep} preprocessing, {describe_rows(first, ds)}"
        if precision != "float32":
            text += f", {precision}"
        if positives:
            text += f", positives {positives[0]} ({_fmt(positives[1])} images)"
        if key[7]:
            text += f", softmax over class subset {(first.get('class_subset') or {}).get('name')}"
        out.append(
            {
                "id": i + 1,
                "key": _key_text(key),
                "preprocessing": prep,
                "precision": precision,
                "num_images": (first.get("metrics") or {}).get("num_images"),
                "rows": first.get("rows"),
                "positives": positives[0] if positives else None,
                "description": text,
                "ranked_by": _ranked_by(members),
                "entries": _rank(members),
            }
        )
    return out


def _key_text(key: tuple) -> str:
    """A short stable name of a comparability key (12 hex digits of its SHA-256), for file names and task ids."""
    return hashlib.sha256(json.dumps(_jsonable(list(key))).encode()).hexdigest()[:12]


def _ranked_by(entries: Sequence[Mapping[str, Any]]) -> str:
    if shift.is_shift_entries(entries):
        return shift.RANKED_BY
    return "spurious_score_ap" if _by_score(entries) else "spurious_rate"


def ranked_entries(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries best first within each comparable group (`comparable_groups`), the groups one after the other."""
    return [e for g in comparable_groups(board) for e in g["entries"]]


GROUPS_NOTE = (
    "Entries scored on different rows (`--limit`, verification), with different preprocessing, precision, "
    "positives or class subsets (`--class-subset`) are not ranked against each other: each group below is ranked on its own."
)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x).replace("|", "\\|")


def to_markdown(board: Mapping[str, Any]) -> str:
    """The ranked table with the headline metrics, then the consistency summary, as GitHub markdown."""
    lines = ["# spurbench leaderboard", ""]
    ds = board.get("dataset")
    if ds:
        classes = ds.get("classes") or []
        lines.append(
            f"Dataset `{ds.get('id')}` (split `{ds.get('split', 'test')}`, revision `{ds.get('revision') or 'default'}`): "
            f"{_fmt(ds.get('num_images'))} images, {len(classes)} classes, fingerprint `{str(ds.get('fingerprint'))[:12]}`."
        )
        lines.append("")
    groups = comparable_groups(board)
    if not groups:
        lines.append("No entries yet: add one with `spurbench eval --model NAME --dataset FOLDER`.")
        return "\n".join(lines) + "\n"
    if len(groups) > 1:
        lines += [GROUPS_NOTE, ""]
    for g in groups:
        if len(groups) > 1:
            lines += [f"### Group {g['id']}: {g['description']} ({len(g['entries'])} model(s))", ""]
        lines.append(
            shift.RANKING_NOTE
            if g["ranked_by"] == shift.RANKED_BY
            else "Ranked by spurious score AP (higher = less reliance on spurious features)."
            if g["ranked_by"] == "spurious_score_ap"
            else "Ranked by spurious rate (macro top-1; lower = fooled less often)."
        )
        lines.append("")
        lines += (
            shift.ranking_table(g["entries"], _fmt)
            if g["ranked_by"] == shift.RANKED_BY
            else _ranking_table(g["entries"])
        )
        lines.append("")
    lines.pop()
    c = board.get("consistency")
    is_shift = board_kind(board) == "shift"
    if c:
        n_models = len(c.get("models") or [])
        half = math.ceil(n_models / 2)
        lines += ["", f"## Consistency across {n_models} classifier(s), {_fmt(c.get('num_images'))} images", ""]
        failed = "wrong" if is_shift else "fooled"  # a shift set's failure is a wrong prediction
        lines.append(
            f"| all {failed} | at least half (>= {half} of {n_models}) | mean pairwise Cohen's kappa | Fleiss' kappa |"
        )
        lines.append("|---:|---:|---:|---:|")
        lines.append(
            "| "
            + " | ".join(
                _fmt(c.get(k)) for k in ("all_fooled_rate", "at_least_half_rate", "mean_pairwise_kappa", "fleiss_kappa")
            )
            + " |"
        )
        if c.get("pairwise_kappa"):
            lines += ["", "| pair | Cohen's kappa |", "|---|---:|"]
            lines += [f"| {_fmt(pair)} | {_fmt(k)} |" for pair, k in c["pairwise_kappa"].items()]
        lines.append("")
        lines.append(
            "Kappa is n/a where it is undefined (every rating the same). "
            + (shift.CONSISTENCY_NOTE if is_shift else "Fooled = top-1 is the image's label.")
        )
        if c.get("note"):
            lines += ["", f"Note: {c['note']}."]
        for model, why in (c.get("excluded") or {}).items():
            lines += ["", f"Left out of the consistency: {_fmt(model)}: {why}"]
    return "\n".join(lines) + "\n"


def _ranking_table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| rank | model | spurious rate | micro | top-5 | mean p_k | AP | AUROC | images | params | img/s | preprocessing |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rank, e in enumerate(entries, 1):
        m = e["metrics"]
        lines.append(
            "| "
            + " | ".join(
                [
                    str(rank),
                    _fmt(e["model"]),
                    _fmt(m.get("spurious_rate")),
                    _fmt(m.get("spurious_rate_micro")),
                    _fmt(m.get("spurious_rate_top5")),
                    _fmt(m.get("mean_target_prob")),
                    _fmt(m.get("spurious_score_ap")),
                    _fmt(m.get("spurious_score_auroc")),
                    _fmt(m.get("num_images")),
                    _fmt(e.get("num_params")),
                    _fmt(e.get("images_per_second"), 1),
                    _fmt(e.get("preprocessing", "timm")),
                ]
            )
            + " |"
        )
    return lines


def to_ranked_json(board: Mapping[str, Any]) -> dict[str, Any]:
    """The board with its entries ranked within comparable groups: each entry with a 1-based `rank` in
    its group and the group's `group` id; `groups` describes them (and says why there are several);
    `ranked_by` is the first (largest) group's."""
    out = dict(board)
    groups = comparable_groups(board)
    out["ranked_by"] = (
        groups[0]["ranked_by"] if groups else (shift.RANKED_BY if board_kind(board) == "shift" else "spurious_rate")
    )
    out["groups"] = [
        {k: v for k, v in g.items() if k != "entries"} | {"models": [e["model"] for e in g["entries"]]} for g in groups
    ]
    out["groups_note"] = GROUPS_NOTE if len(groups) > 1 else None
    out["entries"] = [{"rank": i, "group": g["id"], **e} for g in groups for i, e in enumerate(g["entries"], 1)]
    return out
