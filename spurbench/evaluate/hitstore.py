"""The compact store behind the leaderboard's consistency: per-image hit flags per model, and the
panel's consistency kept up to date incrementally.

Recording an entry used to re-read every entry's predictions CSV (a 1,000-model sweep: ~500,000 CSV
reads). Now, next to the leaderboard:

- `hits/<predictions file stem>.npy`, one per model: int8 by image index over the whole split,
  1 = hit (top-1 is the image's label), 0 = miss, -1 = not scored (`--limit`). Written once, when
  the model's CSV is read; the CSVs stay the human-readable record and the source of truth.
- `hits/state.npz`: the panel as packed bit matrices (hit and scored flags, one row per model), the
  labels, the per-image failure and scored counts, each model's failures per class on the images
  every model scored, the running sums of the pairwise Cohen's kappas (overall and per class), and
  for each model the size and modification time of the CSV it came from. No m x m matrix: a board
  of 10,000 models stays a few MB.

On each `record_entry` only the CSVs whose size or time changed (normally just the new model's) are
read. Appending a model to a panel of more than PAIRWISE_IN_JSON models is incremental: its kappas
against the others come from the packed rows at the images where it fails (one gather, no unpacking
of the matrix), and the counts are updated in place (`benchmarks/leaderboard_scale.py` measures it).
Smaller panels, re-scoring a model, removing one, or a model that shrinks the set of images every
model scored (`--limit`) recompute everything from the packed rows (still no CSV reads beyond the
changed ones).

"Failure" per image: on a `spurious` set a hit (the model was fooled), on a `shift` set a miss (the
model got it wrong); the store keeps hits either way (see TEAM agreement; `failures`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spurbench.evaluate import metrics
from spurbench.files import atomic_write

HITS_DIR = "hits"
STATE_FILE = f"{HITS_DIR}/state.npz"
STATE_VERSION = 2
#: above this many models the per-pair kappas stay in hits/state.npz, not in the JSON (m(m-1)/2 pairs)
PAIRWISE_IN_JSON = 32


def hits_relpath(predictions_relpath: str) -> str:
    """The hit-flags file of a model, from its predictions CSV path (same stem)."""
    return f"{HITS_DIR}/{Path(predictions_relpath).stem}.npy"


def failures(hits: np.ndarray, kind: str = "spurious") -> np.ndarray:
    """bool failure flags from int8 hits (-1 not scored): a hit on a spurious set, a miss on a shift set."""
    return hits == 1 if kind != "shift" else hits == 0


@dataclass
class _State:
    fingerprint: str = ""
    kind: str = "spurious"
    num_images: int = 0
    names: list[str] = field(default_factory=list)
    csvs: list[str] = field(default_factory=list)
    sigs: list[Any] = field(default_factory=list)  # [size, mtime_ns] of the CSV each row came from
    hit_bits: np.ndarray | None = None  # uint8[m, ceil(N/8)]: top-1 is the label
    scored_bits: np.ndarray | None = None  # uint8[m, ceil(N/8)]: the model scored the image
    excluded: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> {reason, csv, sig}
    labels: np.ndarray | None = None  # int64[N], -1 unknown
    votes: np.ndarray | None = None  # int64[N]: models failing on each image
    scored_count: np.ndarray | None = None  # int64[N]: models that scored each image
    classes: np.ndarray | None = None  # int64[K]: the classes of the common images
    class_fail: np.ndarray | None = None  # int64[m, K]: each model's failures per class on the common images
    class_sums: dict[int, list[float]] = field(default_factory=dict)  # class -> [sum of defined kappas, count]
    kappa_total: list[float] = field(default_factory=lambda: [0.0, 0])  # [sum of defined pairwise kappas, count]
    common_count: int = -1  # images scored by every model
    valid: bool = False  # read from a state file that matches the board

    def row(self, j: int) -> np.ndarray:
        """int8 hits of row j (-1 not scored)."""
        n = self.num_images
        hit = np.unpackbits(self.hit_bits[j], count=n).astype(np.int8)
        return np.where(np.unpackbits(self.scored_bits[j], count=n).astype(bool), hit, np.int8(-1))

    def take(self, name: str, rel: str, sig: Any) -> None:
        """Count model `name` (its CSV `rel` at `sig`) as the state's next row."""
        self.names.append(name)
        self.csvs.append(rel)
        self.sigs.append(sig)


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


