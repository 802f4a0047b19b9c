"""The last one-line errors no other test triggered: each through the path a user (or a damaged file) reaches it by,
asserting the message and that nothing the user had was lost."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from test_leaderboard import DATASET, make_entry, write_csv
from test_leaderboard_intervals import BOARD_DATASET, _entry
from test_leaderboard_intervals import board as intervals_board  # noqa: F401 (a fixture)
from test_waterbirds import make_waterbirds_tree

from spurbench.classifiers import ClassifierSpec, create_classifier
from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.evaluate import leaderboard as lb
from spurbench.importers import waterbirds


@pytest.fixture()
def two_class(tmp_path, monkeypatch):
    """A Waterbirds-style set (label set of 2 classes) and a 2-class timm test_resnet's weights file."""
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    data = waterbirds.import_waterbirds(make_waterbirds_tree(tmp_path / "src"), tmp_path / "wb")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    weights = tmp_path / "two.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return data, weights


def _eval(data, weights, board, *extra):
    return main(
        ["eval", "--model", "test_resnet", "--weights", str(weights), "--dataset", str(data), "--split", "train"]
        + ["--leaderboard", str(board), "--workers", "0", *extra]
    )


def test_class_subset_on_a_set_with_its_own_label_set_is_one_line(two_class, tmp_path, capsys):
    data, weights = two_class
    board = tmp_path / "board" / "leaderboard.json"
    assert _eval(data, weights, board, "--class-subset", "spurious-imagenet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        "spurbench eval: error: cannot score 'test_resnet+two': --class-subset names ImageNet classes, but dataset"
    )
    assert "label set 'waterbirds'; drop --class-subset" in err
    assert not board.exists()


def test_a_loaded_classifier_with_another_head_size_is_one_line(two_class, tmp_path):
    """The Python API takes an already loaded classifier: its head is checked against the set's label set."""
    import timm
    from safetensors.torch import save_file

    from spurbench.evaluate.entry import evaluate

    data, _ = two_class
    weights = tmp_path / "thousand.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(weights))
    clf = create_classifier(ClassifierSpec("test_resnet", weights={"file": str(weights)}), "cpu")
    with pytest.raises(
        SpurbenchError,
        match=r"classifier 'test_resnet' has 1000 outputs but dataset .* is "
        r"labelled with label set 'waterbirds' \(2 classes\); score it with a classifier of that label",
    ):
        evaluate(clf, data, split="train", workers=0)


def test_a_hub_model_with_a_local_weights_file_offline_is_one_line(tmp_path):
    """timm needs a hf-hub: model's config from the Hub even when the weights are local: offline that is one line."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read: the model cannot be built first")
    with pytest.raises(
        SpurbenchError,
        match=r"cannot build 'hf-hub:timm/resnet18.a1_in1k' \(.*\); a hf-hub: model "
        r"needs its config from the Hub, so offline use a plain timm architecture name with --weights",
    ):
        create_classifier(ClassifierSpec("hf-hub:timm/resnet18.a1_in1k", weights={"file": str(weights)}), "cpu")


def test_compare_of_entries_on_disjoint_rows_and_without_predictions_is_one_line(intervals_board, capsys):  # noqa: F811 (the fixture)
    path, hits = intervals_board
    early = _entry(path.parent, "early", hits["convnext"], with_intervals=False, indices=np.arange(100))
    late = _entry(path.parent, "late", hits["convnext"], with_intervals=False, indices=np.arange(100, 200))
    blind = _entry(path.parent, "blind", hits["convnext"])
    blind["predictions"] = None  # an entry recorded without its per-image file (an older board, the Python API)
    for e in (early, late, blind):
        lb.record_entry(path, BOARD_DATASET, e)
    before = {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()}
    for names, message in (
        (["early", "late"], "'early' and 'late' share no scored rows"),
        (["blind", "early"], "entry 'blind' has no predictions file; re-run `spurbench eval` for it"),
    ):
        assert main(["leaderboard", "--leaderboard", str(path), "--compare", *names]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.endswith(message), err
    assert {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()} == before


def test_a_board_on_a_full_disk_is_one_line_and_left_as_it_was(intervals_board, monkeypatch):  # noqa: F811 (the fixture)
    """A disk that fills up (or a store that turns read-only) under a running record: the OSError of taking the
    lock is one line and the board is left as it was. A full disk cannot be made here, so the lock's acquire is
    made to fail the way the OS fails it (test_hostile_store's read-only case runs only as a non-root user)."""
    import errno

    from filelock import FileLock

    path, hits = intervals_board
    before = {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()}

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileLock, "acquire", full)
    for call in (
        lambda: lb.export(path),
        lambda: lb.record_entry(path, BOARD_DATASET, _entry(path.parent, "late", hits["convnext"])),
    ):
        with pytest.raises(SpurbenchError, match=r"cannot write the leaderboard in '.*' \(No space left on device\); "):
            call()
    assert {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file() and f.name != "late.csv"} == before


