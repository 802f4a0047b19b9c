"""What both kinds of leaderboard page share: the gathered page data, thumbnails, number and class formatting, image figures.

evaluate/page_sections.py (every set) and evaluate/shift_page.py (shift sets) build their sections from these.
"""

from __future__ import annotations

import html
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spurbench import imagenet, untrusted
from spurbench.errors import SpurbenchError
from spurbench.files import WrittenFolder, cannot_write, sha256_of, temporary_name

#: longest side of a contact-sheet thumbnail, in pixels (shown at half that on screen; sharp on HiDPI)
THUMB_SIZE = 192

JPEG_QUALITY = 85

#: pages with at most this many thumbnails load them all at once; larger ones load them lazily
EAGER_IMAGES = 400


def esc(value: Any) -> str:
    """HTML-escape any value as text (quotes too, so the result is also safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


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
    left_out: str = ""  # why `spurbench eval` left it out (verification), e.g. "left out: object found, score 0.81"


@dataclass
class PageData:
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


def thumbnail(image_bytes: bytes | None, dest: Path, what: str) -> str:
    """Write a JPEG thumbnail of an encoded image to `dest`; "" when done. An image spurbench will not decode (over
    `untrusted.MAX_IMAGE_PIXELS`, not an image, missing) gets a grey placeholder instead and the one-line reason is
    returned, so one bad row is shown as such rather than failing the whole page."""
    from PIL import Image

    try:
        if image_bytes is None:
            raise SpurbenchError(f"{what} has no image bytes")
        with untrusted.open_image(image_bytes, what) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
            im.save(dest, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        return ""
    except SpurbenchError as err:
        Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), (200, 200, 200)).save(dest, format="JPEG", quality=JPEG_QUALITY)
        return f"not shown: {err}"


def publish_page(out_dir: Path, flag: str, build: Callable[[Path], str], images: str = "images") -> Path:
    """Write a static page into `out_dir` (claimed through `files.WrittenFolder`: a new or empty folder, or one
    spurbench wrote): `build(images_dir)` writes the thumbnails into a staging folder and returns the html; then each
    thumbnail is moved to `out_dir/<images>/...`, recorded thumbnails of an earlier page that the new one no longer
    has are removed, and `index.html` is written last. Only files spurbench's record lists are replaced or removed: a
    user's file in the way refuses the page before anything is moved. A folder that cannot be written is one line."""
    out_dir = Path(out_dir)
    written = WrittenFolder.claim(out_dir, flag)
    staging = temporary_name(out_dir / "page")
    try:
        try:
            staging.mkdir()
            page = build(staging / images)
            staged = (
                {
                    f"{images}/{p.relative_to(staging / images).as_posix()}": p
                    for p in sorted((staging / images).rglob("*"))
                    if p.is_file()
                }
                if (staging / images).is_dir()
                else {}
            )
            written.check_replaceable("index.html", *staged)
            for rel, source in staged.items():
                dest = written.path(rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, dest)
                written.files[rel] = sha256_of(dest)
            for rel in [r for r in written.files if r.startswith(images + "/") and r not in staged]:
                if written.owns(rel):
                    written.path(rel).unlink(missing_ok=True)
                written.files.pop(rel)
            written.save()  # once for all thumbnails (a record rewrite per file would be quadratic)
            written.write("index.html", page)
        except OSError as err:
            raise cannot_write(flag, out_dir, err) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "index.html"


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_num(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def fmt_pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if is_num(x) else "–"


def fmt_params(x: Any) -> str:
    return f"{x / 1e6:.2f} M" if is_num(x) else "–"


def class_label(k: int) -> str:
    try:
        return f"{imagenet.class_name(k)} ({k})"
    except SpurbenchError:
        return str(k)


def wnid_of(k: int) -> str:
    try:
        return imagenet.wnids()[k]
    except (IndexError, TypeError):
        return ""


def class_anchor(k: int) -> str:
    return f"class-{k}"


def rate_color(v: float) -> str:
    """White (0) to deep red (1): how often a class fools the model."""
    v = min(max(v, 0.0), 1.0)
    r = round(255 - 75 * v)
    g = round(255 - 230 * v)
    b = round(255 - 215 * v)
    return f"rgb({r},{g},{b})"


def heatmap_open(width: int, height: int, label: str) -> str:
    """The opening tag of a heatmap's inline SVG (`label`: its accessible name, HTML)."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}">'
    )


def heatmap_row_head(k: int, left: int, y: int, cell_h: int) -> str:
    """A heatmap row's class name, linking to the class's images."""
    return (
        f'<a href="#{class_anchor(k)}"><text class="rowhead" x="{left - 8}" y="{y + cell_h * 0.68:.0f}" text-anchor="end">'
        f"{esc(class_label(k))}</text></a>"
    )


def heatmap_cell(
    x: int, y: int, size: tuple[int, int], fill: str, ink: str, text: str, title: str, attrs: str = ""
) -> str:
    """One heatmap cell: its tooltip (`title`, HTML), a square of colour `fill` and `text` centred in it."""
    cell_w, cell_h = size
    return (
        f"<g{attrs}><title>{title}</title>"
        f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}" stroke="#dde1e8"/>'
        f'<text x="{x + cell_w / 2 - 1:.0f}" y="{y + cell_h * 0.68:.0f}" text-anchor="middle" class="{ink}">{esc(text)}</text></g>'
    )


def color_scale(lx: int, top: int, label: str, high_first: bool) -> str:
    """A heatmap's colour scale from 0 to 100 % (`high_first`: the deepest colour at the top)."""
    rects = "".join(
        f'<rect x="{lx}" y="{top + 12 * (10 - t if high_first else t)}" width="16" height="12" fill="{rate_color(t / 10)}"/>'
        for t in range(11)
    )
    return (
        rects + f'<text x="{lx + 22}" y="{top + 10}">100%</text><text x="{lx + 22}" y="{top + 130}">0%</text>'
        f'<text x="{lx}" y="{top + 150}" class="small">{label}</text>'
    )


def class_nav(classes: Sequence[int]) -> str:
    """Links to every class's images."""
    return " · ".join(f'<a href="#{class_anchor(k)}">{esc(class_label(k))}</a>' for k in classes)


def class_heading(k: int) -> str:
    """The opening of a class's section of images: its name and WordNet id."""
    return (
        f'<section class="cls" id="{class_anchor(k)}"><h3>{esc(class_label(k))} <small>{esc(wnid_of(k))}</small></h3>'
    )


def reference_sheet(refs: Sequence[Shot], title: str, lazy: bool) -> str:
    """A class's reference images under `title` ("" when it has none)."""
    if not refs:
        return ""
    return (
        f'<h4>{title} ({len(refs)})</h4><div class="sheet refs">'
        + "".join(shot_figure(s, with_mark=False, lazy=lazy) for s in refs)
        + "</div>"
    )


def image_sheet(heading: str, css: str, figures: Sequence[str]) -> str:
    """A class's scored images under `heading`, closing the class's section."""
    return (
        f'<h4>{heading}</h4><div class="{css}">'
        + ("".join(figures) or '<p class="note">no images of this class</p>')
        + "</div></section>"
    )


def mark_class(n_fooled: int, m: int) -> str:
    if m == 0:
        return "f-none"
    if n_fooled == 0:
        return "f-0"
    if n_fooled == m:
        return "f-all"
    return "f-some"


def shot_figure(s: Shot, with_mark: bool, lazy: bool) -> str:
    n, m = len(s.fooled_by), len(s.scored_by)  # m < panel size only for images a model did not score (--limit)
    bits = [f"image {s.index}", class_label(s.label)]
    if s.spurious_feature:
        bits.append(f"feature: {s.spurious_feature}")
    if s.prompt:
        bits.append(f"prompt: {s.prompt}")
    if s.seed >= 0:
        bits.append(f"seed: {s.seed}")
    if with_mark and s.left_out and m == 0:
        bits.append(s.left_out)
    elif with_mark:
        bits.append(f"fools {n} of {m} panel classifiers" + (f" ({', '.join(s.fooled_by)})" if s.fooled_by else ""))
        bits += s.predictions
    tip = "\n".join(bits)
    alt = f"image {s.index} of class {s.label}" + (f", fools {n} of {m} classifiers" if with_mark else "")
    loading = ' loading="lazy"' if lazy else ""
    if not with_mark:
        mark = ""
    elif m == 0:  # left out by verification, or not scored (--limit): no panel model has a prediction for this image
        mark = f'<span class="mark f-none" title="{esc(s.left_out or "not scored by the panel")}">n/a</span>'
    else:
        mark = f'<span class="mark {mark_class(n, m)}" title="fools {n} of {m}">{n}/{m}</span>'
    return (
        f'<figure class="shot" data-index="{s.index}"'
        + (f' data-fooled="{n}"' if with_mark else ' data-reference="1"')
        + f' title="{esc(tip)}"><img src="{esc(s.src)}" alt="{esc(alt)}"{loading} decoding="async">{mark}'
        f"<figcaption>{'' if with_mark else 'ref '}#{s.index}</figcaption></figure>"
    )
