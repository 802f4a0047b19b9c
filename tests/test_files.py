"""The shared guards every writer and reader goes through: spurbench.files (atomic writes, the record of what
spurbench wrote, confined paths, safe file names) and spurbench.untrusted (bounded images, YAML, printable text)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from spurbench.errors import SpurbenchError, first_line
from spurbench.files import (
    RECORD_NAME,
    WrittenFolder,
    atomic_write,
    has_record,
    inside,
    remove_stale_temporaries,
    safe_filename,
    temporary_name,
)
from spurbench.untrusted import MAX_IMAGE_PIXELS, check_expansion, image_size, load_yaml, open_image, printable


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_new_folder_is_claimed_and_its_files_recorded(tmp_path):
    out = WrittenFolder.claim(tmp_path / "new", "--out")
    out.write("x/y.txt", "hello")
    record = json.loads((tmp_path / "new" / RECORD_NAME).read_text())
    assert list(record["files"]) == ["x/y.txt"]
    again = WrittenFolder.claim(tmp_path / "new", "--out")
    again.write("x/y.txt", "hello again")  # spurbench's own file: replaced
    assert (tmp_path / "new" / "x" / "y.txt").read_text() == "hello again"
    assert again.foreign() == []


def test_a_users_folder_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "README.md").write_text("notes")
    with pytest.raises(SpurbenchError, match="README.md, which spurbench did not write"):
        WrittenFolder.claim(tmp_path / "u", "--out")
    assert (tmp_path / "u" / "README.md").read_text() == "notes"
    assert not has_record(tmp_path / "u")


def test_a_file_the_user_put_or_changed_in_spurbenchs_folder_is_never_replaced(tmp_path):
    out = WrittenFolder.claim(tmp_path / "o", "--out")
    out.write("index.html", "<p>spurbench</p>")
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(SpurbenchError, match="was not written by spurbench"):
        out.write("notes.txt", "overwritten")
    (tmp_path / "o" / "index.html").write_text("edited by hand")
    with pytest.raises(SpurbenchError, match="was changed since spurbench wrote it"):
        WrittenFolder.claim(tmp_path / "o").write("index.html", "again")
    assert (tmp_path / "o" / "index.html").read_text() == "edited by hand"
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"
    assert sorted(out.foreign()) == ["index.html", "notes.txt"]
    with pytest.raises(SpurbenchError, match="holds index.html, notes.txt"):
        out.check_all_replaceable()
    out.remove("notes.txt")  # not ours: forgotten, not deleted
    assert (tmp_path / "o" / "notes.txt").exists()


def test_claim_refuses_a_file_a_dangling_link_and_an_unexpanded_tilde(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SpurbenchError, match="is a file, not a folder"):
        WrittenFolder.claim(tmp_path / "f")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SpurbenchError, match="symbolic link to nothing"):
        WrittenFolder.claim(tmp_path / "dangling")
    with pytest.raises(SpurbenchError, match="did not expand"):
        WrittenFolder.claim("~/x")


@pytest.mark.parametrize(
    "record, why",
    [
        ("not json", "not JSON"),
        (json.dumps({"writer": "someone", "files": {}}), "no `files` table"),
        (json.dumps({"writer": "spurbench", "files": {"../outside.txt": "0" * 64}}), "leads out of"),
        (json.dumps({"writer": "spurbench", "files": {"a": "short"}}), "entry 'a'"),
    ],
)
def test_a_forged_record_is_refused(tmp_path, record, why):
    (tmp_path / RECORD_NAME).write_text(record)
    with pytest.raises(SpurbenchError, match=why):
        WrittenFolder.claim(tmp_path)


def test_inside_refuses_every_way_out(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "store", "a/b.csv", "the index") == tmp_path / "store" / "a" / "b.csv"
    for bad in ("../x", "/etc/passwd", "a/../../x", "~/x", "", "a\x00b", "link/x"):
        with pytest.raises(SpurbenchError, match="leads out of"):
            inside(tmp_path / "store", bad, "the index")


def test_safe_filename_keeps_plain_names_and_separates_changed_ones():
    assert safe_filename("resnet50.a1_in1k") == "resnet50.a1_in1k"
    for hostile in ("..", ".", "a/b", "../../etc", "x\nrm -rf", "\x1b[31mred", "", "é" * 300):
        name = safe_filename(hostile)
        assert "/" not in name and not name.startswith(".") and len(name) <= 120 and name
    assert safe_filename("a/b") != safe_filename("a_b")


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".board.json.spurbench-tmp-{pid}-0123abcd"
    stale.write_text("half")
    live = temporary_name(tmp_path / "board.json")
    live.write_text("being written")
    user = tmp_path / ".board.json.tmp-123"  # a name a user (or an older tool) might choose: never touched
    user.write_text("precious")
    assert remove_stale_temporaries(tmp_path) == [stale.name]
    assert live.exists() and user.exists() and not stale.exists()


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_claiming(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (a decompression bomb's header; its data is a tiny valid image's)."""
    import struct
    import zlib

    data = bytearray(_png(1, 1))
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_image_size_reads_the_header_and_refuses_a_bomb_before_decoding():
    assert image_size(_png(3, 2), "row 0") == (3, 2)
    with pytest.raises(SpurbenchError, match="row 7 is 10000 x 10000 pixels, over spurbench's limit"):
        image_size(_png_header_claiming(10000, 10000), "row 7")
    with pytest.raises(SpurbenchError, match="row 7 is far larger, over spurbench's limit"):
        image_size(_png_header_claiming(30000, 30000), "row 7")  # past PIL's own bomb limit too
    with pytest.raises(SpurbenchError, match="cannot read row 1: not an image"):
        image_size(b"GIF89 not really", "row 1")
    with open_image(_png(8192, 1), "row 2") as im:
        assert im.size == (8192, 1)
    assert MAX_IMAGE_PIXELS == 8192 * 8192


def test_load_yaml_refuses_python_tags_alias_bombs_and_huge_text():
    assert load_yaml("a: [1, 2]", "card") == {"a": [1, 2]}
    with pytest.raises(SpurbenchError, match="card is not valid YAML"):
        load_yaml("a: !!python/object:os.system {}", "card")
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefg", "bcdefgh")
    )
    assert len(bomb) < 600
    with pytest.raises(SpurbenchError, match="card expands to more than"):
        load_yaml(bomb, "card")
    with pytest.raises(SpurbenchError, match="over the 1024 KiB"):
        load_yaml("a: " + "x" * (1 << 20), "card")
    check_expansion({"k": ["v"] * 10}, "entry")


def test_printable_escapes_newlines_and_terminal_codes():
    assert printable("model\n| x |\x1b[2J") == "model\\n| x |\\x1b[2J"
    assert printable("convnext_tiny.fb_in1k") == "convnext_tiny.fb_in1k"


def test_first_line_names_the_class_and_the_first_line():
    assert first_line(ValueError("bad thing\nstack")) == "ValueError: bad thing"
    assert first_line(KeyError()) == "KeyError"


def test_the_record_is_not_followed_through_a_symlink(tmp_path):
    (tmp_path / "elsewhere.json").write_text(json.dumps({"writer": "spurbench", "files": {}}))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / RECORD_NAME).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(SpurbenchError, match="did not write"):
        WrittenFolder.claim(tmp_path / "o")
    assert os.path.islink(tmp_path / "o" / RECORD_NAME)
