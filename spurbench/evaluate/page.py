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

from pathlib import Path

from spurbench import __version__
from spurbench.dataset import DEFAULT_SPLIT
from spurbench.errors import SpurbenchError
from spurbench.evaluate.page_common import (
    PageData,
    esc,
    publish_page,
)
from spurbench.evaluate.page_data import gather
from spurbench.evaluate.page_sections import (
    chart_section,
    consistency_section,
    contact_sheets,
    provenance_section,
    ranking_section,
    reproduce_section,
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
.ci { color:var(--muted); font-size:11px; white-space:nowrap; }
.tie { color:#b35c00; font-weight:bold; cursor:help; }
figure.intervals figcaption { font-size:12.5px; color:var(--muted); }
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


def _scored_text(entries: list, total: int | None) -> str:
    """How many images were scored and how many verification left out: "5 of 12 images (7 left out by
    verification)"; a range when entries scored different numbers (their groups say which)."""
    counts = sorted({(e.get("metrics") or {}).get("num_images") for e in entries} - {None})
    left = sorted(
        {
            int((e.get("rows") or {}).get("num_excluded", (e.get("metrics") or {}).get("num_excluded")) or 0)
            for e in entries
        }
    )
    of = f" of {total:,}" if total is not None else ""
    if not counts:
        return f"{total:,} image(s)" if total is not None else "? image(s)"
    n = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
    text = f"{n}{of} image(s)" if counts != [total] else f"all {total:,} image(s)"
    if left and left[-1]:
        text += f" ({', '.join(f'{x:,}' for x in left)} left out by verification)"
    return esc(text)


def _html(p: PageData) -> str:
    info = p.board.get("dataset") or {}
    title = f"spurbench leaderboard — {info.get('id') or 'dataset'}"
    subtitle = (
        f"{len(p.entries)} model(s) scored on {_scored_text(p.entries, info.get('num_images'))} of "
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
        '<a href="#images">images</a>'
        + ('<a href="#review">review</a>' if p.review else "")
        + '<a href="#provenance">provenance</a><a href="#reproduce">reproduce</a></nav></header>'
        "<main>"
        + ranking_section(p)
        + chart_section(p)
        + consistency_section(p)
        + contact_sheets(p)
        + p.review
        + provenance_section(p)
        + reproduce_section(p)
        + "</main>"
        f"<footer>Rendered by spurbench {esc(__version__)} from <code>{esc(p.leaderboard_path.name)}</code> "
        "(schema version "
        + esc(p.board.get("schema_version"))
        + "). Self-contained: nothing on this page is fetched from the network.</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )


def _shift_css(p: PageData) -> str:
    if p.kind != "shift":
        return ""
    from spurbench.evaluate.shift_page import CSS

    return CSS


def render_page(leaderboard_path: str | Path, out_dir: str | Path, dataset_folder: str | Path | None = None) -> Path:
    """Write the leaderboard's static page to `out_dir/index.html` (+ `out_dir/images/`); return its path.

    `dataset_folder` is the dataset the leaderboard was scored on (checked by fingerprint); without it the
    dataset id recorded in the leaderboard is tried (a folder, or a Hub id already in the local cache), and
    when no images can be found the page is still written, without contact sheets, saying why.
    `out_dir` is a new or empty folder, or one holding an earlier page: only files spurbench wrote there are
    replaced or removed (`page_common.publish_page`).
    """
    leaderboard_path = Path(leaderboard_path)
    out_dir = Path(out_dir)
    from spurbench.evaluate.leaderboard import board_exists

    if not board_exists(leaderboard_path):  # its store, or the JSON alone
        raise SpurbenchError(
            f"leaderboard '{leaderboard_path}' does not exist; create it with `spurbench eval --leaderboard {leaderboard_path}`"
        )
    return publish_page(
        out_dir, "--out", lambda images: _html(gather(leaderboard_path, out_dir, dataset_folder, images))
    )
