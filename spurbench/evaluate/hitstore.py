"""The compact store behind the leaderboard's consistency: per-image hit flags per model, and the
panel's consistency kept up to date incrementally.

Recording an entry used to re-read every entry's predictions CSV (a 1,000-model sweep: ~500,000 CSV
reads). Now, next to the leaderboard:

- `hits/<predictions file stem>.npy`, one per model: int8 by image index over the whole split,
  1 = hit (top-1 is the image's label), 0 = miss, -1 = not scored (`--limit`). Written once, when
  the model's CSV is read; the CSVs stay the human-readable record and the source of truth.
- `hits/state.npz`: the panel as packed bit matrices (failure and scored flags, one row per model),
  the labels, the per-image failure counts, the pairwise Cohen's kappa matrix and per-class kappa
  sums, and for each model the size and modification time of the CSV it came from.

On each `record_entry` only the CSVs whose size or time changed (normally just the new model's) are
read; appending a model adds one row and its kappas against the others (O(models x images)
vectorised work, no other file reads). Measured (`benchmarks/leaderboard_scale.py`, 7,500 images):
the store's part of recording entry 1,001 is about 4x that of entry 11 (0.3 s against 0.08 s) where
re-reading every CSV took ~25 s. Re-scoring a model, removing one, or a model that shrinks the
set of images every model scored (`--limit`) rebuilds the kappas from the packed rows (still no CSV
reads beyond the changed ones).

"Failure" per image: on a `spurious` set a hit (the model was fooled), on a `shift` set a miss (the
model got it wrong); the store keeps hits either way (see TEAM agreement; `failures`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from spurbench.evaluate import metrics

HITS_DIR = "hits"
STATE_FILE = f"{HITS_DIR}/state.npz"
STATE_VERSION = 1
#: above this many models the per-pair kappas stay in hits/state.npz, not in the JSON (m(m-1)/2 pairs)
PAIRWISE_IN_JSON = 32


def hits_relpath(predictions_relpath: str) -> str:
    """The hit-flags file of a model, from its predictions CSV path (same stem)."""
    return f"{HITS_DIR}/{Path(predictions_relpath).stem}.npy"


def failures(hits: np.ndarray, kind: str = "spurious") -> np.ndarray:
    """bool failure flags from int8 hits (-1 not scored): a hit on a spurious set, a miss on a shift set."""
    return hits == 1 if kind != "shift" else hits == 0


@dataclass
class _Model:
    name: str
    csv: str
    sig: list[int]  # [size, mtime_ns] of the CSV the row came from
    hits: np.ndarray  # int8[N]


@dataclass
class _State:
    fingerprint: str = ""
    kind: str = "spurious"
    num_images: int = 0
    models: list[_Model] = field(default_factory=list)
    excluded: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> {reason, csv, sig}
    labels: np.ndarray | None = None  # int64[N], -1 unknown
    kappa: np.ndarray | None = None  # float64[m, m], NaN undefined / diagonal
    class_sums: dict[int, list[float]] = field(default_factory=dict)  # class -> [sum of defined kappas, count]
    common_count: int = -1  # images scored by every model when the kappas were computed


# ----------------------------------------------------------------------------------------- kappa kernel


def _class_segments(labels: np.ndarray, common: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image indices of the common set sorted by class, start of each class's run, the classes)."""
    idx = np.flatnonzero(common)
    order = idx[np.argsort(labels[idx], kind="stable")]
    classes, starts = np.unique(labels[order], return_index=True)
    return order, starts, classes


def _kappas_from_counts(n: np.ndarray, a: np.ndarray, b: np.ndarray, n11: np.ndarray) -> np.ndarray:
    """Cohen's kappa of two binary raters from counts (as `metrics.cohen_kappa`), NaN where undefined."""
    n, a, b, n11 = (np.asarray(x, dtype=np.float64) for x in (n, a, b, n11))
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = a / n, b / n
        pe = pa * pb + (1 - pa) * (1 - pb)
        po = (n - a - b + 2 * n11) / n
        k = (po - pe) / (1 - pe)
    undefined = (n == 0) | ((a == n) & (b == n)) | ((a == 0) & (b == 0))
    return np.where(undefined, np.nan, k)


