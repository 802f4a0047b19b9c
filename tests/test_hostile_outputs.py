"""Hostile inputs against every output that is not a dataset folder or the board store (issue 21): `spurbench
leaderboard --out` (md, csv, json, eval-results, html), `spurbench verify` (--out, --page) and `spurbench finetune
--out`. Each case runs the real command and checks the one-line error (or the safe behaviour) and that the user's
files are byte-identical afterwards."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_leaderboard import DATASET, make_entry, write_csv

from spurbench import dataset as sd
from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.evaluate import leaderboard as lb
from spurbench.files import RECORD_NAME


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (about 100 bytes; decoding it would need width*height*3 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


HUGE_PNG = _png_header(30000, 30000)


def _row(image, label: int = 1) -> dict:
    return dict(
        image=image,
        label=label,
        class_name="x",
        spurious_feature="f",
        component=-1,
        source="reference",
        builder="t",
        prompt="",
        seed=-1,
    )


def _small_set(folder: Path, image=None) -> Path:
    rows = [_row(np.full((16, 16, 3), 40 * i, np.uint8), label=i) for i in range(3)]
    if image is not None:
        rows.append(_row(image))
    return sd.write_dataset(folder, {"test": rows}, sd.DatasetCard("hostile"))


def _patch_column(folder: Path, column: str, row: int, value) -> None:
    """Edit one cell of a written set's shard in place (as a hand-edited download would be)."""
    shard = next((folder / "data").glob("test-*.parquet"))
    table = pq.read_table(shard)
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.column_names.index(column)
    table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    pq.write_table(table, shard)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys, *needles: str) -> str:
    text = capsys.readouterr().err.strip()
    assert "Traceback" not in text, text
    lines = [
        line for line in text.splitlines() if ": warning: " not in line and "%|" not in line
    ]  # the html page warns of no images
    assert len(lines) == 1, text
    err = lines[0]
    for needle in needles:
        assert needle in err, err
    return err


def _users_folder(tmp_path: Path) -> Path:
    user = tmp_path / "mine"
    (user / "images" / "trip").mkdir(parents=True)
    (user / "images" / "trip" / "photo1.jpg").write_bytes(b"\xff\xd8 my holiday")
    (user / "index.html").write_text("<p>my own page</p>")
    (user / "leaderboard.md").write_text("my notes\n")
    return user


@pytest.fixture()
def board(tmp_path) -> Path:
    path = tmp_path / "lb" / "leaderboard.json"
    hub = {**DATASET, "id": "org/spurious-set", "revision": "abc123"}
    for model, rate, ap in (("resnet50.a1_in1k", 0.4, 0.7), ("..", 0.2, 0.9), ("evil\x1b[31m\nname|x", 0.3, 0.8)):
        rel = write_csv(path.parent, model, np.ones(12, bool))
        lb.record_entry(path, hub, make_entry(model, rate, ap, rel))
    return path


# ---------------------------------------------------------------------------------------------
# leaderboard --out


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "eval-results", "html"])
def test_a_users_folder_is_refused_by_every_format(board, tmp_path, capsys, fmt):
    user = _users_folder(tmp_path)
    before = _snapshot(user)
    assert main(["leaderboard", "--leaderboard", str(board), "--format", fmt, "--out", str(user)]) == 2
    _one_line(capsys, "which spurbench did not write")
    assert _snapshot(user) == before


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "eval-results", "html"])
def test_rewriting_its_own_output_works_and_keeps_a_file_the_user_added(board, tmp_path, capsys, fmt):
    out = tmp_path / "out"
    args = ["leaderboard", "--leaderboard", str(board), "--format", fmt, "--out", str(out)]
    assert main(args) == 0
    assert (out / RECORD_NAME).is_file()
    # a file the user put beside (or inside images/) survives the next run byte for byte
    (out / "images" / "trip").mkdir(parents=True, exist_ok=True)
    (out / "images" / "trip" / "photo1.jpg").write_bytes(b"mine")
    assert main(args) == 0
    assert (out / "images" / "trip" / "photo1.jpg").read_bytes() == b"mine"
    capsys.readouterr()


@pytest.mark.parametrize(("fmt", "name"), [("md", "leaderboard.md"), ("html", "index.html")])
def test_a_changed_output_is_not_replaced(board, tmp_path, capsys, fmt, name):
    out = tmp_path / "out"
    args = ["leaderboard", "--leaderboard", str(board), "--format", fmt, "--out", str(out)]
    assert main(args) == 0
    (out / name).write_text("edited by hand")
    assert main(args) == 2
    _one_line(capsys, "was changed since spurbench wrote it")
    assert (out / name).read_text() == "edited by hand"


