"""Gathering what the page shows: the ranked board, the dataset behind it (checked by fingerprint), thumbnails of
its images marked by the predictions files, the review block of a verified set.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spurbench.dataset import DEFAULT_SPLIT, REFERENCE_SPLIT, OpenDataset
from spurbench.errors import SpurbenchError
from spurbench.evaluate.page_common import (
    THUMB_SIZE,
    PageData,
    Shot,
    class_label,
    fmt_num,
    thumbnail,
)
from spurbench.files import inside


def _find_dataset(
    board: Mapping[str, Any], leaderboard_path: Path, dataset_folder: str | Path | None
) -> tuple[OpenDataset | None, str]:
    """The local dataset whose images the page shows, opened once, or None with the reason why not."""
    from spurbench.dataset import open_dataset_folder, resolve_dataset

    info = board.get("dataset") or {}
    split = info.get("split") or DEFAULT_SPLIT
    if dataset_folder is not None:
        folder = Path(dataset_folder).expanduser()
        if not folder.is_dir():
            raise SpurbenchError(
                f"--dataset '{dataset_folder}' is not a folder; give the dataset folder the leaderboard was scored on"
            )
        folder = resolve_dataset(folder)
    else:
        given = info.get("id")
        if not given:
            return None, "the leaderboard names no dataset; pass --dataset FOLDER to show its images"
        # The id is recorded as given to `spurbench eval`: relative to where that ran, or a Hub id.
        candidates = [Path(given).expanduser(), leaderboard_path.parent / given]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            try:
                folder = resolve_dataset(given, info.get("revision"))
            except SpurbenchError as err:
                note = f"the images of dataset '{given}' are not available here ({err}); pass --dataset FOLDER to show them"
                print(f"spurbench leaderboard: warning: {note}", file=sys.stderr)
                return None, note
    opened = open_dataset_folder(folder)
    want = info.get("fingerprint")
    if want:
        have = opened.fingerprint(split)  # the split's rows are read here, once, for the thumbnails too
        if have != want:
            raise SpurbenchError(
                f"dataset folder '{folder}' (split {split}) is not the data this leaderboard was scored on "
                f"(fingerprint {have[:12]}... != {want[:12]}...); pass the folder given to `spurbench eval --dataset`"
            )
    return opened, ""


def _split_shots(opened: OpenDataset, split: str, images_dir: Path) -> list[Shot]:
    """Thumbnails of every row of one split, written to images_dir/<split>/ (in row order)."""
    from datasets import Image as ImageFeature
    from tqdm.auto import tqdm

    ds = opened.split(split).cast_column("image", ImageFeature(decode=False))
    out = images_dir / split
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    cols = set(ds.column_names)
    for i, row in enumerate(tqdm(ds, desc=f"thumbnails ({split})", unit="img", disable=None)):
        img = row["image"]
        name = f"{i:06d}.jpg"
        refused = thumbnail(_image_bytes(opened, img), out / name, f"split '{split}' row {i}'s image")
        shots.append(
            Shot(
                index=i,
                label=int(row["label"]),
                src=f"images/{split}/{name}",
                spurious_feature=str(row.get("spurious_feature") or "") if "spurious_feature" in cols else "",
                source=str(row.get("source") or "") if "source" in cols else "",
                builder=str(row.get("builder") or "") if "builder" in cols else "",
                prompt=str(row.get("prompt") or "") if "prompt" in cols else "",
                seed=int(row["seed"]) if "seed" in cols and row.get("seed") is not None else -1,
                left_out=refused,
            )
        )
    return shots


def _image_bytes(opened: OpenDataset, cell: dict[str, Any] | None) -> bytes | None:
    """A row's encoded image: its embedded bytes, or the file its path names inside the dataset folder (a path read
    from a table is confined to the folder: `files.inside`)."""
    if not cell:
        return None
    if cell.get("bytes") is not None:
        return cell["bytes"]
    if cell.get("path"):
        return inside(opened.folder, cell["path"], f"dataset '{opened.folder}'").read_bytes()
    return None


def _mark_left_out(opened: OpenDataset, split: str, kind: str, shots: list[Shot]) -> None:
    """Say on each image that `spurbench eval` leaves out by its verification why (the rule of verification.py)."""
    from spurbench import verification as V

    ds = opened.split(split)
    if not V.is_verified(ds.column_names):
        return
    cols = [c for c in (V.SCORE, V.PRESENT, V.REVIEWED) if c in ds.column_names]
    rows = ds.select_columns(cols).to_dict()
    present, reviewed = rows[V.PRESENT], rows.get(V.REVIEWED)
    left_out = V.excluded_rows(kind, present, reviewed)
    for s in shots:
        if s.index < len(left_out) and left_out[s.index] and not s.left_out:  # "not shown: ..." says more
            score = (rows.get(V.SCORE) or [None] * len(present))[s.index]
            if reviewed is not None and reviewed[s.index] == "drop":
                s.left_out = "left out: dropped by a reviewer"
            else:
                found = "object found" if present[s.index] else "object not found"
                s.left_out = f"left out: {found}" + (f", score {score:.2f}" if score is not None else "")


def _mark(
    shots: list[Shot],
    entries: Sequence[Mapping[str, Any]],
    panel: Sequence[str],
    board_dir: Path,
    folder: Path,
    split: str,
) -> None:
    """Mark each image with the panel models it fools, from the per-image prediction files (by `index`)."""
    from spurbench.evaluate.predictions_csv import read_predictions

    for entry in entries:
        model = entry.get("model")
        if model not in panel and not entry.get("predictions"):
            continue
        try:
            preds = read_predictions(board_dir / entry["predictions"]) if entry.get("predictions") else None
        except SpurbenchError:
            if model in panel:
                raise
            preds = None  # left out of the consistency already; the page says why
        if preds is None:
            continue
        for j, i in enumerate(preds["index"].tolist()):
            if not 0 <= i < len(shots) or int(preds["label"][j]) != shots[i].label:
                raise SpurbenchError(
                    f"predictions of '{model}' do not match split '{split}' of '{folder}' at image {i}; "
                    "pass the dataset folder the leaderboard was scored on, or re-run `spurbench eval` on this one"
                )
            shot = shots[i]
            if model in panel:
                shot.scored_by.append(model)
                if preds["fooled_top1"][j]:
                    shot.fooled_by.append(model)
            line = f"{model}: "
            if "top1" in preds:
                top1 = int(preds["top1"][j])
                line += f"top-1 {class_label(top1)}"
            if "target_prob" in preds:
                line += f", p(label) = {fmt_num(preds['target_prob'][j], 3)}"
            shot.predictions.append(line)


def gather(leaderboard_path: Path, out_dir: Path, dataset_folder: str | Path | None, images_dir: Path) -> PageData:
    """Everything the page shows: the ranked board and, when its dataset is here, the images marked by the panel."""
    from spurbench.evaluate.leaderboard import board_kind, load_leaderboard, ranked_entries

    board = load_leaderboard(leaderboard_path)
    entries = ranked_entries(board)
    info = board.get("dataset") or {}
    consistency = board.get("consistency") or {}
    names = [e.get("model") for e in entries]
    panel = [m for m in (consistency.get("models") or names) if m in names]
    kind = board_kind(board)
    opened, note = _find_dataset(board, leaderboard_path, dataset_folder)
    shots: list[Shot] = []
    references: dict[int, list[Shot]] = {}
    review, guides = "", {}
    if opened is not None:
        shots, references, review, guides = _images(opened, info, kind, entries, panel, leaderboard_path, images_dir)
    by_class: dict[int, list[Shot]] = {}
    for s in shots:
        by_class.setdefault(s.label, []).append(s)
    classes = sorted(
        {int(c) for c in (info.get("classes") or [])}
        | set(by_class)
        | {int(k) for e in entries for k in (e.get("per_class") or {})}
    )
    provenance = dict(info.get("provenance") or {})
    if not provenance and opened is not None:
        provenance = opened.provenance
    cmd = [
        "spurbench",
        "leaderboard",
        "--leaderboard",
        str(leaderboard_path),
        "--format",
        "html",
        "--out",
        str(out_dir),
    ]
    if dataset_folder is not None:
        cmd += ["--dataset", str(dataset_folder)]
    return PageData(
        board=board,
        entries=entries,
        panel=panel,
        classes=classes,
        dataset_folder=opened.folder if opened is not None else None,
        dataset_note=note,
        shots=by_class,
        references=references,
        provenance=provenance,
        leaderboard_path=leaderboard_path,
        out_dir=out_dir,
        render_command=shlex.join(cmd),
        review=review,
        kind=kind,
        guides=guides,
    )


def _images(
    opened: OpenDataset,
    info: Mapping[str, Any],
    kind: str,
    entries: Sequence[Mapping[str, Any]],
    panel: Sequence[str],
    leaderboard_path: Path,
    images_dir: Path,
) -> tuple[list[Shot], dict[int, list[Shot]], str, dict[int, dict[str, Any]]]:
    """(the scored split's thumbnails, marked; the reference images by class; the review block; a shift set's
    guides), written under images_dir."""
    from spurbench.evaluate.review import review_block

    split = info.get("split") or DEFAULT_SPLIT
    shots = _split_shots(opened, split, images_dir)
    references: dict[int, list[Shot]] = {}
    if split != REFERENCE_SPLIT and opened.reference_split is not None:
        for s in _split_shots(opened, REFERENCE_SPLIT, images_dir):
            references.setdefault(s.label, []).append(s)
    _mark(shots, entries, panel, leaderboard_path.parent, opened.folder, split)
    review = review_block(opened, images_dir)
    _mark_left_out(opened, split, kind, shots)
    guides = {}
    if kind == "shift":
        from spurbench.evaluate.shift_page import guide_thumbnails

        guides = guide_thumbnails(opened, split, images_dir, THUMB_SIZE)
    return shots, references, review, guides
