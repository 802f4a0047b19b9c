"""One-line errors no other test triggered, on small inputs and without building a model: decisions files,
`spurbench verify`'s flag combinations, dataset cards and shards, predictions CSVs a board holds, the optional
packages a command needs, and a few argument checks. Each asserts the message and that the user's files are
unchanged where that is the point."""

from __future__ import annotations

import sys

import pytest

from spurbench.cli import main
from spurbench.errors import SpurbenchError


def _one_line(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"spurbench {argv[0]}: error: "), err
    return err


# --- verify: decisions files and flag combinations ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, match",
    [
        ("index,decision\n0,keep\n", r"decisions file '.*' lacks column\(s\) split; it needs the header index,split"),
        ("index,split,decision\nfirst,test,keep\n", r"line 2 has index 'first'; expected a row number"),
        ("index,split,decision\n0,test,maybe\n", r"line 2 has decision 'maybe'; expected keep, drop or clear"),
        ("index,split,decision\n0,test,keep\n0,test,drop\n", r"line 3 decides row 0 of split 'test' twice, differ"),
    ],
)
def test_a_bad_decisions_file_is_one_line(tmp_path, text, match):
    from spurbench.verify import read_decisions

    path = tmp_path / "decisions.csv"
    path.write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        read_decisions(path, {"test": 4})
    assert path.read_text() == text


def test_a_decisions_file_that_is_not_utf8(tmp_path):
    from spurbench.verify import read_decisions

    path = tmp_path / "decisions.csv"
    path.write_bytes(b"index,split,decision\n0,t\xe9st,keep\n")
    with pytest.raises(SpurbenchError, match=r"cannot read decisions file '.*' as CSV \(UnicodeDecodeError\); use the"):
        read_decisions(path, {"test": 4})