def test_a_model_named_dotdot_stays_inside_eval_results_out(board, tmp_path, capsys):
    out = tmp_path / "er"
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "eval-results", "--out", str(out)]) == 0
    written = [Path(p) for p in capsys.readouterr().out.split()]
    assert len(written) == 3
    assert not (tmp_path / ".eval_results").exists()
    for p in written:
        p.resolve().relative_to(out.resolve())  # raises if outside
        assert not p.relative_to(out).parts[0].startswith(".")


def test_names_with_escape_codes_and_newlines_are_made_visible_in_md(board, capsys):
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "md"]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "evil\\x1b[31m\\nname\\|x" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in rows)  # no table line broken by the newline


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_out_that_is_a_file_a_dangling_link_or_a_quoted_tilde(board, tmp_path, capsys, fmt):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nowhere")
    for out, needle in ((a_file, "is a file"), (link, "symbolic link to nothing"), ("~", "did not expand")):
        assert main(["leaderboard", "--leaderboard", str(board), "--format", fmt, "--out", str(out)]) == 2
        _one_line(capsys, needle)
    assert a_file.read_text() == "mine" and not (tmp_path / "nowhere").exists() and not Path("~").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_read_only_out_is_one_line(board, tmp_path, capsys, fmt):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["leaderboard", "--leaderboard", str(board), "--format", fmt, "--out", str(out)]) == 2
        _one_line(capsys, str(out), "give a folder you can write to")
    finally:
        out.chmod(0o700)


def test_a_read_only_out_is_one_line_even_for_root(board, tmp_path, monkeypatch, capsys):
    """Root ignores permissions: the write itself fails instead (as on a read-only mount)."""
    import spurbench.files as files

    def fail(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "atomic_write", fail)
    out = tmp_path / "ro"
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "md", "--out", str(out)]) == 2
    _one_line(capsys, "cannot write into --out", "Permission denied")


# ---------------------------------------------------------------------------------------------
# images over the size limit on the page


def test_the_page_shows_a_placeholder_for_an_image_over_the_limit(tmp_path):
    from spurbench.evaluate.page_data import _split_shots

    folder = _small_set(tmp_path / "ds", {"bytes": HUGE_PNG, "path": None})
    shots = _split_shots(sd.open_dataset_folder(folder), "test", tmp_path / "images")
    assert len(shots) == 4 and [s.left_out for s in shots[:3]] == ["", "", ""]
    assert "row 3's image is far larger, over spurbench's limit" in shots[3].left_out  # PIL's own bound: no size
    assert (tmp_path / "images" / "test" / "000003.jpg").stat().st_size > 0  # the placeholder


# ---------------------------------------------------------------------------------------------
# verify


def _verify(*args: str) -> int:
    return main(["verify", *args])


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))


def test_verify_null_image_and_label_out_of_range_are_one_line_naming_the_row(tmp_path, capsys, private_cache):
    cases = []
    null = _small_set(tmp_path / "null")
    _patch_column(null, "image", 1, None)
    cases.append((null, "row 1 of split 'test'", "has no image (null)"))
    label = _small_set(tmp_path / "label")
    _patch_column(label, "label", 2, 5000)
    cases.append((label, "row 2 of split 'test'", "has label 5000"))
    capsys.readouterr()  # the sets' writing bars
    for folder, *needles in cases:
        before = _snapshot(folder)
        assert _verify("--dataset", str(folder), "--detector", "tiny", "--out", str(tmp_path / "v")) == 2
        _one_line(capsys, *needles)
        assert _snapshot(folder) == before and not (tmp_path / "v").exists()


def test_verify_refuses_an_image_over_the_limit_by_row(tmp_path, capsys, private_cache):
    folder = _small_set(tmp_path / "huge", {"bytes": HUGE_PNG, "path": None})
    assert _verify("--dataset", str(folder), "--detector", "tiny", "--out", str(tmp_path / "v")) == 2
    _one_line(capsys, "row 3 of split 'test'", "over spurbench's limit")
    assert not (tmp_path / "v").exists()


def test_verify_out_inside_the_dataset_is_refused(tmp_path, capsys):
    folder = _small_set(tmp_path / "ds")
    before = _snapshot(folder)
    assert _verify("--dataset", str(folder), "--detector", "tiny", "--out", str(folder / "sub")) == 2
    _one_line(capsys, "lies inside --dataset")
    assert _snapshot(folder) == before


