"""The review section: images a detector doubts, for a person to keep or drop.

A verified dataset (`spurbench verify`) carries per image `object_score`, `object_present`,
`object_boxes` and `reviewed`. This module shows, per class, the images whose check failed (spurious
set: object present; shift set: object absent) and the borderline ones (score within a margin of the
threshold), each with its score and the detector's boxes drawn over it, and a keep / drop pair of
buttons. The page is static: the decisions stay in the browser until the person downloads them as
`decisions.csv` (`index,split,decision`), which `spurbench verify --decisions` records in the dataset.

Used by the leaderboard page (page.py) and by `spurbench verify --page DIR` (a page for a dataset alone).
Pure reading of the dataset: no detector, no transformers.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spurbench import dataset as ds_contract
from spurbench import imagenet, untrusted
from spurbench.errors import SpurbenchError
from spurbench.evaluate.page_common import publish_page
from spurbench.verification import (
    AUDIT_KEY,
    BOXES,
    DEFAULT_MARGIN,
    NEAR_DUPLICATE,
    NEAREST,
    PRESENT,
    REVIEWED,
    SCORE,
    SIMILARITY,
    audit_line,
    failed_check,
    is_verified,
)

THUMB = 256  # longest side of a review thumbnail (shown at 160 px)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclass
class ReviewItem:
    split: str
    index: int
    label: int
    class_name: str
    score: float
    present: bool
    failed: bool
    borderline: bool
    boxes: list[dict[str, Any]]
    reviewed: str
    width: int
    height: int
    src: str = ""  # thumbnail path relative to the page
    audit: bool = False  # drawn into the audit sample (`spurbench verify --audit N`): shown apart, without the verdict
    near_duplicate: bool = False  # the build's copy check found it too close to a reference image
    similarity: float | None = None  # to its nearest reference image (copy check)
    nearest: str = ""  # that reference image's file name


@dataclass
class Review:
    kind: str
    record: dict[str, Any]  # the card's verification block
    margin: float
    items: list[ReviewItem]
    dataset: str


def _label_name(names: Sequence[str], k: int, imagenet_labels: bool) -> str:
    if imagenet_labels:
        return f"{imagenet.class_name(k)} ({k})"
    return names[k] if 0 <= k < len(names) else str(k)


def collect_review(
    folder: str | Path | ds_contract.OpenDataset,
    images_dir: Path,
    rel_prefix: str = "images",
    margin: float | None = None,
) -> Review | None:
    """The images to review in a verified dataset folder, thumbnails written under `images_dir/review/`;
    None when the dataset is not verified. `folder`: the folder, or the dataset opened once (splits read already
    are used)."""
    opened = ds_contract.open_dataset_folder(folder)
    record = opened.verification
    if not record:
        return None
    kind = opened.kind
    threshold = float(record["threshold"])
    margin = float(record.get("margin", DEFAULT_MARGIN)) if margin is None else float(margin)
    out = images_dir / "review"
    out.mkdir(parents=True, exist_ok=True)
    audited = _audit_rows(record.get(AUDIT_KEY))
    items: list[ReviewItem] = []
    for split in opened.split_names:
        items += _split_items(opened, split, kind, threshold, margin, audited, out, rel_prefix)
    # shown on pages that get published: relative to the working directory or by name, never an absolute path
    return Review(
        kind=kind,
        record=dict(record),
        margin=margin,
        items=items,
        dataset=ds_contract.dataset_display_name(opened.folder),
    )


def _split_items(
    opened: ds_contract.OpenDataset,
    split: str,
    kind: str,
    threshold: float,
    margin: float,
    audited: set[tuple[str, int]],
    out: Path,
    rel_prefix: str,
) -> list[ReviewItem]:
    """The split's images to review (failed, borderline, decided, audited or near-duplicate), thumbnails in `out`."""
    table, feats = opened.table(split)
    if not is_verified(table.column_names):
        return []
    names = list(getattr(feats["label"], "names", []) or [])
    imagenet_labels = names == list(imagenet.wnids()) or not names
    cols = {c: table.column(c).to_pylist() for c in ("label", SCORE, PRESENT)}
    for c, default in ((BOXES, None), (REVIEWED, ""), (NEAR_DUPLICATE, False), (SIMILARITY, None), (NEAREST, "")):
        cols[c] = (table.column(c).to_pylist() if c in table.column_names else None) or [default] * len(cols[SCORE])
    items = []
    for i, score in enumerate(cols[SCORE]):
        near = bool(cols[NEAR_DUPLICATE][i])
        if score is None and not near:
            continue
        present = bool(cols[PRESENT][i])
        failed = score is not None and failed_check(kind, present)
        borderline = score is not None and abs(float(score) - threshold) <= margin
        reviewed = cols[REVIEWED][i] or ""
        audit = (split, i) in audited
        if not (failed or borderline or reviewed or audit or near):
            continue
        name = f"{split}-{i:06d}.jpg"
        width, height = _thumbnail(opened.folder, split, i, table.column("image")[i].as_py(), out / name)
        k = int(cols["label"][i])
        items.append(
            ReviewItem(
                split=split,
                index=i,
                label=k,
                class_name=_label_name(names, k, imagenet_labels),
                score=float(score or 0.0),
                present=present,
                failed=failed,
                borderline=borderline,
                boxes=json.loads(cols[BOXES][i]) if cols[BOXES][i] else [],
                reviewed=reviewed,
                width=width,
                height=height,
                src=f"{rel_prefix}/review/{name}",
                audit=audit,
                near_duplicate=near,
                similarity=None if cols[SIMILARITY][i] is None else float(cols[SIMILARITY][i]),
                nearest=str(cols[NEAREST][i] or ""),
            )
        )
    return items


