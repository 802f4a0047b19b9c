"""A leaderboard at scale: the compact per-model hit store and its incremental consistency (checked
against a from-scratch computation with scikit-learn), slug collisions, ranking within comparable
groups. The predictions CSVs are hand-made files in the format `spurbench eval` writes, as in
test_leaderboard.py (whose helpers these tests share)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from test_leaderboard import DATASET, LABELS, independent_consistency, make_entry, write_csv

from spurbench.errors import SpurbenchError
from spurbench.evaluate import hitstore
from spurbench.evaluate import leaderboard as lb


def _record(path: Path, model: str, fooled, rate: float = 0.5, **kw) -> dict:
    rel = write_csv(
        path.parent, model, np.asarray(fooled, bool), **{k: v for k, v in kw.items() if k in ("indices", "labels")}
    )
    entry = make_entry(model, rate, kw.get("ap"), rel)
    entry.update(kw.get("extra", {}))
    return lb.record_entry(path, DATASET, entry)


def _fooled(m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.random((12, m)) < 0.5
    f[0], f[1] = True, False  # every pairwise kappa defined
    f[2, ::2] = True
    f[3, 1::2] = True
    return f


def _assert_matches(c: dict, fooled: np.ndarray, names: list[str], pairs_listed: bool = True):
    want = independent_consistency(fooled, names)
    for key in ("all_fooled_rate", "at_least_half_rate", "mean_pairwise_kappa", "fleiss_kappa"):
        assert c[key] == pytest.approx(want[key], abs=1e-12), key
    if pairs_listed:
        assert c["pairwise_kappa"] == pytest.approx(want["pairwise_kappa"], abs=1e-12)
    m = fooled.shape[1]
    for k in np.unique(LABELS[: fooled.shape[0]]):
        sel = LABELS[: fooled.shape[0]] == k
        f = fooled[sel]
        got = c["per_class"][str(k)]
        assert got["num_images"] == int(sel.sum())
        assert got["all_fooled_rate"] == pytest.approx(np.mean(f.sum(1) == m), abs=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn warns (and gives NaN) where kappa is undefined
            kappas = [cohen_kappa_score(f[:, i], f[:, j]) for i in range(m) for j in range(i + 1, m)]
        kappas = [v for v in kappas if not np.isnan(v)]
        if kappas:
            assert got["mean_pairwise_kappa"] == pytest.approx(np.mean(kappas), abs=1e-12)
        else:
            assert got["mean_pairwise_kappa"] is None


def test_store_reads_only_the_new_csv(tmp_path, monkeypatch):
    """Recording model 6 reads one CSV (its own), not all six, and matches a from-scratch computation."""
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(6)
    names = [f"m{j}" for j in range(6)]
    for j in range(5):
        _record(path, names[j], fooled[:, j])
    reads = []
    from spurbench.evaluate import predictions_csv

    real = predictions_csv.read_predictions
    monkeypatch.setattr(
        predictions_csv, "read_predictions", lambda p, optional=None: reads.append(Path(p).name) or real(p, optional)
    )
    board = _record(path, names[5], fooled[:, 5])
    assert reads == [Path(lb.predictions_relpath(names[5])).name]
    _assert_matches(board["consistency"], fooled, names)
    # the per-model hit flags, by image index
    hits = np.load(tmp_path / hitstore.hits_relpath(lb.predictions_relpath("m3")))
    assert hits.dtype == np.int8 and hits.tolist() == fooled[:, 3].astype(int).tolist()


def test_rescore_limit_and_edited_csv_rebuild_exactly(tmp_path):
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(4, seed=1)
    names = ["a", "b", "c", "d"]
    for j, n in enumerate(names[:3]):
        _record(path, n, fooled[:, j])
    # re-scoring b with other results: replaced in place, kappas rebuilt
    fooled[:, 1] = _fooled(4, seed=2)[:, 1]
    board = _record(path, "b", fooled[:, 1])
    _assert_matches(board["consistency"], fooled[:, :3], names[:3])
    # a model scored on the first 9 images only: everything over the 9 shared images, and said so
    board = _record(path, "d", fooled[:, 3], indices=np.arange(9))
    c = board["consistency"]
    assert c["num_images"] == 9 and "9" in c["note"]
    _assert_matches(c, fooled[:9], names)
    hits = np.load(tmp_path / hitstore.hits_relpath(lb.predictions_relpath("d")))
    assert hits.tolist()[9:] == [-1, -1, -1]
    # someone edits a's CSV by hand: the store notices (size/time) and re-reads it
    fooled[:, 0] = ~fooled[:, 0]
    fooled[0, 0], fooled[1, 0] = True, False
    write_csv(tmp_path, "a", fooled[:, 0])
    board = _record(path, "d", fooled[:, 3])  # d now on all 12
    _assert_matches(board["consistency"], fooled, names)


def test_garbage_state_is_rebuilt_not_fatal(tmp_path):
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(3, seed=4)
    _record(path, "a", fooled[:, 0])
    _record(path, "b", fooled[:, 1])
    state = tmp_path / hitstore.STATE_FILE
    state.write_bytes(b"not an npz")
    # changed since spurbench wrote it: refused before anything is written, the file left as it is
    before = lb.load_leaderboard(path)
    with pytest.raises(SpurbenchError, match="state.npz' was changed since spurbench wrote it"):
        _record(path, "c", fooled[:, 2])
    assert state.read_bytes() == b"not an npz" and lb.load_leaderboard(path) == before
    state.unlink()  # gone: rebuilt from the CSVs, not fatal
    board = _record(path, "c", fooled[:, 2])
    _assert_matches(board["consistency"], fooled, ["a", "b", "c"])


def test_large_panel_keeps_pairs_out_of_the_json(tmp_path, monkeypatch):
    monkeypatch.setattr(hitstore, "PAIRWISE_IN_JSON", 3)
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(5, seed=5)
    names = [f"m{j}" for j in range(5)]
    for j, n in enumerate(names):
        board = _record(path, n, fooled[:, j])
    c = board["consistency"]
    assert c["pairwise_kappa"] == {} and "10 pairwise kappas" in c["note"]
    assert all("pairwise_kappa" not in v for v in c["per_class"].values())
    _assert_matches(c, fooled, names, pairs_listed=False)
    with np.load(tmp_path / hitstore.STATE_FILE) as z:
        assert z["class_fail"].shape == (5, 3) and "kappa" not in z.files  # no m x m matrix: running sums


def test_colliding_slugs_get_their_own_files(tmp_path):
    """`a+b` and `a b` used to share predictions/a_b.csv: the second overwrote the first and the
    consistency reported a kappa of 1.0 between them. Now each has its own file and the true kappa."""
    names = ["a+b", "a b", "a_b", "A_b"]
    assert len({lb.slugify(n) for n in names}) == 4
    assert len({lb.predictions_relpath(n).lower() for n in names}) == 4  # also on case-insensitive file systems
    assert lb.slugify("resnet50.a1_in1k") == "resnet50.a1_in1k"  # plain timm names stay as they are
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(2, seed=6)
    _record(path, "a+b", fooled[:, 0])
    board = _record(path, "a b", fooled[:, 1])
    files = [e["predictions"] for e in board["entries"]]
    assert len(set(files)) == 2
    _assert_matches(board["consistency"], fooled, ["a+b", "a b"])
    assert board["consistency"]["pairwise_kappa"]["a+b vs a b"] != pytest.approx(1.0)


def test_old_board_sharing_a_file_is_left_out_not_trusted(tmp_path):
    """A board written before names were made distinct: two entries name one CSV. The second is left
    out of the consistency with the reason, and a new file name is never one another entry uses."""
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(3, seed=7)
    rel = write_csv(tmp_path, "shared", fooled[:, 0])
    lb.record_entry(path, DATASET, make_entry("x+y", 0.5, predictions=rel))
    board = lb.record_entry(path, DATASET, make_entry("x y", 0.5, predictions=rel))
    c = board["consistency"]
    assert c["models"] == ["x+y"] and "collide" in c["excluded"]["x y"]
    assert lb.predictions_relpath("shared", taken=[rel]) != rel


def test_ranking_within_comparable_groups(tmp_path):
    path = tmp_path / "leaderboard.json"
    full = np.ones(12, bool)
    _record(path, "t1", full, rate=0.4)
    _record(path, "t2", full, rate=0.2)
    _record(path, "t3", full, rate=0.3)
    _record(
        path,
        "limited",
        full[:5],
        rate=0.01,
        indices=np.arange(5),
        extra={"metrics": {**make_entry("x", 0.01)["metrics"], "num_images": 5}},
    )
    board = _record(path, "si", full, rate=0.05, extra={"preprocessing": "spurious-imagenet"})
    groups = lb.comparable_groups(board)
    assert [[e["model"] for e in g["entries"]] for g in groups] == [["t2", "t3", "t1"], ["limited"], ["si"]]
    assert "first 5 of 12 images" in groups[1]["description"] and "spurious-imagenet" in groups[2]["description"]
    ranked = lb.to_ranked_json(board)
    assert [(e["model"], e["group"], e["rank"]) for e in ranked["entries"]] == [
        ("t2", 1, 1),
        ("t3", 1, 2),
        ("t1", 1, 3),
        ("limited", 2, 1),
        ("si", 3, 1),
    ]
    assert ranked["groups_note"] and [g["models"] for g in ranked["groups"]][0] == ["t2", "t3", "t1"]
    md = lb.to_markdown(board)
    assert "not ranked against each other" in md and md.count("### Group") == 3
    # the best rate overall (limited, 0.01) is not ranked first: it is not comparable
    first_rows = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert [r.split(" | ")[1] for r in first_rows] == ["t2", "limited", "si"]
    # one group: no groups note, as before
    single = {**board, "entries": [e for e in board["entries"] if e["model"].startswith("t")]}
    assert "not ranked against" not in lb.to_markdown(single) and lb.to_ranked_json(single)["groups_note"] is None


def test_page_ranks_within_groups(tmp_path):
    from spurbench.evaluate.page import render_page

    path = tmp_path / "leaderboard.json"
    _record(path, "t1", np.ones(12, bool), rate=0.4)
    _record(path, "si", np.ones(12, bool), rate=0.05, extra={"preprocessing": "spurious-imagenet"})
    html = render_page(path, tmp_path / "site").read_text()
    assert "not ranked against each other" in html and 'data-key="group"' in html


def test_cli_on_a_corrupt_board_is_one_line_and_leaves_it(tmp_path):
    path = tmp_path / "leaderboard.json"
    _record(path, "t1", np.ones(12, bool))
    board = json.loads(path.read_text())
    shutil.rmtree(lb.store_path(path))  # the export alone: a board read from that one file
    board["entries"].append({"model": "t1", "metrics": {}})  # a duplicate entry: corrupt
    path.write_text(json.dumps(board))
    before = path.read_bytes()
    r = subprocess.run(
        [sys.executable, "-m", "spurbench", "leaderboard", "--leaderboard", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "two entries" in r.stderr
    assert path.read_bytes() == before


def test_unchanged_entries_are_written_back_byte_for_byte(tmp_path):
    """record_entry copies the lines of entries it did not touch; the file stays what a full dump gives."""
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(3, seed=8)
    _record(path, "a", fooled[:, 0])
    _record(path, "b", fooled[:, 1])
    line_a = next(line for line in path.read_text().splitlines() if line.startswith('    {"model": "a"'))
    board = _record(path, "c", fooled[:, 2], rate=0.1)
    text = path.read_text()
    assert line_a in text.splitlines()
    assert json.loads(text) == board and text == lb.dumps_board(board)
    # an indented file from an older spurbench (a board without spurbench's record of what it wrote) is taken
    # over and rewritten in the one-entry-per-line layout
    path.write_text(json.dumps(board, indent=2))
    (tmp_path / ".spurbench-written.json").unlink()
    board = _record(path, "b", fooled[:, 1], rate=0.9)
    assert path.read_text() == lb.dumps_board(board) and [e["model"] for e in board["entries"]] == ["a", "b", "c"]


def test_eval_record_never_takes_another_entrys_file(tmp_path):
    """On a board from before names were made distinct, "x y" owns predictions/x_y.csv; recording the
    plain name "x_y" (whose file name would be the same) must leave that file alone. The per-image
    arrays below stand in for a classifier run only to test the file naming."""
    from spurbench.evaluate.predict import Predictions
    from spurbench.evaluate.record import record

    path = tmp_path / "leaderboard.json"
    fooled = _fooled(2, seed=9)
    old_rel = write_csv(tmp_path, "x_y", fooled[:, 0])  # the old slug of "x y"
    assert old_rel == "predictions/x_y.csv"
    lb.record_entry(path, DATASET, make_entry("x y", 0.5, predictions=old_rel))
    before = (tmp_path / old_rel).read_bytes()
    top1 = np.where(fooled[:, 1], LABELS, 500)
    preds = Predictions(
        np.arange(12),
        LABELS.copy(),
        np.full(12, 0.5),
        np.stack([top1] + [np.full(12, 600 + i) for i in range(4)], 1),
        np.tile([0.5, 0.2, 0.1, 0.05, 0.01], (12, 1)),
    )
    record(path, DATASET, make_entry("x_y", 0.3, predictions=lb.predictions_relpath("x_y")), preds)
    board = lb.load_leaderboard(path)
    files = {e["model"]: e["predictions"] for e in board["entries"]}
    assert files["x y"] == old_rel and files["x_y"] != old_rel
    assert (tmp_path / old_rel).read_bytes() == before
    _assert_matches(board["consistency"], fooled, ["x y", "x_y"])


def test_positives_and_precision_are_part_of_comparability(tmp_path):
    """Entries scored with other positives (the AP is over other images) or another precision are never ranked
    together, and one comparability_key decides it everywhere (groups, resume-skip)."""
    path = tmp_path / "leaderboard.json"
    full = np.ones(12, bool)
    pos = {"positives": "imagenet/val"}
    _record(path, "p1", full, rate=0.4, extra=pos)
    _record(path, "p2", full, rate=0.3, extra=pos)
    _record(path, "other", full, rate=0.1, extra={"positives": "my/photos"})
    _record(path, "half", full, rate=0.2, extra={**pos, "precision": "float16"})
    board = _record(path, "none", full, rate=0.05)
    groups = lb.comparable_groups(board)
    assert [[e["model"] for e in g["entries"]] for g in groups] == [["p2", "p1"], ["other"], ["half"], ["none"]]
    assert "positives my/photos" in groups[1]["description"] and "float16" in groups[2]["description"]
    by = {e["model"]: e for e in board["entries"]}
    ds = board["dataset"]
    assert lb.comparability_key(by["p1"], ds) == lb.comparability_key(by["p2"], ds)
    probe = {k: by["p1"][k] for k in ("preprocessing", "metrics", "positives")}
    assert lb.already_scored(board, "p1", probe)
    assert not lb.already_scored(board, "p1", {**probe, "positives": "my/photos"})
    assert not lb.already_scored(board, "p1", {**probe, "precision": "bfloat16"})
    assert not lb.already_scored(board, "p1", {**probe, "fingerprint": "f" * 64})


@pytest.mark.parametrize("kind", ["spurious", "shift"])
def test_incremental_append_matches_a_rebuild(tmp_path, monkeypatch, kind):
    """Above PAIRWISE_IN_JSON models an append is incremental (packed bits, running sums): it must give
    what a from-scratch rebuild and an independent computation give, on both kinds of set."""
    monkeypatch.setattr(hitstore, "PAIRWISE_IN_JSON", 2)
    dataset = {**DATASET, "provenance": {"kind": kind}}
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(7, seed=11)
    names = [f"m{j}" for j in range(7)]
    calls = {"append": 0}
    real = hitstore._append
    monkeypatch.setattr(hitstore, "_append", lambda *a: calls.__setitem__("append", calls["append"] + 1) or real(*a))
    for j, n in enumerate(names):
        rel = write_csv(tmp_path, n, fooled[:, j])
        board = lb.record_entry(path, dataset, make_entry(n, 0.5, None, rel))
    assert calls["append"] == 5  # models 3..7 appended incrementally
    failed = fooled if kind == "spurious" else ~fooled
    _assert_matches(board["consistency"], failed, names, pairs_listed=False)
    (tmp_path / hitstore.STATE_FILE).unlink()  # from scratch: the same figures
    rebuilt = hitstore.update(tmp_path, lb.load_leaderboard(path))
    assert _close(rebuilt, board["consistency"])


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return b == pytest.approx(a, abs=1e-12)
    return a == b
