"""The sections of the leaderboard page: ranking table, per-class heatmap, consistency, contact sheets,
provenance and the commands that reproduce it. Each takes the gathered PageData and returns HTML.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from spurbench.dataset import DEFAULT_SPLIT
from spurbench.evaluate import shift, uncertainty, validity
from spurbench.evaluate.page_common import (
    EAGER_IMAGES,
    PageData,
    class_anchor,
    class_heading,
    class_label,
    class_nav,
    color_scale,
    esc,
    fmt_num,
    fmt_params,
    fmt_pct,
    heatmap_cell,
    heatmap_open,
    heatmap_row_head,
    image_sheet,
    is_num,
    rate_color,
    reference_sheet,
    shot_figure,
)
from spurbench.evaluate.shift import worst_names


@dataclass
class _Column:
    key: str
    title: str
    help: str
    kind: str  # "num" | "text"
    fmt: Any
    get: Any


def _run_columns() -> list[_Column]:
    """The columns every ranking table ends with: throughput, size and preprocessing of each entry."""
    return [
        _Column(
            "images_per_second",
            "images/s",
            "evaluation throughput on the device named in the entry",
            "num",
            lambda v: fmt_num(v, 1),
            lambda e: e.get("images_per_second"),
        ),
        _Column("num_params", "params", "number of parameters", "num", fmt_params, lambda e: e.get("num_params")),
        _Column(
            "preprocessing",
            "preprocessing",
            "timm: the model's own eval transform; spurious-imagenet: the released Spurious ImageNet code's",
            "text",
            esc,
            lambda e: e.get("preprocessing"),
        ),
    ]


def _model_column() -> _Column:
    """The model's name, marked when the model was used to build the set (evaluate/validity.py)."""
    return _Column("model", "model", "timm model name", "text", esc, lambda e: e.get("model", "") + validity.mark(e))


def _metric(key: str, title: str, help: str, fmt: Any = fmt_pct) -> _Column:
    """A numeric column of the entries' `metrics`."""
    return _Column(key, title, help, "num", fmt, lambda e: (e.get("metrics") or {}).get(key))


def _columns(entries: Sequence[Mapping[str, Any]]) -> list[_Column]:
    if shift.is_shift_entries(entries):
        return _shift_columns()
    scores = [
        _metric(
            "spurious_score_ap",
            "spurious score AP",
            "average precision of p(k) separating real class-k images (positives) from the spurious ones; higher is better",
            fmt_num,
        ),
        _metric(
            "spurious_score_auroc",
            "AUROC",
            "area under the ROC curve of the same separation; higher is better",
            fmt_num,
        ),
    ]
    return [
        _Column("rank", "#", "rank on this leaderboard", "num", str, None),
        _model_column(),
        _metric(
            "spurious_rate",
            "spurious rate",
            "fraction of images of class k predicted as k (top-1), mean over classes; lower is better",
        ),
        _metric("spurious_rate_micro", "micro", "top-1 spurious rate pooled over all images"),
        _metric(
            "spurious_rate_top5", "top-5", "fraction of images of class k with k among the top 5, mean over classes"
        ),
        _metric(
            "mean_target_prob",
            "mean p(k)",
            "mean probability of the class the image is spurious for, mean over classes",
            fmt_num,
        ),
        *(c for c in scores if any(is_num(c.get(e)) for e in entries)),  # only when some entry has the score
        *_run_columns(),
    ]


def _shift_columns() -> list[_Column]:
    """The ranking columns of a shift set (accuracy; evaluate/shift.py)."""
    return [
        _Column("rank", "#", "rank on this leaderboard (by worst-group accuracy)", "num", str, None),
        _model_column(),
        _metric(
            "worst_group_accuracy",
            "worst group",
            "top-1 accuracy on the group (e.g. background) where the model does worst; higher is better",
        ),
        _Column(
            "worst_group",
            "which",
            "the worst group (every group tied at it)",
            "text",
            esc,
            lambda e: worst_names(e.get("metrics") or {}),
        ),
        _metric("mean_group_accuracy", "mean group", "top-1 accuracy averaged over the groups"),
        _metric("accuracy", "accuracy", "top-1 accuracy over all images"),
        _metric("accuracy_top5", "top-5", "fraction of images whose class is among the top 5"),
        _metric(
            "reference_accuracy",
            "reference",
            "top-1 accuracy on the reference photos the scored images were made from, image by image (else the whole reference split)",
        ),
        _metric("accuracy_drop", "drop", "reference accuracy minus accuracy (positive: the shift hurts)"),
        *_run_columns(),
    ]


