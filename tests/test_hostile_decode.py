"""Hostile images: a header claiming a huge image is refused by name before any decoder runs, on every path that
decodes images (eval's spurious rows and positives, both decode paths; a build's references), and the image-size
guard itself never fails with anything but a one-line SpurbenchError (a property test over mutated headers).

The bomb is a tiny valid PNG whose IHDR claims 30000 x 30000 (the issue's 199 KB PNG decodes to 2.7 GB: 14.1 GB
peak and 3.5 minutes in the default eval before this guard), and 9000 x 9000: under Pillow's own bomb limit, so
only spurbench's MAX_IMAGE_PIXELS refuses it on the PIL path.
"""

from __future__ import annotations

import io
import resource
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import _photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_evaluation import _lite0_file, _snapshot, cat_row
from test_files import _png_header_claiming

from spurbench import cli, imagenet
from spurbench.dataset import DatasetCard, write_dataset
from spurbench.errors import SpurbenchError
from spurbench.untrusted import MAX_IMAGE_PIXELS, image_size

CAT = 285  # Egyptian cat: the photo dataset's chelsea rows


def _bomb_dataset(root: Path, w: int, h: int) -> Path:
    rows = [cat_row(_photo("chelsea")), cat_row({"bytes": _png_header_claiming(w, h), "path": "bomb.png"})]
    return write_dataset(root / f"bomb{w}", {"test": rows}, DatasetCard(pretty_name="bomb"))


def _eval(capsys, args: list[str]) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, growth of this process's peak memory in GB) of an in-process `spurbench eval`
    of the real offline EfficientNet-Lite0 (no batch calibration: --batch-size)."""
    capsys.readouterr()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    code = cli.main(
        [
            "eval",
            "--model",
            "tf_efficientnet_lite0",
            "--weights",
            _lite0_file(),
            "--key-map",
            "positional",
            "--batch-size",
            "2",
            "--workers",
            "0",
            *args,
        ]
    )
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 2**20  # ru_maxrss is in KiB on Linux
    return code, capsys.readouterr().err, seconds, grown


def _assert_refused(code: int, err: str, pattern: str, seconds: float, grown: float) -> None:
    import re

    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    # the old path allocated the decoded image (2.7 GB at 30000 x 30000) before failing or scoring it
    assert seconds < 60 and grown < 1.0, (seconds, grown)


@pytest.mark.parametrize("decode", ["torchvision", "pil"])
def test_eval_refuses_a_row_whose_header_claims_a_huge_image(tmp_path, capsys, decode):
    # past twice Pillow's own bomb limit the guard says "far larger" (Pillow refuses to report the size)
    for w, h, shown in [(30000, 30000, "far larger"), (9000, 9000, "9000 x 9000 pixels")]:
        data = _bomb_dataset(tmp_path, w, h)
        board = tmp_path / f"board{w}"
        board.mkdir()
        (board / "notes.txt").write_text("mine")
        before = _snapshot(board)
        code, err, seconds, grown = _eval(
            capsys, ["--dataset", str(data), "--leaderboard", str(board / "lb.json"), "--decode", decode]
        )
        _assert_refused(
            code,
            err,
            rf"image of dataset .* row 1 \(path 'bomb.png'\): it is {shown}, over spurbench's limit of "
            rf"{MAX_IMAGE_PIXELS} pixels .*\(it was not decoded\)$",
            seconds,
            grown,
        )
        assert _snapshot(board) == before  # no entry, no predictions, nothing of the user's touched


def test_eval_refuses_a_huge_positive_by_its_file(tmp_path, capsys, photo_dataset):
    positives = tmp_path / "pos" / imagenet.wnids()[CAT]
    positives.mkdir(parents=True)
    Image.fromarray(_photo("chelsea")).save(positives / "a_cat.png")
    (positives / "b_bomb.png").write_bytes(_png_header_claiming(30000, 30000))
    board = tmp_path / "board"
    code, err, seconds, grown = _eval(
        capsys,
        [
            "--dataset",
            str(photo_dataset.path),
            "--positives",
            str(tmp_path / "pos"),
            "--leaderboard",
            str(board / "lb.json"),
        ],
    )
    _assert_refused(
        code,
        err,
        r"positive image of '.*pos' '.*b_bomb\.png': it is far larger, over spurbench's limit",
        seconds,
        grown,
    )
    assert not board.exists() or not any(p.suffix in (".json", ".csv") for p in board.rglob("*"))


def test_build_refuses_a_huge_reference_image_by_name(tmp_path):
    from spurbench.generate.references import check_image, load_image

    bomb = tmp_path / "refs" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(_png_header_claiming(9000, 9000))
    start = time.perf_counter()
    with pytest.raises(SpurbenchError, match=r"reference image '.*bomb\.png' is 9000 x 9000 pixels, over"):
        check_image(bomb)
    with pytest.raises(SpurbenchError, match=r"image '.*bomb\.png' is 9000 x 9000 pixels, over"):
        load_image(bomb)
    assert time.perf_counter() - start < 5
    assert bomb.read_bytes() == _png_header_claiming(9000, 9000)


# ---------------------------------------------------------------------------------------------
# the image-size guard under fuzzing


def _encoded(fmt: str, size=(5, 3)) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3))
    img.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")}


#: where each format keeps its width and height (PNG's IHDR, GIF's screen, BMP's info header, WEBP's VP8 frame)
SIZE_FIELDS = {"PNG": (16, 20), "GIF": (6, 8), "BMP": (18, 22), "WEBP": (26, 28), "JPEG": ()}


@st.composite
def hostile_images(draw) -> bytes:
    """Random bytes, or a small valid image of one of five formats with its size fields set to large values and
    other bytes of its header overwritten, inserted or cut (the format's signature mostly kept, so the parsers run)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256))
    fmt = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[fmt])
    for at in SIZE_FIELDS[fmt]:
        if draw(st.booleans()):
            width = 2 if fmt in ("GIF", "WEBP") else 4
            big = draw(st.sampled_from([0xFFFF, 0x7530, 0x2329, 0x7FFFFFFF, 0, 1]))
            order = "little" if fmt in ("GIF", "BMP", "WEBP") else "big"
            data[at : at + width] = min(big, 256**width - 1).to_bytes(width, order)
    if fmt == "PNG" and draw(st.booleans()):  # a consistent IHDR checksum, as a crafted bomb carries
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "insert", "cut"]))
        at = draw(st.integers(2, min(len(data), 64)))
        if kind == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_images())
def test_image_size_returns_a_bounded_size_or_one_line_error(data):
    start = time.perf_counter()
    try:
        w, h = image_size(data, "row 3")
    except SpurbenchError as err:
        assert "row 3" in str(err) and "\n" not in str(err)
    else:
        assert 0 < w and 0 < h and w * h <= MAX_IMAGE_PIXELS
    assert time.perf_counter() - start < 1.0
