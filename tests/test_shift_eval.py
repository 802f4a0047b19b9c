"""Evaluating `shift` sets (object present, context changed): the metrics against a hand-worked example,
and `spurbench eval` on a real d3s export with the real EfficientNet-Lite0 (offline panel)."""

from __future__ import annotations

import numpy as np
import pytest

from spurbench.evaluate import metrics


def test_shift_metrics_match_a_hand_computation():
    # six images of classes 1 and 2 on two backgrounds
    labels = [1, 1, 1, 2, 2, 2]
    groups = ["snow", "snow", "grass", "grass", "snow", "grass"]
    top5 = np.array(
        [
            [1, 0, 3, 4, 5],  # snow, top-1 right
            [3, 1, 0, 4, 5],  # snow, wrong; label in top-5
            [1, 2, 3, 4, 5],  # grass, right
            [2, 0, 1, 3, 4],  # grass, right
            [0, 3, 4, 5, 6],  # snow, wrong; not in top-5
            [5, 2, 0, 1, 3],  # grass, wrong; in top-5
        ]
    )
    reference = [True, True, False, True]  # 3 of 4 reference photos right
    paired = [True, True, False, True, True, False]  # the reference photo behind each image
    m = metrics.shift_metrics(labels, top5, groups, reference, paired)
    # by hand: snow rows 0, 1, 4 -> 1 of 3 right, 2 of 3 in the top 5; grass rows 2, 3, 5 -> 2 of 3, 3 of 3
    assert m["per_group"]["snow"]["accuracy"] == pytest.approx(1 / 3)
    assert m["per_group"]["snow"]["accuracy_top5"] == pytest.approx(2 / 3)
    assert m["per_group"]["grass"]["accuracy"] == pytest.approx(2 / 3)
    assert m["per_group"]["grass"]["accuracy_top5"] == pytest.approx(1.0)
    assert (m["per_group"]["snow"]["n"], m["per_group"]["grass"]["n"]) == (3, 3)
    assert m["accuracy"] == pytest.approx(3 / 6) and m["accuracy_top5"] == pytest.approx(5 / 6)
    assert m["worst_group"] == "snow" and m["worst_group_accuracy"] == pytest.approx(1 / 3)
    assert m["mean_group_accuracy"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    # paired image by image: the reference figure is over the photos behind the 6 scored images (4 of 6 right),
    # not the whole reference split (3 of 4), and the drop over the same 6 images
    assert m["reference_accuracy"] == pytest.approx(4 / 6) and m["accuracy_drop"] == pytest.approx(4 / 6 - 3 / 6)
    assert m["num_paired"] == 6 and m["worst_groups"] == ["snow"]
    # paired: snow's images came from photos the model gets right (3 of 3), grass's from 1 of 3
    assert m["per_group"]["snow"]["reference_accuracy"] == pytest.approx(1.0)
    assert m["per_group"]["snow"]["accuracy_drop"] == pytest.approx(2 / 3)
    assert m["per_group"]["grass"]["reference_accuracy"] == pytest.approx(1 / 3)
    assert m["per_group"]["grass"]["accuracy_drop"] == pytest.approx(-1 / 3)
    # the overall drop is the image-weighted mean of the per-group drops
    assert m["accuracy_drop"] == pytest.approx((3 * (2 / 3) + 3 * (-1 / 3)) / 6)
    # image 1's photo was not scored (-1): it leaves the paired figures, in its group and overall
    h = metrics.shift_metrics(labels, top5, groups, reference, [1, -1, 0, 1, 1, 0])
    assert h["per_group"]["snow"]["num_paired"] == 2 and h["per_group"]["snow"]["reference_accuracy"] == 1.0
    assert h["per_group"]["snow"]["accuracy_drop"] == pytest.approx(1 - 1 / 2)  # rows 0, 4: 1 of 2 right
    assert h["num_paired"] == 5 and h["reference_accuracy"] == pytest.approx(3 / 5)
    assert h["accuracy_drop"] == pytest.approx(3 / 5 - 3 / 5) == pytest.approx((2 * (1 / 2) + 3 * (-1 / 3)) / 5)
    with pytest.raises(ValueError):
        metrics.shift_metrics(labels, top5, groups, reference, [2, 1, 0, 1, 1, 0])
    # unpaired: every group is held against the whole reference split
    u = metrics.shift_metrics(labels, top5, groups, reference)
    assert u["per_group"]["grass"]["reference_accuracy"] == pytest.approx(0.75)
    assert u["per_group"]["grass"]["accuracy_drop"] == pytest.approx(0.75 - 2 / 3)
    # no reference images at all
    n = metrics.shift_metrics(labels, top5, groups)
    assert (
        n["reference_accuracy"] is None
        and n["accuracy_drop"] is None
        and n["per_group"]["snow"]["accuracy_drop"] is None
    )


# ---------------------------------------------------------------------------------------------
# `spurbench eval` on a shift set made of real photos, with the real offline panel

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402

from spurbench import imagenet  # noqa: E402

# class of the object -> photo; the groups are what is done to the photo
SHIFT_PHOTOS = {285: "chelsea", 967: "coffee", 657: "rocket", 698: "china"}
SHIFTS = {
    "plain": lambda a: a,
    "mirror": lambda a: a[:, ::-1],
    "crop": lambda a: a[a.shape[0] // 4 : -a.shape[0] // 4, a.shape[1] // 4 : -a.shape[1] // 4],
    "gray": lambda a: np.repeat(a.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8),
}


def _photo(name: str) -> np.ndarray:
    from spurbench.generate.references import sample_photo

    return sample_photo(name)


def _shift_set(root: Path, reference_offset: int = 0) -> Path:
    """A shift set of real photos; `reference_offset` moves every test row's reference_index (a damaged set)."""
    from spurbench.dataset import DatasetCard, write_dataset

    def row(img, k, source, **extra):
        return dict(
            image=Image.fromarray(np.ascontiguousarray(img)),
            label=k,
            class_name=imagenet.class_name(k),
            spurious_feature="",
            component=-1,
            source=source,
            builder="photos",
            prompt="",
            seed=-1,
            **extra,
        )

    test, ref = [], []
    for r, (k, name) in enumerate(SHIFT_PHOTOS.items()):
        a = _photo(name)
        ref.append(
            row(a, k, "reference", background=None, weather=None, init_image=None, init_box=None, reference_index=r)
        )
        for shift_name, shift in SHIFTS.items():
            guide = Image.fromarray(a).resize((32, 32))
            test.append(
                row(
                    shift(a),
                    k,
                    "generated",
                    background=shift_name,
                    weather="dry" if shift_name in ("plain", "gray") else "wet",
                    init_image=guide,
                    init_box=[4, 4, 20, 20],
                    reference_index=r + reference_offset,
                )
            )
    from datasets import Image as ImageFeature
    from datasets import Sequence, Value

    extra = {
        "background": Value("string"),
        "weather": Value("string"),
        "init_image": ImageFeature(),
        "init_box": Sequence(Value("int32"), length=4),
        "reference_index": Value("int64"),
    }
    card = DatasetCard(
        pretty_name="spurbench shift photos", body="Real photos, shifted by hand, for tests.", kind="shift"
    )
    return write_dataset(root / "shift", {"test": test, "reference": ref}, card, extra_features=extra)


def _eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "spurbench", "eval", *args, "--workers", "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def shift_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift")
    folder = _shift_set(root)
    proc = _eval(
        ["--panel", "offline", "--dataset", str(folder), "--leaderboard", str(root / "lb" / "leaderboard.json")], root
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = json.loads((root / "lb" / "leaderboard.json").read_text())
    return root, folder, board, proc


def _csv_top1(path: Path, split: str = "test") -> dict[int, int]:
    """{row: top-1} of one split's rows in a predictions CSV (the reference rows follow the test rows)."""
    with open(path) as fh:
        return {int(r["index"]): int(r["top1"]) for r in csv.DictReader(fh) if r["split"] == split}


@pytest.mark.slow
def test_eval_reports_a_shift_set_by_accuracy_per_background(shift_run):
    root, folder, board, proc = shift_run
    assert board["dataset"]["provenance"]["kind"] == "shift" and "kind shift; groups by `background`" in proc.stdout
    labels = [k for k in SHIFT_PHOTOS for _ in SHIFTS]
    groups = [g for _ in SHIFT_PHOTOS for g in SHIFTS]
    for e in board["entries"]:
        assert e["kind"] == "shift" and "spurious_rate" not in e["metrics"]
        top1 = _csv_top1(root / "lb" / e["predictions"])
        # by hand, from the per-image predictions: right = top-1 is the class of the object
        right = [top1[i] == labels[i] for i in range(len(labels))]
        for g in SHIFTS:
            idx = [i for i in range(len(labels)) if groups[i] == g]
            assert e["per_group"][g]["n"] == len(idx) == 4
            assert e["per_group"][g]["accuracy"] == pytest.approx(sum(right[i] for i in idx) / len(idx))
        accs = {g: e["per_group"][g]["accuracy"] for g in SHIFTS}
        m = e["metrics"]
        assert m["accuracy"] == pytest.approx(sum(right) / len(right))
        assert m["worst_group_accuracy"] == pytest.approx(min(accs.values())) and m["worst_group"] in SHIFTS
        assert m["mean_group_accuracy"] == pytest.approx(sum(accs.values()) / 4)
        assert m["group_by"] == "background" and m["num_reference"] == 4
        for k in SHIFT_PHOTOS:
            assert e["per_class"][str(k)]["accuracy"] == pytest.approx(
                np.mean([right[i] for i in range(len(labels)) if labels[i] == k])
            )
            assert set(e["per_class_group"][str(k)]) == set(SHIFTS)
    assert any(
        line.split()[:3] == ["background", "n", "acc"] for line in proc.stdout.splitlines()
    )  # the per-group table


@pytest.mark.slow
def test_reference_accuracy_and_drop_match_direct_timm_calls(shift_run):
    import timm
    import torch

    from spurbench.classifiers import create_classifier, load_panel

    root, folder, board, _ = shift_run
    clf = create_classifier(load_panel("offline")[0])
    e = next(x for x in board["entries"] if x["model"] == clf.spec.display_name)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=clf.model))
    with torch.inference_mode():
        ref_right = [
            int(clf.model(transform(Image.fromarray(_photo(n))).unsqueeze(0)).argmax()) == k
            for k, n in SHIFT_PHOTOS.items()
        ]
    m = e["metrics"]
    # the predictions CSV holds the reference rows scored, and they are the model's own predictions
    ref_top1 = _csv_top1(root / "lb" / e["predictions"], "reference")
    assert sorted(ref_top1) == [0, 1, 2, 3]
    assert [ref_top1[r] == k for r, k in enumerate(SHIFT_PHOTOS)] == ref_right
    assert m["reference_accuracy"] == pytest.approx(np.mean(ref_right)) and m["num_reference"] == 4
    assert m["num_paired"] == len(SHIFT_PHOTOS) * len(SHIFTS) and m["num_reference_excluded"] == 0
    assert m["accuracy_drop"] == pytest.approx(m["reference_accuracy"] - m["accuracy"])
    # every group holds one image per photo, so its paired reference accuracy is the split's
    for g in SHIFTS:
        assert e["per_group"][g]["reference_accuracy"] == pytest.approx(np.mean(ref_right))
    assert ref_right[list(SHIFT_PHOTOS).index(967)]  # EfficientNet-Lite0 knows an espresso when it sees one