def _sortable_table(
    cols: Sequence[_Column],
    rows: Sequence[Sequence[Any]],
    table_id: str,
    caption: str,
    first_sorted: str | None = None,
    intervals: Sequence[Mapping[str, Any]] | None = None,
) -> str:
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
            raw = (repr(float(v)) if is_num(v) else "") if c.kind == "num" else ("" if v is None else str(v))
            text = c.fmt(v) if v is not None or c.kind == "text" else "–"
            if intervals is not None and c.key in intervals[i]:  # a headline figure: its 95 % interval beneath
                ci = intervals[i][c.key]
                text += (
                    f'<br><span class="ci">[{c.fmt(ci[0])}, {c.fmt(ci[1])}]</span>'
                    if ci
                    else ' <span class="ci">[n/a]</span>'
                )
            cells.append(f'<td data-v="{esc(raw)}" class="{c.kind}">{text}</td>')
        body.append(f'<tr data-i="{i}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="{esc(table_id)}"><caption>{caption}</caption>'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def ranking_section(p: PageData) -> str:
    """The models' ranking table (per comparable group), the interval charts and the notes beside them."""
    from spurbench.evaluate.leaderboard import comparable_groups

    groups = comparable_groups(p.board)
    cols = _ranking_columns(p.entries, grouped=len(groups) > 1)
    rows, intervals = _ranking_rows(groups, cols, lead=2 if len(groups) > 1 else 1)
    table = _sortable_table(
        cols, rows, "ranking", _ranking_caption(p, groups), "rank" if len(groups) <= 1 else None, intervals
    )
    table += f'<p class="note">{esc(uncertainty.method_note(p.entries).replace("`", ""))}</p>'
    table += "".join(interval_chart(g) for g in groups)
    if not p.entries:
        table += '<p class="note">No model has been scored on this dataset yet: run <code>spurbench eval</code> (see Reproduce below).</p>'
    from spurbench.verification import audit_line  # the check's audited error rate, beside the headline

    audited = audit_line((p.provenance or {}).get("verification"))
    table = (f'<p class="note" id="audit-rate">{esc(audited)} (the check\'s audit)</p>' if audited else "") + table
    table += validity.page_html(p.entries)  # the lift over the control split, the transfer of a mined set
    if groups and groups[0]["ranked_by"] == shift.RANKED_BY:  # a shift set's control: its reference photos
        table += f'<p class="note" id="reference-control">{esc(shift.CONTROL_NOTE)}</p>'
    return f'<section id="models"><h2>Models</h2>{table}</section>'


def _ranking_columns(entries: Sequence[Mapping[str, Any]], grouped: bool) -> list[_Column]:
    """The entries' columns, with the group (when ranks restart in each group) and the rank interval."""
    cols = _columns(entries)
    if grouped:  # ranks restart in each group of entries scored alike
        cols.insert(
            1,
            _Column(
                "group",
                "group",
                "entries are ranked only within a group scored alike (same images, same preprocessing)",
                "num",
                str,
                None,
            ),
        )
    cols.insert(
        (2 if grouped else 1) + 1,  # after the model's name
        _Column(
            "rank_interval",
            "95 % rank",
            "the 2.5-97.5 % range of the model's rank over bootstrap resamples shared by its group; "
            "≈ marks models whose ranks cannot be told apart",
            "text",
            lambda v: v,  # built by `_rank_marks` from escaped names
            None,
        ),
    )
    return cols


def _ranking_rows(
    groups: Sequence[Mapping[str, Any]], cols: Sequence[_Column], lead: int
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """(each entry's cells, each entry's headline intervals); the first `lead` cells (rank, group) are filled here."""
    headline = set(uncertainty.SPURIOUS_HEADLINE + uncertainty.SHIFT_HEADLINE)
    rows, intervals = [], []
    for g in groups:
        marks = _rank_marks(g)
        for rank, e in enumerate(g["entries"], 1):
            rows.append(
                [rank, g["id"]][:lead]
                + [marks[rank - 1] if c.key == "rank_interval" else c.get(e) for c in cols[lead:]]
            )
            intervals.append(
                {
                    c.key: uncertainty.entry_interval(e, c.key)
                    for c in cols
                    if c.key in headline and c.get(e) is not None
                }
            )
    return rows, intervals


def _ranking_caption(p: PageData, groups: Sequence[Mapping[str, Any]]) -> str:
    """How the table is ranked: per group when there are several, else the one ranking."""
    from spurbench.evaluate.leaderboard import GROUPS_NOTE

    if len(groups) > 1:
        parts = "; ".join(
            f"group {g['id']}: {esc(g['description'])}, {len(g['entries'])} model(s), ranked by "
            + ("spurious score AP" if g["ranked_by"] == "spurious_score_ap" else "spurious rate")
            for g in groups
        )
        return (
            f"{len(p.entries)} model(s). {esc(GROUPS_NOTE.replace('`', ''))} ({parts}). Click a column header to sort."
        )
    ranked_by = groups[0]["ranked_by"] if groups else None
    how = {
        "worst_group_accuracy": "worst-group accuracy (higher first)",
        "spurious_score_ap": "spurious score AP (higher first)",
    }.get(ranked_by, "spurious rate (lower first)")
    return f"{len(p.entries)} model(s), ranked by {how}. Click a column header to sort."


def _rank_marks(group: Mapping[str, Any]) -> list[str]:
    """Each entry's 95 % rank interval as page HTML, ≈ (with the names) where it cannot be told from others."""
    from spurbench.evaluate.leaderboard import rank_intervals_of

    ranks = rank_intervals_of(group)
    if ranks is None:
        return ["n/a"] * len(group["entries"])
    names = [e["model"] for e in group["entries"]]
    tied = {m: others for others in uncertainty.indistinguishable(ranks) for m in others}
    out = []
    for i, (lo, hi) in enumerate(ranks):
        text = f"{lo}–{hi}"
        if i in tied:
            with_ = ", ".join(names[j] for j in tied[i] if j != i)
            text += f' <span class="tie" title="{esc("cannot be told apart from " + with_)}">≈</span>'
        out.append(text)
    return out


def interval_chart(group: Mapping[str, Any]) -> str:
    """Inline SVG: each model's ranked figure as a dot with its 95 % interval as an error bar (best first)."""
    metric = group["ranked_by"]
    entries = [e for e in group["entries"] if is_num((e.get("metrics") or {}).get(metric))]
    if not entries:
        return ""
    row, left, width = 20, 260, 420
    height = row * len(entries) + 40
    x = lambda v: left + max(0.0, min(1.0, float(v))) * width  # noqa: E731  (every ranked figure is in [0, 1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="intervals" width="{left + width + 40}" height="{height}" '
        f'role="img" aria-label="{esc(metric)} of each model with its 95 % interval">'
    ]
    for t in range(0, 11, 2):
        parts.append(
            f'<line x1="{x(t / 10):.0f}" x2="{x(t / 10):.0f}" y1="10" y2="{height - 20}" stroke="#e3e6ec"/>'
            f'<text x="{x(t / 10):.0f}" y="{height - 6}" text-anchor="middle" class="small">{t * 10}%</text>'
        )
    for i, e in enumerate(entries):
        y = 20 + row * i
        v = e["metrics"][metric]
        ci = uncertainty.entry_interval(e, metric)
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{esc(e["model"])}</text>')
        if ci:
            parts.append(
                f'<line class="errorbar" x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{y}" y2="{y}" stroke="#345" stroke-width="2"/>'
                f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[0]):.1f}" y1="{y - 4}" y2="{y + 4}" stroke="#345"/>'
                f'<line x1="{x(ci[1]):.1f}" x2="{x(ci[1]):.1f}" y1="{y - 4}" y2="{y + 4}" stroke="#345"/>'
            )
        label = f"{fmt_num(v, 3)} [{fmt_num(ci[0], 3)}, {fmt_num(ci[1], 3)}]" if ci else f"{fmt_num(v, 3)} [n/a]"
        parts.append(
            f'<circle cx="{x(v):.1f}" cy="{y}" r="4" fill="#c33"><title>{esc(e["model"])}: {esc(label)}</title></circle>'
        )
    parts.append("</svg>")
    title = f"{metric.replace('_', ' ')} with 95 % intervals" + (f" (group {group['id']})" if group.get("id") else "")
    return f'<figure class="intervals"><figcaption>{esc(title)}</figcaption>{"".join(parts)}</figure>'


