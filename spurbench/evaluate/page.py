"""Render a leaderboard as a self-contained static web page.

`render_page(leaderboard_path, out_dir, dataset_folder)` writes `out_dir/index.html` and the thumbnails
it shows under `out_dir/images/`. Nothing is fetched at view time (no CDN, no web fonts, no scripts from
elsewhere): the CSS and the small table-sorting script are inline, the charts are SVG drawn here, so the
folder can be opened from disk, zipped, or served by any static host.

The page shows the ranked models with their headline metrics (sortable), per-class spurious rates as a
heatmap (classes x models), the cross-classifier consistency figures, for each class a contact sheet of
the dataset's images marked by how many panel classifiers each one fools (from the per-image prediction
files) next to the reference images of that class, and the dataset's provenance with the commands that
reproduce every number on the page.
"""

from __future__ import annotations

import html
import io
import math
import os
import shlex
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from spurbench import __version__, imagenet
from spurbench.dataset import DEFAULT_SPLIT, REFERENCE_SPLIT
from spurbench.errors import SpurbenchError

#: longest side of a contact-sheet thumbnail, in pixels (shown at half that on screen; sharp on HiDPI)
THUMB_SIZE = 192
_JPEG_QUALITY = 85
#: pages with at most this many thumbnails load them all at once; larger ones load them lazily
EAGER_IMAGES = 400


