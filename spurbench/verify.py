"""`spurbench verify`: is the object really absent? An open-vocabulary detector checks every image.

A spurious image of class k is only a test if the object k is NOT in it (a classifier that says
"hummingbird" for a picture with a hummingbird is right, not fooled); a background-shift image (kind
`shift`) is only a test if the object IS in it. `spurbench verify` runs a text-prompted detector (OWLv2 or
Grounding DINO, see spurbench.detection) over every image with its class's names as queries and writes
the dataset again, same rows and same bytes in every existing column, with these columns added:

  object_score    the highest detection score over the class's queries (float)
  object_present  object_score >= threshold (bool)
  object_boxes    the boxes behind the score, JSON [{"box": [x0, y0, x1, y1], "score": s, "query": q}, ...]
  reviewed        a person's decision: keep, drop, or empty (set with --decisions)

and the detector, its revision, the threshold and where it comes from in the card. `spurbench eval` then
leaves out the images whose check failed (spurious set: object present; shift set: object absent) unless
a person kept them, and counts them (`metrics.num_excluded`).

Doubtful cases go to a person: `--page DIR` renders the review page (flagged images and borderline ones,
with scores and boxes, keep/drop buttons, a decisions.csv download); `--decisions decisions.csv`
(columns index,split,decision; decision keep, drop or clear) applies the decisions. A verified set is not checked again unless asked
(--redetect, or another --detector / --detector-model): --threshold alone re-thresholds the stored scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spurbench import dataset as ds_contract
from spurbench import untrusted
from spurbench.errors import SpurbenchError
from spurbench.verification import (
    AUDIT_KEY,
    BOX_FLOOR,
    BOXES,
    BOXES_KEPT,
    CARD_KEY,
    CLEAR,
    DECISION_COLUMNS,
    DECISIONS,
    DEFAULT_MARGIN,
    PRESENT,
    REVIEWED,
    SCORE,
    VERDICTS,
    VERIFY_COLUMNS,
    audit_line,
    audit_stats,
    failed_check,
    is_verified,
)

# ---------------------------------------------------------------------------------------------
# Decisions (decisions.csv: index,split,decision)


def read_decisions(path: str | Path, split_sizes: Mapping[str, int]) -> dict[tuple[str, int], str]:
    """{(split, row index): decision} from a decisions CSV, every line checked against the dataset."""
    path = Path(path)
    if not path.is_file():
        raise SpurbenchError(
            f"decisions file '{path}' does not exist; download it from the review page (`spurbench verify --page DIR`)"
        )
    lines = ds_contract.read_csv_lines(
        path,
        DECISION_COLUMNS,
        lambda missing: SpurbenchError(
            f"decisions file '{path}' lacks column(s) {', '.join(missing)}; it needs the header index,split,decision"
        ),
        lambda err: SpurbenchError(
            f"cannot read decisions file '{path}' as CSV ({err.__class__.__name__}); use the decisions.csv the review page downloads"
        ),
        encoding="utf-8-sig",
    )
    out: dict[tuple[str, int], str] = {}
    for n, line in enumerate(lines, start=2):
        split, raw, decision = (
            (line.get("split") or "").strip(),
            (line.get("index") or "").strip(),
            (line.get("decision") or "").strip().lower(),
        )
        where = f"decisions file '{path}' line {n}"
        if split not in split_sizes:
            raise SpurbenchError(
                f"{where} names split {split!r}, which the dataset does not have (splits: {', '.join(split_sizes)})"
            )
        try:
            index = int(raw)
        except ValueError:
            raise SpurbenchError(f"{where} has index {raw!r}; expected a row number") from None
        if not 0 <= index < split_sizes[split]:
            raise SpurbenchError(
                f"{where} names row {index} of split '{split}', which has {split_sizes[split]} rows (0..{split_sizes[split] - 1}); is this the right dataset?"
            )
        if not decision:
            raise SpurbenchError(
                f"{where} has no decision; write keep, drop or clear (clear: forget an earlier decision)"
            )
        if decision not in DECISIONS + (CLEAR,):
            raise SpurbenchError(f"{where} has decision {decision!r}; expected keep, drop or clear")
        decision = "" if decision == CLEAR else decision
        if out.get((split, index), decision) != decision:
            raise SpurbenchError(
                f"{where} decides row {index} of split '{split}' twice, differently; keep one line per image"
            )
        out[(split, index)] = decision
    return out


def decided_images(folder: str | Path) -> dict[str, str]:
    """{sha256 of the image bytes: decision} of every row a person decided in a verified dataset folder ({} for a
    folder that is not one, or has no decisions): what a rebuild carries over to the rows with the same images."""
    folder = Path(folder)
    if not folder.is_dir() or not ds_contract.split_names(folder):
        return {}
    import pyarrow.parquet as pq

    out: dict[str, str] = {}
    for name in ds_contract.split_names(folder):
        try:
            if REVIEWED not in pq.read_schema(ds_contract.data_files(folder, name)[0]).names:
                continue  # not verified: nothing to read
            s = _Split(folder, name)
        except (SpurbenchError, OSError, ValueError):
            return {}
        decisions = s.column(REVIEWED)
        if any(decisions):
            out.update((digest, d) for digest, d in zip(s.image_digests(), decisions) if d)
    return out


def decisions_for(folder: str | Path, decided: Mapping[str, str]) -> tuple[list[tuple[int, str, str]], int]:
    """([(index, split, decision)] of the rows of `folder` whose images carry a decision in `decided`, the number of
    decided images that match no row)."""
    found: set[str] = set()
    lines = []
    for name in ds_contract.split_names(folder):
        for i, digest in enumerate(_Split(Path(folder), name).image_digests()):
            if digest in decided:
                lines.append((i, name, decided[digest]))
                found.add(digest)
    return lines, len(set(decided) - found)


def resume_file(out: str | Path) -> Path:
    """Where `spurbench verify` appends its detections as it goes (next to --out, hidden): a killed run, re-run, detects
    only what it had not (entries keyed by image content and queries, the file by the detector); removed once the
    verified dataset is written."""
    out = Path(out).expanduser()
    return out.parent / f".{out.name}.detections.jsonl"


# ---------------------------------------------------------------------------------------------
# Queries per label


def label_queries(label_names: Sequence[str] | None, family: str) -> dict[int, list[str]]:
    """Queries for every label: ImageNet-1k classes (`label_names` None) by their lemmas from timm, any
    other label set by its ClassLabel names (e.g. Waterbirds' `landbird`, `waterbird`)."""
    from spurbench import detection, imagenet

    if label_names is None:
        return {k: detection.class_queries(k, family) for k in range(imagenet.NUM_CLASSES)}
    return {k: detection.queries_for_names([name.replace("_", " ")], family) for k, name in enumerate(label_names)}


# ---------------------------------------------------------------------------------------------
# Reading and writing the dataset


class _Split:
    """One split read straight from its Parquet shards."""

    def __init__(self, folder: Path | ds_contract.OpenDataset, name: str):
        self.name = name
        opened = ds_contract.open_dataset_folder(folder)
        self.folder = opened.folder
        self.table, self.features = opened.table(name)
        self.columns = list(self.table.column_names)

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> list[Any]:
        return self.table.column(name).to_pylist() if name in self.columns else [None] * len(self)

    def image_bytes(self, start: int, stop: int) -> list[bytes]:
        cells = self.table.column("image").slice(start, stop - start).to_pylist()
        return [self._bytes(start + j, c) for j, c in enumerate(cells)]

    def what(self, row: int) -> str:
        return f"row {row} of split '{self.name}' of '{self.folder}'"

    def _bytes(self, row: int, cell: Mapping[str, Any] | None) -> bytes:
        data = ds_contract.cell_bytes(self.folder, cell, f"the image of {self.what(row)}")
        if data is None:
            raise SpurbenchError(f"{self.what(row)} has no image (null); remove the row or rebuild the dataset")
        return data

    def digest(self, row: int) -> str:
        """sha256 of the row's image bytes (what finds an image again in another version of the set)."""
        return hashlib.sha256(self.image_bytes(row, row + 1)[0]).hexdigest()

    def image_digests(self) -> list[str]:
        """sha256 of every row's image bytes (what carries a decision from one version of a set to the next)."""
        return [
            hashlib.sha256(b).hexdigest()
            for start in self._starts()
            for b in self.image_bytes(start, min(len(self), start + 256))
        ]

    def rows(self, added: Mapping[str, Sequence[Any]]) -> Iterable[dict[str, Any]]:
        for start in self._starts():
            for j, row in enumerate(self.table.slice(start, 256).to_pylist()):
                yield {**row, **{c: v[start + j] for c, v in added.items()}}

    def _starts(self) -> range:
        # in chunks, so a large split never sits in Python objects whole
        return range(0, len(self), 256)


def _check_contract(
    folder: Path, splits: Sequence[_Split], card: ds_contract.DatasetCard | None = None
) -> tuple[list[str] | None, str]:
    """(label names for write_dataset or None for ImageNet-1k, the card's label set); one line on what is wrong
    (columns, label names, the card's label set, a row's label)."""
    from spurbench import imagenet

    card = card if card is not None else ds_contract.read_card(folder)
    names = None
    for s in splits:
        ds_contract.check_columns(s.columns, f"'{folder}' (split {s.name})")
        missing = [c for c in ds_contract.REQUIRED_COLUMNS if c not in s.columns]
        if missing:
            raise SpurbenchError(
                f"dataset '{folder}' split '{s.name}' lacks contract column(s) {', '.join(missing)}; `spurbench verify` rewrites "
                "datasets in spurbench's contract (import other layouts first with `spurbench import`)"
            )
        split_names = ds_contract.label_names_of(
            s.features, f"'{folder}' split '{s.name}'", "verify needs class names to build queries"
        )
        if names is not None and split_names != names:
            raise SpurbenchError(
                f"dataset '{folder}' splits disagree on the label names; every split must share one label set"
            )
        names = split_names
    assert names is not None
    is_imagenet = names == list(imagenet.wnids())
    if is_imagenet != (card.label_set == ds_contract.IMAGENET_LABEL_SET):
        raise SpurbenchError(
            f"dataset '{folder}' card names label set {card.label_set!r} but its `label` column has {len(names)} names; fix the card"
        )
    n = len(names)
    for s in splits:  # a query is built per label: every row's label must be one of the set's classes
        for i, k in enumerate(s.column("label")):
            if k is None or not 0 <= int(k) < n:
                raise SpurbenchError(
                    f"{s.what(i)} has label {k}, not one of the set's {n} classes (0..{n - 1}); fix or remove the row"
                )
    return (None if is_imagenet else names), card.label_set


def _verify_features(splits: Sequence[_Split]) -> dict[str, Any]:
    """Extra features of the output: the set's own extra columns, then the verification columns."""
    from datasets import Value

    extra = {
        c: splits[0].features[c]
        for c in splits[0].columns
        if c not in ds_contract.REQUIRED_COLUMNS and c not in VERIFY_COLUMNS
    }
    extra.update({SCORE: Value("float32"), PRESENT: Value("bool"), BOXES: Value("string"), REVIEWED: Value("string")})
    return extra


def _boxes_json(boxes: list[dict[str, Any]], threshold: float) -> str:
    kept = [b for b in boxes if b["score"] >= BOX_FLOOR * threshold] or boxes[:1]
    return json.dumps(kept, separators=(",", ":"))


class DetectionCache:
    """Detections already made, by image content and queries, in a JSON-lines file: a killed verification
    (e.g. the build's verify stage) resumes where it stopped. The first line names the detector; a cache
    made by another detector is started afresh."""

    def __init__(self, path: str | Path | None, identity: Mapping[str, Any]):
        self.path = None if path is None else Path(path)
        self.identity = dict(identity)
        self.entries: dict[str, tuple[float, list]] = {}
        if self.path is None:
            return
        lines = self.path.read_text(errors="replace").splitlines() if self.path.is_file() else []
        if (lines and not lines[0].startswith('{"detector": ')) or (self.path.exists() and not self.path.is_file()):
            raise SpurbenchError(
                f"'{self.path}' is not a detections file spurbench wrote (verify keeps one there while it runs); "
                "move it away and run again (nothing was written)"
            )
        header = json.dumps({"detector": self.identity})
        good = 0
        try:
            if lines and json.loads(lines[0]) == {"detector": self.identity}:
                good = 1
                for line in lines[1:]:
                    e = json.loads(line)
                    self.entries[e["key"]] = (float(e["score"]), e["boxes"])
                    good += 1
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill: keep what parsed before it
            pass
        if good != len(lines) or not lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = lines[1:good] if good else []
            self.path.write_text("\n".join([header, *kept]) + "\n")

    @staticmethod
    def key(image: bytes, queries: Sequence[str]) -> str:
        return hashlib.sha256(image + b"\x00" + "\x1f".join(queries).encode()).hexdigest()

    def add(self, items: list[tuple[str, float, list]]) -> None:
        for key, score, boxes in items:
            self.entries[key] = (score, boxes)
        if self.path is not None and items:
            with open(self.path, "a") as fh:
                fh.write("".join(json.dumps({"key": k, "score": sc, "boxes": b}) + "\n" for k, sc, b in items))
                fh.flush()


def _detect_split(
    split: _Split, detector, queries: Mapping[int, list[str]], batch_size: int, bar, cache: DetectionCache
) -> tuple[list[float], list[list]]:
    """(score, boxes) of every row: from the cache where known, else from the detector (cached as it goes)."""
    from spurbench import detection

    labels = split.column("label")
    found_rows: list[tuple[float, list]] = []
    chunk = max(batch_size * 4, 32)  # decode a few batches at a time, never the whole split
    for start in range(0, len(split), chunk):
        stop = min(len(split), start + chunk)
        data = split.image_bytes(start, stop)
        keys = [cache.key(d, queries[int(k)]) for d, k in zip(data, labels[start:stop])]
        todo = [j for j, key in enumerate(keys) if key not in cache.entries]
        images = []
        for j in todo:
            try:
                # the header checked against untrusted.MAX_IMAGE_PIXELS before anything is decoded
                with untrusted.open_image(data[j], f"the image of {split.what(start + j)}") as im:
                    images.append(im.convert("RGB"))
            except SpurbenchError:
                raise
            except Exception as err:
                raise SpurbenchError(
                    f"cannot decode the image of row {start + j} of split '{split.name}' ({err.__class__.__name__}); replace or remove it"
                ) from None
        if todo:
            found = detection.detect(
                detector, images, [queries[int(labels[start + j])] for j in todo], batch_size=batch_size, progress=False
            )
            cache.add([(keys[j], d.score, d.to_json()[:BOXES_KEPT]) for j, d in zip(todo, found)])
        found_rows += [cache.entries[key] for key in keys]
        bar.update(stop - start)
    return [score for score, _ in found_rows], [b for _, b in found_rows]


def _card_section(record: Mapping[str, Any], kind: str) -> str:
    failed = "the object is present" if kind == "spurious" else "the object is absent"
    lines = [
        "## Verification",
        "",
        f"Every checked image was searched for its class's object with the open-vocabulary detector `{record['detector']}` "
        f"(`{record['model']}`"
        + (f" at revision `{record['revision']}`" if record.get("revision") else "")
        + "), with the "
        f"class's names as text queries. `object_score` is the highest score over those queries; `object_present` is "
        f"`object_score >= {record['threshold']}` (threshold: {record['threshold_source']}). In this `{kind}` set an image fails the "
        f"check when {failed}; `spurbench eval` leaves such images out unless a person kept them (`reviewed` = keep), and always "
        "leaves out the ones a person dropped (`reviewed` = drop).",
        "",
    ]
    for split, c in record["splits"].items():
        lines.append(
            f"- `{split}`: {c['checked']} checked, {c['failed']} failed the check, {c['keep']} kept and {c['drop']} dropped by a person"
        )
    if record.get(AUDIT_KEY):
        lines += ["", *_audit_lines(record[AUDIT_KEY])]
    return "\n".join(lines) + "\n"


def _audit_lines(audit: Mapping[str, Any]) -> list[str]:
    """The card's audit paragraph: per verdict, audited, disagreements and the rate with its Wilson 95 % interval."""
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    lines = [
        "### Audit of the check",
        "",
        f"A seeded random sample of {len(audit['images'])} checked image(s) of split(s) "
        f"{', '.join(f'`{x}`' for x in audit.get('splits') or [])} (`spurbench verify --audit {audit.get('size')} "
        f"--audit-seed {audit.get('seed')}`; strata: {audit.get('strata')}), decided by a person without the detector's "
        "verdict. The rate is the share of decided images where the person disagrees with the detector, with its "
        "Wilson 95 % interval; the last figure scales it to the verdict's images in the whole set.",
        "",
    ]
    if audit.get("not_found"):
        lines += [f"{audit['not_found']} image(s) of the sample are no longer in the set.", ""]
    present, absent = ("absent", "present") if audit.get("kind") == "shift" else ("present", "absent")
    for verdict, v in audit["verdicts"].items():
        what = (
            f"object {present} among passed images (leak rate)"
            if verdict == "passed"
            else f"object {absent} among failed images"
        )
        figure = (
            f"{pct(v['rate'])} [{pct(v['low'])}, {pct(v['high'])}], about {v['set_estimate'][0]:g} "
            f"[{v['set_estimate'][1]:g}, {v['set_estimate'][2]:g}] of its {v['images_in_set']} images"
            if v["decided"]
            else "no decisions yet"
        )
        lines.append(
            f"- {verdict}: {v['audited']} audited, {v['decided']} decided, {v['disagree']} disagreement(s) with the detector; {what}: {figure}"
        )
    return lines


def _with_section(body: str, section: str) -> str:
    head = body.split("\n## Verification\n")[0] if "\n## Verification\n" in "\n" + body else body
    if head.startswith("## Verification\n"):
        head = ""
    return (head.rstrip() + "\n\n" + section).strip()


@dataclass
class _Source:
    """The dataset to verify, read and checked: its splits, the ones to check, labels, decisions, earlier record."""

    opened: ds_contract.OpenDataset
    data: list[_Split]
    chosen: list[_Split]
    label_names: list[str] | None
    decisions: dict[tuple[str, int], str]
    card: ds_contract.DatasetCard
    previous: dict[str, Any]
    verified: bool


def _read_source(
    source: str | Path, out: str | Path, splits: Sequence[str] | None, decisions: str | Path | None
) -> _Source:
    """Open the dataset and check everything about it and --out before any model runs."""
    opened = ds_contract.open_dataset_folder(source)  # the card read once, each split once
    folder = opened.folder
    # `out` is replaced whole: it may be the dataset itself (rewritten in place), never a folder of other files
    ds_contract.check_out_folder(out, [folder] + ([decisions] if decisions is not None else []), may_be_input=True)
    where = Path(out).expanduser().resolve()
    if folder.resolve() in where.parents:  # writing the set would replace the folder --out lies in
        raise SpurbenchError(
            f"--out '{out}' lies inside --dataset '{source}'; give a folder outside it, or --dataset itself to "
            "rewrite it in place"
        )
    names = opened.split_names
    if not names:
        raise SpurbenchError(
            f"dataset '{source}' has no data/<split>-NNNNN-of-NNNNN.parquet shards; is it a dataset folder?"
        )
    unknown = [s for s in (splits or []) if s not in names]
    if unknown:
        raise SpurbenchError(
            f"dataset '{source}' has no split {', '.join(map(repr, unknown))}; its splits: {', '.join(names)}"
        )
    data = [_Split(opened, n) for n in names]
    card = opened.card()
    label_names, _ = _check_contract(folder, data, card)
    previous = dict(card.provenance.get(CARD_KEY) or {})
    return _Source(
        opened=opened,
        data=data,
        chosen=[s for s in data if splits is None or s.name in splits],
        label_names=label_names,
        decisions=read_decisions(decisions, {s.name: len(s) for s in data}) if decisions is not None else {},
        card=card,
        previous=previous,
        verified=bool(previous) and all(is_verified(s.columns) for s in data),
    )


def _threshold(spec, threshold: float | None, threshold_source: str | None, previous: Mapping[str, Any], name: str):
    """(threshold, where it comes from): given, else the one a verified set was checked with, else the detector's."""
    if threshold is not None:
        return threshold, threshold_source or "given on the command line (--threshold)"
    if previous.get("detector") == name and "threshold" in previous:
        return float(previous["threshold"]), previous.get("threshold_source", "")
    return spec.default_threshold, spec.threshold_source


def _score_splits(src: _Source, kind: str, thr: float, detection_run, carry, batch_size: int, progress: bool):
    """Per split, the verification columns (detected now, or kept from the earlier check), the record's counts and
    the carried decisions. `detection_run`: (detector, queries, cache, redetected-with-the-same-detector) or None."""
    from tqdm.auto import tqdm

    added: dict[str, dict[str, list[Any]]] = {}
    counts: dict[str, dict[str, int]] = {}
    carried: set[str] = set()  # decided images of the earlier version found again
    total = sum(len(s) for s in src.chosen) if detection_run else 0
    with tqdm(total=total, desc="verifying", unit="img", disable=not progress or not detection_run) as bar:
        for s in src.data:
            if detection_run and s in src.chosen:
                det, queries, store, _ = detection_run
                scores, found = _detect_split(s, det, queries, batch_size, bar, store)
                boxes = [_boxes_json(b, thr) for b in found]
            elif detection_run and not detection_run[3]:
                scores, boxes = [None] * len(s), [None] * len(s)  # not checked (by this detector)
            else:
                scores, boxes = s.column(SCORE), s.column(BOXES)
            present = [None if v is None else bool(v >= thr) for v in scores]
            reviewed = [r or "" for r in s.column(REVIEWED)]
            if carry:
                for i, digest in enumerate(s.image_digests()):
                    if digest in carry:
                        reviewed[i] = carry[digest]
                        carried.add(digest)
            for (split, index), decision in src.decisions.items():
                if split == s.name:
                    reviewed[index] = decision
            added[s.name] = {SCORE: scores, PRESENT: present, BOXES: boxes, REVIEWED: reviewed}
            if any(v is not None for v in scores):
                counts[s.name] = {
                    "checked": sum(v is not None for v in scores),
                    "failed": sum(failed_check(kind, p) for p in present),
                    "keep": reviewed.count("keep"),
                    "drop": reviewed.count("drop"),
                }
    return added, counts, carried


def verify_dataset(
    source: str | Path,
    out: str | Path,
    *,
    detector: str | None = None,
    detector_model: str | None = None,
    detector_revision: str | None = None,
    threshold: float | None = None,
    splits: Sequence[str] | None = None,
    decisions: str | Path | None = None,
    redetect: bool = False,
    batch_size: int = 8,
    device: str | None = None,
    command: str | None = None,
    progress: bool = True,
    cache: str | Path | None = None,
    threshold_source: str | None = None,
    carry: Mapping[str, str] | None = None,
    audit: int | None = None,
    audit_seed: int = 0,
    audit_carry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a dataset and write it again to `out` with the verification columns; returns the card's record.

    Everything that can be wrong with the inputs (splits, columns, labels, decisions file, detector
    name, threshold) is checked before any model runs, and nothing is written unless all of it passes.
    `cache`: a JSON-lines file of detections already made (see DetectionCache), for resumable runs; None: a hidden
    file next to `out` (`resume_file`), removed once `out` is written, so a killed run, re-run, resumes.
    `threshold_source`: where a given `threshold` comes from, for the card (default: the command line).
    `carry`: decisions of an earlier version of the set by image sha256 (`decided_images`): each goes to the row with
    the same image bytes (before `decisions`); the record counts those carried and those that found no row.
    `audit`: draw a new audit sample of that many checked images (seeded by `audit_seed`; `draw_audit`); otherwise the
    set's earlier audit (or `audit_carry`, the audit record of the export a rebuild replaces) is found again by image
    bytes. The record's `audit` holds the sample and, per verdict, the decisions people made on it.
    """
    from spurbench import detection

    _check_options(threshold, batch_size, audit, audit_seed, detector)
    src = _read_source(source, out, splits, decisions)
    kind, previous = src.opened.kind, src.previous
    name = detector or previous.get("detector") or "owlv2"
    spec = detection.detector_spec(name)
    thr, thr_source = _threshold(spec, threshold, threshold_source, previous, name)
    store_path = cache if cache is not None else resume_file(out)
    record_base, detection_run = _detection_run(
        src, name, spec, redetect, detector, detector_model, detector_revision, device, store_path
    )
    added, counts, carried = _score_splits(src, kind, thr, detection_run, carry, batch_size, progress)
    record = _record(record_base, thr, thr_source, previous, counts, command, carry, carried)
    audited = _audit_record(src, kind, added, audit, audit_seed, audit_carry or previous.get(AUDIT_KEY))
    if audited is not None:
        record[AUDIT_KEY] = audited
    _write_verified(src, out, record, kind, added)
    if detection_run is not None and cache is None:
        resume_file(out).unlink(missing_ok=True)  # written by this command, done with
    return record


def _check_options(
    threshold: float | None, batch_size: int, audit: int | None, audit_seed: int, detector: str | None
) -> None:
    from spurbench import detection

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise SpurbenchError(f"--threshold must be a score between 0 and 1, got {threshold}")
    if batch_size < 1:
        raise SpurbenchError(f"--batch-size must be at least 1, got {batch_size}")
    if audit is not None:
        parse_audit(audit, audit_seed)
    if detector is not None:
        detection.detector_spec(detector)


def _detection_run(
    src: _Source, name: str, spec, redetect: bool, detector, detector_model, detector_revision, device, store_path
):
    """(the detector's part of the record, the detection to run or None). A verified set is detected again only when
    asked, with another detector, or for splits never checked, with the weights it was checked with unless others
    are named; otherwise its stored scores are kept."""
    from spurbench import detection

    previous = src.previous
    same_detector = (detector is None or detector == previous.get("detector")) and (
        detector_model is None or detector_model == previous.get("model")
    )
    detect_now = (
        redetect
        or not src.verified
        or not same_detector
        or not {s.name for s in src.chosen} <= set(previous.get("splits") or {})
    )
    if not detect_now:
        return {k: previous.get(k) for k in ("detector", "model", "revision", "queries")}, None
    model, revision = detector_model, detector_revision
    if (
        model is None
        and detector is None
        and spec.builder is None
        and previous.get("model") not in (None, spec.model_id)
    ):
        model, revision = previous["model"], revision or previous.get("revision")  # the weights it was checked with
    det = detection.load_detector(name, model=model, revision=revision, device=device)
    record_base = {"detector": name, **{k: v for k, v in det.describe().items() if k in ("model", "revision")}}
    if record_base.get("model") and Path(str(record_base["model"])).is_absolute():
        # a local folder: never its absolute path
        record_base["model"] = ds_contract.portable_path(record_base["model"])
    record_base["queries"] = (
        "ImageNet-1k lemmas from timm (imagenet_synset_to_lemma.txt), lower-cased"
        if src.label_names is None
        else "the label names"
    ) + (", as 'a photo of a {name}'" if det.family == "owlv2" else ", one phrase each")
    queries = label_queries(src.label_names, det.family)
    store = DetectionCache(store_path, det.describe())
    return record_base, (det, queries, store, src.verified and same_detector)


def _record(
    record_base: Mapping[str, Any],
    thr: float,
    thr_source: str,
    previous: Mapping[str, Any],
    counts: Mapping[str, Any],
    command: str | None,
    carry: Mapping[str, str] | None,
    carried: set[str],
) -> dict[str, Any]:
    """The card's verification record, but for the audit."""
    from spurbench import __version__

    record = {
        **record_base,
        "threshold": thr,
        "threshold_source": thr_source,
        "margin": float(previous.get("margin", DEFAULT_MARGIN)),
        "splits": counts,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spurbench_version": __version__,
    }
    if command:
        record["command"] = command
    if carry:
        record["decisions_carried"] = {"carried": len(carried), "not_carried": len(set(carry) - carried)}
    return record


def _write_verified(
    src: _Source, out: str | Path, record: dict[str, Any], kind: str, added: Mapping[str, Mapping[str, list[Any]]]
) -> None:
    """The dataset again at `out`: same rows, the verification columns added, the record in its card."""
    card = src.card
    card.provenance[CARD_KEY] = record
    card.body = _with_section(card.body, _card_section(record, kind))
    ds_contract.write_dataset(
        out,
        {s.name: s.rows(added[s.name]) for s in src.data},
        card,
        extra_features=_verify_features(src.data),
        label_names=src.label_names,
    )


# ---------------------------------------------------------------------------------------------
# The audit: a seeded random sample, stratified by class and verdict, for a person to decide


def parse_audit(audit: str | int | None, seed: str | int | None) -> tuple[int | None, int]:
    """(--audit N, --audit-seed S) as integers, one line on what is wrong (N must be a positive whole number)."""
    if audit is None:
        if seed is not None:
            raise SpurbenchError("--audit-seed seeds the audit sample: give --audit N too")
        return None, 0
    try:
        n = int(str(audit).strip())
    except ValueError:
        raise SpurbenchError(f"--audit must be a whole number of images to audit, got {audit!r}") from None
    if n <= 0:
        raise SpurbenchError(f"--audit must be at least 1 image, got {n}")
    try:
        s = 0 if seed is None else int(str(seed).strip())
    except ValueError:
        raise SpurbenchError(f"--audit-seed must be a whole number, got {seed!r}") from None
    if s < 0:
        raise SpurbenchError(f"--audit-seed must be 0 or more, got {s}")
    return n, s


def draw_audit(strata: Mapping[tuple[int, str], Sequence[Any]], n: int, seed: int) -> list[Any]:
    """n items drawn without replacement from `strata` ({(class, verdict): items}), seeded.

    Half of n goes to each verdict (so both error rates can be estimated; a verdict with too few images gives the rest
    to the other), and within a verdict to the classes in proportion to their sizes (largest remainder), so the rate
    of a verdict is estimated without weights."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = {v: sum(len(items) for (_, vv), items in strata.items() if vv == v) for v in VERDICTS}
    small, big = sorted(VERDICTS, key=lambda v: (sizes[v], v))
    want = {small: min(sizes[small], n // 2)}
    want[big] = min(sizes[big], n - want[small])
    want[small] = min(sizes[small], n - want[big])  # what the bigger verdict could not take
    out: list[Any] = []
    for v in VERDICTS:
        keys = sorted(k for k in strata if k[1] == v and strata[k])
        if not keys or not want[v]:
            continue
        exact = [want[v] * len(strata[k]) / sizes[v] for k in keys]
        take = [int(x) for x in exact]
        for j in sorted(range(len(keys)), key=lambda j: (take[j] - exact[j], keys[j]))[: want[v] - sum(take)]:
            take[j] += 1
        for k, t in zip(keys, take):
            picked = rng.choice(len(strata[k]), size=min(t, len(strata[k])), replace=False)
            out += [strata[k][int(i)] for i in sorted(picked)]
    return out


def _audit_record(
    src: _Source,
    kind: str,
    added: Mapping[str, Mapping[str, list[Any]]],
    audit: int | None,
    seed: int,
    earlier: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The audit's part of the verification record: its sample (split, row, image sha256), drawn now (`audit`) or the
    earlier one found again by image bytes (a rebuild or re-verification keeps it), and the per-verdict figures."""
    by_name = {s.name: s for s in src.data}
    # the split `spurbench eval` scores (test) when it was checked: the leak rate is a property of the scored images,
    # not of the reference photos beside them
    audited = [s for s in src.chosen if s.name == ds_contract.DEFAULT_SPLIT] or src.chosen
    verdict_of: dict[tuple[str, int], str] = {}
    for s in audited:
        for i, p in enumerate(added[s.name][PRESENT]):
            if p is not None:
                verdict_of[(s.name, i)] = "failed" if failed_check(kind, p) else "passed"
    if audit is not None:
        if audit > len(verdict_of):
            raise SpurbenchError(
                f"--audit {audit} asks for more images than the {len(verdict_of)} checked ones; give at most {len(verdict_of)}"
            )
        strata: dict[tuple[int, str], list[tuple[str, int]]] = {}
        for (name, i), verdict in verdict_of.items():
            strata.setdefault((int(by_name[name].column("label")[i]), verdict), []).append((name, i))
        rows = draw_audit(strata, audit, seed)
        images = [[name, i, by_name[name].digest(i)] for name, i in rows]
        head, lost = {"seed": seed, "size": audit}, 0
    elif earlier and earlier.get("images"):
        images, lost = _find_again(src, earlier["images"])
        head = {"seed": earlier.get("seed"), "size": earlier.get("size")}
    else:
        return None
    verdicts = [verdict_of.get((name, i), "") for name, i, _ in images]
    decisions = [added[name][REVIEWED][i] for name, i, _ in images]
    set_sizes = {v: sum(x == v for x in verdict_of.values()) for v in VERDICTS}
    return {
        **head,
        "kind": kind,
        "splits": [s.name for s in audited],
        "strata": "class x verdict (half the sample per verdict, classes in proportion to their size)",
        "images": images,
        "not_found": lost,
        "verdicts": audit_stats(kind, verdicts, decisions, set_sizes),
    }


def _find_again(src: _Source, images: Sequence[Sequence[Any]]) -> tuple[list[list[Any]], int]:
    """The audit's images in this version of the set, by their bytes: where they were if unchanged, else looked up
    among every row; (found [[split, row, sha256]], how many are gone)."""
    by_name = {s.name: s for s in src.data}
    found, missing = [], []
    for item in images:
        try:  # read from a card: anything malformed counts as gone
            name, i, digest = str(item[0]), int(item[1]), str(item[2])
        except (TypeError, ValueError, IndexError, KeyError):
            missing.append("")
            continue
        s = by_name.get(name)
        if s is not None and 0 <= i < len(s) and s.digest(i) == digest:
            found.append([name, i, digest])
        else:
            missing.append(digest)
    if missing:  # rows moved (a rebuild): look the images up by content
        where = {d: (s.name, i) for s in src.data for i, d in enumerate(s.image_digests())}
        for digest in missing:
            if digest in where:
                found.append([*where[digest], digest])
    return found, len(images) - len(found)


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _data_flags(parser.add_argument_group("data"))
    _detector_flags(parser.add_argument_group("detector"))
    _review_flags(parser.add_argument_group("review"))


def _data_flags(d: argparse._ArgumentGroup) -> None:
    d.add_argument(
        "--dataset",
        required=True,
        metavar="DIR|HUB_ID",
        help="dataset in spurbench's contract: a local folder or a Hugging Face Hub id",
    )
    d.add_argument(
        "--split",
        action="append",
        default=None,
        metavar="S",
        help="split to check, repeatable; unset: every split (rows of other splits get empty scores and are never excluded)",
    )
    d.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="folder to write the verified dataset to: a new folder, or a spurbench dataset folder such as --dataset itself "
        "(replaced whole at the end); a folder holding other files is refused",
    )


def _detector_flags(m: argparse._ArgumentGroup) -> None:
    from spurbench.detection import DETECTORS

    m.add_argument(
        "--detector",
        default=None,
        metavar="NAME",
        help=f"open-vocabulary detector: {', '.join(DETECTORS)}; unset: owlv2, or the one a verified set was checked with. "
        "`tiny` is a random-weight OWLv2 built locally (plumbing only: its scores mean nothing)",
    )
    m.add_argument(
        "--detector-model",
        default=None,
        metavar="ID|DIR",
        help="other weights for the detector's family: a Hub id or a local save_pretrained folder",
    )
    m.add_argument(
        "--detector-revision",
        default=None,
        metavar="REV",
        help="Hub revision of --detector-model (the default models are pinned)",
    )
    m.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="X",
        help="object_present = object_score >= X; unset: the detector's documented default (owlv2 0.1, grounding-dino 0.35), "
        "or the threshold a verified set was checked with",
    )
    m.add_argument(
        "--redetect",
        action="store_true",
        help="run the detector again on a verified set (otherwise its stored scores are reused)",
    )
    m.add_argument("--batch-size", type=int, default=8, help="images per detector forward pass")
    m.add_argument("--device", default=None, help="torch device; unset: cuda when available, else cpu")


def _review_flags(r: argparse._ArgumentGroup) -> None:
    r.add_argument(
        "--decisions",
        metavar="CSV",
        default=None,
        help="decisions.csv from the review page (columns index,split,decision; decision keep, drop or clear) to record in "
        "the `reviewed` column; needs --out",
    )
    r.add_argument(
        "--page",
        metavar="DIR",
        default=None,
        help="write the review page (flagged and borderline images with scores and boxes, keep/drop, decisions.csv "
        "download) to DIR/index.html: of --out when given, else of --dataset (which must be verified)",
    )
    r.add_argument(
        "--audit",
        metavar="N",
        default=None,
        help="draw a seeded random sample of N checked images (of the test split when it is checked), stratified by class and verdict (passed / failed), into "
        "the review page's audit queue; once people decide them the card records the check's error rate per verdict "
        "(needs --out)",
    )
    r.add_argument(
        "--audit-seed",
        metavar="S",
        default=None,
        help="seed of the --audit sample (a whole number, default 0)",
    )
    r.add_argument(
        "--margin",
        type=float,
        default=None,
        metavar="M",
        help=f"review page: images whose score is within M of the threshold are shown as borderline (default {DEFAULT_MARGIN})",
    )


def command_line(args: argparse.Namespace) -> str:
    """The command as the card records it: local paths relative to the working directory (or by name), never absolute."""
    local = ds_contract.portable_path
    dataset = local(args.dataset) if Path(str(args.dataset)).expanduser().exists() else str(args.dataset)
    parts = ["spurbench", "verify", "--dataset", dataset]
    for s in args.split or []:
        parts += ["--split", s]
    model = args.detector_model
    if model is not None and Path(str(model)).expanduser().exists():
        model = local(model)
    for flag, value in (
        ("--detector", args.detector),
        ("--detector-model", model),
        ("--detector-revision", args.detector_revision),
        ("--threshold", args.threshold),
        ("--decisions", None if args.decisions is None else local(args.decisions)),
        ("--audit", args.audit),
        ("--audit-seed", args.audit_seed),
        ("--out", None if args.out is None else local(args.out)),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.redetect:
        parts.append("--redetect")
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    audit, audit_seed = _check_flags(args)
    _quiet_progress_bars()
    target = args.dataset
    if args.out is not None:
        _verify_to_out(args, audit, audit_seed)
        target = args.out
    if args.page is not None:
        from spurbench.evaluate.review import render_review_page

        written = render_review_page(target, args.page, margin=args.margin)
        print(f"review page: {written}")
    return 0


def _check_flags(args: argparse.Namespace) -> tuple[int | None, int]:
    """(--audit, --audit-seed) as integers, once the flags are known to go together."""
    if args.out is None and args.page is None:
        raise SpurbenchError(
            "nothing to do: give --out DIR (write the verified dataset) and/or --page DIR (the review page)"
        )
    audit, audit_seed = parse_audit(args.audit, args.audit_seed)
    if audit is not None and args.out is None:
        raise SpurbenchError(
            "--audit records its sample in a new copy of the dataset: add --out DIR (it may be --dataset itself)"
        )
    if args.decisions is not None and args.out is None:
        raise SpurbenchError(
            "--decisions records decisions in a new copy of the dataset: add --out DIR (it may be --dataset itself)"
        )
    if args.margin is not None and not 0 <= args.margin <= 1:
        raise SpurbenchError(f"--margin must be between 0 and 1, got {args.margin}")
    if args.out is None and any(v is not None for v in (args.detector, args.detector_model, args.threshold)):
        raise SpurbenchError("--detector, --detector-model and --threshold change the dataset: add --out DIR")
    return audit, audit_seed


def _quiet_progress_bars() -> None:
    if not sys.stderr.isatty():
        import datasets

        datasets.disable_progress_bars()
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


#: flags `verify_dataset` takes under their own names
_SAME_NAMED = (
    "detector",
    "detector_model",
    "detector_revision",
    "threshold",
    "decisions",
    "redetect",
    "batch_size",
    "device",
)


def _verify_to_out(args: argparse.Namespace, audit: int | None, audit_seed: int) -> None:
    """Verify --dataset into --out and say what the check found."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SpurbenchError(
            '`spurbench verify` runs a detector from transformers: pip install "spurbench[build]"'
        ) from None
    record = verify_dataset(
        args.dataset,
        args.out,
        **{k: getattr(args, k) for k in _SAME_NAMED},
        splits=args.split,
        command=command_line(args),
        audit=audit,
        audit_seed=audit_seed,
    )
    for split, c in record["splits"].items():
        print(
            f"{split}: {c['checked']} checked, {c['failed']} failed the check, {c['keep']} kept / {c['drop']} dropped by a person"
        )
    if AUDIT_KEY in record:
        a = record[AUDIT_KEY]
        print(
            f"audit: {len(a['images'])} image(s) in the sample (seed {a['seed']}); "
            + (audit_line(record) or "no decisions on them yet: decide them on the review page (--page DIR)")
        )
    print(f"verified dataset: {args.out} (detector {record['detector']}, threshold {record['threshold']})")