def heatmap(p: PageData) -> str:
    """Inline SVG: one row per class, one column per model, cell = top-1 spurious rate of that class."""
    models = [e.get("model") for e in p.entries]
    if not models or not p.classes:
        return '<p class="note">Nothing to chart yet.</p>'

    def rate(e: Mapping[str, Any], k: int) -> Any:
        return ((e.get("per_class") or {}).get(str(k)) or {}).get("spurious_rate")

    # Most spurious classes first (mean rate over the models), so the chart reads top-down.
    def mean_rate(k: int) -> float:
        vals = [rate(e, k) for e in p.entries if is_num(rate(e, k))]
        return sum(vals) / len(vals) if vals else -1.0

    classes = sorted(p.classes, key=lambda k: (-mean_rate(k), k))
    cell_w, cell_h, left = 86, 22, 250
    short = [m if len(m) <= 34 else m[:32] + "…" for m in models]
    top = 24 + int(6.2 * max(len(s) for s in short) * 0.72)  # room for names rotated by 45 degrees
    width = left + cell_w * len(models) + 150
    height = top + max(cell_h * len(classes), 160) + 10  # at least the colour scale's height
    parts = [heatmap_open(width, height, "per-class spurious rate of each model")]
    for j, (m, s) in enumerate(zip(models, short)):
        x = left + cell_w * j + cell_w / 2
        parts.append(
            f'<text class="colhead" transform="translate({x:.0f},{top - 6}) rotate(-45)"><title>{esc(m)}</title>{esc(s)}</text>'
        )
    for i, k in enumerate(classes):
        y = top + cell_h * i
        parts.append(heatmap_row_head(k, left, y, cell_h))
        for j, e in enumerate(p.entries):
            v = rate(e, k)
            n = ((e.get("per_class") or {}).get(str(k)) or {}).get("n")
            label = fmt_pct(v)
            ci = (((e.get("uncertainty") or {}).get("per_class") or {}).get(str(k)) or {}).get("spurious_rate")
            tip = f"{label} [{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else label
            title = f"{esc(models[j])} on {esc(class_label(k))}: spurious rate {tip}" + (
                f" of {n} images" if is_num(n) else ""
            )
            fill = rate_color(v) if is_num(v) else "#eee"
            ink = "light" if is_num(v) and v > 0.55 else "dark"
            parts.append(heatmap_cell(left + cell_w * j, y, (cell_w, cell_h), fill, ink, label, title))
    parts.append(color_scale(left + cell_w * len(models) + 24, top, "spurious rate", high_first=True))
    parts.append("</svg>")
    return "".join(parts)


