"""`spurbench verify` and what uses it: columns and bytes preserved, the max-score rule over the class's
queries, the threshold, eval leaving out failed checks (spurious and shift sets), a person's decisions
overriding the detector, and bad input stopping with one line before anything is written.

Detectors are tiny random-weight OWLv2 / Grounding DINO models built from small configs and reloaded with
`from_pretrained` (no weights are reachable here): their scores mean nothing, so thresholds below are
picked from the scores they produce, and every expectation is recomputed independently from the Parquet
files or from the model's raw outputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from spurbench import cli, detection
from spurbench.dataset import DatasetCard, fingerprint, read_kind, read_provenance, write_dataset
from spurbench.verification import BOXES, PRESENT, REVIEWED, SCORE, excluded_rows


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory):
    """The `tiny` detector is built once into a private cache, never into the user's home."""
    old = os.environ.get("SPURBENCH_CACHE")
    os.environ["SPURBENCH_CACHE"] = str(tmp_path_factory.mktemp("spurbench_cache"))
    yield Path(os.environ["SPURBENCH_CACHE"])
    if old is None:
        del os.environ["SPURBENCH_CACHE"]
    else:
        os.environ["SPURBENCH_CACHE"] = old


def _table(folder: Path, split: str = "test"):
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob(f"data/{split}-*.parquet"))])


def _verify(*args: str) -> int:
    return cli.main(["verify", *args])


