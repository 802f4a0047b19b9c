"""More one-line errors on small inputs: weight files that are not state dicts, downloads refused by the
server, group columns, zoo names, method names, recipe details (foreground sources, fg_scale, dreambooth),
and the build's work dir and local base model folders."""

from __future__ import annotations

import http.server
import threading

import pytest
import torch
import yaml
from test_errors_methods import D3S, SMOKE
from test_errors_recipe import _set

from spurbench.errors import SpurbenchError
from spurbench.generate.recipe import recipe_from_dict


def test_weight_files_that_are_not_state_dicts(tmp_path):
    from spurbench.classifiers import _read_state_dict

    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(SpurbenchError, match=r"weights file '.*list.pth' holds a list, not a state dict"):
        _read_state_dict(listed)
    numbers = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": 0.1}, numbers)
    with pytest.raises(SpurbenchError, match=r"weights file '.*numbers.pth' has no tensors at its top level nor under"):
        _read_state_dict(numbers)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_error(404, "Not Found")

    def log_message(self, *args):
        pass


def test_downloads_the_server_refuses_or_cannot_reach(tmp_path):
    from spurbench.download import fetch

    server = http.server.HTTPServer(("127.0.0.1", 0), _NotFound)  # port 0: the OS picks a free one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/release.zip"
        with pytest.raises(SpurbenchError, match=r"cannot download .*release.zip: HTTP 404 Not Found; check the URL"):
            fetch(url, tmp_path / "release.zip", None)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(SpurbenchError, match=r"cannot download nosuchscheme://x/y.zip: .*; check the URL and your net"):
        fetch("nosuchscheme://x/y.zip", tmp_path / "y.zip", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_group_columns_that_are_missing_or_not_single_values():
    from spurbench.evaluate.shift import group_column, group_values

    with pytest.raises(SpurbenchError, match=r"--group-by 'place': dataset 'd' has no such column; its columns are"):
        group_column(["image", "label"], "spurious", "place", "d")
    with pytest.raises(SpurbenchError, match=r"--group-by `place` of dataset 'd' holds lists; group by a column of"):
        group_values([["land"], ["water"]], "place", "d")


def test_zoo_and_method_names():
    from spurbench.generate.methods import get_method
    from spurbench.zoo.transformers import _where

    with pytest.raises(SpurbenchError, match=r"'transformers:a/b/c' is neither a folder nor a Hub model id"):
        _where("a/b/c")
    with pytest.raises(SpurbenchError, match=r"unknown method 'paint'; spurbench knows sfsl"):
        get_method("paint")


@pytest.mark.parametrize(
    "recipe, key, value, match",
    [
        (D3S, "fg_scale", 0.01, r"key 'fg_scale': 0.01 x resolution 32 leaves no foreground pixel"),
        (D3S, "classes[0].foregrounds", {"folder": "x", "samples": ["chelsea"]}, r"key 'classes\[0\].foregrounds'"),
        (SMOKE, "method", "dreambooth", r"method dreambooth is sfsl without the similarity loss, but training.sfsl"),
        (SMOKE, "training.max_train_steps", -1, r"key 'training': "),
    ],
)
def test_more_recipe_details(recipe, key, value, match):
    with pytest.raises(SpurbenchError, match=match):
        recipe_from_dict(_set(recipe, key, value))


def _build(argv, capsys) -> str:
    from spurbench.cli import main

    assert main(["build", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("spurbench build: error: ")
    return err


def test_a_work_dir_of_another_recipe_is_refused_and_kept(tmp_path, capsys):
    from spurbench.files import WrittenFolder
    from spurbench.generate.stages import STATE_FILE

    work = tmp_path / "work"
    work.mkdir()
    WrittenFolder(work, "--work-dir").save()  # a work dir a build made carries spurbench's record
    state = '{"recipe": "other", "recipe_sha256": "' + "f" * 64 + '"}'
    (work / STATE_FILE).write_text(state)
    err = _build(
        ["--recipe", "smoke", "--out", str(tmp_path / "out"), "--work-dir", str(work), "--device", "cpu"], capsys
    )
    assert f"work dir '{work}' belongs to a build of recipe 'other' with sha256 ffffffffffff" in err
    assert (work / STATE_FILE).read_text() == state and not (tmp_path / "out").exists()


def test_a_local_base_model_folder_that_is_not_a_pipeline(tmp_path, capsys):
    from importlib.resources import files

    data = yaml.safe_load((files("spurbench") / "recipes" / "smoke.yaml").read_text())
    folder = tmp_path / "sd"
    folder.mkdir()
    data["base_model"] = {"id": str(folder)}
    data["licenses"]["base_model"] = "CreativeML Open RAIL-M"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    err = _build(["--recipe", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert f"base_model.id '{folder}' is a folder without model_index.json; give a diffusers pipeline folder" in err
    assert not (tmp_path / "out").exists()


def test_url_weights_with_a_folder_in_the_file_name():
    from spurbench.classifiers import ClassifierSpec, create_classifier

    spec = ClassifierSpec(model="resnet18", weights={"file": "sub/w.pth", "url": "https://example.org/w.pth"})
    with pytest.raises(SpurbenchError, match=r"with a `url`, `file` is the cache file name \(no folders\), got 'sub/w"):
        create_classifier(spec)


def test_zoo_models_that_cannot_be_loaded_offline():
    from spurbench.classifiers import ClassifierSpec, create_classifier

    with pytest.raises(SpurbenchError, match=r"cannot load 'transformers:org/no-such-model' \(HF_HUB_OFFLINE is set\)"):
        create_classifier(ClassifierSpec(model="transformers:org/no-such-model"))
    with pytest.raises(
        SpurbenchError, match=r"cannot load open_clip model 'hf-hub:org/no-such-model' \(HF_HUB_OFFLINE is set\)"
    ):
        create_classifier(ClassifierSpec(model="open_clip:hf-hub:org/no-such-model"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without a CUDA GPU")
def test_fp16_training_without_a_gpu():
    from spurbench.generate.dreambooth import make_accelerator

    with pytest.raises(SpurbenchError, match=r"mixed_precision 'fp16' needs a CUDA GPU; use 'no' or 'bf16' on CPU"):
        make_accelerator("fp16")


def test_a_feature_model_without_a_linear_head():
    from spurbench.generate.features import FeatureModel

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(
        SpurbenchError, match=r"feature model Sequential has no linear classifier head \(got NoneType\)"
    ):
        FeatureModel(model, {})


def test_eval_positives_without_images_of_the_dataset_classes(photo_dataset, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from spurbench import imagenet
    from spurbench.cli import main

    goldfish = tmp_path / "positives" / imagenet.wnids()[1]
    goldfish.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(goldfish / "a.png")
    board = tmp_path / "lb.json"
    argv = ["eval", "--model", "resnet18", "--dataset", str(photo_dataset.path), "--leaderboard", str(board)]
    assert main([*argv, "--positives", str(tmp_path / "positives")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--positives '" in err and "has no images of the dataset's classes (0, 285, 657, 967)" in err
    assert not board.exists()