def chart_section(p: PageData) -> str:
    if p.kind == "shift":
        from spurbench.evaluate.shift_page import heatmap_section

        return heatmap_section(p)
    return (
        '<section id="per-class"><h2>Per-class spurious rates</h2>'
        "<p>Fraction of the images of class <i>k</i> that each model classifies as <i>k</i> (top-1), although the "
        "object is not in them. Classes are ordered by their mean rate over the models; click a class for its images.</p>"
        f'<div class="scroll">{heatmap(p)}</div></section>'
    )


_NO_CONSISTENCY = (
    '<section id="consistency"><h2>Cross-classifier consistency</h2>'
    '<p class="note">Consistency needs at least two models scored on this dataset.</p></section>'
)


def consistency_section(p: PageData) -> str:
    """The panel's consistency: the four figures as cards, the notes, the pairwise kappa matrix, the per-class table."""
    c = p.board.get("consistency") or {}
    models = list(c.get("models") or [])
    if len(models) < 2:
        return _NO_CONSISTENCY
    notes = f'<p class="note">Note: {esc(c["note"])}.</p>' if c.get("note") else ""
    for model, why in (c.get("excluded") or {}).items():
        notes += f'<p class="note">Left out of the consistency: {esc(model)}: {esc(why)}</p>'
    section = (
        f'<section id="consistency"><h2>Cross-classifier consistency</h2>'
        f"<p>Over the panel of {len(models)} models ({esc(', '.join(models))}) and {esc(c.get('num_images', ''))} images: how many of the "
        "models each image fools (top-1 = the class it is spurious for).</p>"
        f'<div class="cards">{_consistency_cards(c, len(models))}</div>{notes}{_kappa_matrix(c, models)}'
        f"{_consistency_per_class(p, c)}</section>"
    )
    if p.kind == "shift":  # the store counts wrong predictions as the failure on a shift set: say so
        from spurbench.evaluate.shift_page import reword_consistency

        section = reword_consistency(section)
    return section