def esc(value: Any) -> str:
    """HTML-escape any value as text (quotes too, so the result is also safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


# ---------------------------------------------------------------------------------------------
# Data gathered for the page


@dataclass
class Shot:
    """One dataset image as shown on a contact sheet."""

    index: int  # row index in its split
    label: int
    src: str  # path of the thumbnail relative to index.html
    spurious_feature: str = ""
    source: str = ""
    builder: str = ""
    prompt: str = ""
    seed: int = -1
    scored_by: list[str] = field(default_factory=list)  # panel models with a prediction for it
    fooled_by: list[str] = field(default_factory=list)  # panel models whose top-1 is the label
    predictions: list[str] = field(default_factory=list)  # one line per model for the tooltip


@dataclass
class _Page:
    board: dict[str, Any]
    entries: list[dict[str, Any]]  # ranked
    panel: list[str]  # models counted in the fool marks (the consistency panel)
    classes: list[int]
    dataset_folder: Path | None
    dataset_note: str
    shots: dict[int, list[Shot]]  # class -> images of the scored split
    references: dict[int, list[Shot]]  # class -> reference images
    provenance: dict[str, Any]
    leaderboard_path: Path
    out_dir: Path
    render_command: str
    review: str = ""  # the review section of a verified dataset (spurbench.evaluate.review), else empty
    kind: str = "spurious"  # the set's kind (shift: accuracy heatmap and guide | result pairs, evaluate/shift_page.py)
    guides: dict[int, dict[str, Any]] = field(default_factory=dict)  # shift sets: row -> guide thumbnail


def _load_board(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from spurbench.evaluate.leaderboard import load_leaderboard, ranked_entries

    board = load_leaderboard(path)
    return board, list(ranked_entries(board))


def _find_dataset(board: Mapping[str, Any], leaderboard_path: Path, dataset_folder: str | Path | None) -> tuple[Path | None, str]:
    """The local dataset folder whose images the page shows, or None with the reason why not."""
    from spurbench.dataset import fingerprint, resolve_dataset

    info = board.get("dataset") or {}
    split = info.get("split") or DEFAULT_SPLIT
    if dataset_folder is not None:
        folder = Path(dataset_folder).expanduser()
        if not folder.is_dir():
            raise SpurbenchError(f"--dataset '{dataset_folder}' is not a folder; give the dataset folder the leaderboard was scored on")
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
    want = info.get("fingerprint")
    if want:
        have = fingerprint(folder, split)
        if have != want:
            raise SpurbenchError(
                f"dataset folder '{folder}' (split {split}) is not the data this leaderboard was scored on "
                f"(fingerprint {have[:12]}... != {want[:12]}...); pass the folder given to `spurbench eval --dataset`"
            )
    return folder, ""


def _thumbnail(image_bytes: bytes, dest: Path) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
        im.save(dest, format="JPEG", quality=_JPEG_QUALITY, optimize=True)


def _split_shots(folder: Path, split: str, images_dir: Path) -> list[Shot]:
    """Thumbnails of every row of one split, written to images_dir/<split>/ (in row order)."""
    from datasets import Image as ImageFeature
    from tqdm.auto import tqdm

    from spurbench.dataset import load_split

    ds = load_split(folder, split).cast_column("image", ImageFeature(decode=False))
    out = images_dir / split
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    cols = set(ds.column_names)
    for i, row in enumerate(tqdm(ds, desc=f"thumbnails ({split})", unit="img", disable=None)):
        img = row["image"]
        data = img.get("bytes")
        if data is None and img.get("path"):
            data = Path(img["path"]).read_bytes()
        name = f"{i:06d}.jpg"
        _thumbnail(data, out / name)
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
            )
        )
    return shots


def _has_split(folder: Path, split: str) -> bool:
    return any(folder.glob(f"data/{split}-*.parquet"))


def _mark(shots: list[Shot], entries: Sequence[Mapping[str, Any]], panel: Sequence[str], board_dir: Path, folder: Path, split: str) -> None:
    """Mark each image with the panel models it fools, from the per-image prediction files (by `index`)."""
    from spurbench.evaluate.leaderboard import read_predictions

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
                line += f"top-1 {_class_label(top1)}"
            if "target_prob" in preds:
                line += f", p(label) = {_num(preds['target_prob'][j], 3)}"
            shot.predictions.append(line)


def _gather(leaderboard_path: Path, out_dir: Path, dataset_folder: str | Path | None, images_dir: Path) -> _Page:
    board, entries = _load_board(leaderboard_path)
    info = board.get("dataset") or {}
    split = info.get("split") or DEFAULT_SPLIT
    consistency = board.get("consistency") or {}
    names = [e.get("model") for e in entries]
    panel = [m for m in (consistency.get("models") or names) if m in names]

    folder, note = _find_dataset(board, leaderboard_path, dataset_folder)
    shots: list[Shot] = []
    references: dict[int, list[Shot]] = {}
    if folder is not None:
        shots = _split_shots(folder, split, images_dir)
        if split != REFERENCE_SPLIT and _has_split(folder, REFERENCE_SPLIT):
            for s in _split_shots(folder, REFERENCE_SPLIT, images_dir):
                references.setdefault(s.label, []).append(s)
        _mark(shots, entries, panel, leaderboard_path.parent, folder, split)
    from spurbench.evaluate.review import review_block

    review = review_block(folder, images_dir) if folder is not None else ""
    from spurbench.evaluate.leaderboard import board_kind

    kind = board_kind(board)
    guides = {}
    if kind == "shift" and folder is not None:
        from spurbench.evaluate.shift_page import guide_thumbnails

        guides = guide_thumbnails(folder, split, images_dir, THUMB_SIZE)

    by_class: dict[int, list[Shot]] = {}
    for s in shots:
        by_class.setdefault(s.label, []).append(s)
    classes = sorted({int(c) for c in (info.get("classes") or [])} | set(by_class) | {int(k) for e in entries for k in (e.get("per_class") or {})})

    provenance = dict(info.get("provenance") or {})
    if not provenance and folder is not None:
        from spurbench.dataset import read_provenance

        provenance = read_provenance(folder)

    cmd = ["spurbench", "leaderboard", "--leaderboard", str(leaderboard_path), "--format", "html", "--out", str(out_dir)]
    if dataset_folder is not None:
        cmd += ["--dataset", str(dataset_folder)]
    return _Page(
        board=board,
        entries=entries,
        panel=panel,
        classes=classes,
        dataset_folder=folder,
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


# ---------------------------------------------------------------------------------------------
# Formatting


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if _is_num(x) else "–"


def _params(x: Any) -> str:
    return f"{x / 1e6:.2f} M" if _is_num(x) else "–"


def _class_label(k: int) -> str:
    try:
        return f"{imagenet.class_name(k)} ({k})"
    except SpurbenchError:
        return str(k)


def _wnid(k: int) -> str:
    try:
        return imagenet.wnids()[k]
    except (IndexError, TypeError):
        return ""


def _anchor(k: int) -> str:
    return f"class-{k}"


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass
class _Column:
    key: str
    title: str
    help: str
    kind: str  # "num" | "text"
    fmt: Any
    get: Any


def _columns(entries: Sequence[Mapping[str, Any]]) -> list[_Column]:
    def metric(name: str):
        return lambda e: (e.get("metrics") or {}).get(name)

    from spurbench.evaluate import shift

    if shift.is_shift_entries(entries):
        return _shift_columns(metric)
    cols = [
        _Column("rank", "#", "rank on this leaderboard", "num", lambda v: str(v), None),
        _Column("model", "model", "timm model name", "text", esc, lambda e: e.get("model")),
        _Column("spurious_rate", "spurious rate", "fraction of images of class k predicted as k (top-1), mean over classes; lower is better", "num", _pct, metric("spurious_rate")),
        _Column("spurious_rate_micro", "micro", "top-1 spurious rate pooled over all images", "num", _pct, metric("spurious_rate_micro")),
        _Column("spurious_rate_top5", "top-5", "fraction of images of class k with k among the top 5, mean over classes", "num", _pct, metric("spurious_rate_top5")),
        _Column("mean_target_prob", "mean p(k)", "mean probability of the class the image is spurious for, mean over classes", "num", lambda v: _num(v, 3), metric("mean_target_prob")),
    ]
    if any(_is_num((e.get("metrics") or {}).get("spurious_score_ap")) for e in entries):
        cols.append(_Column("spurious_score_ap", "spurious score AP", "average precision of p(k) separating real class-k images (positives) from the spurious ones; higher is better", "num", lambda v: _num(v, 3), metric("spurious_score_ap")))
    if any(_is_num((e.get("metrics") or {}).get("spurious_score_auroc")) for e in entries):
        cols.append(_Column("spurious_score_auroc", "AUROC", "area under the ROC curve of the same separation; higher is better", "num", lambda v: _num(v, 3), metric("spurious_score_auroc")))
    cols += [
        _Column("images_per_second", "images/s", "evaluation throughput on the device named in the entry", "num", lambda v: _num(v, 1), lambda e: e.get("images_per_second")),
        _Column("num_params", "params", "number of parameters", "num", _params, lambda e: e.get("num_params")),
        _Column("preprocessing", "preprocessing", "timm: the model's own eval transform; spurious-imagenet: the released Spurious ImageNet code's", "text", esc, lambda e: e.get("preprocessing")),
    ]
    return cols


def _shift_columns(metric) -> list[_Column]:
    """The ranking columns of a shift set (accuracy; evaluate/shift.py)."""
    def worst(e: Mapping[str, Any]) -> Any:
        return (e.get("metrics") or {}).get("worst_group_accuracy")

    return [
        _Column("rank", "#", "rank on this leaderboard (by worst-group accuracy)", "num", lambda v: str(v), None),
        _Column("model", "model", "timm model name", "text", esc, lambda e: e.get("model")),
        _Column("worst_group_accuracy", "worst group", "top-1 accuracy on the group (e.g. background) where the model does worst; higher is better", "num", _pct, worst),
        _Column("worst_group", "which", "the worst group", "text", esc, metric("worst_group")),
        _Column("mean_group_accuracy", "mean group", "top-1 accuracy averaged over the groups", "num", _pct, metric("mean_group_accuracy")),
        _Column("accuracy", "accuracy", "top-1 accuracy over all images", "num", _pct, metric("accuracy")),
        _Column("accuracy_top5", "top-5", "fraction of images whose class is among the top 5", "num", _pct, metric("accuracy_top5")),
        _Column("reference_accuracy", "reference", "top-1 accuracy on the reference split (the un-shifted photos)", "num", _pct, metric("reference_accuracy")),
        _Column("accuracy_drop", "drop", "reference accuracy minus accuracy (positive: the shift hurts)", "num", _pct, metric("accuracy_drop")),
        _Column("images_per_second", "images/s", "evaluation throughput on the device named in the entry", "num", lambda v: _num(v, 1), lambda e: e.get("images_per_second")),
        _Column("num_params", "params", "number of parameters", "num", _params, lambda e: e.get("num_params")),
        _Column("preprocessing", "preprocessing", "timm: the model's own eval transform; spurious-imagenet: the released Spurious ImageNet code's", "text", esc, lambda e: e.get("preprocessing")),
    ]


def _sortable_table(cols: Sequence[_Column], rows: Sequence[Sequence[Any]], table_id: str, caption: str, first_sorted: str | None = None) -> str:
    """A table the inline script sorts by clicking a header; cells carry their raw value in data-v."""
    head = []
    for c in cols:
        sort = ' aria-sort="ascending"' if c.key == first_sorted else ""
        head.append(
            f'<th scope="col" data-key="{esc(c.key)}" data-type="{c.kind}" title="{esc(c.help)}"{sort}>'
            f'<button type="button">{esc(c.title)}<span class="arrow" aria-hidden="true"></span></button></th>'
        )
    body = []
    for i, values in enumerate(rows):
        cells = []
        for c, v in zip(cols, values):
            raw = (repr(float(v)) if _is_num(v) else "") if c.kind == "num" else ("" if v is None else str(v))
            cells.append(f'<td data-v="{esc(raw)}" class="{c.kind}">{c.fmt(v) if v is not None or c.kind == "text" else "–"}</td>')
        body.append(f'<tr data-i="{i}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="{esc(table_id)}"><caption>{caption}</caption>'
        f'<thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _ranking_section(p: _Page) -> str:
    from spurbench.evaluate.leaderboard import GROUPS_NOTE, comparable_groups

    groups = comparable_groups(p.board)
    cols = _columns(p.entries)
    if len(groups) > 1:  # ranks restart in each group of entries scored alike
        cols.insert(1, _Column("group", "group", "entries are ranked only within a group scored alike (same images, same preprocessing)", "num", lambda v: str(v), None))
    lead = 2 if len(groups) > 1 else 1  # columns filled here, not by the entry: rank (and group)
    rows = []
    for g in groups:
        for rank, e in enumerate(g["entries"], 1):
            rows.append([rank, g["id"]][:lead] + [c.get(e) for c in cols[lead:]])
    if len(groups) > 1:
        parts = "; ".join(f"group {g['id']}: {esc(g['description'])}, {len(g['entries'])} model(s), ranked by "
                          + ("spurious score AP" if g["ranked_by"] == "spurious_score_ap" else "spurious rate") for g in groups)
        caption = f"{len(p.entries)} model(s). {esc(GROUPS_NOTE.replace('`', ''))} ({parts}). Click a column header to sort."
    else:
        by_ap = bool(groups) and groups[0]["ranked_by"] == "spurious_score_ap"
        how = ("worst-group accuracy (higher first)" if groups and groups[0]["ranked_by"] == "worst_group_accuracy"
               else "spurious score AP (higher first)" if by_ap else "spurious rate (lower first)")
        caption = f"{len(p.entries)} model(s), ranked by {how}. Click a column header to sort."
    table = _sortable_table(cols, rows, "ranking", caption, "rank" if len(groups) <= 1 else None)
    if not p.entries:
        table += '<p class="note">No model has been scored on this dataset yet: run <code>spurbench eval</code> (see Reproduce below).</p>'
    return f'<section id="models"><h2>Models</h2>{table}</section>'


def _color(v: float) -> str:
    """White (0) to deep red (1): how often a class fools the model."""
    v = min(max(v, 0.0), 1.0)
    r = round(255 - 75 * v)
    g = round(255 - 230 * v)
    b = round(255 - 215 * v)
    return f"rgb({r},{g},{b})"


def _heatmap(p: _Page) -> str:
    """Inline SVG: one row per class, one column per model, cell = top-1 spurious rate of that class."""
    models = [e.get("model") for e in p.entries]
    if not models or not p.classes:
        return '<p class="note">Nothing to chart yet.</p>'

    def rate(e: Mapping[str, Any], k: int) -> Any:
        return ((e.get("per_class") or {}).get(str(k)) or {}).get("spurious_rate")

    # Most spurious classes first (mean rate over the models), so the chart reads top-down.
    def mean_rate(k: int) -> float:
        vals = [rate(e, k) for e in p.entries if _is_num(rate(e, k))]
        return sum(vals) / len(vals) if vals else -1.0

    classes = sorted(p.classes, key=lambda k: (-mean_rate(k), k))
    cell_w, cell_h, left = 86, 22, 250
    short = [m if len(m) <= 34 else m[:32] + "…" for m in models]
    top = 24 + int(6.2 * max(len(s) for s in short) * 0.72)  # room for names rotated by 45 degrees
    width = left + cell_w * len(models) + 150
    height = top + max(cell_h * len(classes), 160) + 10  # at least the colour scale's height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="per-class spurious rate of each model">'
    ]
    for j, (m, s) in enumerate(zip(models, short)):
        x = left + cell_w * j + cell_w / 2
        parts.append(f'<text class="colhead" transform="translate({x:.0f},{top - 6}) rotate(-45)"><title>{esc(m)}</title>{esc(s)}</text>')
    for i, k in enumerate(classes):
        y = top + cell_h * i
        parts.append(
            f'<a href="#{_anchor(k)}"><text class="rowhead" x="{left - 8}" y="{y + cell_h * 0.68:.0f}" text-anchor="end">{esc(_class_label(k))}</text></a>'
        )
        for j, e in enumerate(p.entries):
            v = rate(e, k)
            x = left + cell_w * j
            n = ((e.get("per_class") or {}).get(str(k)) or {}).get("n")
            fill = _color(v) if _is_num(v) else "#eee"
            ink = "light" if _is_num(v) and v > 0.55 else "dark"
            label = _pct(v)
            parts.append(
                f'<g><title>{esc(models[j])} on {esc(_class_label(k))}: spurious rate {label}'
                f'{f" of {n} images" if _is_num(n) else ""}</title>'
                f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}" stroke="#dde1e8"/>'
                f'<text x="{x + cell_w / 2 - 1:.0f}" y="{y + cell_h * 0.68:.0f}" text-anchor="middle" class="{ink}">{esc(label)}</text></g>'
            )
    # colour scale
    lx = left + cell_w * len(models) + 24
    for t in range(11):
        v = t / 10
        parts.append(f'<rect x="{lx}" y="{top + 12 * (10 - t)}" width="16" height="12" fill="{_color(v)}"/>')
    parts.append(f'<text x="{lx + 22}" y="{top + 10}">100%</text><text x="{lx + 22}" y="{top + 130}">0%</text>')
    parts.append(f'<text x="{lx}" y="{top + 150}" class="small">spurious rate</text>')
    parts.append("</svg>")
    return "".join(parts)


def _chart_section(p: _Page) -> str:
    if p.kind == "shift":
        from spurbench.evaluate.shift_page import heatmap_section

        return heatmap_section(p)
    return (
        '<section id="per-class"><h2>Per-class spurious rates</h2>'
        "<p>Fraction of the images of class <i>k</i> that each model classifies as <i>k</i> (top-1), although the "
        "object is not in them. Classes are ordered by their mean rate over the models; click a class for its images.</p>"
        f'<div class="scroll">{_heatmap(p)}</div></section>'
    )


def _consistency_section(p: _Page) -> str:
    c = p.board.get("consistency") or {}
    if not c or len(c.get("models") or []) < 2:
        return (
            '<section id="consistency"><h2>Cross-classifier consistency</h2>'
            '<p class="note">Consistency needs at least two models scored on this dataset.</p></section>'
        )
    m = len(c.get("models") or [])
    cards = [
        ("fooled by all", _pct(c.get("all_fooled_rate")), f"images whose top-1 is the class for all {m} models"),
        ("fooled by at least half", _pct(c.get("at_least_half_rate")), f"images whose top-1 is the class for at least {math.ceil(m / 2)} of {m} models"),
        ("Fleiss' kappa", _num(c.get("fleiss_kappa")), "agreement of the models on fooled / not fooled, beyond chance"),
        ("mean pairwise Cohen's kappa", _num(c.get("mean_pairwise_kappa")), "mean over pairs of models"),
    ]
    stats = "".join(
        f'<div class="card" title="{esc(h)}"><div class="big">{esc(v)}</div><div>{esc(t)}</div></div>' for t, v, h in cards
    )
    # pairwise kappa as a matrix
    models = list(c.get("models") or [])
    pk = c.get("pairwise_kappa") or {}

    def kappa(a: str, b: str) -> Any:
        return pk.get(f"{a} vs {b}", pk.get(f"{b} vs {a}"))

    head = "".join(f"<th scope=\"col\">{esc(b)}</th>" for b in models)
    rows = []
    for a in models:
        cells = "".join("<td class=\"num\">—</td>" if a == b else f'<td class="num">{_num(kappa(a, b))}</td>' for b in models)
        rows.append(f'<tr><th scope="row">{esc(a)}</th>{cells}</tr>')
    matrix = f'<table class="matrix"><caption>Pairwise Cohen\'s kappa (fooled / not fooled)</caption><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'

    per_class = c.get("per_class") or {}
    cols = [
        _Column("class", "class", "ImageNet class the images are spurious for (sorts by class index)", "num",
                lambda k: f'<a href="#{_anchor(k)}">{esc(_class_label(k))}</a>', None),
        _Column("n", "images", "images of this class", "num", lambda v: str(int(v)), None),
        _Column("all_fooled_rate", "fooled by all", "fraction of the class's images fooling every model", "num", _pct, None),
        _Column("at_least_half_rate", "≥ half", "fraction fooling at least half of the models", "num", _pct, None),
        _Column("fleiss_kappa", "Fleiss' κ", "Fleiss' kappa within the class", "num", _num, None),
        _Column("mean_pairwise_kappa", "mean Cohen's κ", "mean pairwise Cohen's kappa within the class", "num", _num, None),
    ]
    trs = []
    for k in p.classes:
        block = per_class.get(str(k)) or {}
        n = block.get("num_images", len(p.shots.get(k, [])) or None)
        trs.append([k, n] + [block.get(col.key) for col in cols[2:]])
    table = _sortable_table(cols, trs, "consistency-per-class", "Per class (click a header to sort)")
    notes = ""
    if c.get("note"):
        notes += f'<p class="note">Note: {esc(c["note"])}.</p>'
    for model, why in (c.get("excluded") or {}).items():
        notes += f'<p class="note">Left out of the consistency: {esc(model)}: {esc(why)}</p>'
    section = (
        f'<section id="consistency"><h2>Cross-classifier consistency</h2>'
        f"<p>Over the panel of {m} models ({esc(', '.join(models))}) and {esc(c.get('num_images', ''))} images: how many of the "
        "models each image fools (top-1 = the class it is spurious for).</p>"
        f'<div class="cards">{stats}</div>{notes}{matrix}{table}</section>'
    )
    if p.kind == "shift":  # the store counts wrong predictions as the failure on a shift set: say so
        from spurbench.evaluate.shift_page import reword_consistency

        section = reword_consistency(section)
    return section


def _mark_class(n_fooled: int, m: int) -> str:
    if m == 0:
        return "f-none"
    if n_fooled == 0:
        return "f-0"
    if n_fooled == m:
        return "f-all"
    return "f-some"


def _figure(s: Shot, with_mark: bool, lazy: bool) -> str:
    n, m = len(s.fooled_by), len(s.scored_by)  # m < panel size only for images a model did not score (--limit)
    bits = [f"image {s.index}", _class_label(s.label)]
    if s.spurious_feature:
        bits.append(f"feature: {s.spurious_feature}")
    if s.prompt:
        bits.append(f"prompt: {s.prompt}")
    if s.seed >= 0:
        bits.append(f"seed: {s.seed}")
    if with_mark:
        bits.append(f"fools {n} of {m} panel classifiers" + (f" ({', '.join(s.fooled_by)})" if s.fooled_by else ""))
        bits += s.predictions
    tip = "\n".join(bits)
    alt = f"image {s.index} of class {s.label}" + (f", fools {n} of {m} classifiers" if with_mark else "")
    loading = ' loading="lazy"' if lazy else ""
    if not with_mark:
        mark = ""
    elif m == 0:  # e.g. scored with --limit: no panel model has a prediction for this image
        mark = '<span class="mark f-none" title="not scored by the panel">n/a</span>'
    else:
        mark = f'<span class="mark {_mark_class(n, m)}" title="fools {n} of {m}">{n}/{m}</span>'
    return (
        f'<figure class="shot" data-index="{s.index}"' + (f' data-fooled="{n}"' if with_mark else ' data-reference="1"')
        + f' title="{esc(tip)}"><img src="{esc(s.src)}" alt="{esc(alt)}"{loading} decoding="async">{mark}'
        f"<figcaption>{'' if with_mark else 'ref '}#{s.index}</figcaption></figure>"
    )


def _contact_sheets(p: _Page) -> str:
    m = len(p.panel)
    intro = (
        f"<p>Each image is marked by how many of the {m} panel classifiers it fools (their top-1 prediction is the class "
        'although the object is not there): <span class="mark f-all">all</span> <span class="mark f-some">some</span> '
        '<span class="mark f-0">none</span>. Hover an image for its prompt and every model\'s prediction.</p>'
    )
    if p.dataset_folder is None:
        return f'<section id="images"><h2>Images</h2><p class="note">{esc(p.dataset_note)}</p></section>'
    if p.kind == "shift":
        from spurbench.evaluate.shift_page import pairs_section

        return pairs_section(p, lazy=sum(len(v) for v in p.shots.values()) * 2 > EAGER_IMAGES)
    split = (p.board.get("dataset") or {}).get("split") or DEFAULT_SPLIT
    # Small pages load every thumbnail at once; big ones (100 classes x 75 images) only as they scroll in.
    total = sum(len(v) for v in p.shots.values()) + sum(len(v) for v in p.references.values())
    lazy = total > EAGER_IMAGES
    nav = " · ".join(f'<a href="#{_anchor(k)}">{esc(_class_label(k))}</a>' for k in p.classes)
    out = [f'<section id="images"><h2>Images by class</h2>{intro}<nav class="classnav">{nav}</nav>']
    for k in p.classes:
        shots = sorted(p.shots.get(k, []), key=lambda s: (-len(s.fooled_by), s.index))
        feats = Counter(s.spurious_feature for s in shots + p.references.get(k, []) if s.spurious_feature)
        feature = feats.most_common(1)[0][0] if feats else ""
        rates = " · ".join(
            f"{esc(e.get('model'))}: {_pct(((e.get('per_class') or {}).get(str(k)) or {}).get('spurious_rate'))}" for e in p.entries
        )
        cblock = ((p.board.get("consistency") or {}).get("per_class") or {}).get(str(k)) or {}
        out.append(
            f'<section class="cls" id="{_anchor(k)}"><h3>{esc(_class_label(k))} <small>{esc(_wnid(k))}</small></h3>'
            + (f'<p class="feature">spurious feature: <b>{esc(feature)}</b></p>' if feature else "")
            + f'<p class="small">spurious rate — {rates}' + (f" · fooled by all: {_pct(cblock.get('all_fooled_rate'))}" if cblock else "") + "</p>"
        )
        refs = p.references.get(k, [])
        if refs:
            out.append(
                f'<h4>Reference images ({len(refs)})</h4><div class="sheet refs">'
                + "".join(_figure(s, with_mark=False, lazy=lazy) for s in refs)
                + "</div>"
            )
        out.append(
            f'<h4>{esc(split)} split: {len(shots)} image(s)</h4><div class="sheet">'
            + ("".join(_figure(s, with_mark=True, lazy=lazy) for s in shots) or '<p class="note">no images of this class</p>')
            + "</div></section>"
        )
    out.append("</section>")
    return "".join(out)


_KNOWN_PROVENANCE = [
    ("recipe", "recipe"),
    ("recipe_sha256", "recipe hash (sha256)"),
    ("recipe_hash", "recipe hash"),
    ("builder", "builder"),
    ("base_model", "base model"),
    ("base_model_revision", "base model revision"),
    ("base_models", "base models"),
    ("feature_model", "feature model (SFSL)"),
    ("created", "date"),
    ("date", "date"),
    ("spurbench_version", "spurbench version"),
]


def _value_html(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return f"<pre>{esc(yaml.safe_dump(v, sort_keys=False, allow_unicode=True, width=100).strip())}</pre>"
    return f"<code>{esc(v)}</code>" if v is not None and v != "" else "—"


def _provenance_section(p: _Page) -> str:
    info = p.board.get("dataset") or {}
    ds_rows = [
        ("dataset", info.get("id")),
        ("revision", info.get("revision") or "—"),
        ("split", info.get("split") or DEFAULT_SPLIT),
        ("images", info.get("num_images")),
        ("fingerprint (sha256 of the split's Parquet shards)", info.get("fingerprint")),
        ("images shown from", str(p.dataset_folder) if p.dataset_folder else "— (not available)"),
    ]
    dl = "".join(f"<dt>{esc(a)}</dt><dd>{_value_html(b)}</dd>" for a, b in ds_rows)
    prov = p.provenance
    if prov:
        shown = set()
        items = []
        for key, title in _KNOWN_PROVENANCE:
            if key in prov:
                items.append(f"<dt>{esc(title)}</dt><dd>{_value_html(prov[key])}</dd>")
                shown.add(key)
        for key, value in prov.items():
            if key not in shown and key != "command":
                items.append(f"<dt>{esc(key)}</dt><dd>{_value_html(value)}</dd>")
        prov_html = f'<dl class="prov">{"".join(items)}</dl>'
    else:
        prov_html = (
            '<p class="note">This dataset carries no spurbench provenance (its card has no <code>spurbench:</code> block), '
            "so it was not made by <code>spurbench build</code>: no recipe, hash or base models to show.</p>"
        )
    return f'<section id="provenance"><h2>Dataset and provenance</h2><dl class="prov">{dl}</dl><h3>Build provenance</h3>{prov_html}</section>'


def _reproduce_section(p: _Page) -> str:
    lines = []
    build = p.provenance.get("command") if p.provenance else None
    lines.append("# 1. build the dataset")
    lines.append(str(build) if build else "#    (not recorded: the dataset has no spurbench provenance)")
    lines.append("# 2. score the models (each line adds or replaces one leaderboard entry)")
    cmds = []
    for e in p.entries:
        c = e.get("command")
        if c and c not in cmds:
            cmds.append(str(c))
    lines += cmds or ["#    (no entries yet)"]
    lines.append("# 3. render this page")
    lines.append(p.render_command)
    return (
        '<section id="reproduce"><h2>Reproduce</h2><p>The exact commands behind every number and image on this page:</p>'
        f'<pre class="cmd">{esc(chr(10).join(lines))}</pre></section>'
    )


_CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#d9dde5; --bg:#fff; --head:#f3f5f9; --accent:#2456b3; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; color:var(--ink); background:var(--bg); }
header { padding:18px 28px 10px; border-bottom:1px solid var(--line); background:var(--head); }
header h1 { margin:0 0 4px; font-size:22px; }
header p { margin:2px 0; color:var(--muted); }
header nav a { margin-right:14px; }
main { padding:8px 28px 40px; max-width:1400px; }
h2 { margin:28px 0 8px; font-size:18px; border-bottom:1px solid var(--line); padding-bottom:4px; }
h3 { margin:22px 0 4px; font-size:16px; } h3 small { color:var(--muted); font-weight:normal; }
h4 { margin:10px 0 4px; font-size:13px; color:var(--muted); font-weight:600; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
code, pre { font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"Liberation Mono",monospace; font-size:12.5px; }
pre { background:#f6f7f9; border:1px solid var(--line); padding:8px 10px; overflow-x:auto; margin:4px 0; white-space:pre-wrap; word-break:break-all; }
.note { color:var(--muted); font-style:italic; }
.small { font-size:12.5px; color:var(--muted); margin:2px 0; }
table { border-collapse:collapse; margin:6px 0 12px; }
caption { text-align:left; color:var(--muted); font-size:12.5px; padding:2px 0 6px; caption-side:top; }
th, td { border:1px solid var(--line); padding:4px 9px; }
thead th { background:var(--head); }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
th button { all:unset; cursor:pointer; font-weight:600; white-space:nowrap; }
th button:focus-visible { outline:2px solid var(--accent); }
th[aria-sort="ascending"] .arrow::after { content:" ▲"; font-size:10px; }
th[aria-sort="descending"] .arrow::after { content:" ▼"; font-size:10px; }
tbody tr:nth-child(even) { background:#fafbfc; }
.scroll { overflow-x:auto; }
svg.heatmap text { font-size:12px; fill:#222; }
svg.heatmap text.light { fill:#fff; }
svg.heatmap text.small { font-size:11px; fill:#5b6475; }
svg.heatmap a text { fill:var(--accent); }
.cards { display:flex; gap:12px; flex-wrap:wrap; margin:8px 0 14px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:170px; background:#fbfcfe; }
.card .big { font-size:22px; font-weight:650; }
table.matrix th[scope=row] { text-align:left; background:var(--head); font-weight:600; }
.classnav { font-size:12.5px; margin:6px 0 10px; }
.sheet { display:flex; flex-wrap:wrap; gap:6px; }
figure.shot { position:relative; margin:0; width:100px; }
figure.shot img { width:96px; height:96px; object-fit:cover; display:block; border-radius:3px; border:2px solid var(--line); background:#eee; }
figure.shot figcaption { font-size:11px; color:var(--muted); text-align:center; }
.sheet.refs figure.shot img { border-color:#8a94a6; border-style:dashed; }
.mark { display:inline-block; font-size:11px; font-weight:700; padding:0 5px; border-radius:8px; color:#fff; line-height:17px; }
figure.shot .mark { position:absolute; top:4px; right:8px; }
.f-all { background:#b3121d; } .f-some { background:#d9822b; } .f-0 { background:#5f6b7a; } .f-none { background:#999; }
figure.shot[data-fooled] img { border-color:#c9ced8; }
dl.prov { display:grid; grid-template-columns:max-content 1fr; gap:4px 14px; margin:6px 0; }
dl.prov dt { color:var(--muted); } dl.prov dd { margin:0; min-width:0; }
dl.prov pre { margin:0; }
pre.cmd { font-size:12.5px; }
footer { color:var(--muted); font-size:12px; padding:16px 28px; border-top:1px solid var(--line); }
"""