@pytest.mark.slow
def test_shift_board_ranks_by_worst_group_and_counts_wrong_predictions(shift_run):
    from spurbench.evaluate.leaderboard import to_markdown, to_ranked_json

    root, folder, board, _ = shift_run
    ranked = to_ranked_json(board)
    assert ranked["ranked_by"] == "worst_group_accuracy"
    keys = [(-e["metrics"]["worst_group_accuracy"], -e["metrics"]["accuracy"], e["model"]) for e in ranked["entries"]]
    assert keys == sorted(keys) and [e["rank"] for e in ranked["entries"]] == [1, 2, 3]
    md = to_markdown(board)
    assert "Ranked by worst-group accuracy" in md and "| all wrong |" in md
    assert "is this set's control" in md  # the reference photos named as the control, the drop as its lift
    # consistency: the fraction of images every model gets wrong, from the CSVs by hand
    labels = [k for k in SHIFT_PHOTOS for _ in SHIFTS]
    wrong = np.array(
        [
            [_csv_top1(root / "lb" / e["predictions"])[i] != labels[i] for i in range(len(labels))]
            for e in board["entries"]
        ]
    )
    c = board["consistency"]
    assert c["all_fooled_rate"] == pytest.approx(wrong.all(axis=0).mean())
    assert c["at_least_half_rate"] == pytest.approx((wrong.sum(axis=0) >= 2).mean())


