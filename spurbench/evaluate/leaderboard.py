"""The leaderboard store: its typed schema, reading and recording entries, consistency and ranking.
`spurbench.evaluate.report` (the `spurbench leaderboard` command) prints or renders it.

A leaderboard is one JSON file per dataset (default `leaderboard/leaderboard.json`) that
`spurbench eval --leaderboard FILE` creates and updates: one entry per classifier, plus the
cross-classifier consistency of the whole panel, recomputed from the per-image predictions that
`spurbench eval` writes next to it (`predictions/<model>.csv`), through the compact per-model store
in `spurbench.evaluate.hitstore` (`hits/`), so recording an entry reads only the new model's CSV.
Ranking: by spurious score AP (higher is better) when every entry has one, else by spurious rate
(lower is better).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypedDict

import numpy as np

from spurbench.errors import SpurbenchError
from spurbench.evaluate import hitstore, shift

#: version of the JSON layout below; a file with another version is refused, never rewritten
SCHEMA_VERSION = 1
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
    if version != SCHEMA_VERSION:
        raise _invalid(path, f"has schema_version {version!r}, this spurbench reads {SCHEMA_VERSION}")
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


def load_leaderboard(path: str | Path) -> Board:
    """Read and check a leaderboard file. A missing file is an empty board.

    Raises SpurbenchError (naming the file, saying it was left untouched) for unreadable or corrupt JSON
    and for a schema_version other than SCHEMA_VERSION.
    """
    path = Path(path)
    text = _read_text(path)
    return empty_board() if text is None else _parse(text, path)


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


def _entry_lines(text: str, entries: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """{id(entry): its JSON text} from a file `dumps_board` wrote (one entry per line), so unchanged
    entries are written back as they were instead of being encoded again; {} for any other layout."""
    lines = text.split("\n")
    try:
        start = lines.index('  "entries": [') + 1
    except ValueError:
        return {}
    chunk, end = lines[start : start + len(entries)], start + len(entries)
    if len(chunk) != len(entries) or end >= len(lines) or lines[end] not in ("  ],", "  ]"):
        return {}
    chunk = [line[4:-1] if i < len(chunk) - 1 else line[4:] for i, line in enumerate(chunk)]
    if not all(c.startswith("{") and c.endswith("}") for c in chunk):
        return {}
    return {id(e): c for e, c in zip(entries, chunk)}


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
            text = "[\n" + ",\n".join("    " + (known.get(id(e)) or json.dumps(e, allow_nan=False)) for e in value) + "\n  ]"
        else:
            text = json.dumps(value, indent=2, allow_nan=False).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def record_entry(path: str | Path, dataset: Mapping[str, Any], entry: Mapping[str, Any]) -> Board:
    """Add `entry` to the leaderboard at `path` (created if missing), or replace the entry of the same model.

    Under an exclusive `filelock.FileLock` on `<path>.lock` it re-reads the file, refuses a dataset whose
    fingerprint differs from the board's, replaces or appends the entry, updates `consistency` through the
    store (`hitstore`: only new or changed predictions CSVs are read), and writes `<path>.tmp-<pid>` then
    `os.replace`s it over `path`.
    Returns the board as written. Raises SpurbenchError (nothing written) on a fingerprint mismatch or a
    corrupt / other-version file.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    if not isinstance(dataset.get("fingerprint"), str) or not dataset["fingerprint"]:
        raise ValueError("dataset must carry its 'fingerprint'")
    if not isinstance(entry.get("model"), str) or not entry["model"]:
        raise ValueError("entry must carry a 'model' name")
    if not isinstance(entry.get("metrics"), Mapping):
        raise ValueError("entry must carry 'metrics'")
    new_entry = _jsonable(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            text = _read_text(path)
            board = empty_board() if text is None else _parse(text, path)
            known = _entry_lines(text, board["entries"]) if text else {}
            held = board["dataset"]
            # a board without entries has nothing to protect: it takes the new dataset
            if held is not None and board["entries"] and held.get("fingerprint") != dataset["fingerprint"]:
                raise SpurbenchError(
                    f"leaderboard '{path}' holds dataset {held.get('id')!r} (fingerprint {str(held.get('fingerprint'))[:12]}...); "
                    f"use another --leaderboard file for dataset {dataset.get('id')!r} (fingerprint {dataset['fingerprint'][:12]}...)"
                )
            if held is None or not board["entries"]:
                board["dataset"] = _jsonable(dataset)
            board["failures"] = [f for f in board["failures"]
                                 if f.get("model") != new_entry["model"] and f.get("fingerprint") == dataset["fingerprint"]]
            entries = board["entries"]
            for i, e in enumerate(entries):
                if e["model"] == new_entry["model"]:
                    entries[i] = new_entry  # keep its place: re-scoring replaces
                    break
            else:
                entries.append(new_entry)
            board["consistency"] = _jsonable(hitstore.update(path.parent, board))
            _write_atomic(path, dumps_board(board, known))
            return board
    except Timeout:
        raise SpurbenchError(
            f"another process has held '{path}.lock' for {LOCK_TIMEOUT_S:.0f} s; wait for it to finish and re-run"
        ) from None


def record_failure(path: str | Path, dataset: Mapping[str, Any], failure: Mapping[str, Any]) -> Board:
    """Record (or replace) `failure` (a `Failure` with at least `model` and `reason`) under the board's lock.

    The model's entry, if any, stays. Refuses a dataset other than the board's as `record_entry` does.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = _jsonable({**failure, "fingerprint": dataset["fingerprint"]})
    try:
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            board = load_leaderboard(path)
            held = board["dataset"]
            if held is not None and board["entries"] and held.get("fingerprint") != dataset["fingerprint"]:
                raise SpurbenchError(
                    f"leaderboard '{path}' holds dataset {held.get('id')!r}; use another --leaderboard file for dataset {dataset.get('id')!r}"
                )
            if not board["entries"]:
                board["dataset"] = _jsonable(dataset)
            board["failures"] = [f for f in board["failures"] if f.get("model") != new["model"] and f.get("fingerprint") == dataset["fingerprint"]]
            board["failures"].append(new)
            _write_atomic(path, dumps_board(board))
            return board
    except Timeout:
        raise SpurbenchError(f"another process has held '{path}.lock' for {LOCK_TIMEOUT_S:.0f} s; wait for it to finish and re-run") from None


def already_scored(board: Mapping[str, Any], model: str, *, fingerprint: str, preprocessing: str, precision: str, num_images: int,
                   positives: str | None) -> bool:
    """Whether `board` holds an entry for `model` scored on the same data (fingerprint, number of images,
    positives) with the same preprocessing and precision: what a resumed sweep skips."""
    held = board.get("dataset") or {}
    if held.get("fingerprint") != fingerprint:
        return False
    for e in board.get("entries", []):
        if e.get("model") == model:
            return (e.get("preprocessing", "timm") == preprocessing and e.get("precision", "float32") == precision
                    and (e.get("metrics") or {}).get("num_images") == num_images and e.get("positives") == positives)
    return False


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


def comparable_key(entry: Mapping[str, Any]) -> tuple[str, int | None]:
    """What must agree for two entries to be ranked against each other: the preprocessing and the
    images scored (`--limit` scores the first N of the split, so the count identifies the subset)."""
    return str(entry.get("preprocessing") or "timm"), entry["metrics"].get("num_images")


def comparable_groups(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries split into groups that were scored alike (`comparable_key`), the largest group first
    (ties: the group whose first entry came first), each ranked on its own:
    `[{"id", "preprocessing", "num_images", "description", "ranked_by", "entries"}]`."""
    groups: dict[tuple[str, int | None], list[Mapping[str, Any]]] = {}
    for e in board["entries"]:
        groups.setdefault(comparable_key(e), []).append(e)
    total = (board.get("dataset") or {}).get("num_images")
    out = []
    for i, ((prep, n), members) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
        if n is None or total is None or n == total:
            images = f"all {_fmt(n)} images" if n is not None else "an unknown number of images"
        else:
            images = f"the first {_fmt(n)} of {_fmt(total)} images (--limit)"
        out.append({
            "id": i + 1, "preprocessing": prep, "num_images": n, "description": f"{prep} preprocessing, {images}",
            "ranked_by": _ranked_by(members), "entries": _rank(members),
        })
    return out


def _ranked_by(entries: Sequence[Mapping[str, Any]]) -> str:
    if shift.is_shift_entries(entries):
        return shift.RANKED_BY
    return "spurious_score_ap" if _by_score(entries) else "spurious_rate"


def ranked_entries(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries best first within each comparable group (`comparable_groups`), the groups one after the other."""
    return [e for g in comparable_groups(board) for e in g["entries"]]


GROUPS_NOTE = ("Entries scored on different images (`--limit`) or with different preprocessing are not ranked against "
               "each other: each group below is ranked on its own.")


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
            shift.RANKING_NOTE if g["ranked_by"] == shift.RANKED_BY
            else "Ranked by spurious score AP (higher = less reliance on spurious features)."
            if g["ranked_by"] == "spurious_score_ap"
            else "Ranked by spurious rate (macro top-1; lower = fooled less often)."
        )
        lines.append("")
        lines += shift.ranking_table(g["entries"], _fmt) if g["ranked_by"] == shift.RANKED_BY else _ranking_table(g["entries"])
        lines.append("")
    lines.pop()
    c = board.get("consistency")
    is_shift = board_kind(board) == "shift"
    if c:
        n_models = len(c.get("models") or [])
        half = math.ceil(n_models / 2)
        lines += ["", f"## Consistency across {n_models} classifier(s), {_fmt(c.get('num_images'))} images", ""]
        failed = "wrong" if is_shift else "fooled"  # a shift set's failure is a wrong prediction
        lines.append(f"| all {failed} | at least half (>= {half} of {n_models}) | mean pairwise Cohen's kappa | Fleiss' kappa |")
        lines.append("|---:|---:|---:|---:|")
        lines.append("| " + " | ".join(_fmt(c.get(k)) for k in ("all_fooled_rate", "at_least_half_rate", "mean_pairwise_kappa", "fleiss_kappa")) + " |")
        if c.get("pairwise_kappa"):
            lines += ["", "| pair | Cohen's kappa |", "|---|---:|"]
            lines += [f"| {_fmt(pair)} | {_fmt(k)} |" for pair, k in c["pairwise_kappa"].items()]
        lines.append("")
        lines.append("Kappa is n/a where it is undefined (every rating the same). "
                     + (shift.CONSISTENCY_NOTE if is_shift else "Fooled = top-1 is the image's label."))
        if c.get("note"):
            lines += ["", f"Note: {c['note']}."]
        for model, why in (c.get("excluded") or {}).items():
            lines += ["", f"Left out of the consistency: {_fmt(model)}: {why}"]
    return "\n".join(lines) + "\n"


def _ranking_table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| rank | model | spurious rate | micro | top-5 | mean p_k | AP | AUROC | images | params | img/s | preprocessing |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for rank, e in enumerate(entries, 1):
        m = e["metrics"]
        lines.append("| " + " | ".join([
            str(rank), _fmt(e["model"]), _fmt(m.get("spurious_rate")), _fmt(m.get("spurious_rate_micro")),
            _fmt(m.get("spurious_rate_top5")), _fmt(m.get("mean_target_prob")), _fmt(m.get("spurious_score_ap")),
            _fmt(m.get("spurious_score_auroc")), _fmt(m.get("num_images")), _fmt(e.get("num_params")),
            _fmt(e.get("images_per_second"), 1), _fmt(e.get("preprocessing", "timm")),
        ]) + " |")
    return lines


def to_ranked_json(board: Mapping[str, Any]) -> dict[str, Any]:
    """The board with its entries ranked within comparable groups: each entry with a 1-based `rank` in
    its group and the group's `group` id; `groups` describes them (and says why there are several);
    `ranked_by` is the first (largest) group's."""
    out = dict(board)
    groups = comparable_groups(board)
    out["ranked_by"] = groups[0]["ranked_by"] if groups else (shift.RANKED_BY if board_kind(board) == "shift" else "spurious_rate")
    out["groups"] = [{k: v for k, v in g.items() if k != "entries"} | {"models": [e["model"] for e in g["entries"]]} for g in groups]
    out["groups_note"] = GROUPS_NOTE if len(groups) > 1 else None
    out["entries"] = [{"rank": i, "group": g["id"], **e} for g in groups for i, e in enumerate(g["entries"], 1)]
    return out