# ----------------------------------------------------------------------------------------- state file


def is_state_file(path: Path) -> bool:
    """Whether `path` is a hit store this module wrote (a previous spurbench's board is taken over only then)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return isinstance(json.loads(str(z["meta"])).get("version"), int)
    except Exception:  # not there, not an npz, no meta: not ours
        return False


def _write(root: Path, rel: str, payload: bytes, writes: dict[str, bytes] | None) -> None:
    """One file of the store: handed to the caller in `writes` (the board writes them all under its record, see
    `leaderboard.record_entry`), or, without it, written here atomically."""
    if writes is not None:
        writes[rel] = payload
    else:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(root / rel, payload)


def _load_state(root: Path, fingerprint: str, kind: str, num_images: int) -> _State:
    path = root / STATE_FILE
    fresh = _State(fingerprint=fingerprint, kind=kind, num_images=num_images)
    if not path.is_file():
        return fresh
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            want = {"version": STATE_VERSION, "fingerprint": fingerprint, "kind": kind, "num_images": num_images}
            if any(meta.get(k) != v for k, v in want.items()):
                return fresh
            models = meta["models"]
            st = _State(
                fingerprint,
                kind,
                num_images,
                [d["model"] for d in models],
                [d["csv"] for d in models],
                [list(d["sig"]) for d in models],
                z["hits_bits"],
                z["scored_bits"],
                meta["excluded"],
                z["labels"].astype(np.int64),
                z["votes"].astype(np.int64),
                z["scored_count"].astype(np.int64),
                z["classes"].astype(np.int64),
                z["class_fail"].astype(np.int64),
                {int(k): v for k, v in meta["class_sums"].items()},
                list(meta["kappa_total"]),
                int(meta["common_count"]),
                True,
            )
            if st.hit_bits.shape[0] != len(st.names) or st.class_fail.shape != (len(st.names), len(st.classes)):
                return fresh
            return st
    except Exception:  # unreadable / older layout: rebuilt from the CSVs, never fatal
        return fresh


def _save_state(root: Path, st: _State, writes: dict[str, bytes] | None) -> None:
    meta = {
        "version": STATE_VERSION,
        "fingerprint": st.fingerprint,
        "kind": st.kind,
        "num_images": st.num_images,
        "models": [{"model": n, "csv": c, "sig": g} for n, c, g in zip(st.names, st.csvs, st.sigs)],
        "excluded": st.excluded,
        "class_sums": {str(k): v for k, v in st.class_sums.items()},
        "kappa_total": st.kappa_total,
        "common_count": st.common_count,
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.array(json.dumps(meta)),
        labels=st.labels,
        hits_bits=st.hit_bits,
        scored_bits=st.scored_bits,
        votes=st.votes,
        scored_count=st.scored_count,
        classes=st.classes,
        class_fail=st.class_fail,
    )
    _write(root, STATE_FILE, buf.getvalue(), writes)


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

    if path.is_symlink():  # a board's own CSVs are plain files; a link could lead anywhere
        raise SpurbenchError(f"predictions file '{path}' is a symbolic link; re-run `spurbench eval` for that model")
    p = predictions_csv.read_predictions(path, optional=())
    idx = p["index"]
    if len(np.unique(idx)) != len(idx):
        raise SpurbenchError(f"predictions file '{path}' repeats an image index")
    if len(idx) and (idx.min() < 0 or idx.max() >= num_images):
        raise SpurbenchError(
            f"predictions file '{path}' has image index {int(idx.max())} outside the split's {num_images} images (stale file?)"
        )
    hits = np.full(num_images, -1, np.int8)
    labels = np.full(num_images, -1, np.int64)
    hits[idx] = p["fooled_top1"].astype(np.int8)
    labels[idx] = p["label"]
    return hits, labels


def _write_hits(root: Path, csv_rel: str, hits: np.ndarray, writes: dict[str, bytes] | None) -> None:
    buf = io.BytesIO()
    np.save(buf, hits)
    _write(root, hits_relpath(csv_rel), buf.getvalue(), writes)


def _per_class(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of `v` (bool/int [..., n], columns in class order) over each class's run (`starts`)."""
    if not v.shape[-1]:
        return np.zeros(v.shape[:-1] + (0,), np.int64)
    return np.add.reduceat(v, starts, axis=-1, dtype=np.int64)