def _pair_kappas(others: np.ndarray, new: np.ndarray, segments) -> tuple[np.ndarray, np.ndarray]:
    """Kappas of `new` (bool[n]) against each row of `others` (bool[r, n]) over the common images:
    (overall float[r], per class float[r, K]). O(r x n) vectorised, the only per-append work."""
    order, starts, _ = segments
    x, y = others[:, order], new[order]
    both = x & y
    per = lambda v: np.add.reduceat(v, starts, axis=-1, dtype=np.int64) if v.shape[-1] else np.zeros(v.shape[:-1] + (0,), np.int64)  # noqa: E731
    a_k, b_k, n11_k = per(x), per(y), per(both)
    n_k = np.diff(np.append(starts, len(order)))
    overall = _kappas_from_counts(len(order), a_k.sum(-1), b_k.sum(), n11_k.sum(-1))
    return overall, _kappas_from_counts(n_k, a_k, b_k, n11_k)


# ----------------------------------------------------------------------------------------- state file


def _load_state(root: Path, fingerprint: str, kind: str, num_images: int) -> _State:
    path = root / STATE_FILE
    fresh = _State(fingerprint=fingerprint, kind=kind, num_images=num_images)
    if not path.is_file():
        return fresh
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if (meta.get("version"), meta.get("fingerprint"), meta.get("kind"), meta.get("num_images")) != (
                STATE_VERSION, fingerprint, kind, num_images):
                return fresh
            m = len(meta["models"])
            fail_bits, scored_bits = z["hits_bits"], z["scored_bits"]
            hit = np.unpackbits(fail_bits, axis=1, count=num_images) if m else np.zeros((0, num_images), np.uint8)
            scored = np.unpackbits(scored_bits, axis=1, count=num_images) if m else np.zeros((0, num_images), np.uint8)
            rows = np.where(scored.astype(bool), hit.astype(np.int8), np.int8(-1))  # one pass for all models
            models = [_Model(d["model"], d["csv"], list(d["sig"]), rows[j]) for j, d in enumerate(meta["models"])]
            return _State(fingerprint, kind, num_images, models, meta["excluded"], z["labels"].astype(np.int64),
                          z["kappa"].astype(np.float64).reshape(m, m), {int(k): v for k, v in meta["class_sums"].items()},
                          int(meta["common_count"]))
    except Exception:  # unreadable / older layout: rebuilt from the CSVs, never fatal
        return fresh


def _save_state(root: Path, st: _State) -> None:
    path = root / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    hits = np.stack([m.hits for m in st.models]) if st.models else np.zeros((0, st.num_images), np.int8)
    meta = {
        "version": STATE_VERSION, "fingerprint": st.fingerprint, "kind": st.kind, "num_images": st.num_images,
        "models": [{"model": m.name, "csv": m.csv, "sig": m.sig} for m in st.models], "excluded": st.excluded,
        "class_sums": {str(k): v for k, v in st.class_sums.items()}, "common_count": st.common_count,
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), labels=st.labels if st.labels is not None else np.full(st.num_images, -1),
                     hits_bits=np.packbits(hits == 1, axis=1), scored_bits=np.packbits(hits >= 0, axis=1),
                     kappa=st.kappa if st.kappa is not None else np.zeros((0, 0)))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------- update


