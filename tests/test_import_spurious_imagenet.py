"""`spurbench import spurious-imagenet`: a fake release tree with the documented folder rule (class at
`_`-position 2, component last) and the stray `timestamp.txt`, real photos as its images; `--download`
through a local archive served on 127.0.0.1 (with HTTP Range, to test resuming) and a file:// URL."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from spurbench import dataset as sd
from spurbench import imagenet
from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.importers import spurious_imagenet as importer

# folder -> (class, component, photos); classes 0 (tench: "humans") and 309 (bee: "violet flowers")
FOLDERS = {
    "spurious_class_0_tench_humans_1": (0, 1, ["astronaut", "coffee"]),
    "spurious_class_309_bee_flowers_4": (309, 4, ["chelsea"]),
    "spurious_class_309_bee_leaves_7": (309, 7, ["rocket"]),
}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    images = root / "images"
    for folder, (_, _, photos) in FOLDERS.items():
        (images / folder).mkdir(parents=True)
        for i, name in enumerate(photos):
            Image.fromarray(_photo(name)).save(images / folder / f"{i:03d}_{name}.jpg", quality=90)
    (images / "timestamp.txt").write_text("2022-11-30 12:00\n")
    return root


@pytest.fixture(scope="module")
def archive(release, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "images_100_classes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(release.rglob("*")):
            zf.write(f, f.relative_to(release).as_posix())
    return path


def _meta(folder: Path) -> dict:
    return yaml.safe_load((folder / "README.md").read_text().split("---")[1])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_import_release_tree(release, tmp_path, capsys):
    out = tmp_path / "spurious-imagenet"
    assert main(["import", "spurious-imagenet", str(release), "--out", str(out)]) == 0
    assert "spurbench eval --dataset" in capsys.readouterr().out
    ds = datasets.load_dataset(str(out), split="test")
    # sorted by class, then component; one row per image, the timestamp.txt skipped
    expected = [
        (k, c, f"{folder}/{i:03d}_{n}.jpg") for folder, (k, c, photos) in FOLDERS.items() for i, n in enumerate(photos)
    ]
    assert list(zip(ds["label"], ds["component"], ds["file"])) == expected
    assert set(ds["source"]) == {"reference"} and set(ds["builder"]) == {"spurious_imagenet"}
    table = {c.index: c.spurious_feature for c in imagenet.spurious_imagenet_classes()}
    assert ds["spurious_feature"] == [table[k] for k, _, _ in expected]
    assert ds["class_name"] == [imagenet.class_name(k) for k, _, _ in expected]
    # the JPEG bytes are embedded as they are in the release
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert raw[0]["image"]["bytes"] == (release / "images" / expected[0][2]).read_bytes()
    meta = _meta(out)
    assert meta["spurbench"]["kind"] == "spurious" and meta["spurbench"]["source"] == "spurious_imagenet"
    assert meta["annotations_creators"] == ["expert-generated"]
    text = (out / "README.md").read_text()
    assert "Neuhaus" in text and "Open Images" in text and "@inproceedings" in text
    assert sd.read_kind(out) == "spurious"


@pytest.mark.parametrize(
    "bad, why",
    [
        ("spurious_class_bee_309_4", "part 3 'bee'"),  # class not at position 2
        ("spurious_class_309_bee_x", "last part 'x'"),  # component not last
        ("spurious_class_1309_bee_2", "1309"),  # not an ImageNet class
    ],
)
def test_folder_that_does_not_parse_is_one_line(release, tmp_path, capsys, bad, why):
    tree = tmp_path / "tree"
    shutil.copytree(release, tree)
    (tree / "images" / bad).mkdir()
    # an earlier dataset at --out stays as it was (a folder of other files is refused before anything: test_keep_work.py)
    out = importer.import_release(release, tmp_path / "out")
    before = _snapshot(out)
    capsys.readouterr()  # the set-up's own progress bars
    assert main(["import", "spurious-imagenet", str(tree), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and bad in err and why in err and "naming" in err
    assert _snapshot(out) == before


def test_broken_release_contents_are_one_line(release, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(release, tree)
    folder = tree / "images" / next(iter(FOLDERS))
    (folder / "notes.txt").write_text("x")
    with pytest.raises(SpurbenchError, match="notes.txt.*not an image"):
        importer.import_release(tree, tmp_path / "out")
    (folder / "notes.txt").unlink()
    (folder / "000_astronaut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(SpurbenchError, match="cannot read image .*000_astronaut.jpg.* of the release"):
        importer.import_release(tree, tmp_path / "out")
    with pytest.raises(SpurbenchError, match="not found"):
        importer.import_release(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file, honouring `Range: bytes=N-` with 206 (what the release's server does)."""

    payload = b""
    seen_ranges: list[str] = []

    def do_GET(self):  # noqa: N802
        data, rng = self.payload, self.headers.get("Range")
        self.seen_ranges.append(rng or "")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(archive):
    _RangeHandler.payload = archive.read_bytes()
    _RangeHandler.seen_ranges = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/download/images_100_classes.zip"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_resumes_and_records_sha256(server, archive, tmp_path):
    where, out = tmp_path / "release", tmp_path / "out"
    where.mkdir()
    data = archive.read_bytes()
    half = len(data) // 2
    (where / "images_100_classes.zip.part").write_bytes(data[:half])  # an interrupted earlier download
    assert main(["import", "spurious-imagenet", str(where), "--out", str(out), "--download", "--url", server]) == 0
    assert _RangeHandler.seen_ranges == [f"bytes={half}-"]
    assert (where / "images_100_classes.zip").read_bytes() == data
    assert not (where / "images_100_classes.zip.part").exists()
    sha = hashlib.sha256(data).hexdigest()
    prov = _meta(out)["spurbench"]
    assert prov["archive_sha256"] == sha and prov["archive_url"] == server
    assert sha in (out / "README.md").read_text()
    assert len(datasets.load_dataset(str(out), split="test")) == sum(len(p) for _, _, p in FOLDERS.values())
    # a complete archive is not fetched again
    assert (
        main(
            [
                "import",
                "spurious-imagenet",
                str(where),
                "--out",
                str(out),
                "--download",
                "--url",
                server,
                "--sha256",
                sha,
            ]
        )
        == 0
    )
    assert _RangeHandler.seen_ranges == [f"bytes={half}-"]


