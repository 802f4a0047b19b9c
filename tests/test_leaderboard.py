"""The leaderboard store: round trip, replace-on-rescore, refusal of another dataset, corrupt files left
untouched, consistency recomputed from predictions CSVs, ranking, markdown, parallel writers, the CLI.

These tests exercise the store, not models: the predictions CSVs are small hand-made files in the
format `spurbench eval` writes (the end-to-end test with real classifiers is in the eval tests).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from spurbench.errors import SpurbenchError
from spurbench.evaluate import leaderboard as lb
from spurbench.evaluate import predictions_csv

DATASET = {
    "id": "data/toy",
    "revision": None,
    "split": "test",
    "fingerprint": "a" * 64,
    "num_images": 12,
    "classes": [1, 2, 3],
    "provenance": {"builder": "hand"},
}
OTHER_DATASET = {**DATASET, "id": "data/other", "fingerprint": "b" * 64}
LABELS = np.repeat([1, 2, 3], 4)  # 12 images, 4 per class


def write_csv(
    root: Path, model: str, fooled: np.ndarray, indices: np.ndarray | None = None, labels: np.ndarray = LABELS
) -> str:
    """Write a predictions CSV in the eval format; fooled[i] decides whether top-1 is the label."""
    indices = np.arange(len(fooled)) if indices is None else indices
    rel = lb.predictions_relpath(model)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(predictions_csv.PREDICTION_COLUMNS)]
    for i in indices:
        label = int(labels[i])
        top1 = label if fooled[i] else 500
        top5 = [top1] + [x for x in (600, 601, 602, 603, label) if x != top1][:4]
        probs = [0.5, 0.2, 0.1, 0.05, 0.01]
        p_label = probs[top5.index(label)] if label in top5 else 0.001
        lines.append(
            f"{i},{label},{p_label:.6g},{top1},{int(top1 == label)},{int(label in top5)},"
            f"{' '.join(map(str, top5))},{' '.join(f'{p:.6g}' for p in probs)},test"
        )
    path.write_text("\n".join(lines) + "\n")
    return rel


def make_entry(model: str, rate: float, ap: float | None = None, predictions: str | None = None) -> dict:
    return {
        "model": model,
        "weights": {"source": f"local:{model}.safetensors", "sha256": "0" * 64},
        "num_params": 1000,
        "data_config": {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875},
        "preprocessing": "timm",
        "metrics": {
            "spurious_rate": rate,
            "spurious_rate_micro": rate,
            "spurious_rate_top5": min(1.0, rate + 0.1),
            "spurious_rate_top5_micro": min(1.0, rate + 0.1),
            "mean_target_prob": rate / 2,
            "spurious_score_ap": ap,
            "spurious_score_auroc": ap,
            "num_images": 12,
        },
        "per_class": {
            k: {
                "n": 4,
                "spurious_rate": rate,
                "spurious_rate_top5": rate,
                "mean_target_prob": rate / 2,
                "spurious_score_ap": ap,
                "spurious_score_auroc": ap,
                "num_positives": 0 if ap is None else 3,
            }
            for k in (1, 2, 3)
        },  # int keys on purpose: the store must write them as strings
        "predictions": predictions or lb.predictions_relpath(model),
        "env": {"spurbench": "0.1.0", "torch": "x", "timm": "y", "python": "3", "device": "cpu"},
        "date": "2025-01-01T00:00:00Z",
        "images_per_second": 10.0,
        "command": f"spurbench eval --model {model}",
    }


def record(path: Path, model: str, fooled, rate: float = 0.5, ap: float | None = None, **kw) -> dict:
    rel = write_csv(path.parent, model, np.asarray(fooled, bool), **kw)
    return lb.record_entry(path, DATASET, make_entry(model, rate, ap, rel))


# ---------------------------------------------------------------------------------------- the store


def test_missing_file_is_empty_board(tmp_path):
    assert lb.load_leaderboard(tmp_path / "none.json") == lb.empty_board()


def test_round_trip(tmp_path):
    path = tmp_path / "lb" / "leaderboard.json"  # folder created on first record
    rng = np.random.default_rng(0)
    record(path, "model/a", rng.random(12) < 0.5, rate=0.4)
    written = record(path, "b", rng.random(12) < 0.5, rate=0.3)
    loaded = lb.load_leaderboard(path)
    assert loaded == written == json.loads(path.read_text())
    assert loaded["schema_version"] == lb.SCHEMA_VERSION == 2
    assert loaded["dataset"] == DATASET
    assert [e["model"] for e in loaded["entries"]] == ["model/a", "b"]
    e = loaded["entries"][0]
    # a name that needed replacing carries its hash: no other name can share the file
    assert e["predictions"] == "predictions/model_a-d4111726.csv" and (path.parent / e["predictions"]).is_file()
    assert sorted(e["per_class"]) == ["1", "2", "3"]
    assert e["metrics"]["spurious_score_ap"] is None
    assert loaded["consistency"]["models"] == ["model/a", "b"] and loaded["consistency"]["num_images"] == 12
    assert not list(path.parent.glob("*.tmp-*"))


def test_rescore_replaces_entry_in_place(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "a", [1] * 12, rate=0.9)
    record(path, "b", [0] * 12, rate=0.1)
    board = record(path, "a", [0] * 6 + [1] * 6, rate=0.5)
    assert [e["model"] for e in board["entries"]] == ["a", "b"]
    assert board["entries"][0]["metrics"]["spurious_rate"] == 0.5
    # consistency follows the new predictions: 6 images fool a, none fools b
    assert board["consistency"]["at_least_half_rate"] == 0.5 and board["consistency"]["all_fooled_rate"] == 0.0


def test_other_dataset_refused_and_file_unchanged(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "a", [1] * 12)
    before = path.read_bytes()
    with pytest.raises(SpurbenchError) as err:
        lb.record_entry(path, OTHER_DATASET, make_entry("c", 0.2))
    msg = str(err.value)
    assert str(path) in msg and "data/toy" in msg and "data/other" in msg and "another --leaderboard" in msg
    assert "\n" not in msg
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        '{"schema_version": 1, "entries": [',
        "not json at all",
        '{"schema_version": 3, "entries": []}',
        "[1, 2]",
        '{"schema_version": 1, "entries": [{"model": 3}]}',
    ],
)
def test_corrupt_or_foreign_file_left_untouched(tmp_path, content):
    path = tmp_path / "leaderboard.json"
    path.write_text(content)
    before = path.read_bytes()
    with pytest.raises(SpurbenchError) as err:
        lb.load_leaderboard(path)
    assert str(path) in str(err.value) and "left untouched" in str(err.value)
    with pytest.raises(SpurbenchError):
        record(path, "a", [1] * 12)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp-*"))


# ----------------------------------------------------------------------------------- consistency


def independent_consistency(fooled: np.ndarray, names: list[str]) -> dict:
    """Straight from the definitions, with loops and scikit-learn; shares no code with spurbench."""
    n, m = fooled.shape
    votes = [int(sum(row)) for row in fooled]
    pairwise = {
        f"{names[i]} vs {names[j]}": cohen_kappa_score(fooled[:, i], fooled[:, j])
        for i in range(m)
        for j in range(i + 1, m)
    }
    p1 = sum(votes) / (n * m)
    p_e = p1**2 + (1 - p1) ** 2
    p_i = [(v * v + (m - v) ** 2 - m) / (m * (m - 1)) for v in votes]
    return {
        "all_fooled_rate": sum(v == m for v in votes) / n,
        "at_least_half_rate": sum(v >= math.ceil(m / 2) for v in votes) / n,
        "pairwise_kappa": pairwise,
        "mean_pairwise_kappa": float(np.mean(list(pairwise.values()))),
        "fleiss_kappa": (sum(p_i) / n - p_e) / (1 - p_e),
    }


def assert_consistency_equal(got: dict, want: dict):
    for key in ("all_fooled_rate", "at_least_half_rate", "mean_pairwise_kappa", "fleiss_kappa"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["pairwise_kappa"] == pytest.approx(want["pairwise_kappa"], abs=1e-12)


def test_consistency_recomputed_from_csvs(tmp_path):
    path = tmp_path / "leaderboard.json"
    rng = np.random.default_rng(42)
    fooled = rng.random((12, 3)) < np.array([0.3, 0.5, 0.7])
    names = ["alpha", "beta", "gamma"]
    for j, name in enumerate(names):
        board = record(path, name, fooled[:, j], indices=rng.permutation(12))  # row order must not matter
    c = board["consistency"]
    assert c["models"] == names and c["num_images"] == 12 and c["note"] is None and c["excluded"] == {}
    assert_consistency_equal(c, independent_consistency(fooled, names))
    for k in (1, 2, 3):
        sel = LABELS == k
        votes = fooled[sel].sum(1)
        assert c["per_class"][str(k)]["num_images"] == 4
        assert c["per_class"][str(k)]["all_fooled_rate"] == pytest.approx(np.mean(votes == 3))
        assert c["per_class"][str(k)]["at_least_half_rate"] == pytest.approx(np.mean(votes >= 2))


def test_consistency_uses_intersection_and_says_so(tmp_path):
    path = tmp_path / "leaderboard.json"
    rng = np.random.default_rng(3)
    fooled = rng.random((12, 3)) < 0.5
    fooled[0] = [1, 0, 1]  # keep every kappa defined on the shared images
    fooled[1] = [0, 1, 0]
    record(path, "full1", fooled[:, 0])
    record(path, "full2", fooled[:, 1])
    board = record(path, "limited", fooled[:, 2], indices=np.arange(9))  # e.g. scored with --limit 9
    c = board["consistency"]
    assert c["num_images"] == 9
    assert c["images_per_model"] == {"full1": 12, "full2": 12, "limited": 9}
    assert "9" in c["note"] and "limited 9" in c["note"]
    assert_consistency_equal(c, independent_consistency(fooled[:9], ["full1", "full2", "limited"]))


def test_missing_or_broken_csv_is_excluded_not_fatal(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "a", [1, 0] * 6)
    record(path, "b", [1, 1, 0] * 4)
    (tmp_path / lb.predictions_relpath("b")).unlink()
    (tmp_path / "predictions" / "c.csv").write_text("index,label\n0,1\n")  # no fooled_top1 column
    board = lb.record_entry(path, DATASET, make_entry("c", 0.2, predictions="predictions/c.csv"))
    c = board["consistency"]
    assert c["models"] == ["a"]
    assert set(c["excluded"]) == {"b", "c"}
    assert "missing" in c["excluded"]["b"] and "fooled_top1" in c["excluded"]["c"]
    assert [e["model"] for e in board["entries"]] == ["a", "b", "c"]  # the entries themselves stay


def test_stale_csv_with_other_labels_is_excluded(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "a", [1] * 12)
    board = record(path, "b", [1] * 12, labels=LABELS[::-1])
    assert board["consistency"]["models"] == ["a"] and "disagree" in board["consistency"]["excluded"]["b"]


def test_read_predictions_parses_all_columns(tmp_path):
    rel = write_csv(tmp_path, "m", np.array([1, 0, 1]), labels=np.array([7, 8, 9]))
    p = predictions_csv.read_predictions(tmp_path / rel)
    assert p["index"].tolist() == [0, 1, 2] and p["label"].tolist() == [7, 8, 9]
    assert p["fooled_top1"].tolist() == [True, False, True] and p["top1"].tolist() == [7, 500, 9]
    assert p["top5"].shape == (3, 5) and p["top5_probs"].shape == (3, 5)
    assert p["target_prob"][0] == pytest.approx(0.5)
    with pytest.raises(SpurbenchError, match="missing"):
        predictions_csv.read_predictions(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------- ranking, markdown


def test_ranking_by_ap_when_all_have_it_else_by_rate(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "low_ap", [1] * 12, rate=0.3, ap=0.6)
    record(path, "high_ap", [1] * 12, rate=0.9, ap=0.9)
    board = record(path, "tie_ap_better_rate", [1] * 12, rate=0.2, ap=0.6)
    assert lb.ranked_by_score(board)
    assert [e["model"] for e in lb.ranked_entries(board)] == ["high_ap", "tie_ap_better_rate", "low_ap"]
    board = record(path, "no_ap", [1] * 12, rate=0.15, ap=None)
    assert not lb.ranked_by_score(board)
    assert [e["model"] for e in lb.ranked_entries(board)] == ["no_ap", "tie_ap_better_rate", "low_ap", "high_ap"]
    ranked = lb.to_ranked_json(board)
    assert ranked["ranked_by"] == "spurious_rate" and [e["rank"] for e in ranked["entries"]] == [1, 2, 3, 4]


def test_markdown_lists_every_model_in_rank_order(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "resnet|weird", [1] * 6 + [0] * 6, rate=0.5)
    record(path, "vit_b", [1] * 12, rate=0.25)
    board = record(path, "convnext", [0] * 12, rate=0.75)
    md = lb.to_markdown(board)
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[1] for r in rows[:3]] == ["vit_b", "resnet\\|weird", "convnext"]
    assert "0.250" in rows[0] and "n/a" in rows[0]  # AP is n/a without positives
    assert "data/toy" in md and "Consistency across 3 classifier(s), 12 images" in md
    assert "vit_b vs convnext" in md
    assert "No entries yet" in lb.to_markdown(lb.empty_board())


# ------------------------------------------------------------------------------ parallel writers


# Each writer is a separate interpreter that imports only spurbench.evaluate.leaderboard, waits for a common
# start signal, then records its model `rounds` times (different metrics each round).
WRITER = """
import json, os, sys, time
from spurbench.evaluate import leaderboard as lb
path, entry_file, go, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
dataset, entry = json.load(open(entry_file))
while not os.path.exists(go):
    time.sleep(0.001)