def _thumbnail(folder: Path, split: str, i: int, cell: dict[str, Any] | None, path: Path) -> tuple[int, int]:
    """Write the row's image as a JPEG thumbnail at `path`; (width, height) of the image itself."""
    from PIL import Image

    what = f"split '{split}' row {i}'s image in '{folder}'"
    with untrusted.open_image(
        ds_contract.cell_bytes(folder, cell, what) or b"", what
    ) as im:  # refused by name over the size limit
        im = im.convert("RGB")
        width, height = im.size
        im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
        im.save(path, format="JPEG", quality=85)
    return width, height


def _audit_rows(audit: Any) -> set[tuple[str, int]]:
    """(split, row) of the audit sample in the verification record (malformed entries of a card are skipped)."""
    out = set()
    for item in (audit or {}).get("images") or [] if isinstance(audit, dict) else []:
        try:
            out.add((str(item[0]), int(item[1])))
        except (TypeError, ValueError, IndexError, KeyError):
            continue
    return out


def _figure(it: ReviewItem, threshold: float) -> str:
    if it.audit:  # blind: no score, no boxes, so the person's call does not lean on the detector's
        rects, caption = "", f'<span class="small">{_esc(it.split)} #{it.index} · audit</span>'
        status = "audit"
    else:
        rects, caption, status = _detector_view(it, threshold)
    pressed = lambda d: "true" if it.reviewed == d else "false"  # noqa: E731
    return (
        f'<figure class="rv {status}" data-split="{_esc(it.split)}" data-index="{it.index}" data-score="{it.score:.4f}" '
        f'data-initial="{_esc(it.reviewed)}" data-decision="{_esc(it.reviewed)}">'
        f'<div class="rv-img"><img src="{_esc(it.src)}" alt="{_esc(it.split)} #{it.index}" decoding="async">'
        f'<svg viewBox="0 0 {it.width} {it.height}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">{rects}</svg></div>'
        f"<figcaption>{caption}</figcaption>"
        f'<div class="rv-buttons"><button type="button" data-decision="keep" aria-pressed="{pressed("keep")}">keep</button>'
        f'<button type="button" data-decision="drop" aria-pressed="{pressed("drop")}">drop</button></div></figure>'
    )


def _detector_view(it: ReviewItem, threshold: float) -> tuple[str, str, str]:
    """(boxes as SVG, caption, status) of a disputed image: what the detector and the copy check say."""
    rects = "".join(
        f'<rect x="{b["box"][0]:.1f}" y="{b["box"][1]:.1f}" width="{max(0.0, b["box"][2] - b["box"][0]):.1f}" '
        f'height="{max(0.0, b["box"][3] - b["box"][1]):.1f}" class="{"hit" if b["score"] >= threshold else "weak"}">'
        f"<title>{_esc(b.get('query'))}: {b['score']:.3f}</title></rect>"
        for b in it.boxes
    )
    status = "failed" if it.failed else "copy" if it.near_duplicate else "borderline" if it.borderline else "decided"
    best = it.boxes[0].get("query") if it.boxes else ""
    copy = (
        f'<br><span class="small">copy of {_esc(it.nearest)}: similarity {it.similarity:.2f}</span>'
        if it.near_duplicate and it.similarity is not None
        else ""
    )
    caption = (
        f"<b>{it.score:.3f}</b> {'≥' if it.present else '<'} {threshold:g} · {status}<br>"
        f'<span class="small">{_esc(it.split)} #{it.index}{" · " + _esc(best) if best else ""}</span>{copy}'
    )
    return rects, caption, status


