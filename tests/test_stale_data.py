"""Never score stale data: `datasets` caches a local folder by its name, card and file times, not its
bytes. These tests reproduce that collision with `datasets.load_dataset` itself, then check that
spurbench reads what is on disk and that its exports' cards change with their content."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from spurbench import dataset as sd
from spurbench import imagenet
from spurbench.errors import SpurbenchError
from spurbench.evaluate.inputs import open_dataset


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh `datasets` cache for the test (the collision lives there)."""
    path = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(path))
    return path


def _rows(label: int, n: int = 3, value: int = 0):
    rng = np.random.default_rng(label * 100 + value)
    return [
        dict(
            image=rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8),
            label=label,
            class_name=imagenet.class_name(label),
            spurious_feature="f",
            component=-1,
            source="reference",
            builder="test",
            prompt="",
            seed=-1,
        )
        for _ in range(n)
    ]


def _same_times(src: Path, dst: Path) -> None:
    """Give dst's shards src's modification times, as `cp -p`, rsync -a, tar and unzip do."""
    for a, b in zip(sd.data_files(src, "test"), sd.data_files(dst, "test")):
        st = a.stat()
        os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))


def _same_card_other_images(tmp_path: Path) -> tuple[Path, Path]:
    """a/ds and b/ds: identical cards and file names and times, different images and labels."""
    a = sd.write_dataset(tmp_path / "a" / "ds", {"test": _rows(285)}, sd.DatasetCard("same card"))
    other = sd.write_dataset(tmp_path / "other" / "ds", {"test": _rows(967)}, sd.DatasetCard("same card"))
    b = tmp_path / "b" / "ds"
    shutil.copytree(a, b)  # same card, same file names
    for dst, src in zip(sd.data_files(b, "test"), sd.data_files(other, "test")):
        dst.write_bytes(src.read_bytes())  # ... different images
    _same_times(a, b)
    assert (a / "README.md").read_bytes() == (b / "README.md").read_bytes()
    return a, b


def test_datasets_cache_collision_is_real(tmp_path, cache):
    """The bug this guards against, reproduced with `datasets` alone: b/ds loads a/ds's rows."""
    a, b = _same_card_other_images(tmp_path)
    assert datasets.load_dataset(str(a), split="test")["label"][:] == [285] * 3
    assert datasets.load_dataset(str(b), split="test")["label"][:] == [285] * 3  # b holds 967s: stale rows


def test_eval_reads_what_is_on_disk(tmp_path, cache):
    """spurbench scores b/ds's own rows with b/ds's fingerprint, even after a/ds filled the cache."""
    a, b = _same_card_other_images(tmp_path)
    datasets.load_dataset(str(a), split="test")  # the poisoned cache entry
    got_a, got_b = open_dataset(a), open_dataset(b)
    assert got_a.labels.tolist() == [285] * 3
    assert got_b.labels.tolist() == [967] * 3
    assert got_b.info["fingerprint"] == sd.fingerprint(b) != sd.fingerprint(a)
    assert got_b.info["classes"] == [967]
    # and the images read are b's bytes, not a's
    assert got_b.rows[0]["image"]["bytes"] != got_a.rows[0]["image"]["bytes"]


def test_exports_with_other_content_have_other_cards(tmp_path, cache):
    """Two exports with the same card settings but different images: different cards, so even
    `datasets.load_dataset` (with equal file times) gives each folder its own rows."""
    a = sd.write_dataset(tmp_path / "a" / "ds", {"test": _rows(285)}, sd.DatasetCard("same card"))
    b = sd.write_dataset(tmp_path / "b" / "ds", {"test": _rows(285, value=1)}, sd.DatasetCard("same card"))
    _same_times(a, b)
    assert (a / "README.md").read_text() != (b / "README.md").read_text()
    img_a = datasets.load_dataset(str(a), split="test").cast_column("image", datasets.Image(decode=False))[0]["image"][
        "bytes"
    ]
    img_b = datasets.load_dataset(str(b), split="test").cast_column("image", datasets.Image(decode=False))[0]["image"][
        "bytes"
    ]
    assert img_a != img_b
    assert img_b == sd.load_split(b).cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    # the card names the exact files, each named by its content
    meta = yaml.safe_load((b / "README.md").read_text().split("---")[1])
    paths = meta["configs"][0]["data_files"][0]["path"]
    assert paths == [f"data/{p.name}" for p in sd.data_files(b, "test")]
    for p in sd.data_files(b, "test"):
        assert p.stem.rsplit("-", 1)[1] == hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def test_same_content_same_card(tmp_path, cache):
    """The card depends on content only: re-exporting the same rows gives the same bytes."""
    a = sd.write_dataset(tmp_path / "a" / "ds", {"test": _rows(285)}, sd.DatasetCard("t"))
    b = sd.write_dataset(tmp_path / "b" / "ds", {"test": _rows(285)}, sd.DatasetCard("t"))
    assert (a / "README.md").read_bytes() == (b / "README.md").read_bytes()
    assert (a / sd.EVAL_FILE).read_bytes() == (b / sd.EVAL_FILE).read_bytes()


def test_truncated_shard_is_one_clear_line(tmp_path, cache):
    a = sd.write_dataset(tmp_path / "a" / "ds", {"test": _rows(285)}, sd.DatasetCard("t"))
    shard = sd.data_files(a, "test")[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(SpurbenchError, match=r"cannot read split 'test' of .*damaged") as err:
        open_dataset(a)
    assert "\n" not in str(err.value)