@pytest.mark.slow
def test_group_by_names_any_column_and_a_missing_one_is_one_line(shift_run, tmp_path):
    import shutil

    root, folder, _, _ = shift_run
    shutil.copytree(root / "lb", tmp_path / "lb")  # a board grouped by background: another --group-by re-scores
    lb = tmp_path / "lb" / "leaderboard.json"
    proc = _eval(
        ["--panel", "offline", "--dataset", str(folder), "--group-by", "weather", "--leaderboard", str(lb)], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skip" not in proc.stdout
    e = json.loads(lb.read_text())["entries"][0]
    assert set(e["per_group"]) == {"dry", "wet"} and e["metrics"]["group_by"] == "weather"
    assert e["per_group"]["dry"]["n"] == e["per_group"]["wet"]["n"] == 8
    assert "--group-by weather" in e["command"]
    bad = _eval(
        [
            "--panel",
            "offline",
            "--dataset",
            str(folder),
            "--group-by",
            "wether",
            "--leaderboard",
            str(tmp_path / "x.json"),
        ],
        tmp_path,
    )
    err = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(err) == 1 and "--group-by 'wether': dataset" in err[0] and "weather" in err[0]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_page_of_a_shift_set_has_the_heatmap_and_guide_pairs(shift_run, tmp_path):
    from spurbench.evaluate.page import render_page

    root, folder, board, _ = shift_run
    page = render_page(root / "lb" / "leaderboard.json", tmp_path / "site", folder)
    html = page.read_text()
    assert "Accuracy per class and background" in html and 'class="acc"' in html
    assert html.count('<figure class="pair"') == len(SHIFT_PHOTOS) * len(SHIFTS)
    assert len(list((tmp_path / "site" / "images" / "guides").glob("*.jpg"))) == len(SHIFT_PHOTOS) * len(SHIFTS)
    assert "ranked by worst-group accuracy" in html and "wrong for all" in html and "fooled by all" not in html
    assert 'id="reference-control"' in html and "is this set&#x27;s control" in html


# ---------------------------------------------------------------------------------------------
# issue 14 §2: the reference split follows the same verification rules as the test split

REF_PHOTOS = {285: "chelsea", 967: "coffee", 657: "rocket", 698: "china", 670: "motorcycle_left"}


def _verified_shift_set(root: Path, ref_present: list, ref_reviewed: list) -> Path:
    """5 reference photos, each pasted (here: shown plain and in gray) into 2 test images; every test image
    passes its check; the reference rows carry the given check results and a person's decisions."""
    from datasets import Value

    from spurbench.dataset import DatasetCard, write_dataset
    from spurbench.verification import PRESENT, REVIEWED

    def row(img, k, source, present, reviewed, **extra):
        return dict(
            image=Image.fromarray(np.ascontiguousarray(img)),
            label=k,
            class_name=imagenet.class_name(k),
            spurious_feature="",
            component=-1,
            source=source,
            builder="photos",
            prompt="",
            seed=-1,
            **{PRESENT: present, REVIEWED: reviewed},
            **extra,
        )

    test, ref = [], []
    for r, (k, name) in enumerate(REF_PHOTOS.items()):
        a = _photo(name)
        ref.append(row(a, k, "reference", ref_present[r], ref_reviewed[r], background=None, reference_index=r))
        for g in ("plain", "gray"):
            test.append(row(SHIFTS[g](a), k, "generated", True, "", background=g, reference_index=r))
    extra = {
        "background": Value("string"),
        "reference_index": Value("int64"),
        PRESENT: Value("bool"),
        REVIEWED: Value("string"),
    }
    card = DatasetCard(
        pretty_name=f"verified shift photos {root.name}", body="Real photos, checked by hand, for tests.", kind="shift"
    )
    return write_dataset(root / "set", {"test": test, "reference": ref}, card, extra_features=extra)


def _lite0(folder: Path, board: Path, *extra: str) -> tuple[dict, list[dict], str]:
    import importlib.metadata as md

    from spurbench import cli
    from spurbench.classifiers import load_panel

    w = load_panel("offline")[0].weights
    args = [
        "eval",
        "--model",
        "tf_efficientnet_lite0",
        "--weights",
        str(md.distribution(w["package"]).locate_file(w["file"])),
        "--key-map",
        "positional",
        "--workers",
        "0",
        "--dataset",
        str(folder),
        "--leaderboard",
        str(board),
        *extra,
    ]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(args) == 0
    e = json.loads(board.read_text())["entries"][0]
    with open(board.parent / e["predictions"]) as fh:
        return e, list(csv.DictReader(fh)), out.getvalue()


def _paired_by_hand(rows: list[dict]) -> dict:
    """The paired figures recomputed from a predictions CSV alone (test rows + the reference rows it holds)."""
    ref_right = {int(r["index"]): r["top1"] == r["label"] for r in rows if r["split"] == "reference"}
    test = [r for r in rows if r["split"] == "test"]
    per = {}
    for r in test:
        i = int(r["index"])
        photo = i // 2  # rows 2r and 2r+1 were made from reference photo r
        g = "plain" if i % 2 == 0 else "gray"
        if photo in ref_right:
            per.setdefault(g, []).append((ref_right[photo], r["top1"] == r["label"]))
    pairs = [p for v in per.values() for p in v]
    return {
        "per_group": {g: (np.mean([a for a, _ in v]) - np.mean([b for _, b in v]), len(v)) for g, v in per.items()},
        "reference_accuracy": np.mean([a for a, _ in pairs]) if pairs else None,
        "drop": (np.mean([a for a, _ in pairs]) - np.mean([b for _, b in pairs])) if pairs else None,
        "num_paired": len(pairs),
        "reference_rows": sorted(ref_right),
    }


@pytest.mark.slow
def test_reference_split_obeys_the_verification_flags(tmp_path):
    # photo 1 failed its check but a person kept it; photo 3 failed; photo 4 passed but a person dropped it
    folder = _verified_shift_set(tmp_path / "a", [True, False, True, False, True], ["", "keep", "", "", "drop"])
    board = tmp_path / "lb" / "lb.json"
    e, rows, _ = _lite0(folder, board)
    m = e["metrics"]
    hand = _paired_by_hand(rows)
    assert hand["reference_rows"] == [0, 1, 2]  # photos 3 and 4 left out, as a test row would be
    assert (m["num_reference"], m["num_reference_excluded"], m["num_excluded"]) == (3, 2, 2)
    assert m["num_paired"] == hand["num_paired"] == 6
    assert m["reference_accuracy"] == pytest.approx(hand["reference_accuracy"]) and m["accuracy_drop"] == pytest.approx(
        hand["drop"]
    )
    for g, (drop, n) in hand["per_group"].items():
        assert e["per_group"][g]["accuracy_drop"] == pytest.approx(drop) and e["per_group"][g]["num_paired"] == n
    # the overall drop is the image-weighted mean of the per-group drops
    groups = e["per_group"].values()
    assert m["accuracy_drop"] == pytest.approx(
        sum(v["accuracy_drop"] * v["num_paired"] for v in groups) / m["num_paired"]
    )
    # --include-unverified: every reference photo scored, nothing counted as left out; not skipped as already scored
    e2, rows2, out = _lite0(folder, board, "--include-unverified")
    assert "skip" not in out
    hand2 = _paired_by_hand(rows2)
    assert hand2["reference_rows"] == [0, 1, 2, 3, 4]
    m2 = e2["metrics"]
    assert (m2["num_reference"], m2["num_reference_excluded"], m2["num_excluded"], m2["num_paired"]) == (5, 0, 0, 10)
    assert m2["reference_accuracy"] == pytest.approx(hand2["reference_accuracy"])
    # each photo is behind two images: the paired figure is the reference split's own accuracy here
    assert m2["reference_accuracy"] == pytest.approx(
        np.mean([r["top1"] == r["label"] for r in rows2 if r["split"] == "reference"])
    )
    assert e2["reference_rows"]["sha256"] != e["reference_rows"]["sha256"]
    # the same run again is skipped
    assert "skip" in _lite0(folder, board, "--include-unverified")[2]


@pytest.mark.slow
def test_every_reference_photo_failing_stops_nothing(tmp_path):
    folder = _verified_shift_set(tmp_path / "b", [False] * 5, [""] * 5)
    e, rows, _ = _lite0(folder, tmp_path / "lb" / "lb.json")
    m = e["metrics"]
    assert not [r for r in rows if r["split"] == "reference"]
    assert (m["num_reference"], m["num_reference_excluded"], m["num_excluded"], m["num_paired"]) == (0, 5, 5, 0)
    assert m["reference_accuracy"] is None and m["accuracy_drop"] is None and m["accuracy"] is not None
    e2, rows2, _ = _lite0(folder, tmp_path / "lb2" / "lb.json", "--include-unverified")
    assert e2["metrics"]["num_reference"] == 5 and e2["metrics"]["reference_accuracy"] == pytest.approx(
        _paired_by_hand(rows2)["reference_accuracy"]
    )