def review_section(review: Review, apply_command: str) -> str:
    """The review section's HTML (self-contained: its own style and script)."""
    threshold = float(review.record["threshold"])
    failed_means = "the object is present" if review.kind == "spurious" else "the object is absent"
    disputed = [it for it in review.items if not it.audit]  # the audit sample is counted in its own queue
    n_failed = sum(it.failed for it in disputed)
    n_border = sum(it.borderline and not it.failed for it in disputed)
    det = review.record
    intro = (
        f"<p>Each image was searched for its class's object by <code>{_esc(det.get('detector'))}</code> "
        f"(<code>{_esc(det.get('model'))}</code>{' @ <code>' + _esc(det.get('revision')) + '</code>' if det.get('revision') else ''}); "
        f"threshold {threshold:g} ({_esc(det.get('threshold_source'))}). In this <b>{_esc(review.kind)}</b> set an image "
        f"<b>fails</b> the check when {failed_means}: <code>spurbench eval</code> leaves it out unless you keep it. Shown: "
        f"{n_failed} failed, {n_border} borderline (score within {review.margin:g} of the threshold), boxes drawn "
        "(solid: at or above the threshold). Click <b>keep</b> (a valid test image) or <b>drop</b> (leave it out); click again to clear.</p>"
        f"<p>Then download the decisions and apply them: <code>{_esc(apply_command)}</code></p>"
    )
    tools = (
        '<div class="rv-tools"><button type="button" id="rv-download">Download decisions.csv</button> '
        '<span id="rv-count">0 decisions</span></div>'
    )
    by_class: dict[int, list[ReviewItem]] = {}
    for it in review.items:
        if not it.audit:
            by_class.setdefault(it.label, []).append(it)
    body = [audit_queue(review)]
    for k in sorted(by_class):
        its = sorted(by_class[k], key=lambda it: (not it.failed, -it.score, it.split, it.index))
        copies = sum(i.near_duplicate for i in its)
        body.append(
            f'<section class="rv-class" id="review-class-{k}"><h3>{_esc(its[0].class_name)} '
            f"<small>{sum(i.failed for i in its)} failed, {sum(i.borderline and not i.failed for i in its)} borderline"
            f"{f', {copies} near-duplicate(s) of a reference image' if copies else ''}</small></h3>"
            f'<div class="rv-sheet">{"".join(_figure(it, threshold) for it in its)}</div></section>'
        )
    if len(body) == 1:
        body.append('<p class="note">No image failed the check or lies near the threshold: nothing to review.</p>')
    return (
        f'<section id="review"><h2>Review: is the object really {"absent" if review.kind == "spurious" else "there"}?</h2>'
        f"<style>{_CSS}</style>{intro}{tools}{''.join(body)}<script>{_JS}</script></section>"
    )


def audit_queue(review: Review) -> str:
    """The audit queue: the random sample of `spurbench verify --audit N`, apart from the disputed images and shown
    without the detector's score or boxes; empty when the set has no audit sample."""
    items = sorted((it for it in review.items if it.audit), key=lambda it: (it.label, it.split, it.index))
    if not items:
        return ""
    absent = "absent" if review.kind == "spurious" else "present"
    line = audit_line(review.record)
    return (
        f'<section class="rv-class rv-audit" id="review-audit"><h3>Audit: {len(items)} randomly drawn image(s) '
        f"<small>{_esc(line) if line else 'no decisions yet'}</small></h3>"
        f"<p>A seeded random sample of every checked image, passed and failed alike, shown without the detector's "
        f"verdict. Decide each: <b>keep</b> when the class's object is {absent} (a valid test image), <b>drop</b> when "
        "it is not. The card then records how often the detector is wrong, with an interval.</p>"
        f'<div class="rv-sheet">{"".join(_figure(it, 0.0) for it in items)}</div></section>'
    )


def apply_command(dataset: str) -> str:
    import shlex

    return f"spurbench verify --dataset {shlex.quote(dataset)} --decisions decisions.csv --out {shlex.quote(dataset)}"


def review_block(folder: str | Path | ds_contract.OpenDataset, images_dir: Path, rel_prefix: str = "images") -> str:
    """The review section for a page whose thumbnails live in `images_dir`; empty for an unverified set."""
    review = collect_review(folder, images_dir, rel_prefix=rel_prefix)
    where = folder.folder if isinstance(folder, ds_contract.OpenDataset) else folder
    return review_section(review, apply_command(str(where))) if review is not None else ""


