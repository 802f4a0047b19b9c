"""Every one-line error of a recipe's YAML (spurbench build --recipe): each case is the shipped smoke recipe
with one mistake, and the message names the key and what to write instead."""

from __future__ import annotations

import copy
from importlib.resources import files

import pytest
import yaml

from spurbench.errors import SpurbenchError
from spurbench.generate.recipe import load_recipe, recipe_from_dict

SMOKE = yaml.safe_load((files("spurbench") / "recipes" / "smoke.yaml").read_text())


def _set(data: dict, dotted: str, value) -> dict:
    """A copy of `data` with `dotted` (a.b[0].c) set to `value`; the value `...` deletes the key."""
    data = copy.deepcopy(data)
    parts = dotted.replace("]", "").replace("[", ".").split(".")
    node = data
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = int(parts[-1]) if isinstance(node, list) else parts[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


_LITE0 = {
    "model": "tf_efficientnet_lite0",
    "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
CASES = [
    # the mine: stage (issue 24 §4): k within the panel, surrogates of the named panel, a sha256 pinned
    (
        "mine",
        {"panel": "offline", "surrogates": [_LITE0], "min_fooled": 2},
        r"key 'mine.min_fooled' must be between 1 and the 1 surrogate\(s\), got 2",
    ),
    ("mine", {"panel": "offline", "surrogates": [_LITE0], "min_fooled": 0}, r"key 'mine.min_fooled' must be between 1"),
    ("mine", {"panel": "offline", "surrogates": []}, r"key 'mine.surrogates' must name at least one classifier"),
    (
        "mine",
        {"panel": "offline", "surrogates": [{"model": "resnet50", "sha256": "a" * 64}]},
        r"key 'mine.surrogates\[0\].model': 'resnet50' is not in panel 'offline'; its models: tf_efficientnet_lite0",
    ),
    (
        "mine",
        {"panel": "offline", "surrogates": [{"model": "tf_efficientnet_lite0", "sha256": "abc"}]},
        r"key 'mine.surrogates\[0\].sha256' must be the 64 hex digits",
    ),
    # the control split (issue 24 §2): at least one base-model image per class, and nothing else in the section
    (
        "control.images_per_class",
        0,
        r"key 'control.images_per_class' must be >= 1 \(base-model images per class\), got 0",
    ),
    ("control.images_per_class", -3, r"key 'control.images_per_class' must be >= 1 .*got -3"),
    ("control.images_per_class", "2", r"key 'control.images_per_class' must be an integer"),
    ("control", {"images_per_class": 2, "per_prompt": 1}, r"unknown key 'control.per_prompt'"),
    ("name", "my recipe", r"key 'name' must be a short identifier"),
    ("base_model", {"tiny": {"prediction_type": "epsilon"}, "id": "org/sd"}, r"needs exactly one of `id`"),
    ("base_model.revision", "main", r"key 'base_model.revision' only applies to a Hub `id`"),
    ("base_model.tiny.prediction_type", "sample", r"must be 'epsilon' or 'v_prediction', got 'sample'"),
    ("base_model", {"id": " "}, r"key 'base_model.id' must be a Hub id like org/name or a local folder"),
    ("resolution", 30, r"key 'resolution' must be a positive multiple of 8 \(pixels\), got 30"),
    ("resolution", "32", r"key 'resolution' must be an integer, got"),
    ("mixed_precision", "fp8", r"key 'mixed_precision' must be one of"),
    ("created", "31.01.2025", r"key 'created' must be a date YYYY-MM-DD"),
    ("token", "two words", r"key 'token' must be one rare word without spaces"),
    ("prompts.instance", "a photo of a {noun}", r"key 'prompts.instance': template .* must contain \{token\}"),
    ("prompts.instance", "a photo of {token", r"key 'prompts.instance': template .* is malformed"),
    ("prompts.instance", "a {token} {colour}", r"unknown placeholder \{colour\}"),
    ("prompts.prior", "a {token} {noun}", r"the prior template .* must not contain \{token\}"),
    ("prompts.prior", "a photo", r"key 'prompts.prior': template 'a photo' must contain \{noun\}"),
    ("prompts.generation", [], r"key 'prompts.generation' must list at least one prompt template"),
    ("prompts.generation", ["a {token} {noun}", "a {token} {noun}"], r"lists a template twice"),
    ("num_class_images", -1, r"key 'num_class_images' must be >= 0, got -1"),
    ("generation.batch_size", 0, r"key 'generation.batch_size' must be >= 1, got 0"),
    ("references.max_per_class", 0, r"key 'references.max_per_class' must be >= 1 or null, got 0"),
    ("classes", [], r"key 'classes' must list at least one class"),
    ("classes[0].index", 1000, r"key 'classes\[0\].index': .*0..999"),
    ("classes[1].index", 309, r"key 'classes\[1\].index': class 309 is listed twice"),
    ("classes[0].noun", " ", r"key 'classes\[0\].noun' must be a word naming what the reference images show"),
    ("classes[0].index", 1, r"key 'classes\[0\].spurious_feature' is required: class 1 is not one of"),
    ("classes[0].component", -2, r"key 'classes\[0\].component' must be a component id >= 0, or -1"),
    ("classes[0].references", {"samples": ["flower"], "folder": "x"}, r"needs exactly one of .*; got folder, samples"),
    ("classes[0].references.samples", ["tiger"], r"unknown sample photo 'tiger'; use one of"),
    ("classes[0].references.samples", ["flower:upside"], r"unknown sample photo 'flower:upside'"),
    ("feature_model", {"model": "resnet18", "size": 3}, r"key 'feature_model': classifier entry .* unknown key"),
    ("feature_model", ..., r"key 'feature_model' is required when training.sfsl_weight is not 0"),
    ("features", {"decoder": "big"}, r"key 'features.decoder' must be one of"),
    ("features", {"decoder": "tiny", "tiny_decoder": " "}, r"key 'features.tiny_decoder' must be a Hub id"),
    ("licenses", {"base_model": "MIT"}, r"must state the licence of every input: missing licenses.references"),
    ("licenses", {"base_model": 3}, r"key 'licenses.base_model' must be a string \(the licence's name\), got int"),
    ("colour", "red", r"unknown key 'colour'; allowed keys there:"),
    ("prompts", "a photo", r"key 'prompts' must be a mapping, got"),
    ("prompts.generation", "a {token}", r"key 'prompts.generation' must be a list, got"),
    ("training.prior_loss_weight", "high", r"key 'training': training option 'prior_loss_weight' = 'high' is inv"),
    (
        "training.with_prior_preservation",
        "yes",
        r"option 'with_prior_preservation' = 'yes' is invalid: it must be true",
    ),
    ("token", ..., r"missing key 'token'"),
    ("generation", None, r"key 'generation' must be a mapping, got NoneType"),
]


@pytest.mark.parametrize("key, value, match", CASES, ids=[f"{k}={v!r}"[:40] for k, v, _ in CASES])
def test_a_recipe_mistake_is_one_line_naming_its_key(key, value, match):
    with pytest.raises(SpurbenchError, match=match):
        recipe_from_dict(_set(SMOKE, key, value))


def test_the_smoke_recipe_itself_passes():
    assert recipe_from_dict(copy.deepcopy(SMOKE)).name == "smoke"


def test_load_recipe_names_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_set(SMOKE, "resolution", 30)))
    before = path.read_bytes()
    with pytest.raises(SpurbenchError, match=r"recipe '.*r.yaml': key 'resolution' must be a positive multiple of 8"):
        load_recipe(path)
    assert path.read_bytes() == before
