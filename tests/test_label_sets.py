"""Datasets whose labels are not ImageNet-1k (Waterbirds' two classes): `spurbench eval` scores a
classifier with a head of that size and refuses one of another size in one line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from test_waterbirds import ROWS, make_waterbirds_tree

from spurbench.classifiers import load_panel
from spurbench.cli import main
from spurbench.importers import waterbirds


@pytest.fixture()
def wb(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    root = make_waterbirds_tree(tmp_path / "src")
    return root, waterbirds.import_waterbirds(root, tmp_path / "wb")


@pytest.mark.slow
def test_two_class_classifier_is_scored_on_a_two_class_set(wb, tmp_path):
    import timm.data
    from safetensors.torch import save_file

    from spurbench.finetune import load_trainable

    root, data = wb
    clf, new_head = load_trainable(load_panel("offline")[0], 2, seed=0)  # Lite0 with a fresh 2-class head
    assert new_head
    weights = tmp_path / "two.safetensors"
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(weights))
    board = tmp_path / "board" / "leaderboard.json"
    assert (
        main(
            [
                "eval",
                "--model",
                "tf_efficientnet_lite0",
                "--weights",
                str(weights),
                "--dataset",
                str(data),
                "--split",
                "train",
                "--leaderboard",
                str(board),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    # independent: the same model run directly on the image files with timm's eval transform
    model = clf.model.eval()
    tf = timm.data.create_transform(**clf.data_config)
    train = [r for r in ROWS if r[2] == 0]
    with torch.no_grad():
        direct = [int(model(tf(Image.open(root / r[0]).convert("RGB"))[None]).argmax()) for r in train]
    pred_csv = next((tmp_path / "board" / "predictions").glob("*.csv"))
    rows = list(csv.DictReader(open(pred_csv)))
    top1 = {int(r["index"]): int(r["top1"]) for r in rows}
    assert [top1[i] for i in range(len(train))] == direct
    labels = np.array([r[1] for r in train])
    # top-5 of a two-class head: both classes, padded with -1
    assert all(sorted(int(v) for v in r["top5"].split())[:3] == [-1, -1, -1] for r in rows)
    assert len(rows) == len(labels)


def test_imagenet_classifier_on_a_two_class_set_is_one_line(wb, tmp_path, capsys):
    from spurbench.classifiers import _weights_file

    _, data = wb
    lite0_file, _ = _weights_file(load_panel("offline")[0])  # the real ImageNet-1k Lite0 weights
    assert (
        main(
            [
                "eval",
                "--model",
                "tf_efficientnet_lite0",
                "--weights",
                str(lite0_file),
                "--key-map",
                "positional",
                "--dataset",
                str(data),
                "--split",
                "train",
                "--leaderboard",
                str(tmp_path / "b.json"),
                "--workers",
                "0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label set 'waterbirds'" in err and "2 classes" in err, err
    assert not (tmp_path / "b.json").exists()


def test_training_group_counts_come_from_the_train_split(wb, tmp_path):
    from spurbench.evaluate.group_weights import training_group_counts

    _, data = wb
    names, places = ["landbird", "waterbird"], ["land", "water"]
    expected: dict[str, int] = {}
    for _, y, split, place in ROWS:  # counted by hand from the metadata rows
        if split == 0:
            expected[f"{names[y]}/{places[place]}"] = expected.get(f"{names[y]}/{places[place]}", 0) + 1
    assert training_group_counts(data, "group") == dict(sorted(expected.items()))
    assert training_group_counts(data, "no_such_column") is None
    assert training_group_counts(data, "group", split="nosplit") is None


@pytest.mark.slow
def test_group_eval_reports_pooled_and_train_weighted_accuracy(wb, tmp_path):
    """`spurbench eval --group-by group` on a Waterbirds import: both averages, recomputed by hand from the
    per-image predictions and the training split's group sizes."""
    import json

    from safetensors.torch import save_file

    from spurbench.finetune import load_trainable

    root, data = wb
    clf, _ = load_trainable(load_panel("offline")[0], 2, seed=1)
    weights = tmp_path / "two.safetensors"
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(weights))
    board = tmp_path / "board" / "leaderboard.json"
    assert (
        main(
            [
                "eval",
                "--model",
                "tf_efficientnet_lite0",
                "--weights",
                str(weights),
                "--dataset",
                str(data),
                "--split",
                "val",
                "--group-by",
                "group",
                "--leaderboard",
                str(board),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    entry = json.loads(board.read_text())["entries"][0]
    m = entry["metrics"]
    rows = list(csv.DictReader(open(next((tmp_path / "board" / "predictions").glob("*.csv")))))
    names, places = ["landbird", "waterbird"], ["land", "water"]
    val = [r for r in ROWS if r[2] == 1]
    group_of = [f"{names[r[1]]}/{places[r[3]]}" for r in val]
    hit = {int(r["index"]): int(r["top1"]) == int(r["label"]) for r in rows}
    per_group: dict[str, list[bool]] = {}
    for i, g in enumerate(group_of):
        per_group.setdefault(g, []).append(hit[i])
    pooled = sum(hit.values()) / len(hit)
    n_train: dict[str, int] = {}  # the weights: group sizes of the *training* split, counted from the metadata
    for _, y, split, place in ROWS:
        if split == 0:
            n_train[f"{names[y]}/{places[place]}"] = n_train.get(f"{names[y]}/{places[place]}", 0) + 1
    assert {g: n_train[g] for g in per_group} == {"waterbird/water": 1, "landbird/land": 2}  # unequal: weighted != mean
    weighted = sum(np.mean(v) * n_train[g] for g, v in per_group.items()) / sum(n_train[g] for g in per_group)
    assert m["accuracy"] == pytest.approx(pooled)
    assert m["train_weighted_group_accuracy"] == pytest.approx(weighted)
    assert m["worst_group_accuracy"] == pytest.approx(min(np.mean(v) for v in per_group.values()))


def test_imagenet_panel_on_a_two_class_set_is_one_short_line_per_model(wb, tmp_path, capsys):
    _, data = wb
    assert (
        main(
            [
                "eval",
                "--panel",
                "offline",
                "--dataset",
                str(data),
                "--split",
                "train",
                "--leaderboard",
                str(tmp_path / "b.json"),
                "--workers",
                "0",
            ]
        )
        == 1
    )
    out = capsys.readouterr()
    failed = [line for line in out.err.strip().splitlines()]
    assert len(failed) == 3, out.err  # one line per model, nothing else on stderr
    for line, name in zip(failed, ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")):
        assert line.startswith(
            f"FAILED {name}: an ImageNet-1k classifier cannot score label set 'waterbirds' (2 classes: landbird, waterbird)"
        )
        assert "spurbench finetune" in line and "site-packages" not in line and "the model 2" not in line
    # the summary names them once, without repeating the reasons
    assert "FAILED 3: tf_efficientnet_lite0, tf_efficientnet_lite1, tf_efficientnet_lite2" in out.out
    assert out.out.count("label set 'waterbirds'") == 0
