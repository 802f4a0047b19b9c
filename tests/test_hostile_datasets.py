"""Hostile inputs to the dataset contract (issue 21): other people's folders, cards and metadata files.

Each case gives the command or function, expects one line naming what is wrong, and checks that the user's
files are unchanged. The card reader is fuzzed with hypothesis under a fixed budget."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_waterbirds import make_waterbirds_tree

from spurbench import dataset as sd
from spurbench import imagenet
from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.files import RECORD_NAME, has_record
from spurbench.importers.waterbirds import import_waterbirds


def _row(label=285, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        image=Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)),
        label=label,
        class_name=imagenet.class_name(label),
        spurious_feature="f",
        component=0,
        source="generated",
        builder="test",
        prompt="p",
        seed=seed,
    )


def _write(folder: Path, n: int = 2, kind: str = "spurious") -> Path:
    return sd.write_dataset(folder, {"test": [_row(seed=i) for i in range(n)]}, sd.DatasetCard("t", kind=kind))


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------------------
# 1. Only what spurbench wrote is replaced


@pytest.mark.parametrize(
    "user_file",
    ["README.md", "eval.yaml", "data/my_own_table.parquet", "notes.txt", "data/test-00000-of-00001.parquet"],
)
def test_import_refuses_a_user_folder_holding_a_dataset_like_file(tmp_path, user_file):
    root = make_waterbirds_tree(tmp_path / "wb")
    u = tmp_path / "u"
    (u / user_file).parent.mkdir(parents=True, exist_ok=True)
    (u / user_file).write_text("my notes\n")
    before = _snapshot(u)
    with pytest.raises(SpurbenchError, match="spurbench did not write") as err:
        import_waterbirds(root, u)
    assert "'u'" in _one_line(err) or str(u) in str(err.value)
    assert _snapshot(u) == before and not has_record(u)


def test_cli_import_into_a_user_folder_is_one_line_and_keeps_readme(tmp_path, capsys):
    root = make_waterbirds_tree(tmp_path / "wb")
    u = tmp_path / "u"
    u.mkdir()
    (u / "README.md").write_text("notes\n")
    rc = main(["import", "waterbirds", str(root), "--out", str(u)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "README.md" in err and "did not write" in err and len(err.splitlines()) == 1
    assert (u / "README.md").read_text() == "notes\n" and sorted(os.listdir(u)) == ["README.md"]


def test_a_dataset_from_an_older_spurbench_is_refused_with_a_hint(tmp_path):
    old = _write(tmp_path / "old")
    (old / RECORD_NAME).unlink()  # as an older spurbench left it: README.md, eval.yaml, data/*.parquet
    before = _snapshot(old)
    with pytest.raises(SpurbenchError, match="older spurbench .*no .spurbench-written.json record") as err:
        _write(old)
    _one_line(err)
    assert _snapshot(old) == before


def test_a_written_dataset_is_replaced_and_records_every_file(tmp_path):
    out = _write(tmp_path / "ds")
    record = __import__("json").loads((out / RECORD_NAME).read_text())["files"]
    assert sorted(record) == sorted(p for p in _snapshot(out) if p != RECORD_NAME)
    _write(out, n=3)
    assert len(sd.load_split(out)) == 3


@pytest.mark.parametrize("change", ["added", "edited"])
def test_a_written_dataset_with_a_user_file_or_edit_is_not_replaced(tmp_path, change):
    out = _write(tmp_path / "ds")
    if change == "added":
        (out / "data" / "mine.csv").write_text("a,b\n")
    else:
        (out / "README.md").write_text((out / "README.md").read_text() + "\nmy edit\n")
    before = _snapshot(out)
    with pytest.raises(SpurbenchError, match="which spurbench did not write \\(or which changed since\\)") as err:
        _write(out, n=3)
    _one_line(err)
    assert _snapshot(out) == before


def test_write_leaves_a_users_tmp_and_old_named_siblings_and_removes_dead_temporaries(tmp_path):
    out = _write(tmp_path / "x")
    for name in (".x.tmp-foo", ".x.old-bar"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "precious.txt").write_text("mine")
    dead = tmp_path / ".x.spurbench-tmp-999999999-0123abcd"  # a pid no process has
    dead.mkdir()
    (dead / "half.parquet").write_bytes(b"x")
    _write(out, n=3)
    assert (tmp_path / ".x.tmp-foo" / "precious.txt").read_text() == "mine"
    assert (tmp_path / ".x.old-bar" / "precious.txt").read_text() == "mine"
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.old-bar", ".x.tmp-foo", "x"]


@pytest.mark.parametrize("work", ["~", "mine"])
def test_build_refuses_a_quoted_tilde_or_a_users_folder_as_work_dir(tmp_path, monkeypatch, capsys, work):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("chapter 1")
    rc = main(["build", "--recipe", "smoke", "--out", "out", "--work-dir", work])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert ("starts with '~'" in err) if work == "~" else ("thesis.tex" in err and "did not write" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]


# ---------------------------------------------------------------------------------------------
# 3. Cards and shards


def _set_card(folder: Path, header: str) -> None:
    (folder / "README.md").write_text(f"---\n{header}\n---\n\n# t\n")


@pytest.mark.parametrize(
    "header, message",
    [
        ("spurbench: !!python/object:os.system {kind: shift}", "is not valid YAML"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, c in zip("abcdef", "bcdefg")
            ),
            "expands to more than",
        ),
        ("pretty_name: " + "x" * (1 << 20), "over the 1024 KiB"),
        ("- just\n- a list", "is not a mapping"),
        ("spurbench: shift", "`spurbench:` that is not a mapping"),
        ("dataset_info: 3", "`dataset_info:` that is not a mapping"),
        ("key: [unclosed", "is not valid YAML"),
    ],
)
def test_a_card_that_cannot_be_read_safely_is_one_line_everywhere(tmp_path, header, message):
    out = _write(tmp_path / "ds", kind="shift")
    _set_card(out, header)
    before = _snapshot(out)
    for read in (sd.open_dataset_folder, sd.read_kind, sd.read_card, sd.split_names):
        with pytest.raises(SpurbenchError, match=message) as err:
            read(out)
        assert "card of dataset" in _one_line(err)
    assert _snapshot(out) == before


@pytest.mark.parametrize("path", ["../other/data/x.parquet", "/etc/hostname", "data/../../x.parquet"])
def test_a_card_naming_data_files_outside_its_folder_is_refused(tmp_path, path):
    out = _write(tmp_path / "ds")
    _set_card(out, f"configs:\n- config_name: default\n  data_files:\n  - split: test\n    path: {path}")
    for read in (sd.open_dataset_folder, sd.read_card, sd.read_kind):
        with pytest.raises(
            SpurbenchError, match="card of dataset .*\\(configs\\) names the path .*leads out of"
        ) as err:
            read(out)
        _one_line(err)
    _set_card(out, "configs:\n- config_name: default\n  data_files: [{split: test, path: [3]}]")
    with pytest.raises(SpurbenchError, match="names a data file that is not a path"):
        sd.open_dataset_folder(out)


def test_a_broken_card_is_not_scored_as_a_spurious_set(tmp_path, capsys):
    out = _write(tmp_path / "ds", kind="shift")
    text = (out / "README.md").read_text()
    (out / "README.md").write_text(text.replace("spurbench:", "spurbench: !!python/object:builtins.dict", 1))
    with pytest.raises(SpurbenchError, match="not valid YAML"):
        sd.read_kind(out)


def test_an_oversized_card_file_is_refused_before_reading(tmp_path):
    out = _write(tmp_path / "ds")
    with open(out / "README.md", "a") as fh:
        fh.write("x" * (17 << 20))
    with pytest.raises(SpurbenchError, match="over the 16 MiB"):
        sd.open_dataset_folder(out)


def test_a_shard_of_another_split_with_a_prefix_name_is_not_read(tmp_path):
    out = _write(tmp_path / "ds", n=2)
    other = _write(tmp_path / "other", n=3)
    shutil.copy(sd.data_files(other, "test")[0], out / "data" / "test-hard-00000-of-00001.parquet")
    assert [p.name for p in sd.data_files(out, "test")] == [sd.data_files(tmp_path / "ds", "test")[0].name]
    opened = sd.open_dataset_folder(out)
    assert len(opened.split("test")) == 2 and len(opened.split("test-hard")) == 3
    assert opened.split_names == ["test", "test-hard"]


def test_split_reader_decodes_images_and_leaves_no_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    out = _write(tmp_path / "ds", n=2)
    ds, digest = sd.read_split(out, "test")
    assert ds[0]["image"].size == (8, 8) and digest == sd.fingerprint(out, "test")
    assert np.array_equal(np.asarray(ds[1]["image"]), np.asarray(_row(seed=1)["image"]))
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------------------------------------
# 2. Waterbirds metadata and images


def _rewrite_first_row(root: Path, name: str) -> None:
    meta = root / "metadata.csv"
    rows = list(csv.reader(meta.open()))
    rows[1][1] = name
    with meta.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize("name", ["/etc/hostname", "../secret.jpg", "001.Albatross/../../secret.jpg"])
def test_waterbirds_refuses_a_path_leaving_its_folder(tmp_path, name):
    root = make_waterbirds_tree(tmp_path / "wb")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.jpg")
    _rewrite_first_row(root, name)
    with pytest.raises(SpurbenchError, match="line 2 \\(img_filename\\) names the path .*leads out of") as err:
        import_waterbirds(root, tmp_path / "out")
    _one_line(err)
    assert not (tmp_path / "out").exists()


def test_waterbirds_refuses_a_truncated_jpeg_with_the_row_named(tmp_path):
    root = make_waterbirds_tree(tmp_path / "wb")
    first = next(csv.DictReader((root / "metadata.csv").open()))["img_filename"]
    data = (root / first).read_bytes()
    (root / first).write_bytes(data[: len(data) // 2])
    with pytest.raises(SpurbenchError, match=f"cannot read image .*{first}.*named in metadata.csv.*truncated") as err:
        import_waterbirds(root, tmp_path / "out")
    _one_line(err)
    assert not (tmp_path / "out").exists()


def _huge_png(path: Path) -> Path:
    Image.new("1", (8200, 8200)).save(path)  # 1 bit a pixel: a few KB on disk, over the limit when decoded
    return path


def test_waterbirds_refuses_an_oversized_image_before_decoding(tmp_path):
    root = make_waterbirds_tree(tmp_path / "wb")
    _huge_png(root / "huge.png")
    _rewrite_first_row(root, "huge.png")
    with pytest.raises(SpurbenchError, match="huge.png.* is 8200 x 8200 pixels, over spurbench's limit") as err:
        import_waterbirds(root, tmp_path / "out")
    _one_line(err)


def test_encode_image_bounds_size_and_refuses_non_images(tmp_path):
    with pytest.raises(SpurbenchError, match="over spurbench's limit"):
        sd.encode_image(_huge_png(tmp_path / "huge.png"))
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(SpurbenchError, match="x.png.*not an image"):
        sd.encode_image(tmp_path / "x.png")


# ---------------------------------------------------------------------------------------------
# Fuzzing the card reader: a valid card or one SpurbenchError, nothing else, never a hang

_yaml_bits = st.sampled_from(
    [
        "a: 1",
        "spurbench: {kind: shift}",
        "spurbench: !!python/object:os.system x",
        "x: &r [1, 2]",
        "y: *r",
        "z: [*r, *r, *r]",
        "!!binary",
        "- item",
        "{",
        "key: 'unterminated",
        "dataset_info: {splits: [{name: test}]}",
        "dataset_info: []",
        "configs: 3",
        "configs: [{data_files: [{split: test, path: ../x}]}]",
        "configs: [{data_files: data/*.parquet}]",
        "tags: x",
        "pretty_name: " + "y" * 5000,
        "? complex\n: key",
        "\t",
        "---",
        "%YAML 1.1",
        "!!set {a, b}",
        "date: 2001-12-14",
    ]
)


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.one_of(_yaml_bits, st.text(max_size=60)), max_size=12),
    body=st.text(max_size=40),
)
def test_card_reader_returns_a_card_or_one_spurbench_error(tmp_path, lines, body):
    text = "---\n" + "\n".join(lines) + "\n---\n" + body
    try:
        meta = sd._checked_card_paths(tmp_path, sd._parse_card_meta(text, "fuzz"))
        card = sd._card_from(tmp_path, meta, text)
        assert isinstance(meta, dict) and isinstance(card.pretty_name, str)
        sd._split_names(tmp_path, meta)
        sd._checked_kind(meta.get("spurbench") or {}, "fuzz")
    except SpurbenchError as err:
        assert "\n" not in str(err)
