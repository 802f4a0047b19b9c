"""Every one-line error of a classifier entry (panel YAML, --weights / --key-map flags) and of weight loading."""

from __future__ import annotations

import pytest
import torch

from spurbench.classifiers import ClassifierSpec, check_model_name, create_classifier, load_panel, map_state_dict
from spurbench.errors import SpurbenchError


@pytest.mark.parametrize(
    "entry, match",
    [
        (3, r"a classifier entry must be a mapping with a `model` key, got int"),
        ({"model": "resnet18", "colour": "red"}, r"unknown key\(s\) colour; allowed keys:"),
        ({"name": "x"}, r"lacks the `model` key"),
        ({"model": ""}, r"classifier model must be a non-empty timm model name, got ''"),
        ({"model": "resnet18", "name": " "}, r"classifier name for 'resnet18' must be a non-empty string"),
        ({"model": "open_clip:ViT-B-32/openai", "weights": "w.pth"}, r"weights apply to timm models"),
        ({"model": "resnet18", "templates": "simple"}, r"templates apply to zero-shot models"),
        ({"model": "resnet18", "classnames": 5}, r"classnames of classifier 'resnet18' must be a name or a file path"),
        ({"model": "resnet18", "temperature": 0}, r"temperature of classifier 'resnet18' must be a positive number"),
        ({"model": "resnet18", "temperature": True}, r"must be a positive number, got True"),
        ({"model": "resnet18", "note": 7}, r"note of classifier 'resnet18' must be a string, got 7"),
        (
            {"model": "resnet18", "weights": 5},
            r"weights of classifier 'resnet18' must be a mapping like \{file: path\}",
        ),
        ({"model": "resnet18", "weights": {"file": "w", "size": 1}}, r"has unknown key\(s\) size; allowed keys:"),
        ({"model": "resnet18", "weights": {"package": "p"}}, r"need a `file`"),
        ({"model": "resnet18", "weights": {"file": "w", "hub": "a/b", "url": "u"}}, r"name both `hub` and `url`"),
        ({"model": "resnet18", "weights": {"file": "w", "hub": 3}}, r"`hub` must be a string, got 3"),
        ({"model": "resnet18", "weights": {"file": "w", "revision": "main"}}, r"`revision` only applies to `hub`"),
        ({"model": "resnet18", "weights": {"file": "w", "key_map": "rename"}}, r"key_map 'rename' is not one of"),
        ({"model": "resnet18", "weights": {"file": "w", "key_map": "strip_prefix:"}}, r"is not one of none"),
    ],
)
def test_a_bad_classifier_entry_is_one_line(entry, match):
    with pytest.raises(SpurbenchError, match=match):
        ClassifierSpec.from_dict(entry)


@pytest.mark.parametrize(
    "text, match",
    [
        ("models: [resnet18]\nowner: me\n", r"unknown top-level key\(s\) owner; allowed: name, description, models"),
        ("name: p\nmodels: []\n", r"needs a non-empty `models:` list"),
        ("models: [{model: resnet18, temperature: -1}]\n", r"models\[0\]: temperature of classifier 'resnet18'"),
        ("models: [resnet18, resnet18]\n", r"lists resnet18 more than once; give each entry a distinct `name`"),
    ],
)
def test_a_bad_panel_file_is_one_line(tmp_path, text, match):
    panel = tmp_path / "panel.yaml"
    panel.write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        load_panel(panel)
    assert panel.read_text() == text


@pytest.mark.parametrize(
    "name, pretrained, match",
    [
        ("resnet_eighteen", True, r"unknown model 'resnet_eighteen': not a timm model"),
        ("zzzzqqqq", True, r"list them with `python -c"),
        (
            "resnet18.no_such_tag",
            True,
            r"timm model 'resnet18' has no pretrained tag 'no_such_tag'; available: resnet18\.",
        ),
        ("botnet50ts_256", True, r"timm has no pretrained weights for 'botnet50ts_256'; pass --weights FILE"),
        ("vit_base_patch16_224.augreg_in21k", True, r"vit_base_patch16_224.augreg_in21k"),
    ],
)
def test_a_bad_timm_name_is_one_line(name, pretrained, match):
    with pytest.raises(SpurbenchError, match=match):
        check_model_name(name, pretrained=pretrained)


def test_bad_weight_sources_are_one_line(tmp_path):
    missing = ClassifierSpec(model="resnet18", weights={"file": str(tmp_path / "nope.pth")})
    with pytest.raises(SpurbenchError, match=r"weights file '.*nope.pth' of 'resnet18' does not exist"):
        create_classifier(missing)
    not_installed = ClassifierSpec(model="resnet18", weights={"file": "w.pth", "package": "no-such-weights-package"})
    with pytest.raises(SpurbenchError, match=r"come from the Python package 'no-such-weights-package', which is not"):
        create_classifier(not_installed)
    no_file = ClassifierSpec(model="resnet18", weights={"file": "no/such/file.pth", "package": "pytest"})
    with pytest.raises(SpurbenchError, match=r"package 'pytest' .* has no file 'no/such/file.pth'"):
        create_classifier(no_file)
    bad_hub = ClassifierSpec(model="hf-hub:not a repo")
    with pytest.raises(SpurbenchError, match=r"is not a valid Hub model name; expected hf-hub:org/repo"):
        create_classifier(bad_hub)
    offline = ClassifierSpec(model="resnet18", weights={"file": "model.pth", "hub": "org/repo"})
    with pytest.raises(SpurbenchError, match=r"cannot fetch 'model.pth' from Hub repo 'org/repo' .*HF_HUB_OFFLINE"):
        create_classifier(offline)


def test_a_wrong_sha256_is_one_line(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, path)
    spec = ClassifierSpec(model="resnet18", weights={"file": str(path), "sha256": "0" * 64})
    with pytest.raises(SpurbenchError, match=r"has sha256 [0-9a-f]{64}, not the 0{64} the panel expects"):
        create_classifier(spec)


def test_a_zoo_model_without_the_label_names_is_one_line():
    spec = ClassifierSpec(model="open_clip:ViT-B-32/openai")
    with pytest.raises(SpurbenchError, match=r"needs the label set's class names to score 2 classes"):
        create_classifier(spec, num_classes=2)


@pytest.mark.parametrize(
    "state, key_map, match",
    [
        (
            {"w": torch.zeros(3, 2)},
            "positional",
            r"key_map positional needs as many tensors as the model has; file has 1",
        ),
        (
            {"a": torch.zeros(2, 2), "b": torch.zeros(3)},
            "positional",
            r"tensor #0 'a' has shape \(2, 2\) but the model's '0.weight' has \(3, 2\)",
        ),
        ({"m.0.weight": torch.zeros(3, 2)}, "strip_prefix:module.", r"no key starts with 'module.'"),
        ({"0.weight": torch.zeros(3, 2)}, "rename", r"unknown key_map 'rename'; use none, positional or strip_prefix"),
        (
            {"0.weight": torch.zeros(3, 2), "x": torch.zeros(1)},
            "none",
            r"1 model key\(s\) missing .*1 file key\(s\) not",
        ),
        (
            {"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(3)},
            "none",
            r"'0.weight' has shape \(3, 3\) in the file but \(3, 2\) in the model",
        ),
    ],
)
def test_a_state_dict_that_does_not_fit_is_one_line(state, key_map, match):
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    with pytest.raises(SpurbenchError, match=match):
        map_state_dict(state, model, key_map, where="weights")
