"""The leaderboard store: its typed schema, reading and recording entries, consistency and ranking.
`spurbench.evaluate.report` (the `spurbench leaderboard` command) prints or renders it.

A leaderboard is one folder per board (`spurbench eval --leaderboard FILE` names it by its JSON path, or
by the folder, meaning FOLDER/leaderboard.json; unset: `DEFAULT_LEADERBOARD`, one board per dataset). One folder
holds one board: the store records the JSON name it belongs to, and another name in the same folder is refused.
Since schema 2 the folder holds a store of small files, so recording entry 10,001 costs what recording entry 11
does:

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
store, losslessly, by the first record into it.

Other people's boards and folders: every file the board writes is listed in the folder's record
(`spurbench.files.WrittenFolder`); a file is replaced or deleted only when the record lists it with its bytes, so
a user's same-named file in a folder given as --leaderboard is refused, never overwritten. Every path read from
the index or an entry must stay inside the board's folder, and index and entry files are size-bounded before they
are parsed. Ranking: by spurious score AP (higher is better)
when every entry has one, else by spurious rate (lower is better).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from spurbench.errors import SpurbenchError
from spurbench.evaluate import hitstore, predictions_csv, shift, uncertainty, validity
from spurbench.evaluate.preprocessing import DEFAULT_DECODE
from spurbench.files import (
    WrittenFolder,
    atomic_write,
    has_record,
    inside,
    is_temporary,
    remove_stale_temporaries,
    safe_filename,
    sha256_bytes,
    sha256_of,
)
from spurbench.untrusted import check_expansion, printable

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
#: an index or a schema-1 board / export larger than this is refused before it is parsed
MAX_BOARD_BYTES = 256 << 20
#: an entry file larger than this is refused before it is parsed (a 1,000-class entry is about 0.3 MB)
MAX_ENTRY_BYTES = 16 << 20
#: characters of strings a dataset's block (its card's provenance) may expand to when copied into a board
MAX_CARD_CHARS = 1 << 20

#: the canonical entry's preprocessing and precision (hub_results exports that group as the set's result)
DEFAULT_PREPROCESSING, DEFAULT_PRECISION = "timm", "float32"

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
# file names, reading and checking
# --------------------------------------------------------------------------------------------------


def slugify(model: str) -> str:
    """A model name as a file name (`spurbench.files.safe_filename`), distinct for distinct names also on a
    case-insensitive file system: a name with capitals gets the first 8 hex digits of its SHA-256 appended
    (as before, so a board's existing file names stay as they are)."""
    slug = safe_filename(model)
    if slug == model and model != model.lower():
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


def _check_paths(e: Mapping[str, Any], base: Path, where: Path, what: str) -> None:
    """A predictions path read from a board stays inside the board's folder (else one line)."""
    rel = e.get("predictions")
    if rel is None:
        return
    if not isinstance(rel, str):
        raise _invalid(where, f"has {what} whose 'predictions' is not a path")
    inside(base, rel, f"leaderboard '{where}' ({what})")


def _check_common(board: dict[str, Any], path: Path) -> None:
    """The parts a schema-1 board and a store's index share: dataset, failures, consistency."""
    if board.get("dataset") is not None and not isinstance(board["dataset"], dict):
        raise _invalid(path, "has a 'dataset' that is not an object")
    if board["entries"] and not isinstance((board.get("dataset") or {}).get("fingerprint"), str):
        raise _invalid(path, "has entries but no dataset fingerprint")
    if board.setdefault("consistency", None) is not None and not isinstance(board["consistency"], dict):
        raise _invalid(path, "has a 'consistency' that is not an object")
    failures = board.setdefault("failures", [])
    if not isinstance(failures, list) or not all(isinstance(f, dict) for f in failures):
        raise _invalid(path, "has a 'failures' that is not a list of objects")


def _validate(board: Any, path: Path) -> Board:
    if not isinstance(board, dict):
        raise _invalid(path, "is not a JSON object")
    version = board.get("schema_version")
    if version not in READS:
        raise _invalid(path, f"has schema_version {version!r}, this spurbench reads {' and '.join(map(str, READS))}")
    if not isinstance(board.get("entries"), list):
        raise _invalid(path, "has no 'entries' list")
    _check_common(board, path)
    names = set()
    for i, e in enumerate(board["entries"]):
        _check_entry(e, path, f"entry #{i}")
        if e["model"] in names:
            raise _invalid(path, f"has two entries for model '{printable(e['model'])}'")
        names.add(e["model"])
        _check_paths(e, path.parent, path, f"entry #{i}")
    return board  # type: ignore[return-value]


def _confine(base: Path, rows: Sequence[Mapping[str, Any]], where: Path) -> None:
    """`_check_paths` for many rows at the cost of a few: each path checked lexically, and `inside` (which resolves
    links) run once per distinct folder and once per file name that is not a plain `predictions/<name>`."""
    folders: set[str] = set()
    for i, r in enumerate(rows):
        rel = r.get("predictions")
        if rel is None:
            continue
        if not isinstance(rel, str):
            raise _invalid(where, f"has entry #{i} whose 'predictions' is not a path")
        parent, _, name = rel.rpartition("/")
        if parent in folders and name and name not in (".", "..") and "\x00" not in name:
            continue
        inside(base, rel, f"leaderboard '{where}' (entry #{i})")
        folders.add(parent)


def _check_entry(e: Any, path: Path, what: str) -> None:
    if not isinstance(e, dict) or not isinstance(e.get("model"), str) or not isinstance(e.get("metrics"), dict):
        raise _invalid(path, f"has a malformed {what} (needs 'model' and 'metrics')")


def load_leaderboard(path: str | Path, models: Iterable[str] | None = None) -> Board:
    """Read and check a leaderboard: its store (`store/index.json` and the entry files) when there is
    one, else the JSON file at `path` (schema 1, or an export). Nothing at all is an empty board.

    `models`: read only these models' entries (what `spurbench eval` needs to skip what is already
    scored, without reading every entry of a big board); the board then says how many entries it
    holds in all under `num_entries`.
    Raises SpurbenchError (naming the file, saying it was left untouched) for unreadable, oversized or corrupt
    JSON, a path leading out of the board's folder, and a schema_version this spurbench does not read.
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
    board = _read_board(path) or empty_board()
    if wanted is not None:
        board["num_entries"] = len(board["entries"])  # type: ignore[typeddict-unknown-key]
        board["entries"] = [e for e in board["entries"] if e["model"] in wanted]
    return board


def _read_board(path: Path) -> Board | None:
    """The board in the one JSON file at `path` (schema 1, or an export), checked; None when there is none."""
    data = _read_json(path, MAX_BOARD_BYTES)
    return None if data is None else _validate(data, path)


def board_exists(path: str | Path) -> bool:
    """Whether there is a leaderboard at `path` (a store next to it, or the JSON file itself)."""
    return _index_path(Path(path)).is_file() or Path(path).is_file()


def entry_files(path: str | Path) -> dict[str, str]:
    """{model: its predictions CSV (relative to the board's folder)} for every entry, from the index alone."""
    index = _read_index(Path(path))
    if index is None:
        return {e["model"]: e.get("predictions") for e in load_leaderboard(path)["entries"]}
    return {row["model"]: row.get("predictions") for row in index["entries"]}


def _read_json(path: Path, limit: int) -> Any:
    """The JSON in `path` (None when there is no such file), its size bounded before it is read."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise _invalid(path, f"is {size >> 20} MiB, over the {limit >> 20} MiB a leaderboard file may hold")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise _invalid(path, f"cannot be read ({err.__class__.__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise _invalid(path, f"is not valid JSON (line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise _invalid(path, "nests too deeply to be a leaderboard") from None


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


def dumps_board(board: Mapping[str, Any]) -> str:
    """The board as JSON text: indented, but each entry on one line. Entries are most of the file (their
    per-class tables), and one line each keeps the text diff of a re-scored model to one line and lets
    the fast C encoder write them."""
    parts = []
    for key, value in board.items():
        if key == "entries" and value:
            text = "[\n" + ",\n".join("    " + json.dumps(e, allow_nan=False) for e in value) + "\n  ]"
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


_ENTRY_FILE = re.compile(r"entries/[A-Za-z0-9._-]+\.json")


def _read_index(path: Path) -> dict[str, Any] | None:
    """The store's index, checked (every path it names stays inside the board's folder); None when the board has
    no store (yet). An index written for another JSON name in the same folder is refused: a folder holds one board."""
    ipath, store = _index_path(path), store_path(path)
    if store.is_symlink() or (store.exists() and not store.is_dir()):
        raise SpurbenchError(f"'{store}' is not a folder spurbench made; move it away or give another --leaderboard")
    if ipath.is_symlink():
        raise _invalid(ipath, "is a symbolic link, which spurbench never writes")
    index = _read_json(ipath, MAX_BOARD_BYTES)
    if index is None:
        return None
    if not isinstance(index, dict) or index.get("schema_version") != SCHEMA_VERSION:
        raise _invalid(ipath, f"is not a schema-{SCHEMA_VERSION} leaderboard index")
    rows = index.get("entries")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("model"), str) and isinstance(r.get("file"), str) for r in rows
    ):
        raise _invalid(ipath, "has a malformed 'entries' list (each needs 'model' and 'file')")
    if len({r["model"] for r in rows}) != len(rows):
        raise _invalid(ipath, "has two entries for one model")
    for r in rows:
        # an entry file is one the store names itself: `entries/<name>.json`, nothing else is read or removed
        # (each is confined again, links resolved, when it is read)
        if not _ENTRY_FILE.fullmatch(r["file"]):
            raise _invalid(ipath, f"names the entry file {printable(r['file'][:200])!r}, which is not in its entries/")
    _confine(path.parent, rows, ipath)
    _check_common(index, ipath)
    name = index.get("board")
    if name is not None and name != path.name:
        raise SpurbenchError(
            f"folder '{path.parent}' holds the leaderboard '{path.parent / str(name)}', not '{path}': one folder "
            f"holds one board; give --leaderboard '{path.parent / str(name)}', or another folder for a new board"
        )
    return index


def _board_from_index(path: Path, index: Mapping[str, Any], wanted: set[str] | None = None) -> Board:
    store = store_path(path)
    entries = []
    for row in index["entries"]:
        if wanted is not None and row["model"] not in wanted:
            continue
        efile = inside(store, row["file"], f"leaderboard index '{_index_path(path)}'")
        entry = _read_json(efile, MAX_ENTRY_BYTES)
        if entry is None:
            raise FileNotFoundError(efile)
        _check_entry(entry, efile, "entry")
        if entry["model"] != row["model"]:
            raise _invalid(efile, f"holds model {printable(entry['model'][:200])!r}, the index names it for another")
        _check_paths(entry, path.parent, efile, "its entry")
        entries.append(entry)
    board = {**_index_head(index), "entries": entries}
    if wanted is not None:
        board["num_entries"] = len(index["entries"])
    return board  # type: ignore[return-value]


def _index_head(index: Mapping[str, Any]) -> dict[str, Any]:
    """The board's fields an index holds, without its entry rows and the store's own bookkeeping."""
    return {k: v for k, v in index.items() if k not in ("entries", "export", "board")}


def _entry_text(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(the entry file's path in the store, its text): named by model and content, so a replaced entry never
    overwrites the file the committed index names."""
    text = json.dumps(entry, allow_nan=False) + "\n"
    return f"entries/{slugify(entry['model'])}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json", text


def _commit(path: Path, index: dict[str, Any], folder: WrittenFolder) -> None:
    """The one commit point of a record: the index replaced in one rename (what tests kill a record just before)."""
    folder.write(f"{STORE_DIR}/index.json", dumps_board(index))


# ----------------------------------------------------------------------------------- the board's folder


def _folder_flag(path: Path) -> str:
    return f"--leaderboard '{path}'"


def _written_folder(path: Path) -> WrittenFolder:
    """The board's folder with spurbench's record of what it wrote there. A folder without the record (new, a
    user's, or a board the previous spurbench wrote) gets one: a previous board's own files are taken over when
    every file in its store is recognisable, and nothing else in the folder is ever replaced or deleted."""
    folder = path.parent
    if has_record(folder):
        return WrittenFolder.claim(folder, _folder_flag(path), create=False)  # the record checked once, fast
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpurbenchError(
            f"cannot create --leaderboard folder '{folder}': {err.strerror}; give a writable folder"
        ) from None
    written = WrittenFolder(folder, _folder_flag(path), {})
    remove_stale_temporaries(folder)
    _take_over_previous(written, path)
    return written


_OLD_LEFTOVER = re.compile(r".+\.(tmp|bak)-\d+")


def _take_over_previous(written: WrittenFolder, path: Path) -> None:
    """Record the files a previous spurbench (no record yet) wrote for this board, so they can be replaced: its
    index, the entry files the index names, the predictions CSVs and hit flags those entries name, the hit store,
    and the export. Refused when its store holds anything else (then it is not certainly spurbench's)."""
    store = store_path(path)
    files: list[str] = []
    index = None
    if store.is_dir():
        index = _read_index(path)
        named = {r["file"] for r in index["entries"]} if index else set()
        for p in sorted(store.rglob("*")):
            rel = p.relative_to(store).as_posix()
            if p.is_dir() and rel == "entries":
                continue
            if rel in ("index.json", "lock") or (rel.startswith("entries/") and _ENTRY_FILE.fullmatch(rel)):
                continue
            if _OLD_LEFTOVER.fullmatch(p.name) or is_temporary(p.name):
                continue
            raise SpurbenchError(
                f"'{store}' holds '{rel}', which a spurbench store does not hold; it is not taken over as a "
                "leaderboard: move it away or give another --leaderboard folder (nothing was written)"
            )
        files += [f"{STORE_DIR}/{f}" for f in named if (store / f).is_file()]
        if index is not None and (store / "index.json").is_file():
            files.append(f"{STORE_DIR}/index.json")
    rows = index["entries"] if index else None
    if rows is None and path.is_file():
        board = _validate(_read_json(path, MAX_BOARD_BYTES), path)  # a schema-1 board or an export
        rows = board["entries"]
        files.append(path.name)
    elif index is not None and path.is_file() and isinstance(_read_json(path, MAX_BOARD_BYTES), dict):
        files.append(path.name)  # the export
    for r in rows or []:
        rel = r.get("predictions")
        if rel and predictions_csv.looks_like_predictions(written.folder / rel):
            files.append(rel)
            if (written.folder / hitstore.hits_relpath(rel)).is_file():
                files.append(hitstore.hits_relpath(rel))
    if hitstore.is_state_file(written.folder / hitstore.STATE_FILE):
        files.append(hitstore.STATE_FILE)
    for rel in files:
        written.files[rel] = sha256_of(written.folder / rel)
    if files:
        written.save()


def _remove_unreferenced(written: WrittenFolder, index: Mapping[str, Any], temporaries: bool = True) -> None:
    """Files this store wrote that the committed index no longer names (a record killed before its commit, a
    replaced entry): removed under the lock, only when the record lists them with their bytes."""
    keep = {f"{STORE_DIR}/{r['file']}" for r in index["entries"]}
    for r in index["entries"]:
        if r.get("predictions"):
            keep |= {r["predictions"], hitstore.hits_relpath(r["predictions"])}
    prefixes = (f"{STORE_DIR}/entries/", "predictions/", f"{hitstore.HITS_DIR}/")
    gone = [f for f in written.files if f.startswith(prefixes) and f not in keep and f != hitstore.STATE_FILE]
    for rel in gone:
        path = written.folder / rel
        if path.is_file() and not path.is_symlink() and written.owns(rel):
            path.unlink()
        del written.files[rel]
    if gone:
        written.save()
    if not temporaries:
        return
    for sub in (store_path(written.folder / "x") / "entries", written.folder / "predictions", written.folder / "hits"):
        remove_stale_temporaries(sub)
    remove_stale_temporaries(store_path(written.folder / "x"))


# ----------------------------------------------------------------------------------- lock and transaction


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """The board's one lock (`store/lock`); a timeout or a store that cannot be written is one line."""
    from filelock import FileLock, Timeout

    store = store_path(path)
    try:
        store.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(store / "lock"), timeout=LOCK_TIMEOUT_S)
        lock.acquire()
    except Timeout:
        raise SpurbenchError(
            f"another process has held '{store / 'lock'}' for {LOCK_TIMEOUT_S:.0f} s; wait for it to finish and re-run"
        ) from None
    except OSError as err:
        raise _unwritable(path, err) from None
    try:
        yield
    finally:
        lock.release()


def _unwritable(path: Path, err: OSError) -> SpurbenchError:
    return SpurbenchError(
        f"cannot write the leaderboard in '{path.parent}' ({err.strerror or err.__class__.__name__}); it was left as "
        "it was: make the folder writable or give another --leaderboard"
    )


def _check_dataset(path: Path, board: Mapping[str, Any], dataset: Mapping[str, Any]) -> None:
    held = board["dataset"]
    # a board without entries has nothing to protect: it takes the new dataset
    if held is not None and board["entries"] and held.get("fingerprint") != dataset["fingerprint"]:
        raise SpurbenchError(
            f"leaderboard '{path}' holds dataset {held.get('id')!r} (fingerprint {str(held.get('fingerprint'))[:12]}...); "
            f"use another --leaderboard file for dataset {dataset.get('id')!r} (fingerprint {dataset['fingerprint'][:12]}...)"
        )


def _precheck(path: Path, dataset: Mapping[str, Any]) -> None:
    """The refusals a record can see without the lock (a corrupt or hostile board, another dataset, a card too
    big), checked before the lock file or anything else is created; repeated under the lock."""
    _check_card(dataset)
    board = _read_index(path)
    if board is None:
        board = _read_board(path)
    if board is not None:
        _check_dataset(path, board, dataset)


@dataclass
class _Transaction:
    """One record into a board, under its lock: the index as committed, the folder's record of what it wrote."""

    path: Path
    index: dict[str, Any]
    folder: WrittenFolder

    def prepare_export(self, replacing: Mapping[str, Any] | None = None) -> tuple[Board | None, bool]:
        """Before any write: (the whole board for the export while it has at most EXPORT_MAX_ENTRIES entries,
        else None; whether an export this store wrote must go), and the export checked replaceable. A missing
        entry file raises here, so nothing is written over a broken store. `replacing`: the entry recorded now."""
        index = self.index
        if len(index["entries"]) > EXPORT_MAX_ENTRIES:
            stale = bool(index.get("export"))
            index["export"] = False
            if stale:
                self.folder.check_replaceable(self.path.name)
            return None, stale
        rows = [r for r in index["entries"] if replacing is None or r["model"] != replacing["model"]]
        try:
            board = _board_from_index(self.path, {**index, "entries": rows})
        except FileNotFoundError:
            raise _invalid(_index_path(self.path), "names entry files that do not exist") from None
        if replacing is not None:
            order = [r["model"] for r in index["entries"]]
            board["entries"] = sorted([*board["entries"], replacing], key=lambda e: order.index(e["model"]))
        index["export"] = True
        self.folder.check_replaceable(self.path.name)
        return board, False

    def commit(self, board: Board | None, stale: bool) -> None:
        """Replace the index (the commit point), then rewrite or remove the export and the files no longer named."""
        self.index["board"] = self.path.name
        _commit(self.path, self.index, self.folder)
        if board is not None:
            self.folder.write(self.path.name, dumps_board({**board, "consistency": self.index["consistency"]}))
        elif stale:
            self.folder.remove(self.path.name)
        _remove_unreferenced(self.folder, self.index, temporaries=False)  # those were removed when it began


@contextlib.contextmanager
def _transaction(path: Path, dataset: Mapping[str, Any] | None = None, model: str = "") -> Iterator[_Transaction]:
    """Lock the board, read (or migrate) its index, clean what killed records left: every record's skeleton. A
    refusal raised inside happens before anything is written. A record (`dataset` given) is checked first without
    the lock (`_precheck`), then under it, and a failure recorded for `model` on that dataset is dropped."""
    if dataset is not None:
        _precheck(path, dataset)
    try:
        with _lock(path):
            folder = _written_folder(path)
            index = _read_index(path)
            if index is None:
                index = _migrate(path, folder)
            else:
                _remove_unreferenced(folder, index)
            if dataset is not None:
                held = index["dataset"]
                _check_dataset(path, index, dataset)
                if held is None or not index["entries"]:
                    index["dataset"] = _jsonable(dataset)
                fingerprint = dataset["fingerprint"]
                index["failures"] = [
                    f for f in index["failures"] if f.get("model") != model and f.get("fingerprint") == fingerprint
                ]
            yield _Transaction(path, index, folder)
    except OSError as err:
        raise _unwritable(path, err) from None


def _migrate(path: Path, folder: WrittenFolder) -> dict[str, Any]:
    """The index of a board that has no store yet: built from `leaderboard.json` (schema 1, or an export)
    when there is one, entry by entry and unchanged, and committed; else an empty index (not written)."""
    board = _read_board(path)
    if board is None:
        return {**{k: v for k, v in empty_board().items() if k != "entries"}, "entries": [], "export": False}
    index: dict[str, Any] = {k: v for k, v in board.items() if k != "entries"}
    index["schema_version"] = SCHEMA_VERSION
    index["entries"], files = [], {}
    for e in board["entries"]:
        rel, text = _entry_text(e)
        files[f"{STORE_DIR}/{rel}"] = text.encode()
        index["entries"].append({"model": e["model"], "file": rel, "predictions": e.get("predictions")})
    _write_batch(folder, files)
    # the old file stays the export while the board is small (the next export rewrites it with the same
    # figures); a big one is kept, renamed, rather than left looking current
    index["export"] = len(index["entries"]) <= EXPORT_MAX_ENTRIES
    index["board"] = path.name
    if not index["export"]:
        kept = path.stem + ".schema1" + path.suffix
        folder.check_replaceable(path.name, kept)
    _commit(path, index, folder)  # from here the store is the board
    if not index["export"]:
        folder.adopt(kept, path)
        folder.files.pop(path.name, None)
        folder.save()
    return index


def check_writable(path: str | Path) -> None:
    """One line, before any model is scored, when the board's folder (or its store) cannot be written or the
    folder's record is not spurbench's: what `spurbench eval` checks first, so no scoring is lost to it."""
    path = Path(path)
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    for folder in (existing, store_path(path), path.parent / "predictions", path.parent / hitstore.HITS_DIR):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise _unwritable(path, PermissionError(13, "Permission denied"))
    if has_record(path.parent):
        WrittenFolder.claim(path.parent, _folder_flag(path), create=False)
    _read_index(path)  # a store of another board name in this folder, a hostile index: refused now


def export(path: str | Path) -> Path:
    """Write the readable export `leaderboard.json` (the whole board in one file) from the store, at any size.
    The store keeps its entries: the export is a copy (the store wins where they differ)."""
    path = Path(path)
    if not _index_path(path).is_file():
        if path.is_file():
            return path  # a schema-1 board is its own readable file
        raise SpurbenchError(f"no leaderboard at '{path}'; create one with `spurbench eval --leaderboard {path}`")
    with _transaction(path) as tx:
        board = load_leaderboard(path)
        tx.folder.write(path.name, dumps_board(board))
    return path


def _check_card(dataset: Mapping[str, Any]) -> None:
    """What is copied from a dataset card into the board is bounded (a card of YAML aliases expands hugely)."""
    check_expansion(dataset, "the dataset's card (copied into the leaderboard)", max_chars=MAX_CARD_CHARS)


def record_entry(
    path: str | Path,
    dataset: Mapping[str, Any],
    entry: Mapping[str, Any],
    *,
    full: bool = True,
    predictions: str | None = None,
) -> Board:
    """Add `entry` to the leaderboard at `path` (created if missing), or replace the entry of the same model.

    `predictions`: the text of the model's predictions CSV, written here under a name no committed entry uses
    (then `entry["predictions"]` is set to it); without it, `entry["predictions"]` names a CSV already there.

    One transaction (`_transaction`): under the board's lock it reads the store's index (migrating a schema-1
    `leaderboard.json` first), checks everything (the dataset's fingerprint, the card's size, that no file it
    will replace is one spurbench did not write), then writes the CSV and the entry's file under new names,
    updates `consistency` through `hitstore` and commits by replacing `store/index.json`; only then are the
    files of a replaced entry removed. A process killed before the commit leaves the board as it was (its
    unreferenced files are removed by the next record), and the record can simply be redone.
    Returns the board as written (`full=False`: only the recorded entry, with `num_entries`, which
    costs nothing on a big board). Raises SpurbenchError (nothing written) on a refusal.
    """
    path = Path(path)
    _check_record_args(dataset, entry)
    with _transaction(path, dataset, entry["model"]) as tx:
        rows = tx.index["entries"]
        new_entry = _jsonable(entry)
        csv_payload = None
        if predictions is not None:
            csv_payload = predictions.encode()
            new_entry["predictions"] = _free_predictions_name(tx, new_entry["model"], csv_payload)
        if new_entry.get("predictions") is not None:
            _check_paths(new_entry, path.parent, path, "the new entry")
        rel, text = _entry_text(new_entry)
        row = {"model": new_entry["model"], "file": rel, "predictions": new_entry.get("predictions")}
        row.update(_consistency_identity(new_entry, tx.index.get("dataset") or {}))
        # every check before any write: the files this record will replace are spurbench's own
        written = [f"{STORE_DIR}/{rel}", f"{STORE_DIR}/index.json", hitstore.STATE_FILE]
        if row["predictions"]:
            written.append(hitstore.hits_relpath(row["predictions"]))
        tx.folder.check_replaceable(*written)
        _place_row(rows, row)
        board, stale = tx.prepare_export(new_entry)
        # writes: files under names no committed entry uses, then the commit
        new_files = {f"{STORE_DIR}/{rel}": text.encode()}
        if csv_payload is not None:
            new_files[row["predictions"]] = csv_payload
        _write_batch(tx.folder, new_files)
        _update_consistency(tx, path)
        tx.commit(board, stale)
        if not full:
            return {**_index_head(tx.index), "entries": [new_entry], "num_entries": len(rows)}  # type: ignore[return-value]
        if board is not None:
            return {**board, "consistency": tx.index["consistency"]}
        return _board_from_index(path, tx.index)


def _check_record_args(dataset: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
    """A caller's mistake (not bad input): what `record_entry` needs to be given."""
    if not isinstance(dataset.get("fingerprint"), str) or not dataset["fingerprint"]:
        raise ValueError("dataset must carry its 'fingerprint'")
    if not isinstance(entry.get("model"), str) or not entry["model"]:
        raise ValueError("entry must carry a 'model' name")
    if not isinstance(entry.get("metrics"), Mapping):
        raise ValueError("entry must carry 'metrics'")


def _place_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Re-scoring replaces the model's row in its place; a new model goes last."""
    for i, r in enumerate(rows):
        if r["model"] == row["model"]:
            rows[i] = row
            return
    rows.append(row)


def _update_consistency(tx: _Transaction, path: Path) -> None:
    """The consistency over the rows as they will be committed, from the hit store (reading only new CSVs)."""
    hit_files: dict[str, bytes] = {}
    board = {"dataset": tx.index["dataset"], "entries": tx.index["entries"]}
    tx.index["consistency"] = _jsonable(hitstore.update(path.parent, board, hit_files))
    _write_batch(tx.folder, hit_files)


def _write_batch(folder: WrittenFolder, payloads: Mapping[str, bytes]) -> None:
    """Several files with two saves of the folder's record (it lists every file of the board, so saving it once
    per file would make a record cost grow with the board): files under new names are recorded first, then
    written; files replaced in place (the hit store's state) are written, then recorded."""
    folder.check_replaceable(*payloads)
    new = {rel: p for rel, p in payloads.items() if rel not in folder.files or not (folder.folder / rel).exists()}
    for rel, payload in new.items():
        folder.files[rel] = sha256_bytes(payload)
    if new:
        folder.save()
    for rel, payload in payloads.items():
        target = folder.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, payload)
        folder.files[rel] = sha256_bytes(payload)
    if len(new) < len(payloads):
        folder.save()


def _free_predictions_name(tx: _Transaction, model: str, payload: bytes) -> str:
    """A predictions CSV name for `model` that no committed entry names and no file spurbench did not write
    holds: `predictions/<model>.csv`, else that name with the content's hash (a re-score writes beside the file
    its committed entry names, so a kill before the commit never pairs the old entry with new predictions)."""
    taken = {r.get("predictions") for r in tx.index["entries"]}
    base = predictions_relpath(model, taken - {predictions_relpath(model)})
    tag = sha256_bytes(payload)[:10]
    for rel in (base, f"{base[: -len('.csv')]}-{tag}.csv"):
        if rel in taken:
            continue
        if not (tx.folder.folder / rel).exists() or tx.folder.owns(rel):
            return rel
    raise SpurbenchError(
        f"'{tx.folder.folder / base}' and its alternative are files spurbench did not write; move them away or give "
        "another --leaderboard folder (nothing was written)"
    )


def record_failure(path: str | Path, dataset: Mapping[str, Any], failure: Mapping[str, Any]) -> Board:
    """Record (or replace) `failure` (a `Failure` with at least `model` and `reason`) in one transaction.

    The model's entry, if any, stays. Refuses a dataset other than the board's as `record_entry` does.
    Returns the board without its entries (with `num_entries`).
    """
    path = Path(path)
    new = _jsonable({**failure, "fingerprint": dataset["fingerprint"]})
    with _transaction(path, dataset, new["model"]) as tx:
        tx.index["failures"].append(new)
        tx.folder.check_replaceable(f"{STORE_DIR}/index.json")
        board, stale = tx.prepare_export()
        tx.commit(board, stale)
        return {**_index_head(tx.index), "entries": [], "num_entries": len(tx.index["entries"])}  # type: ignore[return-value]


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


def _not_canonical(entry: Mapping[str, Any], ds: Mapping[str, Any]) -> str | None:
    """Why an entry is not in the canonical group (None: it may be): the rows, preprocessing or precision."""
    rows, m = entry.get("rows") or {}, entry.get("metrics") or {}
    if rows.get("split", ds.get("split")) != ds.get("split"):
        return f"split {rows.get('split')}"
    if rows.get("limit") is not None and (
        ds.get("num_images") is None or rows.get("count", 0) + rows.get("num_excluded", 0) < ds["num_images"]
    ):
        return f"--limit {rows['limit']}: the first {rows.get('count')} rows only"
    if rows.get("include_unverified"):
        return "--include-unverified: images that failed verification scored too"
    if (
        not rows
        and ds.get("num_images") is not None
        and (m.get("num_images") or 0) + (m.get("num_excluded") or 0) < ds["num_images"]
    ):
        return f"{m.get('num_images')} of {ds['num_images']} images (--limit)"
    if (entry.get("preprocessing") or DEFAULT_PREPROCESSING) != DEFAULT_PREPROCESSING:
        return f"{entry.get('preprocessing')} preprocessing"
    if (entry.get("precision") or DEFAULT_PRECISION) != DEFAULT_PRECISION:
        return f"precision {entry.get('precision')}"
    return None


def _consistency_identity(entry: Mapping[str, Any], dataset: Mapping[str, Any]) -> dict[str, Any]:
    """What the consistency figures need to count each model once: the model itself (architecture and weights
    sha256; the entry's name when the weights are not pinned) and whether this entry is its canonical one (all
    rows, default preprocessing and precision; see hub_results)."""
    sha = (entry.get("weights") or {}).get("sha256") if isinstance(entry.get("weights"), Mapping) else None
    arch = entry.get("architecture")
    same = f"{arch}@{sha}" if sha and arch else str(entry.get("model"))
    return {"same_model": same, "canonical": _not_canonical(entry, dataset) is None}


def _consistency_interval(c: Mapping[str, Any], key: str) -> str:
    """ " [lo, hi]" of a consistency figure's recorded interval ("" when none was recorded)."""
    lo, hi = ((c.get("intervals") or {}).get(key) or [None, None])[:2]
    return "" if lo is None or hi is None else f" [{_fmt(lo)}, {_fmt(hi)}]"


def decode_path(entry: Mapping[str, Any]) -> str:
    """The image decode path an entry was computed with (`loop.decode`). Entries without it, or with the old
    default "auto", ran torchvision's decoder and uint8 resize (the default before `pil` became it)."""
    recorded = (entry.get("loop") or {}).get("decode")
    return "torchvision" if recorded in (None, "auto") else str(recorded)


def decode_note(entry: Mapping[str, Any]) -> str:
    """ "" for the default decode, else e.g. "decode: torchvision" (for the md / csv / page beside the entry)."""
    path = decode_path(entry)
    return "" if path == DEFAULT_DECODE else f"decode: {path}"


def comparability_key(entry: Mapping[str, Any], dataset: Mapping[str, Any] | None = None) -> tuple:
    """Everything that must agree for two entries to be computed on the same data, and so be ranked together,
    skipped as already scored and exported to the Hub under one group: the dataset fingerprint (`dataset`:
    the board's block), the split and the identity of the rows scored (`rows`; an entry from before rows were
    recorded falls back to its number of images), the preprocessing, the precision, the positives (source and
    count: the AP is over them), the group column, the class subset the softmax ran over (`--class-subset`: its sha256; None: every class), and on a shift set
    the identity of the reference rows scored with it (`reference_rows`: the paired drop is over them), and the
    decode path (`decode_path`: torchvision's is not bit-equal to timm's PIL transform). The one
    place that decides "same data": add a field here and every use follows."""
    m = entry.get("metrics") or {}
    rows = entry.get("rows") or {}
    ident = rows.get("sha256") or f"count:{m.get('num_images')}"
    positives = (entry.get("positives"), int(m.get("num_positives") or 0)) if entry.get("positives") else None
    return (
        (dataset or {}).get("fingerprint"),
        rows.get("split") or (dataset or {}).get("split"),
        ident,
        str(entry.get("preprocessing") or DEFAULT_PREPROCESSING),
        str(entry.get("precision") or DEFAULT_PRECISION),
        positives,
        m.get("group_by"),
        (entry.get("class_subset") or {}).get("sha256"),
        (entry.get("reference_rows") or {}).get("sha256"),
        decode_path(entry),
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


def _rank(entries: Sequence[Mapping[str, Any]], ranked_by: str) -> list[dict[str, Any]]:
    """Best first by the group's figure (`_ranked_by`): a shift set's by `shift.rank`; `spurious_score_ap`
    descending, else `spurious_rate` ascending (entries without one last). Ties by spurious rate, then by name."""
    if ranked_by == shift.RANKED_BY:
        return shift.rank(entries)

    def key(e: Mapping[str, Any]) -> tuple:
        r = e["metrics"].get("spurious_rate")
        rate = math.inf if r is None else float(r)
        if ranked_by == "spurious_score_ap":
            return (-float(e["metrics"]["spurious_score_ap"]), rate, e["model"])
        return (rate, e["model"])

    return sorted(entries, key=key)  # type: ignore[arg-type]


def comparable_groups(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries split into groups computed on the same data (`comparability_key`), the largest group first
    (ties: the group whose first entry came first), each ranked on its own:
    `[{"id", "key", "preprocessing", "precision", "num_images", "rows", "positives", "description", "ranked_by",
    "entries"}]`."""
    ds = board.get("dataset") or {}
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for e in board["entries"]:  # models that built the set are ranked apart, after the independent ones
        groups.setdefault((comparability_key(e, ds), validity.apart(e)), []).append(e)
    out = []
    for i, ((key, built), members) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][1], -len(kv[1])))):
        first, ranked_by = members[0], _ranked_by(members)
        prep, precision, positives = key[3], key[4], key[5]
        text = (f"{validity.APART_NOTE}, " if built else "") + f"{prep} preprocessing, {describe_rows(first, ds)}"
        if precision != DEFAULT_PRECISION:
            text += f", {precision}"
        if positives:
            text += f", positives {positives[0]} ({_fmt(positives[1])} images)"
        if key[7]:
            text += f", softmax over class subset {(first.get('class_subset') or {}).get('name')}"
        if decode_note(first):  # not timm's PIL transform: said wherever the group is named (md, csv, page)
            text += f", {decode_note(first)}"
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
                "ranked_by": ranked_by,
                "entries": _rank(members, ranked_by),
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
        lines += _markdown_group(g, len(groups) > 1)
    lines.append(uncertainty.method_note(board["entries"]))
    lines += validity.control_markdown(board["entries"])  # the lift over the control split, when scored
    lines += validity.transfer_markdown(board["entries"])  # a mined set: held-out models' transfer
    if board.get("consistency"):
        lines += _markdown_consistency(board["consistency"], board_kind(board) == "shift")
    return "\n".join(lines) + "\n"


#: how a group is ranked, in the md's words
_RANKING_NOTES = {
    shift.RANKED_BY: shift.RANKING_NOTE,
    "spurious_score_ap": "Ranked by spurious score AP (higher = less reliance on spurious features).",
    "spurious_rate": "Ranked by spurious rate (macro top-1; lower = fooled less often).",
}


def _markdown_group(g: Mapping[str, Any], several: bool) -> list[str]:
    """One comparable group: its heading (when there are several), how it is ranked, its table."""
    lines = [f"### Group {g['id']}: {g['description']} ({len(g['entries'])} model(s))", ""] if several else []
    is_shift = g["ranked_by"] == shift.RANKED_BY
    return [*lines, _RANKING_NOTES[g["ranked_by"]], "", *_ranking_table(shown_with_intervals(g), is_shift), ""]


def _markdown_consistency(c: Mapping[str, Any], is_shift: bool) -> list[str]:
    """The consistency summary: the four figures (with their intervals), the pairwise kappas, the notes."""
    n_models = len(c.get("models") or [])
    half = math.ceil(n_models / 2)
    failed = "wrong" if is_shift else "fooled"  # a shift set's failure is a wrong prediction
    figures = ("all_fooled_rate", "at_least_half_rate", "mean_pairwise_kappa", "fleiss_kappa")
    lines = [
        "",
        f"## Consistency across {n_models} classifier(s), {_fmt(c.get('num_images'))} images",
        "",
        f"| all {failed} | at least half (>= {half} of {n_models}) | mean pairwise Cohen's kappa | Fleiss' kappa |",
        "|---:|---:|---:|---:|",
        "| " + " | ".join(_fmt(c.get(k)) + _consistency_interval(c, k) for k in figures) + " |",
    ]
    if c.get("intervals"):
        lines += [
            "",
            "Intervals: 95 % percentile bootstrap over classes (1,000 resamples, seed 0) on the images every "
            "model scored; each model is counted once (its canonical entry).",
        ]
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
    return lines


def rank_intervals_of(group: Mapping[str, Any]) -> list[tuple[int, int]] | None:
    """The 95 % rank interval of each entry of a comparability group (`comparable_groups`), in its order; None
    when its entries do not all carry paired replicates of the ranked metric."""
    metric = group["ranked_by"]
    return uncertainty.group_rank_intervals(group["entries"], metric, higher_is_better=metric != "spurious_rate")


def with_interval(entry: Mapping[str, Any], metric: str, digits: int = 3) -> str:
    """ "0.300 [0.250, 0.350]": a headline figure with its recorded interval ("[n/a]" without one)."""
    value = (entry.get("metrics") or {}).get(metric)
    if value is None:
        return "n/a"
    ci = uncertainty.entry_interval(entry, metric)
    return f"{_fmt(value, digits)} " + (f"[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else "[n/a]")


def shown_with_intervals(group: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Copies of a group's entries for the md tables: headline figures as text with their intervals, and
    `rank_interval` ("1-3": the 95 % rank interval, "n/a" without paired replicates)."""
    ranks = rank_intervals_of(group)
    out = []
    for i, e in enumerate(group["entries"]):
        m = dict(e["metrics"])
        for k in uncertainty.SPURIOUS_HEADLINE + uncertainty.SHIFT_HEADLINE:
            if m.get(k) is not None:
                m[k] = with_interval(e, k)
        out.append({**e, "metrics": m, "rank_interval": f"{ranks[i][0]}-{ranks[i][1]}" if ranks else "n/a"})
    return out


#: the headline columns of a spurious set's md ranking table, under these titles
_SPURIOUS_CELLS = (
    "spurious_rate",
    "spurious_rate_micro",
    "spurious_rate_top5",
    "mean_target_prob",
    "spurious_score_ap",
    "spurious_score_auroc",
)
_SPURIOUS_TITLES = "spurious rate | micro | top-5 | mean p_k | AP | AUROC"


def _ranking_table(entries: Sequence[Mapping[str, Any]], is_shift: bool) -> list[str]:
    """The md ranking table of one group (a shift set's headline columns from `shift`)."""
    titles = shift.TABLE_TITLES if is_shift else _SPURIOUS_TITLES
    lines = [
        f"| rank | model | {titles} | images | params | img/s | preprocessing | 95 % rank |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for rank, e in enumerate(entries, 1):
        m = e["metrics"]
        headline = shift.table_cells(e, _fmt) if is_shift else [_fmt(m.get(k)) for k in _SPURIOUS_CELLS]
        cells = [
            str(rank),
            _fmt(e["model"] + validity.mark(e)),
            *headline,
            _fmt(m.get("num_images")),
            _fmt(e.get("num_params")),
            _fmt(e.get("images_per_second"), 1),
            _fmt(e.get("preprocessing", "timm")),
            str(e.get("rank_interval", "n/a")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
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


# --------------------------------------------------------------------------------------------------
# paired comparison of two entries (`spurbench leaderboard --compare A B`)
# --------------------------------------------------------------------------------------------------


def find_entry(board: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The entry named `name` (exactly, else the one whose name contains it, case-insensitively); one line naming
    the choices when none or several match."""
    entries = board["entries"]
    exact = [e for e in entries if e["model"] == name]
    found = exact or [e for e in entries if name.lower() in e["model"].lower()]
    if len(found) == 1:
        return found[0]
    names = [e["model"] for e in (found or entries)]
    shown = ", ".join(printable(n) for n in names[:20]) + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")
    if found:
        raise SpurbenchError(f"--compare {printable(name)!r} matches {len(found)} entries: {shown}; give the full name")
    raise SpurbenchError(f"--compare {printable(name)!r}: no such entry on the board; its entries are {shown}")


def _read_hits(path: Path, e: Mapping[str, Any]) -> dict[str, np.ndarray]:
    rel = e.get("predictions")
    if not rel:
        raise SpurbenchError(f"entry {printable(e['model'])!r} has no predictions file; re-run `spurbench eval` for it")
    return predictions_csv.read_predictions(inside(path.parent, rel, f"leaderboard '{path}'"))


#: the per-image columns a spurious entry's paired intervals are recomputed from
_HITS = ("fooled_top1", "fooled_top5", "target_prob")


def compare(path: str | Path, board: Mapping[str, Any], name_a: str, name_b: str) -> str:
    """Two entries on the rows both scored: each headline figure's difference (A - B) with its paired-bootstrap
    95 % interval (the same resamples for both), and an exact McNemar test on their per-image top-1 hits."""
    a, b = find_entry(board, name_a), find_entry(board, name_b)
    if a is b:
        raise SpurbenchError(f"--compare names {printable(a['model'])!r} twice; name two different entries")
    path = Path(path)
    pa, pb = _read_hits(path, a), _read_hits(path, b)
    shared, ia, ib = np.intersect1d(pa["index"], pb["index"], return_indices=True)
    if not shared.size:
        raise SpurbenchError(f"{printable(a['model'])!r} and {printable(b['model'])!r} share no scored rows")
    kind = board_kind(board)
    headline = uncertainty.SHIFT_HEADLINE if kind == "shift" else uncertainty.SPURIOUS_HEADLINE
    rows: list[tuple[str, Any, Any, np.ndarray | None]] = []
    same_rows = shared.size == pa["index"].size == pb["index"].size
    if same_rows and uncertainty.same_resamples([a, b]):  # recorded replicates drawn from the same unit counts
        block = a["uncertainty"]
        how = f"{block['resamples']} paired resamples of {block['unit']}, seed {block['seed']}"
        for k in headline:
            ra, rb = uncertainty.entry_replicates(a, k), uncertainty.entry_replicates(b, k)
            rows.append((k, a["metrics"].get(k), b["metrics"].get(k), None if ra is None or rb is None else ra - rb))
    elif kind != "shift" and all(c in p for p in (pa, pb) for c in _HITS):
        method = uncertainty.Method(unit="class")  # recomputed on the shared rows, classes resampled alike
        how = f"{method.resamples} paired resamples of classes over the shared rows, seed {method.seed}"
        labels = pa["label"][ia]
        reps_a, reps_b = (
            uncertainty.spurious_replicates(labels, *(p[c][i] for c in _HITS), method=method)[1]
            for p, i in ((pa, ia), (pb, ib))
        )
        ea, eb = metrics_on(labels, pa, ia), metrics_on(labels, pb, ib)
        rows += [(k, ea[k], eb[k], reps_a[k] - reps_b[k]) for k in headline if k in ea]
    else:
        how = "no paired intervals: the entries scored different rows (or one predates intervals)"
    test = uncertainty.mcnemar_exact(pa["fooled_top1"][ia], pb["fooled_top1"][ib])
    na, nb = printable(a["model"]), printable(b["model"])
    lines = [f"{na} (A) vs {nb} (B) on {shared.size:,} shared images; {how}", ""]
    lines.append(f"{'metric':<28} {'A':>8} {'B':>8} {'A - B':>8}  95 % interval of A - B")
    for k, va, vb, diff in rows:
        if va is None or vb is None:
            continue
        lo, hi = uncertainty.percentile_interval(diff) if diff is not None else (None, None)
        ci = f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None else "n/a"
        lines.append(f"{k:<28} {va:>8.3f} {vb:>8.3f} {va - vb:>+8.3f}  {ci}")
    hit = "right (top-1 = label)" if kind == "shift" else "fooled (top-1 = label)"
    lines += [
        "",
        f"exact McNemar test on per-image top-1 hits ({hit}): only A {test['only_a']}, only B {test['only_b']}, "
        f"p = {test['p_value']:.4g}",
    ]
    return "\n".join(lines) + "\n"


def metrics_on(labels: np.ndarray, p: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    """A spurious entry's rate figures recomputed on some of its rows (`rows` into its predictions arrays)."""
    from spurbench.evaluate import metrics

    hit1, hit5, prob = p["fooled_top1"][rows], p["fooled_top5"][rows], p["target_prob"][rows]
    top = np.where(hit1, labels, -1)[:, None] * np.ones(5, np.int64)
    top[:, 1] = np.where(hit5 & ~hit1, labels, -2)  # only whether the label is in the top 5 matters here
    r = metrics.spurious_rates(labels, top, prob)
    return {
        "spurious_rate": r["macro"]["spurious_rate"],
        "spurious_rate_micro": r["micro"]["spurious_rate"],
        "spurious_rate_top5": r["macro"]["spurious_rate_top5"],
        "spurious_rate_top5_micro": r["micro"]["spurious_rate_top5"],
        "mean_target_prob": r["macro"]["mean_target_prob"],
    }
