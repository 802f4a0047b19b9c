"""`spurbench import waterbirds`: a small tree in the standard Waterbirds layout, made from real photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import _photo
from PIL import Image

from spurbench import dataset as sd
from spurbench.cli import main

# (img_filename, y, split, place): every group in train, a minority group missing from val on purpose
ROWS = [
    ("001.Albatross/a.jpg", 1, 0, 1),
    ("001.Albatross/b.jpg", 1, 0, 0),
    ("002.Sparrow/c.jpg", 0, 0, 0),
    ("002.Sparrow/d.jpg", 0, 0, 1),
    ("002.Sparrow/e.jpg", 0, 0, 0),
    ("001.Albatross/f.jpg", 1, 1, 1),
    ("002.Sparrow/g.jpg", 0, 1, 0),
    ("001.Albatross/h.jpg", 1, 2, 0),
    ("002.Sparrow/i.jpg", 0, 2, 1),
]
PHOTOS = ["chelsea", "coffee", "rocket", "astronaut", "china", "flower", "retina", "coffee", "grass"]


def make_waterbirds_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for i, ((name, y, split, place), photo) in enumerate(zip(ROWS, PHOTOS)):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_photo(photo)[:96, :128]).save(root / name, quality=90)
            w.writerow([i + 1, name, y, split, place, f"/x/place{i}.jpg"])
    return root


@pytest.fixture()
def wb_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))  # one cache per test (DESIGN.md)
    return make_waterbirds_tree(tmp_path / "waterbird_complete95_forest2water2")


def test_import_reads_labels_groups_and_splits(wb_root, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "wb"
    assert main(["import", "waterbirds", str(wb_root), "--out", str(out)]) == 0
    ds = load_dataset(str(out))
    assert set(ds) == {"train", "val", "test"}
    assert ds["train"].features["label"].names == ["landbird", "waterbird"]
    prov = sd.read_provenance(out)
    assert prov["label_set"] == "waterbirds" and sd.read_kind(out) == "shift"
    names = ["landbird", "waterbird"]
    for split_id, split in enumerate(("train", "val", "test")):
        expected = [r for r in ROWS if r[2] == split_id]
        got = ds[split]
        assert got["label"] == [r[1] for r in expected]
        assert got["group"] == [f"{names[r[1]]}/{['land', 'water'][r[3]]}" for r in expected]
        assert got["class_name"] == [names[r[1]] for r in expected]
    # the image bytes are the files' own (JPEG embedded as is)
    first = ds["train"][0]["image"]
    assert np.array_equal(np.asarray(first), np.asarray(Image.open(wb_root / ROWS[0][0]).convert("RGB")))
    assert prov["group_counts"]["train"] == {
        "landbird/land": 2,
        "landbird/water": 1,
        "waterbird/land": 1,
        "waterbird/water": 1,
    }


def _existing_output(tmp_path) -> tuple[Path, dict]:
    """An earlier dataset at --out (a folder of other files is refused before anything is read: test_keep_work.py)."""
    from spurbench.dataset import DatasetCard, write_dataset

    row = dict(
        image=np.zeros((8, 8, 3), np.uint8),
        label=1,
        class_name="goldfish",
        spurious_feature="",
        component=-1,
        source="reference",
        builder="x",
        prompt="",
        seed=-1,
    )
    out = write_dataset(tmp_path / "wb", {"test": [row]}, DatasetCard(pretty_name="earlier result"))
    return out, {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_missing_image_is_one_line_and_nothing_written(wb_root, tmp_path, capsys):
    (wb_root / ROWS[-1][0]).unlink()
    out, before = _existing_output(tmp_path)
    capsys.readouterr()  # the set-up's own progress bars
    assert main(["import", "waterbirds", str(wb_root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "i.jpg" in err and "does not exist" in err
    assert {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".wb.tmp")]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("img_id,img_filename,y,place\n1,001.Albatross/a.jpg,1,1\n", "lacks column(s) split"),
        ("img_id,img_filename,y,split,place\n1,001.Albatross/a.jpg,2,0,1\n", "line 2: y is '2'"),
        ("img_id,img_filename,y,split,place\n1,001.Albatross/a.jpg,1,train,1\n", "line 2: split is 'train'"),
        ("img_id,img_filename,y,split,place\n", "no rows"),
    ],
)
def test_malformed_metadata_is_one_line(wb_root, tmp_path, capsys, text, needle):
    (wb_root / "metadata.csv").write_text(text)
    out = tmp_path / "wb"
    assert main(["import", "waterbirds", str(wb_root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_corrupt_image_fails_cleanly(wb_root, tmp_path, capsys):
    (wb_root / ROWS[3][0]).write_bytes(b"not a jpeg")
    out = tmp_path / "wb"
    assert main(["import", "waterbirds", str(wb_root), "--out", str(out)]) == 2
    assert "d.jpg" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".wb.")]
