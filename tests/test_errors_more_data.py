"""One-line errors about datasets no other test triggered: label sets that disagree, splits with no rows, a
positives set with no obvious split, sets `verify`, `finetune` and a DDB `source:` cannot use, a damaged
fine-tune checkpoint, a board's predictions name taken by the user's files, and a build with no images to
learn from. Each on a small set written here, asserting the message and that the user's files are unchanged."""

from __future__ import annotations

import hashlib
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from spurbench.dataset import DatasetCard, write_dataset
from spurbench.errors import SpurbenchError

NAMES = ["landbird", "waterbird"]


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _group_set(folder: Path, splits: dict[str, list[tuple[int, str]]], names: list[str] = NAMES) -> Path:
    """A small labelled set with a `group` column: each split a list of (label, group)."""
    from datasets import Value

    rng = np.random.default_rng(0)
    rows = {
        split: [
            dict(
                image=rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8),
                label=label,
                class_name=names[label],
                spurious_feature="",
                component=-1,
                source="reference",
                builder="test",
                prompt="",
                seed=-1,
                group=group,
            )
            for label, group in items
        ]
        for split, items in splits.items()
    }
    return write_dataset(
        folder,
        rows,
        DatasetCard(pretty_name="groups", kind="shift", label_set="birds"),
        extra_features={"group": Value("string")},
        label_names=names,
    )


def _rewrite_split(folder: Path, split: str, change) -> None:
    """Rewrite one split's single shard through `change` (a datasets.Dataset -> Dataset)."""
    from datasets import Dataset

    (shard,) = (folder / "data").glob(f"{split}-*.parquet")
    change(Dataset.from_parquet(str(shard))).to_parquet(str(shard))


@pytest.fixture(scope="module")
def groups(tmp_path_factory) -> Path:
    two = [(0, "landbird/land"), (1, "waterbird/water")]
    return _group_set(tmp_path_factory.mktemp("groups") / "set", {"train": two, "val": two})


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


# --- finetune -------------------------------------------------------------------------------------------------


def test_finetune_data_whose_label_sets_or_rows_do_not_fit(groups, tmp_path):
    from datasets import ClassLabel

    from spurbench import finetune as ft

    cfg = ft.FinetuneConfig()
    other = _group_set(tmp_path / "other", {"train": [(0, "cat/in"), (2, "dog/out")]}, ["cat", "cow", "dog"])
    before = _digest(other)
    inputs = ft.RunInputs(spec=None, data=str(groups), counterfactuals=str(other), out=str(tmp_path / "ft"))
    with pytest.raises(
        SpurbenchError, match=r"counterfactuals '.*other' split 'train' label 3 classes, '.*' split 'tr"
    ):
        ft._open_data(cfg, inputs)
    assert _digest(other) == before

    renamed = _copy(groups, tmp_path, "renamed")
    _rewrite_split(renamed, "val", lambda d: d.cast_column("label", ClassLabel(names=["crow", "duck"])))
    inputs = ft.RunInputs(spec=None, data=str(renamed), counterfactuals=None, out=str(tmp_path / "ft"))
    with pytest.raises(SpurbenchError, match=r"'.*renamed' split 'val' and '.*' split 'train' have different label"):
        ft._open_data(cfg, inputs)

    empty = _copy(groups, tmp_path, "empty")
    _rewrite_split(empty, "train", lambda d: d.select([]))
    with pytest.raises(SpurbenchError, match=r"dataset '.*empty' split 'train' has no rows"):
        ft.open_group_split(empty, "train", "group")
    assert not (tmp_path / "ft").exists()


def test_a_row_without_an_image(groups):
    from datasets import Dataset, Image

    from spurbench import finetune as ft

    part = ft.open_group_split(groups, "train", "group")
    rows = Dataset.from_dict({"image": [None]}).cast_column("image", Image(decode=False))
    part = ft.GroupSplit(rows=rows, labels=part.labels[:1], groups=part.groups[:1], label_names=NAMES, where="'x'")
    with pytest.raises(SpurbenchError, match=r"'x' row 0's image has no image \(null\); remove the row or rebuild"):
        ft._image_source(part, 0)


