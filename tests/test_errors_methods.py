"""The one-line errors of the d3s and ddb recipes and of every recipe's `verify:` section: each case is a
shipped smoke recipe with one mistake, and the message names the key."""

from __future__ import annotations

from importlib.resources import files

import pytest
import yaml
from test_errors_recipe import _set

from spurbench.errors import SpurbenchError
from spurbench.generate.recipe import recipe_from_dict


def _smoke(name: str) -> dict:
    return yaml.safe_load((files("spurbench") / "recipes" / f"{name}.yaml").read_text())


D3S = _smoke("d3s_smoke")
DDB = _smoke("ddb_smoke")
SMOKE = _smoke("smoke")

CASES = [
    (D3S, "generation.strength", 0, r"key 'generation.strength' must be in \(0, 1\], got 0"),
    (D3S, "generation.batch_size", 0, r"key 'generation.batch_size' must be >= 1, got 0"),
    (D3S, "generation.strength", 0.01, r"key 'generation.strength': 0.01 x 50 steps is less than one denoising"),
    (D3S, "generation.eta", -1.0, r"key 'generation.eta' must be >= 0 \(0: deterministic DDIM\), got -1"),
    (D3S, "images_per_background", 0, r"key 'images_per_background' must be >= 1, got 0"),
    (D3S, "prompt", "a {name", r"key 'prompt': template 'a \{name' is malformed"),
    (D3S, "prompt", "a {colour} {name}", r"key 'prompt': unknown placeholder \{colour\}; use \{name\}"),
    (D3S, "backgrounds.folder", "bg", r"key 'backgrounds' needs exactly one of folder: <path>"),
    (D3S, "backgrounds.phrases", {}, r"key 'backgrounds.phrases' must map at least one background word"),
    (D3S, "backgrounds.phrases", {"a/b": "in snow"}, r"key 'backgrounds.phrases.a/b': a background word"),
    (D3S, "backgrounds.per_background", 0, r"key 'backgrounds.per_background' must be >= 1 or null, got 0"),
    (D3S, "classes", [], r"key 'classes' must list at least one class, or be `all`"),
    (D3S, "fg_scale", 1.5, r"key 'fg_scale' must be in \(0, 1\]"),
    (DDB, "mode", "paint", r"key 'mode' must be one of .* got 'paint'"),
    (DDB, "inpainting", {"tiny": {"prediction_type": "epsilon"}, "id": "org/x"}, r"key 'inpainting' needs exactly one"),
    (DDB, "base_model.revision", "main", r"key 'base_model.revision' only applies to a Hub `id`, not to `tiny`"),
    (DDB, "resolution", 60, r"key 'resolution' must be a positive multiple of 8 \(pixels\), got 60"),
    (DDB, "images_per_source", 0, r"key 'images_per_source' must be >= 1, got 0"),
    (DDB, "sources_per_class", 0, r"key 'sources_per_class' must be >= 1 or null \(all photos\), got 0"),
    (DDB, "pruning.ig_steps", 0, r"key 'pruning.ig_steps' must be >= 1, got 0"),
    (DDB, "inpainting.batch_size", 0, r"key 'inpainting.batch_size' must be >= 1, got 0"),
    (DDB, "prompts.remove", "a photo", r"key 'prompts.remove' must contain \{background\}"),
    (DDB, "prompts.swap", "a photo", r"key 'prompts.swap' must contain \{token\}"),
    (DDB, "textual_inversion", {"rate": 1.0}, r"key 'textual_inversion': textual_inversion has unknown key\(s\) rate"),
    (DDB, "textual_inversion", {"max_train_steps": 0}, r"textual_inversion.max_train_steps must be a positive integer"),
    (DDB, "textual_inversion", {"templates": ["a photo"]}, r"textual_inversion.templates must be a non-empty list"),
    (DDB, "segmentation.detector", "huge", r"key 'classifier' / 'segmentation': "),
    (DDB, "classes", [], r"key 'classes' must list at least one class"),
    (DDB, "classes[0].source_group", "birds", r"key 'classes\[0\].source_group' applies only with `source:`"),
    (DDB, "classes[0].references", {"folder": "x", "samples": ["chelsea"]}, r"key 'classes\[0\].references' needs"),
    (DDB, "classes[0].swap_to", ..., r"key 'classes\[0\].swap_to' is required in mode swap"),
    (DDB, "classes[0].swap_to", 285, r"key 'classes\[0\].swap_to': 285 is not another class of the recipe"),
    (SMOKE, "method", "paint", r"key 'method' must be one of sfsl, dreambooth, d3s, ddb, got 'paint'"),
    (SMOKE, "verify", {"detector": "huge"}, r"key 'verify.detector': unknown detector 'huge'; use one of"),
    (SMOKE, "verify", {"threshold": 1.5}, r"key 'verify.threshold' must be a score between 0 and 1, got 1.5"),
    (SMOKE, "verify", {"batch_size": 0}, r"key 'verify.batch_size' must be at least 1, got 0"),
]


@pytest.mark.parametrize(
    "recipe, key, value, match", CASES, ids=[f"{r['name']}:{k}={v!r}"[:50] for r, k, v, _ in CASES]
)
def test_a_method_recipe_mistake_is_one_line(recipe, key, value, match):
    with pytest.raises(SpurbenchError, match=match):
        recipe_from_dict(_set(recipe, key, value))


@pytest.mark.parametrize("recipe", [D3S, DDB], ids=["d3s_smoke", "ddb_smoke"])
def test_the_smoke_recipes_themselves_pass(recipe):
    assert recipe_from_dict(dict(recipe)).name == recipe["name"]


def _ddb_from(source: dict, classes: list[dict]) -> dict:
    data = {**DDB, "source": source, "classes": classes}
    data["licenses"] = {**DDB["licenses"], "source": "CC0"}
    return data


def test_ddb_recipes_whose_source_dataset_does_not_fit(photo_dataset, tmp_path):
    folder = str(photo_dataset.path)
    cases = [
        (
            {"dataset": str(tmp_path / "none"), "split": "test"},
            [{"index": 285, "swap_to": 967}, {"index": 967, "swap_to": 285}],
            r"key 'source.dataset': folder '.*none' does not exist",
        ),
        (
            {"dataset": folder, "split": "train"},
            [{"index": 285, "swap_to": 967}, {"index": 967, "swap_to": 285}],
            r"key 'source.split': '.*' has no split 'train'; its splits: test",
        ),
        (
            {"dataset": folder, "split": "test"},
            [{"index": 5000, "swap_to": 967}, {"index": 967, "swap_to": 5000}],
            r"key 'classes\[0\].index': 5000 is not a label of '.*' \(0..999: ",
        ),
        (
            {"dataset": folder, "split": "test"},
            [{"index": 285, "swap_to": 967, "references": {"samples": ["chelsea"]}}, {"index": 967, "swap_to": 285}],
            r"key 'classes\[0\].references': the photos come from `source:`; leave references out",
        ),
    ]
    for source, classes, match in cases:
        with pytest.raises(SpurbenchError, match=match):
            recipe_from_dict(_ddb_from(source, classes))


def test_models_that_cannot_be_fetched_offline():
    from spurbench.generate.inpainting import load_inpainting

    with pytest.raises(SpurbenchError, match=r"cannot load the inpainting model 'org/no-such-inpainter' \(.*\); give"):
        load_inpainting("org/no-such-inpainter")
