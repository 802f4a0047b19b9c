"""transformers checkpoints whose id2label does not name the label set, and downloads that go wrong (a
checksum mismatch, a server that stops early): one line each, and nothing half-written left in place."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from spurbench import imagenet
from spurbench.download import fetch
from spurbench.errors import SpurbenchError
from spurbench.zoo.transformers import label_order

TWO = ["landbird", "waterbird"]


@pytest.mark.parametrize(
    "id2label, names, match",
    [
        ({0: "landbird"}, TWO, r"'m' has 1 outputs \(config id2label\) but the dataset's label set \(landbird, water"),
        (
            {0: "landbird", 2: "waterbird"},
            TWO,
            r"'m' has 2 outputs \(config id2label\) but the dataset's label set \(landbird, waterbird\) has 2",
        ),
        ({0: "landbird", 1: "seabird"}, TWO, r"'m': output 1 label 'seabird' names no class of the dataset's label"),
        ({0: "landbird", 1: "LANDBIRD"}, TWO, r"'m': outputs 0 and 1 both name class 0 of the dataset's label set"),
        (
            {i: f"class {i}" for i in range(10)},
            None,
            r"'m' has 10 outputs \(config id2label\) but ImageNet-1k has 1000",
        ),
    ],
)
def test_an_id2label_that_does_not_name_the_label_set(id2label, names, match):
    with pytest.raises(SpurbenchError, match=match):
        label_order(id2label, names, "m")


def test_an_imagenet_id2label_with_a_shared_name_is_ambiguous():
    labels = {k: imagenet.wnids()[k] for k in range(1000)}
    assert label_order(labels, None, "m") == list(range(1000))
    labels[5], labels[6] = labels[6], "crane"  # "crane" names two ImageNet classes (the bird and the machine)
    with pytest.raises(SpurbenchError, match=r"'m': output 6 label 'crane' is ambiguous in \(2 classes\)"):
        label_order(labels, None, "m")


def test_a_download_with_the_wrong_checksum_is_moved_aside(tmp_path):
    source = tmp_path / "release.zip"
    source.write_bytes(b"zip bytes")
    target = tmp_path / "get" / "release.zip"
    with pytest.raises(SpurbenchError, match=r"'release.zip' has SHA-256 [0-9a-f]{64}, not the expected 0{64}; moved"):
        fetch(source.as_uri(), target, "0" * 64)
    assert not target.exists() and (target.parent / "release.zip.bad").read_bytes() == b"zip bytes"


class _ShortServer(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 10 and closes: a dropped connection."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_download_cut_short_is_kept_as_a_part_to_resume(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _ShortServer)  # port 0: the OS picks a free one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/release.zip"
        target = tmp_path / "release.zip"
        with pytest.raises(SpurbenchError, match=r"download of .* stopped at 10 of 1000 bytes; re-run"):
            fetch(url, target, None)
        assert not target.exists()
        assert Path(str(target) + ".part").read_bytes() == b"0123456789"
    finally:
        server.shutdown()
        server.server_close()