def test_a_damaged_checkpoint_of_ours(tmp_path):
    from spurbench import finetune as ft
    from spurbench.files import WrittenFolder

    written = WrittenFolder.claim(tmp_path / "ft")
    written.write(ft.CHECKPOINT, b"not a torch file")
    with pytest.raises(SpurbenchError, match=r"'.*checkpoint.pt' cannot be read \(.*\); use --restart to discard it"):
        ft._resume(written, {"model": "x"}, False, None, None)
    assert (tmp_path / "ft" / ft.CHECKPOINT).read_bytes() == b"not a torch file"


# --- eval's inputs ---------------------------------------------------------------------------------------------


def test_eval_sets_with_no_rows_or_an_unnamed_label_column(groups, tmp_path):
    from datasets import Value

    from spurbench.evaluate.inputs import open_dataset

    empty = _copy(groups, tmp_path, "empty")
    _rewrite_split(empty, "train", lambda d: d.select([]))
    with pytest.raises(SpurbenchError, match=r"dataset '.*empty' split 'train' has no rows; nothing to evaluate"):
        open_dataset(empty, split="train")
    plain = _copy(groups, tmp_path, "plain")
    _rewrite_split(plain, "train", lambda d: d.cast_column("label", Value("int64")))
    before = _digest(plain)
    with pytest.raises(SpurbenchError, match=r"names label set 'birds' in its card but its `label` column is Value"):
        open_dataset(plain, split="train")
    assert _digest(plain) == before


def test_positives_sets_without_an_obvious_split_or_not_there(tmp_path):
    from spurbench.evaluate.inputs import open_positives

    two = _group_set(tmp_path / "two", {"a": [(0, "x")], "b": [(1, "y")]})
    with pytest.raises(
        SpurbenchError, match=r"positives dataset '.*two' has splits a, b; pick one with --positives-sp"
    ):
        open_positives(two, [285])
    # a Hub id, offline (tests/conftest.py sets HF_HUB_OFFLINE): one line, no traceback
    with pytest.raises(SpurbenchError, match=r"cannot load positives dataset 'nobody/no-such-set' \(.*\); check the"):
        open_positives("nobody/no-such-set", [285])


# --- verify ----------------------------------------------------------------------------------------------------


def test_sets_verify_cannot_rewrite(groups, photo_dataset, tmp_path):
    from spurbench.verify import _check_contract, _read_source, _Split

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "data").mkdir()
    (bare / "notes.txt").write_text("mine")
    (bare / "data" / "rows.parquet").write_text("not a shard name")
    with pytest.raises(SpurbenchError, match=r"dataset '.*bare' has no data/<split>-NNNNN-of-NNNNN.parquet shards; is"):
        _read_source(bare, tmp_path / "out", None, None)
    assert (bare / "notes.txt").read_text() == "mine" and not (tmp_path / "out").exists()

    lacking = _copy(groups, tmp_path, "lacking")
    _rewrite_split(lacking, "train", lambda d: d.remove_columns("prompt"))
    with pytest.raises(SpurbenchError, match=r"split 'train' lacks contract column\(s\) prompt; `spurbench verify`"):
        _check_contract(lacking, [_Split(lacking, "train")])

    renamed = _copy(groups, tmp_path, "renamed")
    from datasets import ClassLabel

    _rewrite_split(renamed, "val", lambda d: d.cast_column("label", ClassLabel(names=["crow", "duck"])))
    with pytest.raises(SpurbenchError, match=r"dataset '.*renamed' splits disagree on the label names; every split"):
        _check_contract(renamed, [_Split(renamed, "train"), _Split(renamed, "val")])

    card = DatasetCard(pretty_name="x", label_set="birds")  # but the photos are labelled with ImageNet's wnids
    with pytest.raises(SpurbenchError, match=r"card names label set 'birds' but its `label` column has 1000 names"):
        _check_contract(photo_dataset.path, [_Split(photo_dataset.path, "test")], card)


