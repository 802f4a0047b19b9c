"""Build recipes: the shipped ones validate, the hash is canonical, and every mistake names its key."""

from __future__ import annotations

import copy

import pytest
import yaml

from spurbench import cli, imagenet
from spurbench.errors import SpurbenchError
from spurbench.generate.recipe import load_recipe, recipe_from_dict, recipe_hash
from spurbench.resources import resolve


def _smoke() -> dict:
    return yaml.safe_load(resolve("recipe", "smoke").read_text())


def test_shipped_recipes_validate():
    _, smoke = load_recipe("smoke")
    assert smoke.base_model.tiny is not None and smoke.sfsl_weight > 0 and smoke.builder == "sfsl"
    assert smoke.feature_model["model"] == "tf_efficientnet_lite0"
    # the smoke recipe's feature model is exactly the offline panel's entry (same weights, same key map)
    from spurbench.classifiers import load_panel

    assert load_panel("offline")[0].to_dict() == smoke.feature_model

    _, full = load_recipe("spurious_imagenet")
    assert [c.index for c in full.classes] == [c.index for c in imagenet.spurious_imagenet_classes()]
    table = {c.index: c.spurious_feature for c in imagenet.spurious_imagenet_classes()}
    assert all(c.spurious_feature == table[c.index] for c in full.classes)  # defaults filled from the table
    assert all(c.references.spurious_imagenet and c.component is None for c in full.classes)
    assert full.base_model.id and full.base_model.revision
    assert full.feature_model["weights"]["hub"] == "madrylab/robust-imagenet-models"
    assert full.mixed_precision == "fp16" and full.gradient_checkpointing
    assert 400 <= full.training["max_train_steps"] <= 800 and full.training["learning_rate_unet"] == 2e-6
    assert any("beach" in t for t in full.prompts.generation) and any("market" in t for t in full.prompts.generation)


def test_templates_render_with_token_and_noun():
    _, r = load_recipe("smoke")
    bee = r.class_by_index()[309]
    assert r.instance_prompt(bee) == "a photo of a sks flower"
    assert r.prior_prompt("flower") == "a photo of a flower"
    assert r.generation_prompts(bee) == ["a photo of a sks flower", "a photo of a sks flower on the beach"]
    d = _smoke()
    d["prompts"]["generation"] = ["{{literal}} {token} {noun}"]
    assert recipe_from_dict(d).generation_prompts(bee) == ["{literal} sks flower"]


def test_hash_is_canonical():
    d = _smoke()
    h = recipe_hash(recipe_from_dict(d))
    assert len(h) == 64
    # key order and spelled-out defaults do not change it
    reordered = dict(reversed(list(copy.deepcopy(d).items())))
    reordered["mixed_precision"] = "no"
    reordered["classes"][0]["component"] = -1
    assert recipe_hash(recipe_from_dict(reordered)) == h
    # any value that changes the build does
    changed = copy.deepcopy(d)
    changed["generation"]["images_per_prompt"] = 3
    assert recipe_hash(recipe_from_dict(changed)) != h
    changed = copy.deepcopy(d)
    changed["classes"][1]["noun"] = "blossom"
    assert recipe_hash(recipe_from_dict(changed)) != h