def test_a_page_of_predictions_that_do_not_match_the_dataset_is_one_line(photo_dataset, tmp_path, capsys):
    """A board whose per-image file names other labels than the dataset it was scored on (edited, or copied
    from another set with the same fingerprint): the page refuses it instead of marking the wrong images."""
    from spurbench.dataset import open_dataset_folder

    labels = np.array(photo_dataset.labels)
    info = {
        **DATASET,
        "id": str(photo_dataset.path),
        "fingerprint": open_dataset_folder(photo_dataset.path).fingerprint("test"),
        "num_images": len(labels),
        "classes": sorted(set(labels.tolist())),
    }
    path = tmp_path / "lb" / "leaderboard.json"
    rel = write_csv(path.parent, "shifted", np.zeros(len(labels), bool), labels=labels + 1)
    lb.record_entry(path, info, make_entry("shifted", 0.0, None, rel))
    out = tmp_path / "site"
    assert main(["leaderboard", "--leaderboard", str(path), "--format", "html", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "predictions of 'shifted' do not match split 'test' of " in err and "at image 0; pass the dataset" in err
    assert not out.exists() or not any(out.iterdir())


def test_a_vision_language_model_that_is_no_dual_encoder_is_one_line(tmp_path):
    """A tiny LLaVA (a vision tower and a language model: text and vision configs, like CLIP's) saved with
    save_pretrained: it cannot score classes zero-shot, and says so in one line."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from spurbench.tiny_models import tiny_clip_tokenizer

    folder = tmp_path / "tiny-llava"
    tokenizer = tiny_clip_tokenizer(tmp_path, model_max_length=77)
    vocab = len(tokenizer.get_vocab())
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    text = LlamaConfig(
        vocab_size=vocab + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab)
    ).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8).save_pretrained(folder)
    with pytest.raises(
        SpurbenchError,
        match=r"'transformers:.*tiny-llava' \(LlavaModel\) has no get_text_features / get_image_features; only dual "
        "encoders like CLIP and SigLIP are scored zero-shot",
    ):
        create_classifier(ClassifierSpec(model=f"transformers:{folder}"))


def test_build_without_the_builder_stack_is_one_line(tmp_path):
    """`spurbench build` where accelerate cannot be imported (a plain `pip install spurbench`): one line naming
    the extra to install, before anything is written. Run in a subprocess, which blocks the import."""
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['accelerate'] = None\n"
        "from spurbench.cli import main\n"
        f"raise SystemExit(main(['build', '--recipe', 'smoke', '--out', {str(out)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err == [
        "spurbench build: error: `spurbench build` needs the builder stack (accelerate is missing); install it with: "
        'pip install "spurbench[build]"'
    ]
    assert list(tmp_path.iterdir()) == []


def test_two_mixed_precisions_in_one_process_is_one_line():
    """Accelerate fixes its state at the first Accelerator of a process: a second fine-tune in the same process
    (a notebook) with another mixed precision is one line. In a subprocess, so this process's state stays."""
    code = (
        "from spurbench.errors import SpurbenchError\n"
        "from spurbench.generate.dreambooth import make_accelerator\n"
        "make_accelerator('no')\n"
        "try:\n    make_accelerator('bf16')\n"
        "except SpurbenchError as err:\n    print(err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cannot use mixed_precision 'bf16' in this process: "), proc.stdout
    assert proc.stdout.rstrip().endswith(
        "; pass the same mixed precision everywhere or create one Accelerator and pass it in"
    )


def test_export_of_classes_another_process_did_not_finish_is_one_line(tmp_path, monkeypatch, capsys):
    """The main process exports once every process has finished its classes; when one has not (its process died
    in a multi-process build) the export refuses in one line. Several processes cannot run here, so the class
    stage is replaced by one that finishes nothing, which is what the main process then finds."""
    from spurbench.generate import stages

    monkeypatch.setattr(stages, "build_classes", lambda ctx, state: None)
    out = tmp_path / "out"
    assert main(["build", "--recipe", "smoke", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("spurbench build: error: classes ") and "are not finished in '" in err
    assert err.endswith("; re-run the same command to finish them")
    assert not out.exists()


def test_a_split_that_changes_while_it_is_read_is_one_line(photo_dataset, tmp_path, monkeypatch):
    """Another process rewrites a shard while spurbench reads the split: the rows read may be half old, half new,
    so the read is refused in one line. The writer is simulated by touching the shard as the reader finishes."""
    import os
    import shutil

    from spurbench import dataset as ds

    folder = tmp_path / "photos"
    shutil.copytree(photo_dataset.path, folder)
    real = ds._read_table

    def read_then_rewritten(folder_, split, files):
        got = real(folder_, split, files)
        st = files[0].stat()
        os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return got

    monkeypatch.setattr(ds, "_read_table", read_then_rewritten)
    with pytest.raises(
        SpurbenchError, match=r"dataset '.*photos' split 'test' changed while it was being read; wait for whatever"
    ):
        ds.read_split(folder, "test")
    monkeypatch.setattr(ds, "_read_table", real)
    assert len(ds.read_split(folder, "test")[0]) == len(photo_dataset.labels)  # read again once it is still


def test_a_shift_row_naming_a_reference_photo_that_is_not_there_is_one_line(tmp_path):
    """A damaged shift set: its test rows name reference rows past the end of the reference split."""
    import timm
    from safetensors.torch import save_file
    from test_shift_eval import SHIFT_PHOTOS, _shift_set

    from spurbench.evaluate.entry import evaluate

    folder = _shift_set(tmp_path, reference_offset=len(SHIFT_PHOTOS))
    weights = tmp_path / "w.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(weights))
    before = {f: f.read_bytes() for f in folder.rglob("*") if f.is_file()}
    with pytest.raises(
        SpurbenchError,
        match=rf"dataset '.*shift' row 0 names reference_index {len(SHIFT_PHOTOS)}, but split 'reference' has "
        rf"{len(SHIFT_PHOTOS)} rows; the set is damaged: rebuild or re-export it",
    ):
        evaluate(ClassifierSpec("test_resnet", weights={"file": str(weights)}), folder, workers=0)
    assert {f: f.read_bytes() for f in folder.rglob("*") if f.is_file()} == before


def test_eval_results_of_a_board_without_headline_values_is_one_line(tmp_path, capsys):
    """A board whose entries carry no value for the set's headline metrics (a hand-made board, or one recorded
    before they were): nothing to export, said in one line, nothing written."""
    path = tmp_path / "lb" / "leaderboard.json"
    e = make_entry("m", 0.5, None, write_csv(path.parent, "m", np.ones(12, bool)))
    e["metrics"]["spurious_rate"] = None
    lb.record_entry(path, {**DATASET, "id": "org/toy"}, e)
    before = {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()}
    out = tmp_path / "results"
    assert main(["leaderboard", "--leaderboard", str(path), "--format", "eval-results", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "spurbench leaderboard: error: no entry has a value for the dataset's headline metrics; nothing to write"
    ]
    assert not out.exists()
    assert {f: f.read_bytes() for f in path.parent.rglob("*") if f.is_file()} == before
