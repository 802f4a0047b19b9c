"""The dataset contract: what `build` writes is what `load_dataset`, timm's hfds reader and `eval` read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from spurbench import dataset as sd
from spurbench import imagenet
from spurbench.errors import SpurbenchError


def _row(img, label=285, **kw):
    row = dict(
        image=img,
        label=label,
        class_name=imagenet.class_name(label),
        spurious_feature="f",
        component=3,
        source="generated",
        builder="test",
        prompt="a photo",
        seed=7,
    )
    row.update(kw)
    return row


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def pixels():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8) for _ in range(5)]


def test_round_trip_through_load_dataset(tmp_path, pixels):
    rows = [_row(p, label=k) for p, k in zip(pixels, [285, 285, 967, 0, 0])]
    out = sd.write_dataset(
        tmp_path / "ds",
        {"test": rows, "reference": rows[:1]},
        sd.DatasetCard("t", provenance={"recipe_sha256": "abc"}),
        rows_per_shard=2,
    )
    names = sorted(p.name for p in (out / "data").iterdir())
    # <split>-NNNNN-of-NNNNN-<first 16 hex digits of the shard's sha256>.parquet
    assert [n.rsplit("-", 1)[0] for n in names] == [
        "reference-00000-of-00001",
        "test-00000-of-00003",
        "test-00001-of-00003",
        "test-00002-of-00003",
    ]
    for p in (out / "data").iterdir():
        assert p.name.endswith(f"-{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}.parquet")
    loaded = datasets.load_dataset(str(out))
    assert set(loaded) == {"test", "reference"}
    test = loaded["test"]
    assert test.column_names == list(sd.REQUIRED_COLUMNS)
    assert test["label"] == [285, 285, 967, 0, 0]
    assert test.features["label"].names[285] == imagenet.wnids()[285] == "n02124075"
    assert test.features["label"].num_classes == 1000
    # PNG is lossless: the pixels come back exactly
    for got, want in zip(test["image"], pixels):
        assert np.array_equal(np.asarray(got.convert("RGB")), want)
    assert test[0]["seed"] == 7 and test[0]["component"] == 3
    assert sd.read_provenance(out) == {"recipe_sha256": "abc", "kind": "spurious", "label_set": "imagenet-1k"}
    assert sd.read_kind(out) == "spurious"
    card = (out / "README.md").read_text()
    assert "configs:" in card and "dataset_info:" in card and "num_examples: 5" in card


def test_timm_hfds_reader_reads_the_export(tmp_path, pixels):
    import timm.data

    out = sd.write_dataset(tmp_path / "ds", {"test": [_row(p) for p in pixels]}, sd.DatasetCard("t"))
    ds = timm.data.create_dataset(f"hfds/{out}", root=None, split="test")
    img, target = ds[0]
    assert len(ds) == 5 and target == 285 and isinstance(img, Image.Image)


def test_same_rows_give_identical_bytes_and_fingerprint(tmp_path, pixels):
    rows = [_row(p) for p in pixels]
    a = sd.write_dataset(tmp_path / "a", {"test": rows}, sd.DatasetCard("t"))
    b = sd.write_dataset(tmp_path / "b", {"test": rows}, sd.DatasetCard("t"))
    assert _digest(a) == _digest(b)
    assert sd.fingerprint(a) == sd.fingerprint(b)
    c = sd.write_dataset(tmp_path / "c", {"test": rows[:-1]}, sd.DatasetCard("t"))
    assert sd.fingerprint(c) != sd.fingerprint(a)


def test_failed_write_keeps_the_previous_dataset(tmp_path, pixels):
    out = sd.write_dataset(tmp_path / "ds", {"test": [_row(p) for p in pixels]}, sd.DatasetCard("t"))
    before = _digest(out)
    bad = [_row(pixels[0]), _row(pixels[1], class_name="none")]
    bad[1]["label"] = 1000
    with pytest.raises(SpurbenchError, match="1000"):
        sd.write_dataset(out, {"test": bad}, sd.DatasetCard("t"))
    assert _digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_extra_columns_and_source_validation(tmp_path, pixels):
    from datasets import Value

    out = sd.write_dataset(
        tmp_path / "ds",
        {"test": [_row(p, background="beach") for p in pixels[:2]]},
        sd.DatasetCard("t"),
        extra_features={"background": Value("string")},
    )
    assert datasets.load_dataset(str(out), split="test")["background"] == ["beach", "beach"]
    with pytest.raises(ValueError, match="source"):
        sd.write_dataset(tmp_path / "x", {"test": [_row(pixels[0], source="made-up")]}, sd.DatasetCard("t"))


def test_corrupt_image_file_is_named(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SpurbenchError, match="broken.png"):
        sd.encode_image(broken)


def test_reader_errors_are_clear(tmp_path, pixels, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpurbenchError, match="does not exist"):
        sd.resolve_dataset(tmp_path / "missing")
    with pytest.raises(SpurbenchError, match="not a local folder.*HF_HUB_OFFLINE"):
        sd.resolve_dataset("some-org/some-dataset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpurbenchError, match="no Parquet files"):
        sd.resolve_dataset(tmp_path / "empty")
    out = sd.write_dataset(tmp_path / "ds", {"test": [_row(p) for p in pixels]}, sd.DatasetCard("t"))
    with pytest.raises(SpurbenchError, match="no split 'validation'.*test"):
        sd.load_split(out, "validation")
    # a Parquet dataset without the contract's label column
    plain = tmp_path / "plain"
    (plain / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(
        {"image": [sd.encode_image(pixels[0])]}, features=datasets.Features({"image": datasets.Image()})
    ).to_parquet(str(plain / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(SpurbenchError, match="label"):
        sd.load_split(plain, "test")


def test_card_hub_metadata_and_eval_yaml(tmp_path, pixels):
    """The card carries the Hub's size/task/annotation/source fields; eval.yaml names one task per
    headline metric on the scored split, and the shift kind gets its own tasks."""
    import yaml

    out = sd.write_dataset(
        tmp_path / "ds", {"test": [_row(p) for p in pixels]}, sd.DatasetCard("Tiny set", body="One line.\n\nMore.")
    )
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_ids"] == ["multi-class-image-classification"]
    assert meta["annotations_creators"] == ["machine-generated"] and meta["source_datasets"] == ["original"]
    ev = yaml.safe_load((out / sd.EVAL_FILE).read_text())
    assert ev == {
        "name": "Tiny set",
        "description": "One line.",
        "evaluation_framework": "spurbench",
        "tasks": [
            {"id": "spurious_rate", "config": "default", "split": "test"},
            {"id": "spurious_score_ap", "config": "default", "split": "test"},
        ],
    }
    shift = sd.write_dataset(
        tmp_path / "shift", {"train": [_row(p) for p in pixels]}, sd.DatasetCard("s", kind="shift")
    )
    ev = yaml.safe_load((shift / sd.EVAL_FILE).read_text())
    assert [t["id"] for t in ev["tasks"]] == list(sd.EVAL_TASKS["shift"]) and ev["tasks"][0]["split"] == "train"
    assert [sd.size_category(n) for n in (0, 999, 1000, 9999, 10_000, 250_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
    ]
    # eval.yaml does not disturb `datasets`
    assert len(datasets.load_dataset(str(out), split="test")) == len(pixels)