def test_download_bad_checksum_and_unreachable_are_one_line(server, archive, tmp_path, capsys):
    where, out = tmp_path / "release", tmp_path / "out"
    assert (
        main(
            [
                "import",
                "spurious-imagenet",
                str(where),
                "--out",
                str(out),
                "--download",
                "--url",
                server,
                "--sha256",
                "0" * 64,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SHA-256" in err and "0" * 64 in err
    assert not out.exists() and not (where / "images_100_classes.zip").exists()
    assert (
        main(
            [
                "import",
                "spurious-imagenet",
                str(where),
                "--out",
                str(out),
                "--download",
                "--url",
                "http://127.0.0.1:9/x.zip",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot download" in err and not out.exists()
    # --url without --download is a mistake, named
    assert main(["import", "spurious-imagenet", str(where), "--out", str(out), "--url", server]) == 2
    assert "--download" in capsys.readouterr().err


def test_download_from_file_url(archive, tmp_path):
    where, out = tmp_path / "release", tmp_path / "out"
    assert (
        main(["import", "spurious-imagenet", str(where), "--out", str(out), "--download", "--url", archive.as_uri()])
        == 0
    )
    assert _meta(out)["spurbench"]["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"PK not really")
    with pytest.raises(SpurbenchError, match="not a zip archive"):
        importer.download_release(not_zip.as_uri(), tmp_path / "other")