def _add_sums(st: _State, classes: np.ndarray, overall: np.ndarray, per: np.ndarray) -> None:
    """Add one model's kappas against the models before it to the running sums (NaN: undefined, left out)."""
    defined = overall[~np.isnan(overall)]
    st.kappa_total = [st.kappa_total[0] + float(defined.sum()), st.kappa_total[1] + int(defined.size)]
    for k, col in zip(classes, per.T):
        s = st.class_sums.setdefault(int(k), [0.0, 0])
        d = col[~np.isnan(col)]
        s[0] += float(d.sum())
        s[1] += int(d.size)


def _one_entry_per_model(entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{entry name: why it is left out} for the extra entries of one model (same architecture and weights
    sha256, e.g. a default run, a `--limit` run and an `--include-unverified` run): the consistency figures count
    each model once, by its canonical entry (the first one scored when none is canonical); otherwise three
    entries of one model agree with kappa 1 and lift the agreement between models."""
    first: dict[str, str] = {}
    for e in entries:  # the canonical entry of each model first, then the board's order
        same = e.get("same_model")
        if same is not None and (same not in first or (e.get("canonical") and not _canonical(entries, first[same]))):
            first[same] = e["model"]
    return {
        e["model"]: f"another entry of the same model ({first[e['same_model']]}) is counted: each model once"
        for e in entries
        if e.get("same_model") is not None and first[e["same_model"]] != e["model"]
    }


def _canonical(entries: Sequence[Mapping[str, Any]], name: str) -> bool:
    return any(e["model"] == name and e.get("canonical") for e in entries)


def update(root: str | Path, board: Mapping[str, Any], writes: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Bring the store at `root` in line with `board`'s entries (each needs `model` and `predictions`, a path
    inside `root` the caller has checked) and return its `consistency` block.

    Reads only the predictions CSVs that are new or changed since the store last saw them. `writes`: where the
    files to write go ({relative path: bytes}), for the caller to write under the board folder's record; None:
    written here directly."""
    from spurbench.errors import SpurbenchError

    root = Path(root)
    ds = board.get("dataset") or {}
    n_img = int(ds.get("num_images") or 0)
    kind = str((ds.get("provenance") or {}).get("kind", "spurious"))
    old = _load_state(root, str(ds.get("fingerprint")), kind, n_img)
    included, excluded = _sort_entries(root, board["entries"], old)
    read: dict[str, Any] = {}

    def from_csv(rel: str) -> tuple[np.ndarray, np.ndarray] | SpurbenchError:
        if rel not in read:
            try:
                read[rel] = _hits_from_csv(root / rel, n_img)
                _write_hits(root, rel, read[rel][0], writes)
            except SpurbenchError as err:
                read[rel] = err
        return read[rel]

    m_old = len(old.names)
    appended = (
        old.valid
        and 0 < m_old
        and len(included) > PAIRWISE_IN_JSON
        and all(inc[3] == j for j, inc in enumerate(included[:m_old]))
        and all(inc[3] is None for inc in included[m_old:])
    )
    if appended:
        st = _append(old, included[m_old:], excluded, from_csv)
        if st is not None:
            _save_state(root, st, writes)
            common = st.scored_count == len(st.names)
            return _consistency_json(st, common, _class_segments(st.labels, common), None, None)
    return _rebuild(root, old, included, excluded, from_csv, writes)


def _sort_entries(
    root: Path, entries: Sequence[Mapping[str, Any]], old: _State
) -> tuple[list[tuple[str, str, Any, int | None]], dict[str, dict[str, Any]]]:
    """(the entries the consistency counts: (model, csv, sig, its row in the old state if unchanged), {model left
    out: why}); a CSV the old state left out and that has not changed stays out without being read again."""
    pos = {name: j for j, name in enumerate(old.names)}
    excluded: dict[str, dict[str, Any]] = {}
    csv_owner: dict[str, str] = {}
    included: list[tuple[str, str, Any, int | None]] = []
    counted = _one_entry_per_model(entries)
    for e in entries:
        name, rel = e["model"], e.get("predictions")
        if counted.get(name):
            excluded[name] = {"reason": counted[name]}
            continue
        if not rel:
            excluded[name] = {"reason": "entry names no predictions file"}
            continue
        if rel in csv_owner:
            excluded[name] = {
                "reason": f"its predictions file '{rel}' is also {csv_owner[rel]}'s (model names whose file names "
                f"collide); re-run `spurbench eval` for {name} to give it its own file"
            }
            continue
        csv_owner[rel] = name
        sig = _sig(root / rel)
        j, prev_ex = pos.get(name), old.excluded.get(name)
        reuse = j is not None and old.csvs[j] == rel and old.sigs[j] == sig
        if (
            not reuse
            and prev_ex is not None
            and prev_ex.get("csv") == rel
            and prev_ex.get("sig") == sig
            and sig is not None
        ):
            excluded[name] = prev_ex
            continue
        included.append((name, rel, sig, j if reuse else None))
    return included, excluded


def _agreeing(name: str, rel: str, sig: Any, got: Any, labels: np.ndarray, ref: str, excluded: dict) -> Any:
    """`got` (hits, labels) of a model; None, with the reason in `excluded`, when its CSV could not be read or
    its labels disagree with those of the rows before it (`ref` names them)."""
    from spurbench.errors import SpurbenchError

    if isinstance(got, SpurbenchError):
        excluded[name] = {"reason": str(got), "csv": rel, "sig": sig}
        return None
    row_labels = got[1]
    shared = (row_labels >= 0) & (labels >= 0)
    if (row_labels[shared] != labels[shared]).any():
        excluded[name] = {
            "reason": f"its labels disagree with {ref}'s on the same images (stale predictions file?)",
            "csv": rel,
            "sig": sig,
        }
        return None
    return got


def _append(old: _State, new: Sequence[tuple[str, str, Any, int | None]], excluded: dict, from_csv) -> _State | None:
    """The state with `new` models appended, incrementally; None when a new model shrinks the set of
    images every model scored (then everything is recomputed)."""
    st = _State(
        **{
            **old.__dict__,
            "excluded": excluded,
            "names": list(old.names),
            "csvs": list(old.csvs),
            "sigs": list(old.sigs),
            "class_sums": {k: list(v) for k, v in old.class_sums.items()},
        }
    )
    for name, rel, sig, _ in new:
        got = _agreeing(name, rel, sig, from_csv(rel), st.labels, st.names[0], excluded)
        if got is None:
            continue
        if not _append_row(st, *got):
            return None
        st.take(name, rel, sig)
    return st


def _append_row(st: _State, hits: np.ndarray, row_labels: np.ndarray) -> bool:
    """Add one model's row and its kappas against every row before it; False when it shrinks the set of images
    every model scored or its classes (the state is then half-updated: recompute)."""
    m = len(st.names)
    common = st.scored_count == m
    new_scored, new_fail = hits >= 0, failures(hits, st.kind)
    if int((common & new_scored).sum()) != st.common_count:
        return False
    st.labels = np.where(st.labels >= 0, st.labels, row_labels)
    order, starts, classes = _class_segments(st.labels, common)
    if not np.array_equal(classes, st.classes):
        return False
    y = new_fail[order]
    b_k = _per_class(y, starts)
    # the others' failures at the images where the new model fails, straight from the packed bits
    fpos = np.flatnonzero(y)
    sel = order[fpos]
    g = (st.hit_bits[:, sel >> 3] >> (7 - (sel & 7)).astype(np.uint8)) & 1
    if st.kind == "shift":  # a shift set's failure is a miss (every common image is scored)
        g = 1 - g
    n11_k = np.zeros((m, len(classes)), np.int64)
    if fpos.size:
        ci = np.searchsorted(starts, fpos, side="right") - 1
        runs = np.flatnonzero(np.r_[True, ci[1:] != ci[:-1]])
        n11_k[:, ci[runs]] = np.add.reduceat(g, runs, axis=1, dtype=np.int64)
    _add_sums(st, classes, *_kappas(order, starts, st.class_fail, b_k, n11_k))
    st.class_fail = np.vstack([st.class_fail, b_k[None]])
    st.votes = st.votes + new_fail
    st.scored_count = st.scored_count + new_scored
    st.hit_bits = np.vstack([st.hit_bits, np.packbits(hits == 1)[None]])
    st.scored_bits = np.vstack([st.scored_bits, np.packbits(new_scored)[None]])
    return True


def _kappas(order: np.ndarray, starts: np.ndarray, a_k: np.ndarray, b_k: np.ndarray, n11_k: np.ndarray):
    """(overall, per class) kappas of a model with per-class failures `b_k` against rows with `a_k`, from the
    per-class counts of images both fail (`n11_k`) over the common images (`order`, class runs at `starts`)."""
    n_k = np.diff(np.append(starts, len(order)))
    overall = _kappas_from_counts(len(order), a_k.sum(-1), b_k.sum(), n11_k.sum(-1))
    return overall, _kappas_from_counts(n_k, a_k, b_k, n11_k)


def _rebuild(root: Path, old: _State, included, excluded: dict, from_csv, writes) -> dict[str, Any]:
    """Everything recomputed from the rows (the old state's for unchanged models, the CSVs for the others)."""
    n_img = old.num_images
    st = _State(old.fingerprint, old.kind, n_img, excluded=excluded)
    labels = np.full(n_img, -1, np.int64)
    rows = []
    for name, rel, sig, j in included:
        if j is not None:
            hits = old.row(j)
            got = (hits, np.where(hits >= 0, old.labels, -1))
        else:
            got = from_csv(rel)
        got = _agreeing(name, rel, sig, got, labels, st.names[0] if st.names else "the others", excluded)
        if got is None:
            continue
        labels = np.where(labels >= 0, labels, got[1])
        rows.append(got[0])
        st.take(name, rel, sig)
    m = len(rows)
    hits = np.stack(rows) if rows else np.zeros((0, n_img), np.int8)
    scored, fail = hits >= 0, failures(hits, old.kind)
    common = scored.all(axis=0) if m else np.zeros(n_img, bool)
    segments = _class_segments(labels, common)
    order, starts, classes = segments
    fail_o = fail[:, order]
    st.labels, st.votes, st.scored_count = (
        labels,
        fail.sum(axis=0).astype(np.int64),
        scored.sum(axis=0).astype(np.int64),
    )
    st.classes, st.class_fail = classes.astype(np.int64), _per_class(fail_o, starts)
    st.hit_bits, st.scored_bits = np.packbits(hits == 1, axis=1), np.packbits(scored, axis=1)
    st.common_count = int(common.sum())
    small = m <= PAIRWISE_IN_JSON
    overall_rows, per_class_pairs = [], []
    for j in range(m):
        n11_k = _per_class(fail_o[:j] & fail_o[j], starts)
        overall, per = _kappas(order, starts, st.class_fail[:j], st.class_fail[j], n11_k)
        _add_sums(st, classes, overall, per)
        if small:
            overall_rows.append(overall)
            per_class_pairs.append(per)
    _save_state(root, st, writes)
    return _consistency_json(st, common, segments, overall_rows if small else None, per_class_pairs if small else None)


def _block(votes: np.ndarray, m: int) -> dict[str, Any]:
    n = votes.size
    half = math.ceil(m / 2)
    return {
        "num_images": int(n),
        "all_fooled_rate": float((votes == m).mean()) if n else None,
        "at_least_half_rate": float((votes >= half).mean()) if n else None,
        "fleiss_kappa": metrics.fleiss_kappa(np.stack([votes, m - votes], axis=1)) if n else None,
    }


def _agreement_intervals(votes: np.ndarray, labels: np.ndarray, m: int) -> dict[str, Any]:
    """95 % percentile intervals of the all-fooled rate, the at-least-half rate and Fleiss' kappa over the
    images every model scored, resampling whole classes (the set's unit) with uncertainty's default resamples
    and seed; the per-class sums make each replicate one matrix product."""
    from spurbench.evaluate import uncertainty

    units, n_units = uncertainty.unit_index(labels)
    if n_units == 0:
        return {}
    counts = uncertainty.bootstrap_counts(n_units).astype(np.float64)
    v = votes.astype(np.float64)

    def sums(x: np.ndarray) -> np.ndarray:
        return uncertainty.per_unit_sums(x, units, n_units)

    n = counts @ sums(np.ones_like(v))
    with np.errstate(divide="ignore", invalid="ignore"):
        all_fooled = (counts @ sums(v == m)) / n
        half = (counts @ sums(v >= math.ceil(m / 2))) / n
        kappa = np.full(len(n), np.nan)
        if m >= 2:  # Fleiss' kappa for two categories (fooled / not) from per-class sums, as metrics.fleiss_kappa
            p_i = (v**2 + (m - v) ** 2 - m) / (m * (m - 1))
            p1 = (counts @ sums(v)) / (n * m)
            p_e = p1**2 + (1 - p1) ** 2
            kappa = ((counts @ sums(p_i)) / n - p_e) / (1 - p_e)
    method = {"method": "percentile", "unit": "class", "resamples": int(len(n)), "seed": uncertainty.DEFAULT_SEED}
    return {
        "all_fooled_rate": list(uncertainty.percentile_interval(all_fooled)),
        "at_least_half_rate": list(uncertainty.percentile_interval(half)),
        "fleiss_kappa": list(uncertainty.percentile_interval(kappa)),
        "uncertainty": method,
    }


def _pairs_dict(names: Sequence[str], values: Sequence[np.ndarray]) -> dict[str, float | None]:
    """{"a vs b": kappa} in the order metrics.consistency uses (a earlier than b); values[j] = row j's kappas vs 0..j-1."""
    out: dict[str, float | None] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            v = values[j][i]
            out[f"{names[i]} vs {names[j]}"] = None if np.isnan(v) else float(v)
    return out


def _consistency_json(st: _State, common: np.ndarray, segments, overall_rows, per_class_pairs) -> dict[str, Any]:
    names = st.names
    m = len(names)
    counts = dict(zip(names, np.bitwise_count(st.scored_bits).sum(axis=1, dtype=np.int64).tolist())) if m else {}
    all_votes = st.votes  # failures per image, over every model (on common images: all m voted)
    votes = all_votes[common]
    out: dict[str, Any] = {"models": names}
    out.update(_block(votes, m))  # no model: no common image, every figure None
    total, n_pairs = st.kappa_total
    out["mean_pairwise_kappa"] = total / n_pairs if n_pairs else None
    if m:
        out["intervals"] = _agreement_intervals(votes, st.labels[common], m)
    out["pairwise_kappa"] = _pairs_dict(names, overall_rows) if overall_rows is not None else {}
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
        notes.append(
            f"only the {int(common.sum())} images that every model's predictions cover are compared "
            f"(images per model: {', '.join(f'{k} {v}' for k, v in counts.items())})"
        )
    if overall_rows is None:
        notes.append(
            f"the {m * (m - 1) // 2} pairwise kappas of {m} models are summed in {STATE_FILE} (their mean is above), not listed here"
        )
    out["note"] = "; ".join(notes) or None
    return out