@pytest.fixture(scope="module")
def verified(photo_dataset, tmp_path_factory):
    """The photo dataset checked by the tiny OWLv2 (default threshold), then re-thresholded at the median
    score so that some images fail the check and some pass. Returns (folder, threshold)."""
    root = tmp_path_factory.mktemp("verified")
    assert _verify("--dataset", str(photo_dataset.path), "--detector", "tiny", "--out", str(root / "v-default")) == 0
    scores = sorted(_table(root / "v-default").column(SCORE).to_pylist())
    threshold = float(scores[len(scores) // 2])
    assert (
        _verify("--dataset", str(root / "v-default"), "--threshold", str(threshold), "--out", str(root / "v-median"))
        == 0
    )
    return root / "v-median", threshold


# ---------------------------------------------------------------------------------------------
# the rewritten dataset


def test_columns_added_and_every_existing_byte_kept(photo_dataset, verified):
    folder, threshold = verified
    before, after = _table(photo_dataset.path), _table(folder)
    assert after.num_rows == before.num_rows == len(photo_dataset.labels)
    assert after.column_names == before.column_names + [SCORE, PRESENT, BOXES, REVIEWED]
    for name in before.column_names:  # same values, same types, same image bytes
        assert after.column(name).equals(before.column(name)), name
    types = {f.name: str(f.type) for f in after.schema}
    assert (types[SCORE], types[PRESENT], types[BOXES], types[REVIEWED]) == ("float", "bool", "string", "string")
    # the card: same kind, title and body, plus the verification record
    prov = read_provenance(folder)
    rec = prov["verification"]
    assert rec["detector"] == "tiny" and rec["threshold"] == threshold and rec["revision"] is None
    assert "--threshold" in rec["threshold_source"]
    assert read_kind(folder) == "spurious"
    card = (folder / "README.md").read_text()
    assert "Real photos from scikit-image, for tests." in card and card.count("## Verification") == 1


def test_it_loads_with_datasets(verified, tmp_path, monkeypatch):
    import datasets

    folder, _ = verified
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = datasets.load_dataset(str(folder), split="test", cache_dir=str(tmp_path / "cache"))
    assert ds.features[SCORE].dtype == "float32" and ds.features[PRESENT].dtype == "bool"
    assert ds[0]["image"].size[0] > 0 and ds[0][REVIEWED] == ""


def test_score_is_the_max_over_the_class_queries_and_present_follows_the_threshold(verified, photo_dataset):
    """Recomputed from the tiny OWLv2's raw logits: max over boxes and over the class's lemma queries."""
    from PIL import Image

    folder, threshold = verified
    t = _table(folder)
    det = detection.load_detector("tiny", device="cpu")
    labels = t.column("label").to_pylist()
    assert detection.class_queries(0, "owlv2") == ["a photo of a tench", "a photo of a tinca tinca"]  # two lemmas
    for i in range(len(labels)):
        queries = detection.class_queries(labels[i], "owlv2")
        image = Image.open(io.BytesIO(t.column("image")[i].as_py()["bytes"])).convert("RGB")
        with torch.inference_mode():
            out = det.model(**det.processor(text=[queries], images=[image], return_tensors="pt", truncation=True))
        expected = float(torch.sigmoid(out.logits[0]).max())
        assert t.column(SCORE)[i].as_py() == pytest.approx(expected, abs=1e-5)
        assert t.column(PRESENT)[i].as_py() == (t.column(SCORE)[i].as_py() >= threshold)
        boxes = json.loads(t.column(BOXES)[i].as_py())
        assert boxes and boxes[0]["score"] == pytest.approx(expected, abs=1e-3) and boxes[0]["query"] in queries
    present = t.column(PRESENT).to_pylist()
    assert 0 < sum(present) < len(present)  # the median threshold splits the set
    rec = read_provenance(folder)["verification"]
    assert rec["splits"]["test"] == {"checked": len(labels), "failed": sum(present), "keep": 0, "drop": 0}


@pytest.mark.slow
def test_rethreshold_reuses_scores_and_redetect_reproduces_them(verified, tmp_path):
    folder, threshold = verified
    assert _verify("--dataset", str(folder), "--threshold", "0.0", "--out", str(tmp_path / "all")) == 0
    assert _table(tmp_path / "all").column(SCORE).equals(_table(folder).column(SCORE))
    assert all(_table(tmp_path / "all").column(PRESENT).to_pylist())
    assert _verify("--dataset", str(folder), "--redetect", "--out", str(tmp_path / "again")) == 0
    np.testing.assert_allclose(
        _table(tmp_path / "again").column(SCORE).to_numpy(), _table(folder).column(SCORE).to_numpy(), atol=1e-5
    )
    assert read_provenance(tmp_path / "again")["verification"]["threshold"] == threshold  # the recorded one


@pytest.mark.slow
def test_grounding_dino_from_a_local_folder(photo_dataset, tmp_path):
    model = detection.make_tiny_grounding_dino(tmp_path / "gdino")
    out = tmp_path / "v-gdino"
    assert (
        _verify(
            "--dataset",
            str(photo_dataset.path),
            "--detector",
            "grounding-dino",
            "--detector-model",
            str(model),
            "--out",
            str(out),
        )
        == 0
    )
    rec = read_provenance(out)["verification"]
    # a local weights folder is recorded by its name (outside the working directory), never its absolute path
    assert (rec["detector"], rec["model"], rec["revision"], rec["threshold"]) == (
        "grounding-dino",
        Path(model).name,
        None,
        0.35,
    )
    assert str(tmp_path) not in (out / "README.md").read_text()
    assert "Grounding DINO authors' README" in rec["threshold_source"]
    boxes = [json.loads(b) for b in _table(out).column(BOXES).to_pylist()]
    labels = _table(out).column("label").to_pylist()
    for k, b in zip(labels, boxes):
        assert b[0]["query"] in detection.class_queries(k, "grounding-dino")


# ---------------------------------------------------------------------------------------------
# eval leaves out failed checks


def _lite0_args() -> list[str]:
    import importlib.metadata as md

    from spurbench.classifiers import load_panel

    w = load_panel("offline")[0].weights
    return [
        "--model",
        "tf_efficientnet_lite0",
        "--weights",
        str(md.distribution(w["package"]).locate_file(w["file"])),
        "--key-map",
        "positional",
        "--workers",
        "0",
    ]


def _eval(folder: Path, board: Path, *extra: str) -> dict:
    assert cli.main(["eval", *_lite0_args(), "--dataset", str(folder), "--leaderboard", str(board), *extra]) == 0
    entry = json.loads(board.read_text())["entries"][0]
    with open(board.parent / entry["predictions"]) as fh:
        entry["_rows"] = [int(r["index"]) for r in csv.DictReader(fh)]
    return entry


@pytest.mark.slow
def test_eval_leaves_out_present_objects_in_a_spurious_set(verified, tmp_path, capsys):
    folder, _ = verified
    present = _table(folder).column(PRESENT).to_pylist()
    kept = [i for i, p in enumerate(present) if not p]
    capsys.readouterr()
    e = _eval(folder, tmp_path / "a" / "lb.json")
    first = capsys.readouterr().out.splitlines()[0]
    assert f"split test: {len(kept)} images, " in first and f"; {sum(present)} left out by verification" in first
    assert e["metrics"]["num_excluded"] == sum(present) and e["metrics"]["num_images"] == len(kept)
    assert e["_rows"] == kept  # predictions name the split's own rows
    e = _eval(folder, tmp_path / "b" / "lb.json", "--include-unverified")
    assert e["metrics"]["num_excluded"] == 0 and e["_rows"] == list(range(len(present)))
    assert e["command"].endswith("--include-unverified")


@pytest.mark.slow
def test_eval_leaves_out_absent_objects_in_a_shift_set(verified, tmp_path):
    """The same rows declared a `shift` set: now the images WITHOUT the object fail."""
    folder, _ = verified
    t = _table(folder)
    rows = [
        dict(r) for r in t.select([c for c in t.column_names if c not in (SCORE, PRESENT, BOXES, REVIEWED)]).to_pylist()
    ]
    shift = write_dataset(
        tmp_path / "shift-photos", {"test": rows}, DatasetCard(pretty_name="shift photos", kind="shift")
    )
    out = tmp_path / "shift-verified"
    assert (
        _verify(
            "--dataset",
            str(shift),
            "--detector",
            "tiny",
            "--threshold",
            str(read_provenance(folder)["verification"]["threshold"]),
            "--out",
            str(out),
        )
        == 0
    )
    present = _table(out).column(PRESENT).to_pylist()
    assert present == t.column(PRESENT).to_pylist()  # same images, same detector, same threshold
    e = _eval(out, tmp_path / "lb" / "lb.json")
    assert e["metrics"]["num_excluded"] == present.count(False)
    assert e["_rows"] == [i for i, p in enumerate(present) if p]


def test_exclusion_rule_by_hand():
    present = [True, True, False, False, None, None]
    reviewed = ["", "keep", "", "drop", "", "drop"]
    assert excluded_rows("spurious", present, reviewed).tolist() == [True, False, False, True, False, True]
    assert excluded_rows("shift", present, reviewed).tolist() == [False, False, True, True, False, True]


# ---------------------------------------------------------------------------------------------
# decisions


def _write_decisions(path: Path, lines: list[tuple[int, str, str]]) -> Path:
    path.write_text("index,split,decision\n" + "".join(f"{i},{s},{d}\n" for i, s, d in lines))
    return path


@pytest.mark.slow
def test_decisions_override_the_detector(verified, tmp_path):
    folder, _ = verified
    present = _table(folder).column(PRESENT).to_pylist()
    keep = present.index(True)  # the detector says the object is there; a person says it is not
    drop = present.index(False)  # the detector found nothing; a person sees the object
    decisions = _write_decisions(tmp_path / "decisions.csv", [(keep, "test", "keep"), (drop, "test", "drop")])
    out = tmp_path / "reviewed"
    assert _verify("--dataset", str(folder), "--decisions", str(decisions), "--out", str(out)) == 0
    t = _table(out)
    reviewed = t.column(REVIEWED).to_pylist()
    assert reviewed[keep] == "keep" and reviewed[drop] == "drop" and reviewed.count("") == len(reviewed) - 2
    assert t.column(SCORE).equals(_table(folder).column(SCORE))  # decisions do not re-run the detector
    for name in _table(folder).column_names:
        if name != REVIEWED:
            assert t.column(name).equals(_table(folder).column(name)), name
    e = _eval(out, tmp_path / "lb" / "lb.json")
    assert e["metrics"]["num_excluded"] == sum(present) - 1 + 1
    assert keep in e["_rows"] and drop not in e["_rows"]
    # `clear` forgets an earlier decision (an empty decision is an error: see test_bad_input_is_one_line_and_writes_nothing)
    out2 = tmp_path / "cleared"
    assert (
        _verify(
            "--dataset",
            str(out),
            "--decisions",
            str(_write_decisions(tmp_path / "clear.csv", [(keep, "test", "clear")])),
            "--out",
            str(out2),
        )
        == 0
    )
    assert _table(out2).column(REVIEWED).to_pylist()[keep] == ""


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written


def _no_label_dataset(root: Path) -> Path:
    from datasets import Dataset, Features, Image, Value

    folder = root / "nolabel"
    (folder / "data").mkdir(parents=True)
    Dataset.from_dict(
        {"image": [{"bytes": b"x", "path": None}], "class_name": ["tench"]},
        features=Features({"image": Image(), "class_name": Value("string")}),
    ).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def test_bad_input_is_one_line_and_writes_nothing(verified, photo_dataset, tmp_path, capsys):
    folder, _ = verified
    before = fingerprint(folder)
    cases = [
        (
            ["--dataset", str(photo_dataset.path), "--detector", "yolo", "--out", str(tmp_path / "o1")],
            "unknown detector 'yolo'; choose one of: owlv2",
        ),
        (
            ["--dataset", str(_no_label_dataset(tmp_path)), "--detector", "tiny", "--out", str(tmp_path / "o2")],
            "lacks required column(s) label",
        ),
        (
            [
                "--dataset",
                str(folder),
                "--decisions",
                str(_write_decisions(tmp_path / "d.csv", [(99, "test", "drop")])),
                "--out",
                str(folder),
            ],
            "names row 99 of split 'test', which has 15 rows",
        ),
        (
            [
                "--dataset",
                str(folder),
                "--decisions",
                str(_write_decisions(tmp_path / "e.csv", [(1, "train", "drop")])),
                "--out",
                str(folder),
            ],
            "names split 'train', which the dataset does not have",
        ),
        (
            [
                "--dataset",
                str(folder),
                "--decisions",
                str(_write_decisions(tmp_path / "f.csv", [(1, "test", "maybe")])),
                "--out",
                str(folder),
            ],
            "has decision 'maybe'",
        ),
        (
            [
                "--dataset",
                str(folder),
                "--decisions",
                str(_write_decisions(tmp_path / "g.csv", [(1, "test", "")])),
                "--out",
                str(folder),
            ],
            "line 2 has no decision; write keep, drop or clear",
        ),
        (
            ["--dataset", str(folder), "--decisions", str(tmp_path / "missing.csv"), "--out", str(folder)],
            "does not exist",
        ),
        (
            ["--dataset", str(folder), "--threshold", "1.5", "--out", str(folder)],
            "--threshold must be a score between 0 and 1",
        ),
        (["--dataset", str(folder), "--split", "train", "--out", str(folder)], "has no split 'train'"),
        (["--dataset", str(folder)], "nothing to do"),
        (["--dataset", str(photo_dataset.path), "--page", str(tmp_path / "p")], "is not verified"),
    ]
    for args, message in cases:
        assert _verify(*args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, (args, err)
    assert (
        not (tmp_path / "o1").exists()
        and not (tmp_path / "o2").exists()
        and not (tmp_path / "p" / "index.html").exists()
    )
    assert fingerprint(folder) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temporary folders


# ---------------------------------------------------------------------------------------------
# the build's verify stage (a recipe's `verify:` section)


@pytest.mark.slow
def test_build_runs_the_check_last_and_resumes_from_its_cache(tmp_path):
    import yaml
    from test_build import TINY_RECIPE, _build_cmd, _run, _tiny_dir

    from spurbench.generate.recipe import load_recipe, recipe_hash

    cwd = _tiny_dir(tmp_path / "b")
    plain = recipe_hash(load_recipe(cwd / "tiny.yaml")[1])
    (cwd / "tiny.yaml").write_text(
        yaml.safe_dump({**TINY_RECIPE, "verify": {"detector": "tiny", "threshold": 0.7}}, sort_keys=False)
    )
    assert recipe_hash(load_recipe(cwd / "tiny.yaml")[1]) == plain  # the check never invalidates generated images
    proc = _run(_build_cmd("tiny.yaml"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage verify: test: 4 checked" in proc.stderr
    out, unverified = cwd / "data", cwd / "data.work" / "unverified"
    for split in ("test", "reference"):
        a, b = _table(out, split), _table(unverified, split)
        assert a.column_names == b.column_names + [SCORE, PRESENT, BOXES, REVIEWED]
        for name in b.column_names:
            assert a.column(name).equals(b.column(name)), (split, name)
        assert a.column(PRESENT).to_pylist() == [s >= 0.7 for s in a.column(SCORE).to_pylist()]
    rec = read_provenance(out)["verification"]
    assert (
        rec["detector"] == "tiny"
        and rec["threshold"] == 0.7
        and rec["command"] == "spurbench build --recipe tiny.yaml --out data"
    )
    assert rec["threshold_source"] == "the recipe's `verify:` section (verify.threshold)"  # not "the command line"
    assert read_provenance(out)["recipe_sha256"] == plain

    # resume: a kill left the cache with one good entry, edited here to a marker score, and a cut line.
    # The re-run reuses the cached entry (the marker shows up in the export) and re-detects the rest.
    cache = cwd / "data.work" / "verify" / "detections.jsonl"
    header, first, *rest = cache.read_text().splitlines()
    entry = json.loads(first)
    entry["score"] = 0.123456
    cache.write_text("\n".join([header, json.dumps(entry), rest[0][: len(rest[0]) // 2]]) + "\n")
    scores_before = _table(out).column(SCORE).to_pylist() + _table(out, "reference").column(SCORE).to_pylist()
    proc = _run(_build_cmd("tiny.yaml"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores_after = _table(out).column(SCORE).to_pylist() + _table(out, "reference").column(SCORE).to_pylist()
    changed = [i for i, (x, y) in enumerate(zip(scores_before, scores_after)) if abs(x - y) > 1e-6]
    assert len(changed) == 1 and scores_after[changed[0]] == pytest.approx(0.123456)
    assert len(cache.read_text().splitlines()) == 1 + len(scores_before)  # cut line dropped, the rest re-cached

    # decisions applied in place (as the review page says) survive a rebuild, by image bytes; one generated image
    # changed in the work dir cannot carry its decision, and the build says so
    decisions = _write_decisions(
        tmp_path / "d.csv", [(0, "test", "keep"), (1, "test", "drop"), (0, "reference", "drop")]
    )
    assert _verify("--dataset", str(out), "--decisions", str(decisions), "--out", str(out)) == 0
    row1 = _table(out).column("image")[1].as_py()["bytes"]
    changed_file = next(p for p in (cwd / "data.work" / "classes").glob("*/images/*.png") if p.read_bytes() == row1)
    from PIL import Image

    with Image.open(changed_file) as im:
        Image.eval(im.convert("RGB"), lambda v: 255 - v).save(changed_file)
    proc = _run(_build_cmd("tiny.yaml"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "carried 2 decision(s) over to rows with the same image bytes; 1 could not be carried (their images changed)"
        in proc.stderr
    )
    assert _table(out).column(REVIEWED).to_pylist()[:2] == ["keep", ""]
    assert _table(out, "reference").column(REVIEWED).to_pylist()[0] == "drop"
    assert read_provenance(out)["verification"]["decisions_carried"] == {"carried": 2, "not_carried": 1}
    assert not (cwd / "data.work" / "decisions_before_rebuild.json").exists()


def test_recipe_verify_section_errors_name_the_key(tmp_path):
    from test_build import TINY_RECIPE

    from spurbench.errors import SpurbenchError
    from spurbench.generate.recipe import recipe_from_dict

    for section, message in (
        ({"detector": "yolo"}, "key 'verify.detector': unknown detector 'yolo'"),
        ({"threshold": 2}, "key 'verify.threshold' must be a score between 0 and 1"),
        ({"detectr": "tiny"}, "unknown key 'verify.detectr'"),
        ("tiny", "key 'verify' must be a mapping"),
    ):
        with pytest.raises(SpurbenchError, match=message.replace("(", r"\(").replace(".", r"\.")):
            recipe_from_dict({**TINY_RECIPE, "verify": section})


@pytest.mark.slow
def test_spurious_imagenet_imported_into_the_contract_verifies(tmp_path):
    """Any set in the contract: Spurious ImageNet's release layout, imported, keeps its own extra columns."""
    from conftest import _photo
    from PIL import Image

    for folder, photos in (
        ("spurious_class_309_bee_leaves_7", ["coffee", "rocket"]),
        ("spurious_class_0_tench_hands_3", ["astronaut"]),
    ):
        (tmp_path / "release" / "images" / folder).mkdir(parents=True)
        for i, name in enumerate(photos):
            Image.fromarray(_photo(name)).save(
                tmp_path / "release" / "images" / folder / f"{i:03d}_{name}.jpg", quality=90
            )
    imported = tmp_path / "si-imported"
    assert cli.main(["import", "spurious-imagenet", str(tmp_path / "release"), "--out", str(imported)]) == 0
    out = tmp_path / "si-verified"
    assert _verify("--dataset", str(imported), "--detector", "tiny", "--out", str(out)) == 0
    before, after = _table(imported), _table(out)
    assert after.column_names == before.column_names + [SCORE, PRESENT, BOXES, REVIEWED]
    for name in before.column_names:  # the importer's own columns (e.g. `file`) included
        assert after.column(name).equals(before.column(name)), name
    assert after.column("label").to_pylist() == [0, 309, 309]
    prov_before, prov_after = read_provenance(imported), read_provenance(out)
    assert {k: v for k, v in prov_after.items() if k != "verification"} == prov_before


@pytest.mark.slow
def test_checking_one_split_keeps_the_others(photo_dataset, tmp_path):
    """`--split` checks only that split; on a verified set the other splits keep their scores (re-thresholded),
    on an unverified one they stay unchecked (empty) and are never excluded."""
    t = _table(photo_dataset.path)
    rows = t.to_pylist()
    two = write_dataset(
        tmp_path / "two-splits", {"test": rows, "reference": rows[:4]}, DatasetCard(pretty_name="two splits")
    )
    assert (
        _verify("--dataset", str(two), "--detector", "tiny", "--split", "test", "--out", str(tmp_path / "only-test"))
        == 0
    )
    assert _table(tmp_path / "only-test", "reference").column(SCORE).to_pylist() == [None] * 4
    assert _table(tmp_path / "only-test", "reference").column(PRESENT).to_pylist() == [None] * 4
    assert list(read_provenance(tmp_path / "only-test")["verification"]["splits"]) == ["test"]
    assert (
        _verify("--dataset", str(tmp_path / "only-test"), "--split", "reference", "--out", str(tmp_path / "both")) == 0
    )
    both = read_provenance(tmp_path / "both")["verification"]["splits"]
    assert set(both) == {"test", "reference"}
    ref_scores = _table(tmp_path / "both", "reference").column(SCORE).to_pylist()
    assert ref_scores == _table(tmp_path / "both").column(SCORE).to_pylist()[:4]  # same images, same queries
    assert (
        _verify(
            "--dataset",
            str(tmp_path / "both"),
            "--split",
            "test",
            "--threshold",
            "0.0",
            "--out",
            str(tmp_path / "rethr"),
        )
        == 0
    )
    assert _table(tmp_path / "rethr", "reference").column(SCORE).to_pylist() == ref_scores
    assert all(_table(tmp_path / "rethr", "reference").column(PRESENT).to_pylist())


@pytest.mark.slow
def test_entries_are_identified_by_their_rows_not_their_count(verified, tmp_path, capsys):
    """Issue 14 §3: a default entry (the rows verification keeps) and a `--limit N --include-unverified` entry
    of as many images are different data: other ranking groups, described truthfully, and a later `--limit N`
    run (other rows again) is scored, not skipped. The consistency compares raters only on the rows they share."""
    import hashlib

    from spurbench.evaluate import leaderboard as lb

    folder, _ = verified
    present = _table(folder).column(PRESENT).to_pylist()
    kept = [i for i, p in enumerate(present) if not p]
    n, total = len(kept), len(present)
    board = tmp_path / "lb" / "lb.json"

    def run(name: str, *extra: str) -> str:
        capsys.readouterr()
        assert (
            cli.main(
                ["eval", *_lite0_args(), "--name", name, "--dataset", str(folder), "--leaderboard", str(board), *extra]
            )
            == 0
        )
        return capsys.readouterr().out

    run("default")
    run("limited", "--limit", str(n), "--include-unverified")
    b = json.loads(board.read_text())
    entries = {e["model"]: e for e in b["entries"]}

    def csv_rows(e: dict) -> list[int]:
        with open(board.parent / e["predictions"]) as fh:
            return [int(r["index"]) for r in csv.DictReader(fh)]

    for e, rows in ((entries["default"], kept), (entries["limited"], list(range(n)))):
        assert csv_rows(e) == rows
        # the identity, recomputed by hand from the predictions CSV
        assert (
            e["rows"]["sha256"]
            == hashlib.sha256(("test:" + ",".join(map(str, sorted(csv_rows(e))))).encode()).hexdigest()
        )
        assert e["rows"]["count"] == n and e["rows"]["split"] == "test"
    assert entries["default"]["rows"]["sha256"] != entries["limited"]["rows"]["sha256"]
    groups = lb.comparable_groups(b)
    assert len(groups) == 2  # the same count, other rows: never ranked together
    text = {g["entries"][0]["model"]: g["description"] for g in groups}
    assert f"{n} of {total} images: {total - n} left out by verification" in text["default"]
    assert f"the first {n} rows (--limit) of {total} images" in text["limited"]
    # consistency counts each model once: "limited" is the same model (architecture and weights) as "default",
    # scored on other rows, so it is left out, saying why, and the figures are the default entry's alone
    c = b["consistency"]
    assert c["models"] == ["default"] and "each model once" in c["excluded"]["limited"]
    with open(board.parent / entries["default"]["predictions"]) as fh:
        fooled = [int(r["fooled_top1"]) for r in csv.DictReader(fh)]
    assert c["num_images"] == len(kept) and c["all_fooled_rate"] == pytest.approx(np.mean(fooled))
    # a later --limit N (verification on) covers other rows than the --include-unverified entry: scored again
    out = run("limited", "--limit", str(n))
    assert "skip" not in out
    again = {e["model"]: e for e in json.loads(board.read_text())["entries"]}["limited"]
    assert csv_rows(again) == kept[:n] and again["rows"]["sha256"] == entries["default"]["rows"]["sha256"]
    # ... and the same run again is skipped: same rows, preprocessing, precision, positives
    assert "skip limited: already on the leaderboard for these rows" in run("limited", "--limit", str(n))
    assert len(lb.comparable_groups(json.loads(board.read_text()))) == 1
    # the page header says how many images were scored and how many verification left out
    from spurbench.evaluate.page import render_page

    html = render_page(board, tmp_path / "site").read_text()
    assert f"2 model(s) scored on {n} of {total} image(s) ({total - n} left out by verification)" in html