def test_a_row_the_detector_cannot_decode(photo_dataset, tmp_path):
    import io

    from datasets import Image
    from PIL import Image as PILImage

    from spurbench.verify import DetectionCache, _detect_split, _Split

    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    truncated = buf.getvalue()[:60]  # a valid header, the pixel data cut off
    broken = _copy(photo_dataset.path, tmp_path, "broken")
    _rewrite_split(
        broken,
        "test",
        lambda d: d.cast_column("image", Image(decode=False)).map(
            lambda r, i: {"image": {"bytes": truncated, "path": None}} if i == 0 else r, with_indices=True
        ),
    )
    split = _Split(broken, "test")
    queries = {k: ["a thing"] for k in set(split.column("label"))}
    with pytest.raises(
        SpurbenchError, match=r"cannot decode the image of row 0 of split 'test' \(.*\); replace or rem"
    ):
        _detect_split(split, None, queries, 4, None, DetectionCache(None, {}))


# --- a DDB build's `source:` -----------------------------------------------------------------------------------


def test_ddb_source_sets_without_class_labels_groups_or_rows(groups, tmp_path):
    from datasets import Value

    from spurbench.generate.methods.ddb import DDBClass, SourceDataset, _dataset_references, source_label_names

    plain = _copy(groups, tmp_path, "plain")
    _rewrite_split(plain, "train", lambda d: d.cast_column("label", Value("int64")))
    with pytest.raises(SpurbenchError, match=r"key 'source.dataset': '.*plain' has no ClassLabel `label` column"):
        source_label_names(SourceDataset(str(plain), "train"))

    nogroup = _copy(groups, tmp_path, "nogroup")
    _rewrite_split(nogroup, "train", lambda d: d.remove_columns("group"))
    recipe = types.SimpleNamespace(source=SourceDataset(str(nogroup), "train"))
    with pytest.raises(SpurbenchError, match=r"'.*nogroup' has no `group` column for source_group 'waterbird/land' of"):
        _dataset_references(recipe, DDBClass(index=1, source_group="waterbird/land"), tmp_path / "refs")
    recipe = types.SimpleNamespace(source=SourceDataset(str(groups), "train"))
    with pytest.raises(SpurbenchError, match=r"split 'train' has no rows of class 1 in group 'waterbird/land'"):
        _dataset_references(recipe, DDBClass(index=1, source_group="waterbird/land"), tmp_path / "refs")
    assert not (tmp_path / "refs").exists()


# --- the board's predictions name, and a fine-tune with no images -----------------------------------------------


def test_a_predictions_name_and_its_alternative_held_by_the_user(tmp_path):
    from test_leaderboard import DATASET, make_entry

    from spurbench.evaluate import leaderboard as lb

    payload = "index,label\n0,1\n"
    theirs = tmp_path / "predictions"
    theirs.mkdir()
    (theirs / "m1.csv").write_text("mine")
    (theirs / f"m1-{lb.sha256_bytes(payload.encode())[:10]}.csv").write_text("mine too")
    before = _digest(tmp_path)
    with pytest.raises(SpurbenchError, match=r"'.*m1.csv' and its alternative are files spurbench did not write; move"):
        lb.record_entry(tmp_path / "board.json", DATASET, make_entry("m1", 0.5), predictions=payload)
    assert {k: v for k, v in _digest(tmp_path).items() if k.startswith("predictions/")} == before


def test_dreambooth_with_no_instance_images(tmp_path):
    from spurbench.generate.dreambooth import TrainConfig, finetune_class
    from spurbench.tiny_models import make_tiny_stable_diffusion

    base = make_tiny_stable_diffusion(tmp_path / "sd", image_size=32)
    config = TrainConfig(max_train_steps=1, resolution=32, with_prior_preservation=False, train_text_encoder=False)
    with pytest.raises(SpurbenchError, match=r"no instance \(reference\) images to fine-tune on; give at least one"):
        finetune_class(
            base, [], "a photo of sks dog", [], "a photo of a dog", 0, config, tmp_path / "out", progress=False
        )
    assert not (tmp_path / "out").exists()