def render_review_page(folder: str | Path, out_dir: str | Path, margin: float | None = None) -> Path:
    """`out_dir/index.html` (+ `out_dir/images/review/`): the review section of a verified dataset alone. `out_dir`
    is a new or empty folder or one spurbench wrote; only files it wrote there are replaced (`publish_page`)."""
    opened = ds_contract.open_dataset_folder(folder)
    folder = opened.folder

    def build(images: Path) -> str:
        review = collect_review(opened, images.parent, margin=margin)  # it writes into <images_dir>/review
        if review is None:
            raise SpurbenchError(
                f"dataset '{folder}' is not verified (its card has no verification record); run `spurbench verify --dataset {folder} --out DIR` first"
            )
        title = f"spurbench review — {folder.name}"
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{_esc(title)}</title><style>{_PAGE_CSS}</style></head><body>'
            f"<header><h1>{_esc(title)}</h1><p>dataset <code>{_esc(folder)}</code>, {len(review.items)} image(s) to review</p></header>"
            f"<main>{review_section(review, apply_command(str(folder)))}</main></body></html>\n"
        )

    # only the review thumbnails are this page's: a leaderboard page in the same folder keeps its own images
    return publish_page(Path(out_dir), "--page", build, images="images/review")


_PAGE_CSS = """
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif; color:#1d2330; }
header { padding:16px 28px 8px; border-bottom:1px solid #d9dde5; background:#f3f5f9; } header h1 { margin:0 0 4px; font-size:22px; }
main { padding:8px 28px 40px; } h2 { font-size:18px; border-bottom:1px solid #d9dde5; padding-bottom:4px; }
code { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12.5px; } .note { color:#5b6475; font-style:italic; }
"""

_CSS = """
#review h3 small { color:#5b6475; font-weight:normal; }
.rv-tools { position:sticky; top:0; background:#fff; padding:6px 0; z-index:2; border-bottom:1px solid #d9dde5; }
.rv-sheet { display:flex; flex-wrap:wrap; gap:10px; }
figure.rv { margin:0; width:164px; border:2px solid #d9dde5; border-radius:5px; padding:2px; }
figure.rv.failed { border-color:#d9822b; } figure.rv.copy { border-color:#7a4fb3; }
.rv-audit { border:1px dashed #aab; border-radius:6px; padding:0 10px 10px; margin:10px 0; }
figure.rv[data-decision=keep] { border-color:#2f8f46; background:#eef8f0; }
figure.rv[data-decision=drop] { border-color:#b3121d; background:#fbeeee; opacity:.8; }
.rv-img { position:relative; width:160px; line-height:0; }
.rv-img img { width:160px; height:auto; display:block; }
.rv-img svg { position:absolute; left:0; top:0; width:100%; height:100%; }
.rv-img rect { fill:none; stroke-width:3; vector-effect:non-scaling-stroke; }
.rv-img rect.hit { stroke:#ff2d2d; } .rv-img rect.weak { stroke:#ffd23f; stroke-dasharray:4 3; }
figure.rv figcaption { font-size:12px; padding:2px 2px 0; } figure.rv .small { color:#5b6475; }
.rv-buttons { display:flex; gap:4px; padding:3px 2px; }
.rv-buttons button { flex:1; cursor:pointer; border:1px solid #aab; background:#fff; border-radius:3px; padding:2px 0; }
.rv-buttons button[data-decision=keep][aria-pressed=true] { background:#2f8f46; color:#fff; }
.rv-buttons button[data-decision=drop][aria-pressed=true] { background:#b3121d; color:#fff; }
"""

# keep/drop toggles per figure; the download lists every image with a decision now or before (`clear`
# forgets one made earlier), as index,split,decision.
_JS = """
(function () {
  'use strict';
  var figures = Array.prototype.slice.call(document.querySelectorAll('figure.rv'));
  var count = document.getElementById('rv-count');
  function changed() { return figures.filter(function (f) { return f.dataset.decision || f.dataset.initial; }); }
  function refresh() {
    var n = figures.filter(function (f) { return f.dataset.decision; }).length;
    count.textContent = n + (n === 1 ? ' decision' : ' decisions');
  }
  figures.forEach(function (f) {
    Array.prototype.forEach.call(f.querySelectorAll('button[data-decision]'), function (b) {
      b.addEventListener('click', function () {
        var d = f.dataset.decision === b.dataset.decision ? '' : b.dataset.decision;
        f.dataset.decision = d;
        Array.prototype.forEach.call(f.querySelectorAll('button[data-decision]'), function (o) {
          o.setAttribute('aria-pressed', String(o.dataset.decision === d));
        });
        refresh();
      });
    });
  });
  document.getElementById('rv-download').addEventListener('click', function () {
    var lines = ['index,split,decision'];
    changed().forEach(function (f) { lines.push(f.dataset.index + ',' + f.dataset.split + ',' + (f.dataset.decision || 'clear')); });
    var blob = new Blob([lines.join('\\n') + '\\n'], {type: 'text/csv'});
    var a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'decisions.csv';
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  });
  refresh();
})();
"""