# Sorts any table.sortable by the clicked header: numbers by their raw data-v value, text by its
# content; empty values last in both directions; ties keep the original (ranked) order.
_JS = """
(function () {
  'use strict';
  function sortTable(table, col, type, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = dir === 'ascending' ? 1 : -1;
    rows.sort(function (a, b) {
      var va = a.cells[col].getAttribute('data-v'), vb = b.cells[col].getAttribute('data-v');
      var ea = va === '', eb = vb === '';
      if (ea || eb) { return ea === eb ? (+a.dataset.i) - (+b.dataset.i) : (ea ? 1 : -1); }
      var c = type === 'num' ? parseFloat(va) - parseFloat(vb) : va.localeCompare(vb, undefined, {numeric: true, sensitivity: 'base'});
      return c !== 0 ? sign * c : (+a.dataset.i) - (+b.dataset.i);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      var button = th.querySelector('button');
      if (!button) { return; }
      button.addEventListener('click', function () {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir);
        sortTable(table, col, th.getAttribute('data-type'), dir);
      });
    });
  });
})();
"""


def _html(p: _Page) -> str:
    info = p.board.get("dataset") or {}
    title = f"spurbench leaderboard — {info.get('id') or 'dataset'}"
    n_img = info.get("num_images")
    subtitle = (
        f"{len(p.entries)} model(s) scored on {esc(n_img if n_img is not None else '?')} image(s) of "
        f"{len(p.classes)} class(es), split <code>{esc(info.get('split') or DEFAULT_SPLIT)}</code> of <code>{esc(info.get('id'))}</code>."
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # data: icon, so no browser asks the server (or the disk) for /favicon.ico
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{_CSS}{_shift_css(p)}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{subtitle}</p>"
        '<nav><a href="#models">models</a><a href="#per-class">per-class rates</a><a href="#consistency">consistency</a>'
        '<a href="#images">images</a>' + ('<a href="#review">review</a>' if p.review else "") + '<a href="#provenance">provenance</a><a href="#reproduce">reproduce</a></nav></header>'
        "<main>"
        + _ranking_section(p)
        + _chart_section(p)
        + _consistency_section(p)
        + _contact_sheets(p)
        + p.review
        + _provenance_section(p)
        + _reproduce_section(p)
        + "</main>"
        f"<footer>Rendered by spurbench {esc(__version__)} from <code>{esc(p.leaderboard_path.name)}</code> "
        "(schema version " + esc(p.board.get("schema_version")) + "). Self-contained: nothing on this page is fetched from the network.</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )


def _shift_css(p: _Page) -> str:
    if p.kind != "shift":
        return ""
    from spurbench.evaluate.shift_page import CSS

    return CSS


def render_page(leaderboard_path: str | Path, out_dir: str | Path, dataset_folder: str | Path | None = None) -> Path:
    """Write the leaderboard's static page to `out_dir/index.html` (+ `out_dir/images/`); return its path.

    `dataset_folder` is the dataset the leaderboard was scored on (checked by fingerprint); without it the
    dataset id recorded in the leaderboard is tried (a folder, or a Hub id already in the local cache), and
    when no images can be found the page is still written, without contact sheets, saying why.
    Only `index.html` and `images/` in `out_dir` are replaced, each as a whole at the end.
    """
    leaderboard_path = Path(leaderboard_path)
    out_dir = Path(out_dir)
    if not leaderboard_path.is_file():
        raise SpurbenchError(f"leaderboard '{leaderboard_path}' does not exist; create it with `spurbench eval --leaderboard {leaderboard_path}`")
    if out_dir.exists() and not out_dir.is_dir():
        raise SpurbenchError(f"--out '{out_dir}' is a file; give a folder for the page")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".page-", dir=out_dir))
    try:
        page = _gather(leaderboard_path, out_dir, dataset_folder, staging / "images")
        (staging / "images").mkdir(exist_ok=True)
        (staging / "index.html").write_text(_html(page), encoding="utf-8")
        # Swap the new images folder in, then the page; a crash before here leaves the old page intact.
        images = out_dir / "images"
        if images.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-images-", dir=out_dir))
            images.rename(old / "images")
            (staging / "images").rename(images)
            shutil.rmtree(old, ignore_errors=True)
        else:
            (staging / "images").rename(images)
        os.replace(staging / "index.html", out_dir / "index.html")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "index.html"