@pytest.mark.parametrize(
    "extra, needle",
    [
        (
            ["--page", "P", "--decisions", "d.csv"],
            "--decisions records decisions in a new copy of the dataset: add --out",
        ),
        (["--out", "O", "--margin", "1.5"], "--margin must be between 0 and 1, got 1.5"),
        (["--page", "P", "--threshold", "0.5"], "--detector, --detector-model and --threshold change the dataset: add"),
    ],
)
def test_a_verify_flag_mistake_is_one_line(photo_dataset, tmp_path, extra, needle, capsys):
    argv = ["verify", "--dataset", str(photo_dataset.path)]
    argv += [str(tmp_path / a) if a in ("P", "O", "d.csv") else a for a in extra]
    assert needle in _one_line(argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_verify_without_transformers_is_one_line(photo_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    argv = ["verify", "--dataset", str(photo_dataset.path), "--out", str(tmp_path / "out")]
    assert '`spurbench verify` runs a detector from transformers: pip install "spurbench[build]"' in _one_line(
        argv, capsys
    )
    assert not (tmp_path / "out").exists()


def test_verify_batch_size_below_one(photo_dataset, tmp_path):
    from spurbench.verify import verify_dataset

    with pytest.raises(SpurbenchError, match=r"--batch-size must be at least 1, got 0"):
        verify_dataset(photo_dataset.path, tmp_path / "out", batch_size=0)
    assert not (tmp_path / "out").exists()


# --- dataset cards, image cells and shards ----------------------------------------------------------------------


def test_card_and_cell_checks(tmp_path):
    from datasets import Value

    from spurbench import dataset

    with pytest.raises(
        SpurbenchError, match=r"dataset 'd' column `label` is Value\('int64'\).*, not a ClassLabel; why"
    ):
        dataset.label_names_of({"label": Value("int64")}, "'d'", "why")
    with pytest.raises(SpurbenchError, match=r"dataset 'f' declares kind 'poster' in its card; spurbench knows"):
        dataset._checked_kind({"kind": "poster"}, "f")
    with pytest.raises(
        SpurbenchError, match=r"an image cell points to '.*gone.png', which does not exist; the dataset"
    ):
        dataset._embedded({"bytes": None, "path": str(tmp_path / "gone.png")})
    (tmp_path / "README.md").write_bytes(b"---\npretty_name: caf\xe9\n---\n")
    with pytest.raises(SpurbenchError, match=r"dataset card '.*README.md' is not UTF-8 text; fix or remove it"):
        dataset._read_card_text(tmp_path)
    assert (tmp_path / "README.md").read_bytes() == b"---\npretty_name: caf\xe9\n---\n"


def test_a_damaged_shard_column_read(tmp_path):
    from spurbench.dataset import read_split_column

    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir()
    shard.write_bytes(b"not parquet at all")
    with pytest.raises(
        SpurbenchError, match=r"cannot read split 'test' of '.*' \(.*\); the Parquet shards are damaged"
    ):
        read_split_column(tmp_path, "test", "label")
    assert shard.read_bytes() == b"not parquet at all"


# --- a board's predictions CSVs ---------------------------------------------------------------------------------

_HEADER = "index,label,target_prob,top1,fooled_top1,fooled_top5,top5,top5_probs,split\n"


def _row(i: int) -> str:
    return f"{i},1,0.5,1,0,0,1 2 3 4 5,0.5 0.1 0.1 0.1 0.1,test\n"


def test_predictions_csvs_a_board_cannot_use(tmp_path):
    from spurbench.evaluate.hitstore import _hits_from_csv

    repeated = tmp_path / "repeated.csv"
    repeated.write_text(_HEADER + _row(0) + _row(0))
    with pytest.raises(SpurbenchError, match=r"predictions file '.*repeated.csv' repeats an image index"):
        _hits_from_csv(repeated, 4)
    stale = tmp_path / "stale.csv"
    stale.write_text(_HEADER + _row(0) + _row(7))
    with pytest.raises(SpurbenchError, match=r"has image index 7 outside the split's 4 images \(stale file\?\)"):
        _hits_from_csv(stale, 4)
    link = tmp_path / "link.csv"
    link.symlink_to(stale)
    with pytest.raises(SpurbenchError, match=r"predictions file '.*link.csv' is a symbolic link; re-run `spurbench"):
        _hits_from_csv(link, 8)
    assert repeated.read_text() == _HEADER + _row(0) + _row(0)


def test_export_of_a_board_that_is_not_there(tmp_path):
    from spurbench.evaluate.leaderboard import export

    with pytest.raises(
        SpurbenchError, match=r"no leaderboard at '.*none.json'; create one with `spurbench eval --lead"
    ):
        export(tmp_path / "none.json")
    assert list(tmp_path.iterdir()) == []


def test_folders_that_cannot_be_created(tmp_path):
    from spurbench.evaluate.leaderboard import _written_folder
    from spurbench.files import WrittenFolder

    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    with pytest.raises(SpurbenchError, match=r"cannot create --out '.*a-file/sub': Not a directory; give a writable"):
        WrittenFolder.claim(blocker / "sub", "--out")
    with pytest.raises(SpurbenchError, match=r"cannot create --leaderboard folder '.*a-file/sub': Not a directory"):
        _written_folder(blocker / "sub" / "board.json")
    assert blocker.read_text() == "mine"


def test_page_inputs(tmp_path):
    from spurbench.evaluate.page_common import thumbnail
    from spurbench.evaluate.page_data import _find_dataset

    with pytest.raises(
        SpurbenchError, match=r"--dataset '.*nowhere' is not a folder; give the dataset folder the lead"
    ):
        _find_dataset({}, tmp_path / "board.json", tmp_path / "nowhere")
    # a row without bytes: the page shows a placeholder and the one-line reason
    assert thumbnail(None, tmp_path / "t.jpg", "row 3") == "not shown: row 3 has no image bytes"


def test_the_page_without_its_renderer(tmp_path, monkeypatch, capsys):
    from test_leaderboard import record

    board = tmp_path / "board.json"
    record(board, "resnet18", [1, 0, 1, 1])
    monkeypatch.setitem(sys.modules, "spurbench.evaluate.page", None)  # the page module fails to import
    err = _one_line(
        ["leaderboard", "--leaderboard", str(board), "--format", "html", "--out", str(tmp_path / "page")], capsys
    )
    assert "HTML rendering is unavailable in this install (" in err and "; use --format md or json" in err
    assert not (tmp_path / "page").exists()


# --- optional packages, names and small argument checks --------------------------------------------------------


def test_without_scikit_image_or_open_clip(monkeypatch, tmp_path):
    from spurbench.generate.backgrounds import _skimage
    from spurbench.generate.references import sample_photo
    from spurbench.zoo.open_clip import _import

    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(SpurbenchError, match=r"built-in backgrounds need scikit-image; `pip install scikit-image` or"):
        _skimage("grass")
    with pytest.raises(SpurbenchError, match=r"sample photo 'astronaut' ships with scikit-image, which is not inst"):
        sample_photo("astronaut")
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(SpurbenchError, match=r"open_clip models need the open_clip_torch package; `pip install "):
        _import()


def test_names_and_arguments_that_do_not_exist(tmp_path):
    from spurbench.evaluate.predict import resolve_device
    from spurbench.finetune import FinetuneConfig
    from spurbench.generate.backgrounds import materialise_builtin
    from spurbench.imagenet import _timm_synset_table

    with pytest.raises(SpurbenchError, match=r"--device 'toaster' is not a torch device; use cpu, cuda or cuda:N"):
        resolve_device("toaster")
    with pytest.raises(SpurbenchError, match=r"--head must be one of .*, got 'tiny'"):
        FinetuneConfig(head="tiny").validate()
    with pytest.raises(SpurbenchError, match=r"background 'lava' has no built-in template \(built-in: .*lava/' folder"):
        materialise_builtin("lava", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SpurbenchError, match=r"the installed timm lacks '.*imagenet_synset_to_no_such_kind.txt'"):
        _timm_synset_table("no_such_kind")


def test_an_optional_recipe_key_left_empty():
    from spurbench.generate.schema import convert

    with pytest.raises(SpurbenchError, match=r"key 'training.steps' must not be empty"):
        convert(int | str, None, "training.steps")


def test_learning_a_token_or_a_subject_from_no_images(tmp_path):
    from spurbench.generate.textual_inversion import learn_token

    with pytest.raises(SpurbenchError, match=r"no images to learn '<x>' from; the class needs at least one source"):
        learn_token(tmp_path / "sd", [], "<x>", "dog", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_scheduler_predicting_something_else():
    from diffusers import DDPMScheduler

    from spurbench.generate.dreambooth import _prediction_type

    with pytest.raises(
        SpurbenchError, match=r"the base model's scheduler predicts 'sample'; spurbench trains 'epsilon'"
    ):
        _prediction_type(DDPMScheduler(prediction_type="sample"))


def test_a_stable_diffusion_folder_that_is_not_one(tmp_path):
    from spurbench.generate.sampling import load_pipeline

    (tmp_path / "sd").mkdir()
    with pytest.raises(SpurbenchError, match=r"cannot load Stable Diffusion from '.*sd' \(revision None\): .*; give a"):
        load_pipeline(tmp_path / "sd")
    assert list((tmp_path / "sd").iterdir()) == []


def test_a_head_that_is_not_a_layer():
    import timm

    from spurbench.finetune import reinit_head

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)  # the head is an Identity
    with pytest.raises(
        SpurbenchError, match=r"ResNet has no linear classifier layer to re-initialise; use --head keep"
    ):
        reinit_head(model, 0)


def test_a_download_cut_off_by_the_server(tmp_path):
    import socket
    import struct
    import threading

    from spurbench.download import fetch

    server = socket.socket()
    server.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one
    server.listen(1)

    def serve_then_reset() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        conn.close()

    thread = threading.Thread(target=serve_then_reset, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/release.zip"
    try:
        with pytest.raises(SpurbenchError, match=r"download of .*release.zip was interrupted \(ConnectionResetError\)"):
            fetch(url, tmp_path / "release.zip", None)
    finally:
        thread.join(timeout=10)
        server.close()
    assert not (tmp_path / "release.zip").exists()
