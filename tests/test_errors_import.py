"""`spurbench import`'s one-line errors (Waterbirds metadata, Spurious ImageNet folders and archives) and the
eval inputs' (--limit, positives folders): each from a small hand-made folder, which is left as it was."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.evaluate.inputs import open_dataset, open_positives
from spurbench.importers.spurious_imagenet import release_rows, unpack
from spurbench.importers.waterbirds import read_metadata

HEADER = "img_id,img_filename,y,split,place,place_filename\n"


def _import_error(argv: list[str], capsys) -> str:
    assert main(["import", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("spurbench import: error: "), err
    return err


@pytest.mark.parametrize(
    "text, match",
    [
        ("img_id,img_filename,y\n1,a.jpg,0\n", r"lacks column\(s\) split, place; a Waterbirds metadata.csv has"),
        (HEADER, r"has a header but no rows; restore the original metadata.csv"),
        (HEADER + "1,a.jpg,2,0,0,x\n", r"line 2: y is '2', expected an integer 0..1"),
        (HEADER + "1,a.jpg,0,0,half,x\n", r"line 2: place is 'half', expected an integer 0..1"),
        (HEADER + "1,,0,0,0,x\n", r"line 2: img_filename is empty"),
        (HEADER + "1,001.Bird/a.jpg,0,0,0,x\n", r"image '.*001.Bird/a.jpg' named on line 2 of '.*' does not exist"),
    ],
)
def test_a_bad_waterbirds_metadata_is_one_line(tmp_path, text, match):
    (tmp_path / "metadata.csv").write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        read_metadata(tmp_path)
    assert (tmp_path / "metadata.csv").read_text() == text


def test_a_waterbirds_metadata_that_is_not_text(tmp_path):
    data = (HEADER + "1,\xff\xfe.jpg,0,0,0,x\n").encode("latin-1")
    (tmp_path / "metadata.csv").write_bytes(data)
    with pytest.raises(SpurbenchError, match=r"cannot parse '.*metadata.csv' as CSV \(UnicodeDecodeError: "):
        read_metadata(tmp_path)
    assert (tmp_path / "metadata.csv").read_bytes() == data


def test_waterbirds_folders_that_are_not_there(tmp_path, capsys):
    with pytest.raises(SpurbenchError, match=r"has no metadata.csv; give the Waterbirds folder"):
        read_metadata(tmp_path)
    err = _import_error(["waterbirds", str(tmp_path / "missing"), "--out", str(tmp_path / "out")], capsys)
    assert "Waterbirds folder '" in err and "does not exist; download and extract" in err
    assert not (tmp_path / "out").exists()


def test_import_without_a_source_and_spurious_imagenet_flag_mistakes(tmp_path, capsys):
    assert "name the source to import, one of: " in _import_error([], capsys)
    err = _import_error(
        ["spurious-imagenet", str(tmp_path), "--out", str(tmp_path / "o"), "--sha256", "ab" * 32], capsys
    )
    assert "--url and --sha256 apply to --download; add --download or drop them" in err
    err = _import_error(["spurious-imagenet", str(tmp_path / "none"), "--out", str(tmp_path / "o")], capsys)
    assert "Spurious ImageNet folder '" in err and "does not exist; unzip the release there or add --download" in err
    assert not (tmp_path / "o").exists()


def _release_folder(root: Path, name: str = "spurious_imagenet_309_x_1") -> Path:
    folder = root / "images" / name
    folder.mkdir(parents=True)
    return folder


def test_spurious_imagenet_release_folders_with_foreign_content(tmp_path):
    folder = _release_folder(tmp_path / "a")
    with pytest.raises(SpurbenchError, match=r"folder '.*' holds no images; re-extract the release"):
        release_rows(tmp_path / "a")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SpurbenchError, match=r"holds 'notes.txt', which is not an image \(.*\); remove it"):
        release_rows(tmp_path / "a")
    assert (folder / "notes.txt").read_text() == "mine"
    folder = _release_folder(tmp_path / "b")
    (folder / "x.png").write_bytes(b"not a png")
    with pytest.raises(
        SpurbenchError, match=r"cannot read image '.*x.png' of the release: not an image spurbench can open"
    ):
        release_rows(tmp_path / "b")
    _release_folder(tmp_path / "c", "not_a_release_folder")
    with pytest.raises(SpurbenchError, match=r"does not follow Spurious ImageNet's naming"):
        release_rows(tmp_path / "c")
    with pytest.raises(SpurbenchError, match=r"Spurious ImageNet not found at '.*empty'"):
        release_rows(tmp_path / "empty")


def test_an_archive_that_is_damaged_or_escapes_its_folder(tmp_path):
    bad = tmp_path / "release.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SpurbenchError, match=r"is not a zip archive \(damaged download\?\); delete it"):
        unpack(bad, tmp_path / "into")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(SpurbenchError, match=r"has a member '../outside.txt' outside its folder; not unpacking it"):
        unpack(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()


def test_eval_inputs_limit_and_positives(tmp_path, photo_dataset):
    with pytest.raises(SpurbenchError, match=r"--limit must be a positive number of images, got 0"):
        open_dataset(photo_dataset.path, limit=0)
    empty = tmp_path / "positives"
    empty.mkdir()
    (empty / "note.txt").write_text("x")
    with pytest.raises(SpurbenchError, match=r"positives folder '.*' has no class sub-folders; expected <folder>/<Wo"):
        open_positives(empty, [285])
    (empty / "cats").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(empty / "cats" / "a.png")
    with pytest.raises(SpurbenchError, match=r"positives sub-folder '.*cats' is not named by an ImageNet-1k WordNet"):
        open_positives(empty, [285])
    with pytest.raises(SpurbenchError, match=r"positives '.*nothing' is neither a folder nor a hub dataset id"):
        open_positives(tmp_path / "nothing", [285])


def _altered_copy(photo_dataset, tmp_path: Path, name: str, change) -> Path:
    """A copy of the photo dataset whose Parquet rows went through `change` (a datasets.Dataset -> Dataset)."""
    import shutil

    from datasets import Dataset

    folder = tmp_path / name
    shutil.copytree(photo_dataset.path, folder)
    (parquet,) = folder.rglob("*.parquet")
    change(Dataset.from_parquet(str(parquet))).to_parquet(str(parquet))
    return folder


def test_datasets_whose_columns_are_not_the_contract(photo_dataset, tmp_path):
    from datasets import ClassLabel, Value

    cases = [
        (
            lambda d: d.cast_column("label", Value("string")),
            r"column `label` has type Value\('string'\); expected ImageNet-1k class indices",
        ),
        (
            lambda d: d.cast_column("label", Value("int64")).cast_column(
                "label", ClassLabel(names=[str(i) for i in range(1000)])
            ),
            r"column `label` is a ClassLabel over 1000 names, not the 1000 ImageNet-1k WordNet ids",
        ),
        (
            lambda d: d.remove_columns("image").add_column("image", ["x"] * len(d)),
            r"column `image` has type Value\('string'\); expected an Image column",
        ),
        (
            lambda d: d.cast_column("label", Value("int64")).map(lambda r: {"label": -1}),
            r"row 0 has label -1, not a class index 0..999 of its label set",
        ),
    ]
    for i, (change, match) in enumerate(cases):
        folder = _altered_copy(photo_dataset, tmp_path, f"set{i}", change)
        with pytest.raises(SpurbenchError, match=match):
            open_dataset(folder)


def test_positives_datasets_that_do_not_fit(photo_dataset, tmp_path):
    from datasets import ClassLabel, Value

    with pytest.raises(SpurbenchError, match=r"has no split 'no_such_split'; available splits: test"):
        open_positives(photo_dataset.path, [285], split="no_such_split")
    two = _altered_copy(
        photo_dataset,
        tmp_path,
        "two",
        lambda d: (
            d.cast_column("label", Value("int64"))
            .map(lambda r: {"label": 0})
            .cast_column("label", ClassLabel(names=["a", "b"]))
        ),
    )
    with pytest.raises(SpurbenchError, match=r"positives dataset '.*two' labels 2 classes, not ImageNet-1k's 1000"):
        open_positives(two, [285])