def _sig(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _hits_from_csv(path: Path, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 hits[N] with -1 = not scored, int64 labels[N] with -1 = unknown) from a predictions CSV."""
    from spurbench.errors import SpurbenchError
    from spurbench.evaluate import predictions_csv

    p = predictions_csv.read_predictions(path, optional=())
    idx = p["index"]
    if len(np.unique(idx)) != len(idx):
        raise SpurbenchError(f"predictions file '{path}' repeats an image index")
    if len(idx) and (idx.min() < 0 or idx.max() >= num_images):
        raise SpurbenchError(f"predictions file '{path}' has image index {int(idx.max())} outside the split's {num_images} images (stale file?)")
    hits = np.full(num_images, -1, np.int8)
    labels = np.full(num_images, -1, np.int64)
    hits[idx] = p["fooled_top1"].astype(np.int8)
    labels[idx] = p["label"]
    return hits, labels


def _write_hits(root: Path, csv_rel: str, hits: np.ndarray) -> None:
    path = root / hits_relpath(csv_rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, hits)
    os.replace(tmp, path)


def _labels_of(models: Sequence[_Model], known: np.ndarray, n_img: int) -> np.ndarray:
    """The labels of the images these (store-held) models scored, from the store's labels."""
    labels = np.full(n_img, -1, np.int64)
    for m in models:
        labels = np.where(m.hits >= 0, known, labels)
    return labels


def update(root: str | Path, board: Mapping[str, Any]) -> dict[str, Any]:
    """Bring the store at `root` in line with `board`'s entries and return its `consistency` block.

    Reads only the predictions CSVs that are new or changed since the store last saw them."""
    from spurbench.errors import SpurbenchError

    root = Path(root)
    ds = board.get("dataset") or {}
    n_img = int(ds.get("num_images") or 0)
    kind = str((ds.get("provenance") or {}).get("kind", "spurious"))
    old = _load_state(root, str(ds.get("fingerprint")), kind, n_img)
    known = {m.name: m for m in old.models}
    models: list[_Model] = []
    # while the entries start with the store's models, unchanged and in order, their labels are old.labels
    prefix_ok = old.labels is not None and old.kappa is not None
    labels = old.labels.copy() if prefix_ok else np.full(n_img, -1, np.int64)
    excluded: dict[str, dict[str, Any]] = {}
    csv_owner: dict[str, str] = {}
    for e in board["entries"]:
        name, rel = e["model"], e.get("predictions")
        if not rel:
            excluded[name] = {"reason": "entry names no predictions file"}
            continue
        if rel in csv_owner:
            excluded[name] = {"reason": f"its predictions file '{rel}' is also {csv_owner[rel]}'s (model names whose file names "
                                        f"collide); re-run `spurbench eval` for {name} to give it its own file"}
            continue
        csv_owner[rel] = name
        sig = _sig(root / rel)
        prev, prev_ex = known.get(name), old.excluded.get(name)
        reuse = prev is not None and prev.csv == rel and prev.sig == sig
        if not reuse and prev_ex is not None and prev_ex.get("csv") == rel and prev_ex.get("sig") == sig and sig is not None:
            excluded[name] = prev_ex
            continue
        if prefix_ok and reuse and len(models) < len(old.models) and old.models[len(models)] is prev:
            models.append(prev)  # unchanged and in its place: its labels are in old.labels already
            continue
        if prefix_ok and len(models) < len(old.models):
            prefix_ok = False  # the entries leave the store's order here: labels model by model from now on
            labels = _labels_of(models, old.labels, n_img)
        if reuse:
            hits, row_labels = prev.hits, np.where(prev.hits >= 0, old.labels, -1)
        else:
            try:
                hits, row_labels = _hits_from_csv(root / rel, n_img)
            except SpurbenchError as err:
                excluded[name] = {"reason": str(err), "csv": rel, "sig": sig}
                continue
            _write_hits(root, rel, hits)
        if row_labels is not None:
            shared = (row_labels >= 0) & (labels >= 0)
            if (row_labels[shared] != labels[shared]).any():
                ref = models[0].name if models else "the others"
                excluded[name] = {"reason": f"its labels disagree with {ref}'s on the same images (stale predictions file?)", "csv": rel, "sig": sig}
                continue
            labels = np.where(labels >= 0, labels, row_labels)
        models.append(_Model(name, rel, sig, hits))

    if prefix_ok and len(models) < len(old.models):  # models removed at the end: drop their labels
        labels = _labels_of(models, old.labels, n_img)
    st = _State(old.fingerprint, kind, n_img, models, excluded, labels)
    scored = np.stack([m.hits >= 0 for m in models]) if models else np.zeros((0, n_img), bool)
    common = scored.all(axis=0) if models else np.zeros(n_img, bool)
    old_names = [m.name for m in old.models]
    unchanged_prefix = (
        old.kappa is not None and len(models) >= len(old.models) and old.common_count == int(common.sum())
        and [m.name for m in models[: len(old.models)]] == old_names
        and all(a.hits is b.hits for a, b in zip(models, old.models))
    )
    if unchanged_prefix:  # the usual case: models appended at the end
        st.kappa, st.class_sums, start = old.kappa, dict(old.class_sums), len(old.models)
    else:
        st.kappa, st.class_sums, start = np.zeros((0, 0)), {}, 0
    st.common_count = int(common.sum())
    fail = np.stack([failures(m.hits, kind) for m in models]) if models else np.zeros((0, n_img), bool)
    segments = _class_segments(labels, common)
    per_class_pairs: list[np.ndarray] = []  # only for the JSON of small panels
    small = len(models) <= PAIRWISE_IN_JSON
    for j in range(len(models)):
        if j < start and not small:
            continue
        overall, per = _pair_kappas(fail[:j], fail[j], segments)
        if small:
            per_class_pairs.append(per)
        if j < start:
            continue
        m = st.kappa.shape[0]
        grown = np.full((m + 1, m + 1), np.nan)
        grown[:m, :m] = st.kappa
        grown[m, :m] = grown[:m, m] = overall
        st.kappa = grown
        for k, col in zip(segments[2], per.T):
            s = st.class_sums.setdefault(int(k), [0.0, 0])
            defined = col[~np.isnan(col)]
            s[0] += float(defined.sum())
            s[1] += int(defined.size)
    _save_state(root, st)
    return _consistency_json(st, fail, scored, common, segments, per_class_pairs if small else None)


def _block(votes: np.ndarray, m: int) -> dict[str, Any]:
    n = votes.size
    half = math.ceil(m / 2)
    return {
        "num_images": int(n),
        "all_fooled_rate": float((votes == m).mean()) if n else None,
        "at_least_half_rate": float((votes >= half).mean()) if n else None,
        "fleiss_kappa": metrics.fleiss_kappa(np.stack([votes, m - votes], axis=1)) if n else None,
    }


def _pairs_dict(names: Sequence[str], values: Sequence[np.ndarray]) -> dict[str, float | None]:
    """{"a vs b": kappa} in the order metrics.consistency uses (a earlier than b); values[j] = row j's kappas vs 0..j-1."""
    out: dict[str, float | None] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            v = values[j][i]
            out[f"{names[i]} vs {names[j]}"] = None if np.isnan(v) else float(v)
    return out


def _consistency_json(st: _State, fail: np.ndarray, scored: np.ndarray, common: np.ndarray, segments, per_class_pairs) -> dict[str, Any]:
    names = [m.name for m in st.models]
    m = len(names)
    counts = dict(zip(names, scored.sum(axis=1).tolist()))
    all_votes = fail.sum(axis=0)  # failures per image, over every model (on common images: all m voted)
    votes = all_votes[common]
    upper = st.kappa[np.triu_indices(m, 1)] if m else np.zeros(0)
    defined = upper[~np.isnan(upper)]
    out: dict[str, Any] = {"models": names}
    if m:
        out.update(_block(votes, m))
    else:
        out.update({"num_images": 0, "all_fooled_rate": None, "at_least_half_rate": None, "fleiss_kappa": None})
    out["mean_pairwise_kappa"] = float(defined.mean()) if defined.size else None
    out["pairwise_kappa"] = _pairs_dict(names, [st.kappa[j] for j in range(m)]) if per_class_pairs is not None else {}
    order, starts, classes = segments
    ends = np.append(starts, len(order))
    lab_votes = all_votes[order]
    per_class: dict[str, Any] = {}
    for c, (k, s, e) in enumerate(zip(classes, ends[:-1], ends[1:])):
        block = _block(lab_votes[s:e], m)
        total, n = st.class_sums.get(int(k), [0.0, 0])
        block["mean_pairwise_kappa"] = total / n if n else None
        if per_class_pairs is not None:
            block["pairwise_kappa"] = _pairs_dict(names, [row[:, c] for row in per_class_pairs])
        per_class[str(int(k))] = block
    out["per_class"] = per_class
    out["images_per_model"] = counts
    out["excluded"] = {name: ex["reason"] for name, ex in st.excluded.items()}
    notes = []
    if m and any(c != int(common.sum()) for c in counts.values()):
        notes.append(f"only the {int(common.sum())} images that every model's predictions cover are compared "
                     f"(images per model: {', '.join(f'{k} {v}' for k, v in counts.items())})")
    if per_class_pairs is None:
        notes.append(f"the {m * (m - 1) // 2} pairwise kappas of {m} models are kept in {STATE_FILE}, not listed here")
    out["note"] = "; ".join(notes) or None
    return out
