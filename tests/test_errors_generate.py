"""The builders' one-line errors on their inputs (reference folders and images, Spurious ImageNet folders,
training options, preprocessing names): small hand-made inputs, no model loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from spurbench.errors import SpurbenchError
from spurbench.evaluate.preprocessing import build_uint8_transforms, data_config_for
from spurbench.generate.dreambooth import TrainConfig
from spurbench.generate.recipe import recipe_from_dict
from spurbench.generate.references import check_image, list_images, load_image, spurious_folder_for
from spurbench.spurious_imagenet import SpuriousFolder


def test_reference_folders_that_are_missing_or_hold_no_image(tmp_path):
    with pytest.raises(SpurbenchError, match=r"reference folder '.*none' does not exist; create it with the class"):
        list_images(tmp_path / "none")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpurbenchError, match=r"reference folder '.*' holds no image files \(.*\)"):
        list_images(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_reference_images_that_cannot_be_read(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG", compress_level=0)
    truncated = tmp_path / "t.png"  # a valid header, half its pixel data
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(SpurbenchError, match=r"reference image '.*t.png' is corrupt or not an image"):
        check_image(truncated)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SpurbenchError, match=r"cannot read reference image '.*x.png': not an image spurbench can open"):
        check_image(bad)
    with pytest.raises(SpurbenchError, match=r"cannot read reference image '.*': .*; fix its permissions or remove"):
        check_image(tmp_path)  # a folder: read_bytes fails with an OSError
    with pytest.raises(SpurbenchError, match=r"cannot read image '.*x.png': not an image spurbench can open"):
        load_image(bad)
    with pytest.raises(SpurbenchError, match=r"cannot read image '.*t.png' \(\w+: .*\); replace or remove the file"):
        load_image(truncated)
    assert bad.read_bytes() == b"\x89PNG\r\n\x1a\n not really"


def test_a_class_without_or_with_several_spurious_imagenet_folders():
    folders = [SpuriousFolder(Path("a"), 309, 1), SpuriousFolder(Path("b"), 309, 2)]
    with pytest.raises(SpurbenchError, match=r"has no folder for class 576 \(it has 1 classes: 309\); check the"):
        spurious_folder_for(folders, 576, None, "root")
    with pytest.raises(SpurbenchError, match=r"has no folder for class 309 with component 3"):
        spurious_folder_for(folders, 309, 3, "root")
    with pytest.raises(SpurbenchError, match=r"class 309 has several Spurious ImageNet folders \(components 1, 2\)"):
        spurious_folder_for(folders, 309, None, "root")


def test_unknown_training_options():
    with pytest.raises(SpurbenchError, match=r"unknown training option\(s\) 'epochs'; valid options: "):
        TrainConfig.from_dict({"epochs": 3})


def test_unknown_or_unusable_preprocessing():
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    with pytest.raises(SpurbenchError, match=r"unknown preprocessing 'imagenet'; use one of timm, spurious-imagenet"):
        data_config_for(model, "imagenet")
    config = data_config_for(model, "timm")
    with pytest.raises(SpurbenchError, match=r"unknown preprocessing 'imagenet'"):
        build_uint8_transforms(config, "imagenet")
    with pytest.raises(SpurbenchError, match=r"needs a square input size, the model's is 224x320; use --preproc"):
        build_uint8_transforms({**config, "input_size": (3, 224, 320)}, "spurious-imagenet")


def test_a_recipe_value_of_the_wrong_type():
    from test_errors_recipe import SMOKE, _set

    with pytest.raises(SpurbenchError, match=r"key 'classes\[0\]' must be a mapping, got"):
        recipe_from_dict(_set(SMOKE, "classes[0]", 309))
    with pytest.raises(SpurbenchError, match=r"key 'licenses' must be a mapping, got"):
        recipe_from_dict(_set(SMOKE, "licenses", ["MIT"]))
    with pytest.raises(SpurbenchError, match=r"key 'token' must be a string, got"):
        recipe_from_dict(_set(SMOKE, "token", 7))


def test_a_placeholder_token_already_known_or_an_empty_initializer(tmp_path):
    from spurbench.generate.textual_inversion import add_token
    from spurbench.tiny_models import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(tmp_path)
    word = next(iter(tokenizer.get_vocab()))
    with pytest.raises(SpurbenchError, match=r"placeholder token .* is already in the tokenizer's vocabulary"):
        add_token(tokenizer, None, word, "cat")
    with pytest.raises(SpurbenchError, match=r"initializer word '' is empty after tokenisation"):
        add_token(tokenizer, None, "<class-123>", "")


def test_an_unknown_detector_family():
    from spurbench.detection import queries_for_names

    with pytest.raises(SpurbenchError, match=r"unknown detector family 'yolo'; expected one of"):
        queries_for_names(["cat"], "yolo")


def test_background_folders_without_the_word_or_its_images(tmp_path):
    from spurbench.generate.backgrounds import folder_templates

    with pytest.raises(SpurbenchError, match=r"backgrounds folder '.*' has no folder 'snow/' for background 'snow'"):
        folder_templates(tmp_path, "snow")
    (tmp_path / "snow").mkdir()
    with pytest.raises(SpurbenchError, match=r"background folder '.*snow' holds no image files; add template images"):
        folder_templates(tmp_path, "snow")


def test_a_reference_image_changed_since_it_was_recorded(tmp_path):
    import numpy as np
    from PIL import Image

    from spurbench.generate.references import ClassReferences, verify_unchanged

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    refs = ClassReferences(index=309, component=-1, source="folder", images=[str(path)], sha256=["0" * 64])
    with pytest.raises(SpurbenchError, match=r"reference image '.*a.png' changed since the build recorded it"):
        verify_unchanged(refs)
