"""The page's sections for `shift` sets (evaluate/page.py calls these when the board's kind is `shift`).

- A class x group (background) accuracy heatmap: each cell the mean top-1 accuracy of the ranked
  models on that class's images of that group (from the entries' `per_class_group`), the models'
  own figures in the cell's tooltip.
- Guide | result pairs per class: the init image a D3S image was made from (`init_image`, the pasted
  photo outlined by `init_box`) next to the generated image, marked by how many panel models get it
  right, so a person can check the object is really there. A DDB set (a `mask` and a `source_index` into
  its `reference` split) shows original photo | mask | counterfactual instead, each kind in its own words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spurbench.dataset import OpenDataset
from spurbench.errors import SpurbenchError
from spurbench.evaluate.page_common import (
    PageData,
    Shot,
    class_heading,
    class_label,
    class_nav,
    color_scale,
    esc,
    fmt_pct,
    heatmap_cell,
    heatmap_open,
    heatmap_row_head,
    image_sheet,
    is_num,
    rate_color,
    reference_sheet,
)
from spurbench.files import inside
from spurbench.untrusted import open_image


def guide_thumbnails(
    folder: Path | OpenDataset, split: str, images_dir: Path, thumb_size: int
) -> dict[int, dict[str, Any]]:
    """Thumbnails of the split's `init_image` column with the `init_box` outlined: {row: {"src", "group"}}.

    Empty when the split has no guides (a shift set made otherwise, e.g. an imported group-labelled set).
    `folder`: the dataset folder, or the dataset opened once (its split read already is used)."""
    from datasets import Image as ImageFeature
    from PIL import Image, ImageDraw

    from spurbench.dataset import open_dataset_folder

    ds = open_dataset_folder(folder).split(split)
    if "init_image" not in ds.column_names:
        return _mask_thumbnails(folder, ds, images_dir, thumb_size)
    ds = ds.select_columns([c for c in ("init_image", "init_box", "background") if c in ds.column_names])
    ds = ds.cast_column("init_image", ImageFeature(decode=False))
    out_dir = images_dir / "guides"
    out_dir.mkdir(parents=True, exist_ok=True)
    out: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(ds):
        img = row["init_image"]
        if not img or img.get("bytes") is None:
            continue
        try:
            opened = open_image(img["bytes"], f"guide image of row {i}")
        except SpurbenchError:  # over the size limit or not an image: the pair is shown without its guide
            continue
        with opened as im:
            im = im.convert("RGB")
            box = row.get("init_box")
            if box:  # outline the pasted photo, drawn at full size so the line stays thin after shrinking
                ImageDraw.Draw(im).rectangle(
                    [box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 200, 0), width=max(1, im.width // 64)
                )
            scale = thumb_size / max(im.size)
            if scale < 1:
                im = im.resize(
                    (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
                )
            elif im.width < thumb_size // 2:  # tiny smoke images: enlarge without smoothing, so pixels stay visible
                f = (thumb_size // 2) // im.width
                im = im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)
            name = f"{i:06d}.jpg"
            im.save(out_dir / name, format="JPEG", quality=85, optimize=True)
        out[i] = {"src": f"images/guides/{name}", "group": row.get("background")}
    return out


def _mask_thumbnails(folder: Path, ds, images_dir: Path, thumb_size: int) -> dict[int, dict[str, Any]]:
    """A DDB set's rows: {row: {"src": its original photo's thumbnail (the reference split's, drawn by the page),
    "mask": the mask's thumbnail, "group"}}; empty for a set without masks."""
    from datasets import Image as ImageFeature
    from PIL import Image

    if "mask" not in ds.column_names or "source_index" not in ds.column_names:
        return {}
    ds = ds.select_columns([c for c in ("mask", "source_index", "group") if c in ds.column_names]).cast_column(
        "mask", ImageFeature(decode=False)
    )
    out_dir = images_dir / "masks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(ds):
        mask, src = row["mask"] or {}, row.get("source_index")
        data = mask.get("bytes")
        if data is None and mask.get("path"):  # a set exported before masks were embedded: a path inside it only
            try:
                path = inside(folder, mask["path"], f"row {i}'s mask")
            except SpurbenchError:
                path = None
            data = path.read_bytes() if path is not None and path.is_file() else None
        entry: dict[str, Any] = {"group": row.get("group"), "kind": "ddb", "src": None, "mask": None}
        if src is not None and src >= 0 and (images_dir / "reference" / f"{src:06d}.jpg").is_file():
            entry["src"] = f"images/reference/{src:06d}.jpg"
        try:
            opened = open_image(data, f"mask of row {i}") if data is not None else None
        except SpurbenchError:  # over the size limit or not an image: shown without its mask
            opened = None
        if opened is not None:
            with opened as im:
                im = im.convert("L").resize((thumb_size, thumb_size), Image.Resampling.NEAREST)
                im.save(out_dir / f"{i:06d}.png", format="PNG", optimize=True)
            entry["mask"] = f"images/masks/{i:06d}.png"
        out[i] = entry
    return out


#: what the pairs of each kind of set show: (section title, intro's first sentence, the missing-guide note)
_PAIR_WORDS = {
    "d3s": (
        "Guides and results by class",
        "Each pair is the image guide (the class photo pasted on the background template, outlined) and the image made from it",
        "no guide",
    ),
    "ddb": (
        "Originals, masks and counterfactuals by class",
        "Each triple is the original photo, the mask the object was repainted in, and the counterfactual made from them",
        "no original",
    ),
    "none": ("Images by class", "Each image of the set", "no guide"),
}


def pair_kind(guides: Mapping[int, Mapping[str, Any]]) -> str:
    """Which kind of guides a shift set's page shows: `d3s` (init images), `ddb` (original | mask) or `none`."""
    if not guides:
        return "none"
    return "ddb" if any(g.get("kind") == "ddb" for g in guides.values()) else "d3s"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def heatmap_section(p: PageData) -> str:
    """Class x group accuracy, mean over the ranked models (inline SVG)."""

    group_by = (
        next((e["metrics"].get("group_by") for e in p.entries if e.get("metrics", {}).get("group_by")), None) or "group"
    )
    groups = sorted({g for e in p.entries for per in (e.get("per_class_group") or {}).values() for g in per})
    title = f'<section id="per-class"><h2>Accuracy per class and {esc(group_by)}</h2>'
    if not p.entries or not groups:
        return title + '<p class="note">Nothing to chart yet.</p></section>'

    def cell(k: int, g: str) -> tuple[float | None, list[str]]:
        vals, tips = [], []
        for e in p.entries:
            v = ((e.get("per_class_group") or {}).get(str(k)) or {}).get(g)
            if is_num(v):
                vals.append(v)
                tips.append(f"{e.get('model')}: {fmt_pct(v)}")
        return _mean(vals), tips

    classes = sorted(
        p.classes, key=lambda k: (_mean([v for g in groups if (v := cell(k, g)[0]) is not None]) or 0.0, k)
    )
    cell_w, cell_h, left, top = 70, 22, 250, 70
    width = left + cell_w * len(groups) + 150
    height = top + max(cell_h * len(classes), 160) + 10
    parts = [heatmap_open(width, height, f"accuracy per class and {esc(group_by)}")]
    for j, g in enumerate(groups):
        x = left + cell_w * j + cell_w / 2
        parts.append(f'<text class="colhead" transform="translate({x:.0f},{top - 6}) rotate(-45)">{esc(g)}</text>')
    for i, k in enumerate(classes):
        y = top + cell_h * i
        parts.append(heatmap_row_head(k, left, y, cell_h))
        for j, g in enumerate(groups):
            v, tips = cell(k, g)
            # red = often wrong: the scale is the error rate, so the same colours mean "bad" as on spurious pages
            fill = rate_color(1.0 - v) if v is not None else "#eee"
            ink = "light" if v is not None and v < 0.45 else "dark"
            tip = (
                f"{esc(class_label(k))} / {esc(g)}: accuracy {fmt_pct(v)} (mean over {len(tips)} model(s))\n"
                f"{esc(chr(10).join(tips))}"
            )
            parts.append(
                heatmap_cell(left + cell_w * j, y, (cell_w, cell_h), fill, ink, fmt_pct(v), tip, ' class="acc"')
            )
    parts.append(color_scale(left + cell_w * len(groups) + 24, top, "accuracy", high_first=False) + "</svg>")
    return (
        title + f"<p>Top-1 accuracy of each class's images per {esc(group_by)}, the mean over the {len(p.entries)} "
        "ranked model(s) (hover a cell for each model's). The object is in every image: red cells are where the "
        "models lose it. Classes with the lowest accuracy first.</p>"
        f'<div class="scroll">{"".join(parts)}</div></section>'
    )


def _pair(s: Shot, guide: Mapping[str, Any] | None, m: int, lazy: bool) -> str:

    right = len(s.fooled_by)  # on a shift set the store's "hit" is a correct prediction
    n = len(s.scored_by)
    loading = ' loading="lazy"' if lazy else ""
    tip = "\n".join(
        [f"image {s.index}", class_label(s.label)]
        + ([f"prompt: {s.prompt}"] if s.prompt else [])
        + [f"right by {right} of {n} panel classifiers"]
        + s.predictions
    )
    group = (guide or {}).get("group") or s.spurious_feature
    mark = (
        f'<span class="mark {"f-0" if n and right == n else "f-all" if n and right == 0 else "f-some"}">{right}/{n}</span>'
        if n
        else f'<span class="mark f-none" title="{esc(s.left_out or "not scored by the panel")}">n/a</span>'
    )
    kind = (guide or {}).get("kind", "d3s")
    guide_html = (
        f'<img src="{esc(guide["src"])}" alt="{"original photo" if kind == "ddb" else "guide"} of image {s.index}"{loading} '
        'decoding="async">'
        if guide and guide.get("src")
        else f'<span class="note">{_PAIR_WORDS[kind][2]}</span>'
        if guide
        else ""
    )
    if kind == "ddb" and guide:
        guide_html += (
            f'<img src="{esc(guide["mask"])}" alt="mask of image {s.index}"{loading} decoding="async">'
            if guide.get("mask")
            else '<span class="note">no mask</span>'
        )
    return (
        f'<figure class="pair" data-index="{s.index}" data-right="{right}" title="{esc(tip)}">{guide_html}'
        f'<img src="{esc(s.src)}" alt="image {s.index} of class {s.label}"{loading} decoding="async">{mark}'
        f"<figcaption>{esc(group)} · #{s.index}</figcaption></figure>"
    )


def pairs_section(p: PageData, lazy: bool) -> str:
    """Per class: the reference photos, then guide | result pairs, hardest first (fewest models right)."""

    m = len(p.panel)
    title, first, _ = _PAIR_WORDS[pair_kind(p.guides)]
    intro = (
        f"<p>{first}; the mark counts the {m} panel classifiers that recognise the class "
        '(<span class="mark f-0">all</span> <span class="mark f-some">some</span> <span class="mark f-all">none</span>). '
        "Check that the object is really there: an image without it is not a test of the shift.</p>"
    )
    heading = {"d3s": "Guide | result", "ddb": "Original photo | mask | counterfactual", "none": "Images"}[
        pair_kind(p.guides)
    ]
    out = [f'<section id="images"><h2>{title}</h2>{intro}<nav class="classnav">{class_nav(p.classes)}</nav>']
    for k in p.classes:
        shots = sorted(p.shots.get(k, []), key=lambda s: (len(s.fooled_by), s.index))
        acc = " · ".join(
            f"{esc(e.get('model'))}: {fmt_pct(((e.get('per_class') or {}).get(str(k)) or {}).get('accuracy'))}"
            for e in p.entries
        )
        out.append(class_heading(k) + f'<p class="small">accuracy — {acc}</p>')
        out.append(reference_sheet(p.references.get(k, []), "Reference photos", lazy))
        figures = [_pair(s, p.guides.get(s.index), m, lazy) for s in shots]
        out.append(image_sheet(f"{heading}: {len(shots)} image(s)", "sheet pairs", figures))
    out.append("</section>")
    return "".join(out)


#: the consistency section's words for a spurious set -> for a shift set (a wrong prediction is the failure)
_SHIFT_WORDS = {
    "how many of the models each image fools (top-1 = the class it is spurious for)": "how many of the models get each image wrong (top-1 is not the class of the object in it)",
    "images whose top-1 is the class for all": "images whose top-1 is wrong for all",
    "images whose top-1 is the class for at least": "images whose top-1 is wrong for at least",
    "fooled by at least half": "wrong for at least half",
    "fooled by all": "wrong for all",
    "fooled / not fooled": "wrong / right",
    "fooling every model": "every model gets wrong",
    "fooling at least half of the models": "at least half of the models get wrong",
    "ImageNet class the images are spurious for": "ImageNet class of the object in the images",
}


def reword_consistency(section_html: str) -> str:
    """The consistency section of a shift set: the same figures, counting wrong predictions."""
    for old, new in _SHIFT_WORDS.items():
        section_html = section_html.replace(old, new)
    return section_html


CSS = """
.pair { display: inline-flex; gap: 2px; position: relative; margin: 4px; }
.pair img { width: 96px; height: 96px; object-fit: cover; image-rendering: pixelated; border: 1px solid #dde1e8; }
.pair .mark { position: absolute; top: 4px; right: 4px; }
.pair figcaption { position: absolute; bottom: -16px; left: 0; font-size: 11px; color: #555; }
.sheet.pairs { row-gap: 20px; }
"""
