"""Intervals on the board: `leaderboard --compare A B` (paired differences, exact McNemar equal to statsmodels),
rank intervals from paired replicates, and older entries without intervals shown as n/a."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_leaderboard import DATASET, make_entry, write_csv

from spurbench.cli import main
from spurbench.evaluate import leaderboard as lb
from spurbench.evaluate import uncertainty as u

CLASSES = np.arange(1, 21)
LABELS = np.repeat(CLASSES, 10)  # 200 images, 10 per class
BOARD_DATASET = {**DATASET, "num_images": len(LABELS), "classes": CLASSES.tolist()}


def _entry(root, model: str, fooled: np.ndarray, with_intervals: bool = True, indices=None) -> dict:
    rel = write_csv(root, model, fooled, labels=LABELS, indices=indices)
    rows = np.arange(len(LABELS)) if indices is None else indices
    labels, hit = LABELS[rows], fooled[rows].astype(float)
    # the CSV's p_label: 0.5 when fooled, else the label sits 5th (0.01)
    prob = np.where(hit == 1, 0.5, 0.01)
    e = make_entry(model, float(hit.mean()), None, rel)
    e["metrics"].update(
        spurious_rate=float(np.mean([hit[labels == k].mean() for k in np.unique(labels)])),
        num_images=len(rows),
    )
    e["per_class"] = {
        str(k): {"n": int((labels == k).sum()), "spurious_rate": float(hit[labels == k].mean())}
        for k in np.unique(labels)
    }
    if indices is not None:
        e["rows"] = lb.rows_identity("test", rows, limit=len(rows))
    if with_intervals:
        e["uncertainty"] = u.spurious_uncertainty(labels, hit, np.ones_like(hit), prob)
    return e


@pytest.fixture
def board(tmp_path):
    path = tmp_path / "lb" / "leaderboard.json"
    rng = np.random.default_rng(0)
    # a and b differ on a few images only; c is fooled far more often
    a = rng.random(len(LABELS)) < 0.3
    b = a.copy()
    b[rng.choice(len(LABELS), 12, replace=False)] ^= True
    c = rng.random(len(LABELS)) < 0.9
    for name, hits in (("resnet_a", a), ("resnet_b", b), ("convnext", c)):
        lb.record_entry(path, BOARD_DATASET, _entry(path.parent, name, hits))
    return path, {"resnet_a": a, "resnet_b": b, "convnext": c}


def test_compare_prints_paired_intervals_and_statsmodels_mcnemar(board, capsys):
    from statsmodels.stats.contingency_tables import mcnemar

    path, hits = board
    assert main(["leaderboard", "--leaderboard", str(path), "--compare", "resnet_a", "resnet_b"]) == 0
    out = capsys.readouterr().out
    a, b = hits["resnet_a"], hits["resnet_b"]
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    p = float(re.search(r"p = ([0-9.e-]+)", out).group(1))
    assert p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-3)
    assert f"only A {table[0][1]}, only B {table[1][0]}" in out and "200 shared images" in out
    # the paired interval of the macro rate: the same class resamples for both models, recomputed here
    method = u.Method(unit="class")
    _, ra = u.spurious_replicates(LABELS, a, np.ones(200), np.where(a, 0.5, 0.01), method=method)
    _, rb = u.spurious_replicates(LABELS, b, np.ones(200), np.where(b, 0.5, 0.01), method=method)
    lo, hi = u.percentile_interval(ra["spurious_rate"] - rb["spurious_rate"])
    line = next(x for x in out.splitlines() if x.startswith("spurious_rate "))
    got = [float(v) for v in re.search(r"\[([-+0-9.]+), ([-+0-9.]+)\]", line).groups()]
    assert got == pytest.approx([lo, hi], abs=1.5e-3)  # printed to 3 decimals from the stored replicates
    assert hi - lo < 0.1  # paired: the shared resamples cancel the class effect


def test_compare_on_different_rows_recomputes_on_the_shared_ones(board, capsys):
    path, hits = board
    limited = _entry(path.parent, "limited", hits["convnext"], with_intervals=False, indices=np.arange(100))
    lb.record_entry(path, BOARD_DATASET, limited)
    assert main(["leaderboard", "--leaderboard", str(path), "--compare", "limited", "resnet_a"]) == 0
    out = capsys.readouterr().out
    assert "100 shared images" in out and "paired resamples of classes over the shared rows" in out
    line = next(x for x in out.splitlines() if x.startswith("spurious_rate_micro "))
    want = hits["convnext"][:100].mean() - hits["resnet_a"][:100].mean()
    assert float(line.split()[3]) == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["resnet", "convnext"], r"--compare 'resnet' matches 2 entries: resnet_a, resnet_b; give the full name"),
        (["vit", "convnext"], r"--compare 'vit': no such entry on the board; its entries are .*resnet_a"),
        (["convnext", "CONVNEXT"], r"--compare names 'convnext' twice"),
    ],
)
def test_compare_names_errors_are_one_line(board, capsys, names, message):
    path, _ = board
    before = {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()}
    assert main(["leaderboard", "--leaderboard", str(path), "--compare", *names]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err)
    assert {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()} == before


def test_compare_refuses_other_formats(board, capsys):
    path, _ = board
    assert (
        main(["leaderboard", "--leaderboard", str(path), "--compare", "resnet_a", "convnext", "--format", "csv"]) == 2
    )
    assert "--compare prints to the terminal" in capsys.readouterr().err


def test_rank_intervals_tell_which_models_cannot_be_told_apart(board):
    path, _ = board
    board_ = lb.load_leaderboard(path)
    group = lb.comparable_groups(board_)[0]
    ranks = dict(zip((e["model"] for e in group["entries"]), lb.rank_intervals_of(group)))
    assert ranks["convnext"] == (3, 3)  # fooled far more: last in every resample (rate: lower is better)
    assert ranks["resnet_a"][0] == 1 and ranks["resnet_b"][0] == 1  # 12 images apart: either may be first
    assert u.indistinguishable([ranks[m] for m in ("resnet_a", "resnet_b", "convnext")]) == [[0, 1]]
    md = lb.to_markdown(board_)
    assert "95 % rank" in md and "| 3-3 |" in md and "95 % bootstrap intervals (percentile, 1000 resamples" in md


def test_older_entries_show_n_a(tmp_path):
    path = tmp_path / "lb" / "leaderboard.json"
    rng = np.random.default_rng(1)
    lb.record_entry(path, BOARD_DATASET, _entry(path.parent, "new", rng.random(200) < 0.4))
    lb.record_entry(path, BOARD_DATASET, _entry(path.parent, "old", rng.random(200) < 0.4, with_intervals=False))
    board = lb.load_leaderboard(path)
    md = lb.to_markdown(board)
    old = next(line for line in md.splitlines() if "| old |" in line)
    assert "[n/a]" in old and old.rstrip(" |").endswith("n/a")  # no rank interval without every model's replicates
    assert "1 older entr(ies) without per-image intervals show n/a" in md


def test_page_shows_intervals_error_bars_and_ties(board, tmp_path):
    from spurbench.evaluate.page import render_page

    path, _ = board
    out = render_page(path, tmp_path / "site")
    html = (out if out.is_file() else out / "index.html").read_text()
    first = lb.comparable_groups(lb.load_leaderboard(path))[0]["entries"][0]
    lo, hi = first["uncertainty"]["metrics"]["spurious_rate"]
    assert html.count('class="errorbar"') == 3  # one error bar per model in the chart of the ranked figure
    assert "95 % bootstrap intervals (percentile, 1000 resamples, seed 0)" in html  # the method, once
    assert html.count("95 % bootstrap intervals") == 1
    assert html.count('class="tie"') == 2 and "cannot be told apart from resnet_" in html  # a and b, not convnext
    assert f"{lo * 100:.1f}" in html and f"{hi * 100:.1f}" in html