def _consistency_cards(c: Mapping[str, Any], m: int) -> str:
    cards = [
        ("fooled by all", fmt_pct(c.get("all_fooled_rate")), f"images whose top-1 is the class for all {m} models"),
        (
            "fooled by at least half",
            fmt_pct(c.get("at_least_half_rate")),
            f"images whose top-1 is the class for at least {math.ceil(m / 2)} of {m} models",
        ),
        (
            "Fleiss' kappa",
            fmt_num(c.get("fleiss_kappa")),
            "agreement of the models on fooled / not fooled, beyond chance",
        ),
        ("mean pairwise Cohen's kappa", fmt_num(c.get("mean_pairwise_kappa")), "mean over pairs of models"),
    ]
    return "".join(
        f'<div class="card" title="{esc(h)}"><div class="big">{esc(v)}</div><div>{esc(t)}</div></div>'
        for t, v, h in cards
    )


def _kappa_matrix(c: Mapping[str, Any], models: Sequence[str]) -> str:
    """The pairwise Cohen's kappas as a model x model matrix."""
    pk = c.get("pairwise_kappa") or {}
    head = "".join(f'<th scope="col">{esc(b)}</th>' for b in models)
    rows = []
    for a in models:
        cells = "".join(
            '<td class="num">—</td>'
            if a == b
            else f'<td class="num">{fmt_num(pk.get(f"{a} vs {b}", pk.get(f"{b} vs {a}")))}</td>'
            for b in models
        )
        rows.append(f'<tr><th scope="row">{esc(a)}</th>{cells}</tr>')
    return f'<table class="matrix"><caption>Pairwise Cohen\'s kappa (fooled / not fooled)</caption><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _consistency_per_class(p: PageData, c: Mapping[str, Any]) -> str:
    """The consistency figures of each class, as a sortable table."""
    cols = [
        _Column(
            "class",
            "class",
            "ImageNet class the images are spurious for (sorts by class index)",
            "num",
            lambda k: f'<a href="#{class_anchor(k)}">{esc(class_label(k))}</a>',
            None,
        ),
        _Column("n", "images", "images of this class", "num", lambda v: str(int(v)), None),
        _Column(
            "all_fooled_rate",
            "fooled by all",
            "fraction of the class's images fooling every model",
            "num",
            fmt_pct,
            None,
        ),
        _Column("at_least_half_rate", "≥ half", "fraction fooling at least half of the models", "num", fmt_pct, None),
        _Column("fleiss_kappa", "Fleiss' κ", "Fleiss' kappa within the class", "num", fmt_num, None),
        _Column(
            "mean_pairwise_kappa",
            "mean Cohen's κ",
            "mean pairwise Cohen's kappa within the class",
            "num",
            fmt_num,
            None,
        ),
    ]
    per_class = c.get("per_class") or {}
    trs = []
    for k in p.classes:
        block = per_class.get(str(k)) or {}
        n = block.get("num_images", len(p.shots.get(k, [])) or None)
        trs.append([k, n] + [block.get(col.key) for col in cols[2:]])
    return _sortable_table(cols, trs, "consistency-per-class", "Per class (click a header to sort)")


def contact_sheets(p: PageData) -> str:
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
    out = [f'<section id="images"><h2>Images by class</h2>{intro}<nav class="classnav">{class_nav(p.classes)}</nav>']
    for k in p.classes:
        shots = sorted(p.shots.get(k, []), key=lambda s: (-len(s.fooled_by), s.index))
        feats = Counter(s.spurious_feature for s in shots + p.references.get(k, []) if s.spurious_feature)
        feature = feats.most_common(1)[0][0] if feats else ""
        rates = " · ".join(
            f"{esc(e.get('model'))}: {fmt_pct(((e.get('per_class') or {}).get(str(k)) or {}).get('spurious_rate'))}"
            for e in p.entries
        )
        cblock = ((p.board.get("consistency") or {}).get("per_class") or {}).get(str(k)) or {}
        out.append(
            class_heading(k)
            + (f'<p class="feature">spurious feature: <b>{esc(feature)}</b></p>' if feature else "")
            + f'<p class="small">spurious rate — {rates}'
            + (f" · fooled by all: {fmt_pct(cblock.get('all_fooled_rate'))}" if cblock else "")
            + "</p>"
        )
        out.append(reference_sheet(p.references.get(k, []), "Reference images", lazy))
        figures = [shot_figure(s, with_mark=True, lazy=lazy) for s in shots]
        out.append(image_sheet(f"{esc(split)} split: {len(shots)} image(s)", "sheet", figures))
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


def provenance_section(p: PageData) -> str:
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


def reproduce_section(p: PageData) -> str:
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