def _edit(path: str, value, delete: bool = False) -> dict:
    """The smoke recipe with one key (dotted path, [i] for list items) set or deleted."""
    d = _smoke()
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    node = d
    for k in keys[:-1]:
        node = node[k]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    "path, value, delete, message",
    [
        ("resolutoin", 64, False, r"unknown key 'resolutoin'"),
        ("classes[1].nown", "x", False, r"unknown key 'classes\[1\]\.nown'"),
        ("generation.images_per_promt", 2, False, r"unknown key 'generation\.images_per_promt'"),
        ("resolution", "64", False, r"key 'resolution' must be an integer, got str '64'"),
        ("resolution", 60, False, r"key 'resolution' must be a positive multiple of 8"),
        ("keep_weights", "yes", False, r"key 'keep_weights' must be true or false"),
        ("generation.guidance_scale", "high", False, r"key 'generation\.guidance_scale' must be a number"),
        ("classes", {"index": 309}, False, r"key 'classes' must be a list"),
        ("classes[0].noun", None, True, r"missing key 'classes\[0\]\.noun'"),
        ("token", None, True, r"missing key 'token'"),
        ("classes[2].index", 1000, False, r"key 'classes\[2\]\.index'.*not an ImageNet-1k class index"),
        ("classes[1].index", 309, False, r"key 'classes\[1\]\.index': class 309 is listed twice"),
        (
            "classes[2]",
            {"index": 1, "noun": "fish", "references": {"samples": ["coffee"]}},
            False,
            r"key 'classes\[2\]\.spurious_feature' is required: class 1 is not one of Spurious ImageNet's 100",
        ),
        (
            "classes[0].references",
            {"samples": ["flower"], "folder": "x"},
            False,
            r"key 'classes\[0\]\.references' needs exactly one",
        ),
        (
            "classes[0].references.samples",
            ["flowers"],
            False,
            r"key 'classes\[0\]\.references\.samples\[0\]': unknown sample photo 'flowers'",
        ),
        (
            "prompts.generation",
            ["a photo of a {token} {noun}", "a {token} {nuon}"],
            False,
            r"key 'prompts\.generation\[1\]': unknown placeholder \{nuon\}",
        ),
        (
            "prompts.generation",
            ["a photo of a {noun}"],
            False,
            r"key 'prompts\.generation\[0\]'.*must contain \{token\}",
        ),
        ("prompts.prior", "a {token} {noun}", False, r"key 'prompts\.prior'.*must not contain \{token\}"),
        ("prompts.instance", "a photo of {token", False, r"key 'prompts\.instance'.*malformed"),
        ("base_model", {"id": "x/y", "tiny": {}}, False, r"key 'base_model' needs exactly one of"),
        ("base_model.tiny.prediction_type", "sample", False, r"key 'base_model\.tiny\.prediction_type'"),
        ("mixed_precision", "fp8", False, r"key 'mixed_precision' must be one of no, fp16, bf16"),
        ("training.max_train_step", 3, False, r"key 'training'.*max_train_step"),
        ("training.sfsl_weight", -1, False, r"key 'training'.*sfsl_weight"),
        ("feature_model", {"modle": "resnet50"}, False, r"key 'feature_model'.*modle"),
        ("feature_model", None, True, r"key 'feature_model' is required when training\.sfsl_weight"),
        ("licenses.references", None, True, r"missing licenses\.references"),
        ("created", "yesterday", False, r"key 'created' must be a date"),
        ("generation.batch_size", 0, False, r"key 'generation\.batch_size' must be >= 1"),
    ],
)
def test_mistakes_name_the_key(path, value, delete, message):
    with pytest.raises(SpurbenchError, match=message):
        recipe_from_dict(_edit(path, value, delete))


def test_plain_dreambooth_needs_no_feature_model():
    d = _edit("training.sfsl_weight", 0)
    del d["feature_model"]
    del d["licenses"]["feature_model"]
    r = recipe_from_dict(d)
    assert r.builder == "dreambooth" and r.feature_model is None


def test_unquoted_created_date_is_accepted():
    d = yaml.safe_load(resolve("recipe", "smoke").read_text() + "\ncreated: 2025-01-31\n")
    assert recipe_from_dict(d).created == "2025-01-31"


def test_cli_reports_the_bad_key_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_edit("classes[1].index", 1234)))
    out = tmp_path / "out"
    rc = cli.main(["build", "--recipe", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("spurbench build: error: recipe '") and "classes[1].index" in err and "\n" not in err
    assert not out.exists() and not (tmp_path / "out.work").exists()
    rc = cli.main(["build", "--recipe", "no-such-recipe", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown recipe 'no-such-recipe'" in err and "smoke" in err and "spurious_imagenet" in err


def test_method_key_picks_the_method_and_sfsl_is_the_default():
    from spurbench.generate.methods import METHODS, get_method

    d = _smoke()
    h = recipe_hash(recipe_from_dict(d))
    # recipes written before methods existed are sfsl; spelling the default out changes nothing
    assert recipe_from_dict({**d, "method": "sfsl"}).method == "sfsl"
    assert recipe_hash(recipe_from_dict({**d, "method": "sfsl"})) == h
    # dreambooth is sfsl without the similarity loss: same module, builder column "dreambooth"
    assert get_method("dreambooth") is get_method("sfsl") and set(METHODS) >= {"sfsl", "dreambooth", "d3s"}
    plain = _edit("training.sfsl_weight", 0)
    assert recipe_from_dict({**plain, "method": "dreambooth"}).builder == "dreambooth"
    with pytest.raises(
        SpurbenchError,
        match=r"method dreambooth is sfsl without the similarity loss, but training\.sfsl_weight is 0\.1",
    ):
        recipe_from_dict({**d, "method": "dreambooth"})
    with pytest.raises(SpurbenchError, match=r"key 'method' must be one of sfsl, dreambooth.*'dreamboot'"):
        recipe_from_dict({**d, "method": "dreamboot"})