for r in range(rounds):
    entry["metrics"]["spurious_rate"] = r / rounds
    lb.record_entry(path, dataset, entry)
"""


def test_parallel_processes_lose_no_entry(tmp_path):
    path = tmp_path / "leaderboard.json"
    models = [f"model_{i}" for i in range(8)]  # 8 real processes, 4 records each, into one board
    rng = np.random.default_rng(0)
    fooled = rng.random((12, len(models))) < 0.5
    go = tmp_path / "go"
    procs = []
    for j, model in enumerate(models):
        rel = write_csv(tmp_path, model, fooled[:, j])  # written before any writer starts
        entry_file = tmp_path / f"{model}.entry.json"
        entry_file.write_text(json.dumps([DATASET, make_entry(model, 0.0, predictions=rel)]))
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(entry_file), str(go), "4"]))
    time.sleep(0.5)  # let them import, then release all at once
    go.touch()
    # read while they write: the export is either absent or complete, valid JSON, and the store reads, every time
    reads = 0
    while any(p.poll() is None for p in procs):
        if path.exists():
            json.loads(path.read_text())
            reads += 1
        lb.load_leaderboard(path)
        time.sleep(0.002)
    assert [p.wait() for p in procs] == [0] * len(models)
    board = lb.load_leaderboard(path)
    assert sorted(e["model"] for e in board["entries"]) == models
    assert all(e["metrics"]["spurious_rate"] == 0.75 for e in board["entries"])  # each one's last round
    c = board["consistency"]
    assert sorted(c["models"]) == models and c["excluded"] == {} and len(c["pairwise_kappa"]) == 28
    order = [models.index(m) for m in c["models"]]
    assert_consistency_equal(c, independent_consistency(fooled[:, order], c["models"]))
    assert reads > 0
    assert not list(tmp_path.rglob("*.tmp-*"))
    assert len(list((lb.store_path(path) / "entries").glob("*.json"))) == len(models)  # replaced entries' files removed


# ------------------------------------------------------------------------------------------- CLI


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "spurbench", "leaderboard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_cli_md_json_and_out(tmp_path):
    path = tmp_path / "leaderboard.json"
    record(path, "a", [1] * 12, rate=0.9)
    record(path, "b", [0] * 12, rate=0.1)
    md = cli("--leaderboard", str(path), "--format", "md")
    assert md.returncode == 0, md.stderr
    assert md.stdout == lb.to_markdown(lb.load_leaderboard(path))
    js = cli("--leaderboard", str(path), "--format", "json")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert [e["model"] for e in data["entries"]] == ["b", "a"] and data["entries"][0]["rank"] == 1
    # default path leaderboard/leaderboard.json, relative to the working directory; --out writes a file
    (tmp_path / "leaderboard").mkdir()
    os.replace(path, tmp_path / "leaderboard" / "leaderboard.json")
    os.replace(tmp_path / "predictions", tmp_path / "leaderboard" / "predictions")
    out = cli("--out", "outdir", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip().endswith("leaderboard.md")
        and "| b |" in (tmp_path / "outdir" / "leaderboard.md").read_text()
    )


def test_cli_errors_are_one_line(tmp_path):
    missing = cli("--leaderboard", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "spurbench eval" in missing.stderr and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    corrupt = cli("--leaderboard", str(bad), "--format", "json")
    assert corrupt.returncode == 2 and "left untouched" in corrupt.stderr and "Traceback" not in corrupt.stderr
    assert bad.read_text() == "{oops"
    good = tmp_path / "good.json"
    record(good, "a", [1] * 12)
    wrong = cli("--leaderboard", str(good), "--dataset", str(tmp_path))
    assert wrong.returncode == 2 and "--format html" in wrong.stderr


def test_cli_html_calls_the_page_renderer(tmp_path):
    import spurbench.evaluate.page  # noqa: F401  (a broken page module fails here, it is not skipped)

    path = tmp_path / "leaderboard.json"
    record(path, "a", [1] * 12)
    record(path, "b", [0, 1] * 6)
    res = cli("--leaderboard", str(path), "--format", "html", "--out", str(tmp_path / "site"))
    assert res.returncode == 0, res.stderr
    written = Path(res.stdout.strip().splitlines()[-1])
    assert written.is_file() and str(written).startswith(str(tmp_path / "site"))