def test_verify_refuses_a_users_file_named_like_its_detections_file(tmp_path, capsys, private_cache):
    from spurbench.verify import resume_file

    folder = _small_set(tmp_path / "ds")
    out = tmp_path / "v"
    mine = resume_file(out)
    mine.write_text("my own lines\n")
    assert _verify("--dataset", str(folder), "--detector", "tiny", "--out", str(out)) == 2
    _one_line(capsys, "is not a detections file spurbench wrote")
    assert mine.read_text() == "my own lines\n" and not out.exists()


def test_verify_page_refuses_a_users_folder_and_keeps_a_users_review_image(tmp_path, capsys):
    from spurbench.evaluate.review import render_review_page

    folder = _small_set(tmp_path / "ds")
    user = _users_folder(tmp_path)
    (user / "images" / "review").mkdir()
    (user / "images" / "review" / "mine.jpg").write_bytes(b"mine")
    before = _snapshot(user)
    assert _verify("--dataset", str(folder), "--page", str(user)) == 2
    _one_line(capsys, "which spurbench did not write")
    assert _snapshot(user) == before
    # a page folder spurbench wrote: a file the user adds later survives the next page
    page = tmp_path / "page"
    with pytest.raises(SpurbenchError, match="is not verified"):
        render_review_page(folder, page)
    assert not any(page.iterdir())  # refused before anything was written


# ---------------------------------------------------------------------------------------------
# finetune


def _finetune(data: Path, out: str, *extra: str) -> int:
    args = ["finetune", "--panel", "offline", "--model", "tf_efficientnet_lite0", "--data", str(data)]
    return main([*args, "--out", out, "--epochs", "1", *extra])


def test_finetune_out_refusals_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _small_set(tmp_path / "ds")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "checkpoint.pt").write_bytes(b"not a checkpoint")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cases = [
        (str(junk), "checkpoint.pt, which spurbench did not write"),
        (str(a_file), "is a file"),
        ("~", "did not expand"),
        (str(data), "is --data"),
        (str(data / "data"), "lies inside --data"),
    ]
    before = {p: _snapshot(p) for p in (data, junk)}
    for out, needle in cases:
        assert _finetune(data, out) == 2, out
        _one_line(capsys, needle)
    assert {p: _snapshot(p) for p in (data, junk)} == before
    assert a_file.read_text() == "mine" and not (tmp_path / "~").exists()


def test_finetune_never_writes_over_its_own_weights(tmp_path, capsys):
    data = _small_set(tmp_path / "ds")
    ft = tmp_path / "ft"
    ft.mkdir()
    (ft / "model.safetensors").write_bytes(b"my weights")
    assert _finetune(data, str(ft), "--weights", str(ft / "model.safetensors")) == 2
    # --panel and --weights together are refused first; without --panel the overlap check answers
    capsys.readouterr()
    args = ["finetune", "--model", "tf_efficientnet_lite0", "--weights", str(ft / "model.safetensors")]
    assert main([*args, "--data", str(data), "--out", str(ft), "--epochs", "1"]) == 2
    _one_line(capsys, "holds --weights")
    assert (ft / "model.safetensors").read_bytes() == b"my weights"


def test_shift_page_masks_never_follow_a_path_out_of_the_set_nor_decode_a_bomb(tmp_path):
    """A DDB set's mask cell naming '../secret.png' (a real PNG beside the set) or holding a PNG whose header claims
    30000 x 30000 pixels: the page shows the pair without a mask, reads nothing outside the set, decodes nothing."""
    import io as _io
    import struct
    import zlib

    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature
    from PIL import Image as PILImage

    from spurbench.evaluate.shift_page import _mask_thumbnails

    buf = _io.BytesIO()
    PILImage.new("L", (4, 4), 255).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    (tmp_path / "secret.png").write_bytes(bytes(png))
    ihdr = struct.pack(">II", 30000, 30000) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    (tmp_path / "set").mkdir()
    ds = Dataset.from_dict(
        {
            "mask": [
                {"bytes": None, "path": "../secret.png"},
                {"bytes": bytes(png), "path": None},
                {"bytes": buf.getvalue(), "path": None},
            ],
            "source_index": [-1, -1, -1],
            "group": ["a", "b", "c"],
        },
        features=Features(mask=ImageFeature(decode=False), source_index=Value("int64"), group=Value("string")),
    )
    out = _mask_thumbnails(tmp_path / "set", ds, tmp_path / "images", 16)
    assert out[0]["mask"] is None and out[1]["mask"] is None
    assert out[2]["mask"] == "images/masks/000002.png"  # a normal mask still drawn
