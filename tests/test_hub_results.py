"""`spurbench leaderboard --format csv` (timm's results-CSV convention) and `--format eval-results`
(the Hub's `.eval_results/*.yaml`, task ids matching the `eval.yaml` every export writes), with the
mistakes a user makes: one clear line, exit 2, nothing written, the leaderboard unchanged."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_leaderboard import DATASET, make_entry, write_csv

from spurbench import dataset as sd
from spurbench.cli import main
from spurbench.evaluate import leaderboard as lb

HUB_DATASET = {**DATASET, "id": "org/spurious-set", "revision": "abc123"}


@pytest.fixture()
def board(tmp_path) -> Path:
    path = tmp_path / "lb" / "leaderboard.json"
    for model, rate, ap in (("resnet50.a1_in1k", 0.4, 0.7), ("vit_b+x", 0.2, 0.9), ("convnext", 0.3, 0.8)):
        rel = write_csv(path.parent, model, np.ones(12, bool))
        e = make_entry(model, rate, ap, rel)
        e["num_params"] = {"resnet50.a1_in1k": 25_557_032, "vit_b+x": 86_567_656, "convnext": 88_591_464}[model]
        e["positives"] = "imagenet/val"
        lb.record_entry(path, HUB_DATASET, e)
    rel = write_csv(path.parent, "limited", np.ones(12, bool), indices=np.arange(6))
    e = make_entry("limited", 0.01, 0.99, rel)
    e["metrics"]["num_images"] = 6
    lb.record_entry(path, HUB_DATASET, e)
    return path


def test_csv_is_timm_results_convention(board, capsys):
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    cols = list(rows[0])
    i = cols.index("param_count")
    assert cols[:1] == ["model"] and cols[i : i + 4] == ["param_count", "img_size", "crop_pct", "interpolation"]
    # every headline metric with its interval columns; entries without per-image intervals leave them empty
    assert "spurious_rate_lo" in cols and "spurious_score_ap_hi" in cols and cols[-3:-1] == ["rank_lo", "rank_hi"]
    assert all(r["spurious_rate_lo"] == r["spurious_rate_hi"] == r["rank_lo"] == "" for r in rows)
    # no entry's model built this set: the used_in_build column is empty (evaluate/validity.py)
    assert cols[-1] == "used_in_build" and {r["used_in_build"] for r in rows} == {""}
    # ranked by AP within the comparable group; the --limit entry after, in its own group
    assert [(r["model"], r["group"]) for r in rows] == [
        ("vit_b+x", "1"),
        ("convnext", "1"),
        ("resnet50.a1_in1k", "1"),
        ("limited", "2"),
    ]
    entries = {e["model"]: e for e in lb.load_leaderboard(board)["entries"]}
    for r in rows:
        e = entries[r["model"]]
        for k in (
            "spurious_rate",
            "spurious_rate_top5",
            "mean_target_prob",
            "spurious_score_ap",
            "spurious_score_auroc",
        ):
            assert float(r[k]) == pytest.approx(e["metrics"][k], rel=1e-6)
        assert float(r["param_count"]) == round(e["num_params"] / 1e6, 2)
        assert (int(r["img_size"]), float(r["crop_pct"]), r["interpolation"]) == (224, 0.875, "bicubic")
    assert rows[0]["param_count"] == "86.57" and rows[-1]["num_images"] == "6"
    # --out writes the same text to DIR/leaderboard.csv
    out = board.parent / "export"
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "csv", "--out", str(out)]) == 0
    assert list(csv.DictReader((out / "leaderboard.csv").open()))[0]["model"] == "vit_b+x"


def test_eval_results_per_model_match_the_exports_eval_yaml(board, tmp_path, capsys):
    # the task ids a spurbench export declares in its eval.yaml
    export = sd.write_dataset(
        tmp_path / "ds",
        {
            "test": [
                dict(
                    image=np.zeros((8, 8, 3), np.uint8),
                    label=1,
                    class_name="x",
                    spurious_feature="f",
                    component=-1,
                    source="reference",
                    builder="t",
                    prompt="",
                    seed=-1,
                )
            ]
        },
        sd.DatasetCard("t"),
    )
    declared = {t["id"] for t in yaml.safe_load((export / sd.EVAL_FILE).read_text())["tasks"]}
    out = tmp_path / "results"
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "eval-results", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    written = printed.out.split()
    # the canonical group only: the --limit entry is left out, and said so
    assert len(written) == 3 and not (out / "limited").exists()
    assert "left out limited: 6 of 12 images (--limit)" in printed.err
    entries = {e["model"]: e for e in lb.load_leaderboard(board)["entries"] if e["model"] != "limited"}
    for model, e in entries.items():
        path = out / lb.slugify(model) / ".eval_results" / "org__spurious-set.yaml"
        items = yaml.safe_load(path.read_text())
        assert [i["dataset"]["task_id"] for i in items] == ["spurious_rate", "spurious_score_ap"]
        assert {i["dataset"]["task_id"] for i in items} <= declared
        for i in items:
            assert i["dataset"]["id"] == "org/spurious-set" and i["dataset"]["revision"] == "abc123"
            assert i["value"] == e["metrics"][i["dataset"]["task_id"]] and i["date"] == "2025-01-01"
            assert i["source"]["name"].startswith("spurbench") and i["source"]["url"].startswith("https://")
    # asked for: every group, the non-canonical one under task ids naming it; no two groups share (id, task, split)
    every = tmp_path / "every"
    assert (
        main(
            [
                "leaderboard",
                "--leaderboard",
                str(board),
                "--format",
                "eval-results",
                "--out",
                str(every),
                "--groups",
                "all",
            ]
        )
        == 0
    )
    limited = yaml.safe_load((every / "limited" / ".eval_results" / "org__spurious-set.yaml").read_text())
    assert "first 6 of 12 images" in limited[0]["notes"]
    key = lb.comparable_groups(lb.load_leaderboard(board))[1]["key"]
    assert [i["dataset"]["task_id"] for i in limited] == [
        f"spurious_rate--group-{key}",
        f"spurious_score_ap--group-{key}",
    ]
    # the canonical group keeps its plain task ids whatever --groups is (compared by key, not by identity)
    default = {f.relative_to(out): yaml.safe_load(f.read_text()) for f in out.rglob("*.yaml")}
    assert default and all(yaml.safe_load((every / rel).read_text()) == items for rel, items in default.items())
    assert {i["dataset"]["task_id"] for items in default.values() for i in items} <= {
        "spurious_rate",
        "spurious_score_ap",
    }
    seen = {}
    for f in every.rglob("*.yaml"):
        for i in yaml.safe_load(f.read_text()):
            seen.setdefault((i["dataset"]["id"], i["dataset"]["task_id"]), set()).add(i["notes"].split(", split")[0])
    assert all(len(v) == 1 for v in seen.values())  # one group per (dataset id, task id)
    capsys.readouterr()
    assert (
        main(
            [
                "leaderboard",
                "--leaderboard",
                str(board),
                "--format",
                "eval-results",
                "--out",
                str(every),
                "--groups",
                "7",
            ]
        )
        == 2
    )
    assert "--groups 7" in capsys.readouterr().err


def test_eval_results_canonical_group_is_the_default_rows_preprocessing_and_precision(tmp_path):
    """A --limit entry, a parity-preprocessing entry and an fp16 entry never share the canonical export."""
    from spurbench.evaluate.hub_results import canonical_group, write_eval_results

    path = tmp_path / "leaderboard.json"
    for model, extra in (
        ("a", {}),
        ("b", {}),
        ("lim", {"rows": lb.rows_identity("test", range(5), limit=5)}),
        ("si", {"preprocessing": "spurious-imagenet"}),
        ("half", {"precision": "float16"}),
    ):
        rel = write_csv(tmp_path, model, np.ones(12, bool), indices=np.arange(5) if model == "lim" else None)
        e = {**make_entry(model, 0.3, None, rel), "rows": lb.rows_identity("test", range(12)), **extra}
        if model == "lim":
            e["metrics"]["num_images"] = 5
        lb.record_entry(path, {**HUB_DATASET, "id": "Org/Spurious-Set"}, e)
    board = lb.load_leaderboard(path)
    group, left_out = canonical_group(board)
    assert [e["model"] for e in group["entries"]] == ["a", "b"]
    assert set(left_out) == {"lim", "si", "half"} and "--limit 5" in left_out["lim"]
    assert "spurious-imagenet" in left_out["si"] and "float16" in left_out["half"]
    files, _ = write_eval_results(board, tmp_path / "out")
    # a dataset id with capitals keeps its readable file name
    assert sorted(f.relative_to(tmp_path / "out").as_posix() for f in files) == [
        "a/.eval_results/Org__Spurious-Set.yaml",
        "b/.eval_results/Org__Spurious-Set.yaml",
    ]
    text = to_csv_of(board)
    assert text["si"]["crop_pct"] == "" and text["a"]["crop_pct"] == "0.875"  # the parity transform never crops


def to_csv_of(board) -> dict:
    from spurbench.evaluate.hub_results import to_csv

    return {r["model"]: r for r in csv.DictReader(io.StringIO(to_csv(board)))}


def test_size_categories_cover_every_hub_bucket():
    assert [sd.size_category(n) for n in (10**8, 10**9 + 1, 5 * 10**10, 10**11, 10**12)] == [
        "100M<n<1B",
        "1B<n<10B",
        "10B<n<100B",
        "100B<n<1T",
        "n>1T",
    ]


def test_eval_results_for_a_local_dataset_need_its_hub_id(tmp_path, capsys):
    path = tmp_path / "leaderboard.json"
    rel = write_csv(tmp_path, "m", np.ones(12, bool))
    lb.record_entry(path, DATASET, make_entry("m", 0.5, None, rel))  # dataset id "data/toy", no AP
    (tmp_path / "data" / "toy").mkdir(parents=True)
    before = path.read_bytes()
    out = tmp_path / "results"
    cmd = ["leaderboard", "--leaderboard", str(path), "--format", "eval-results", "--out", str(out)]
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # "data/toy" is now a local folder: not a Hub id
    try:
        assert main(cmd) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dataset-id" in err and not out.exists()
    assert main(cmd + ["--dataset-id", "org/toy"]) == 0
    items = yaml.safe_load((out / "m" / ".eval_results" / "org__toy.yaml").read_text())
    assert [i["dataset"]["task_id"] for i in items] == ["spurious_rate"]  # no AP without positives: left out
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "args, says",
    [
        (["--format", "eval-results"], "--out"),
        (["--format", "csv", "--dataset-id", "org/x"], "--dataset-id"),
        (["--format", "eval-results", "--dataset-id", "not a hub id", "--out", "OUT"], "Hub id"),
        (["--format", "eval-results", "--out", "FILE"], "is a file"),
        (["--format", "xlsx"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(board, tmp_path, capsys, args, says):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = [{"FILE": str(a_file), "OUT": str(tmp_path / "out")}.get(a, a) for a in args]
    before = {p: p.read_bytes() for p in board.parent.rglob("*") if p.is_file()}
    try:
        code = main(["leaderboard", "--leaderboard", str(board), *args])
    except SystemExit as exit_:  # argparse rejects an unknown choice itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert says in err.splitlines()[-1]
    assert {p: p.read_bytes() for p in board.parent.rglob("*") if p.is_file()} == before
    assert a_file.read_text() == "x" and not (tmp_path / "out").exists()


def test_shift_board_reports_its_own_headline_metrics(tmp_path, capsys):
    """On a `shift` set the headline metrics are accuracies (the eval.yaml of a shift export lists them)."""
    path = tmp_path / "leaderboard.json"
    shift = {**HUB_DATASET, "provenance": {"kind": "shift"}}
    for model, acc in (("a", 0.6), ("b", 0.8)):
        rel = write_csv(tmp_path, model, np.ones(12, bool))
        e = make_entry(model, 0.5, None, rel)
        e["metrics"].update(
            accuracy=acc,
            accuracy_top5=0.9,
            worst_group_accuracy=acc - 0.2,
            mean_group_accuracy=acc - 0.1,
            accuracy_drop=0.05,
        )
        lb.record_entry(path, shift, e)
    assert main(["leaderboard", "--leaderboard", str(path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0])[1:6] == [
        "accuracy",
        "accuracy_top5",
        "worst_group_accuracy",
        "mean_group_accuracy",
        "accuracy_drop",
    ]
    assert {r["model"]: float(r["accuracy"]) for r in rows} == {"a": 0.6, "b": 0.8}
    out = tmp_path / "res"
    assert main(["leaderboard", "--leaderboard", str(path), "--format", "eval-results", "--out", str(out)]) == 0
    items = yaml.safe_load((out / "b" / ".eval_results" / "org__spurious-set.yaml").read_text())
    assert [(i["dataset"]["task_id"], i["value"]) for i in items] == [
        ("accuracy", 0.8),
        ("worst_group_accuracy", pytest.approx(0.6)),
    ]
    assert [i["dataset"]["task_id"] for i in items] == list(sd.EVAL_TASKS["shift"])
