"""`spurbench build`'s one-line errors before anything is built (class selection, --plan flags, --out,
--push-to-hub, --work-dir, --device, licence placeholders), the shipped recipe / panel names, and the bounded
readers of untrusted input (YAML, images, class ids). Nothing here loads a model."""

from __future__ import annotations

from importlib.resources import files

import pytest
import torch
import yaml

from spurbench import imagenet, resources, untrusted
from spurbench.cli import main
from spurbench.errors import SpurbenchError

SMOKE = (files("spurbench") / "recipes" / "smoke.yaml").read_text()


def _build_error(argv: list[str], capsys) -> str:
    assert main(["build", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("spurbench build: error: "), err
    return err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--plan", "--classes", "bee"], "--classes: 'bee' is not an ImageNet class index; give integers like 309"),
        (["--plan", "--classes", "309,1"], "--classes: class 1 is not in the recipe; its classes are 309, 324, 576"),
        (["--plan", "--plan-gpu", "K80"], "--plan-gpu 'K80' is not known to the cost model; use one of"),
        (["--plan", "--plan-utilization", "1.5"], "--plan-utilization must be a fraction in (0, 1], got 1.5"),
        ([], "the following argument is required: --out DIR (the folder to export the dataset to)"),
    ],
)
def test_a_build_flag_mistake_is_one_line(extra, needle, capsys):
    assert needle in _build_error(["--recipe", "smoke", *extra], capsys)


def test_a_bad_hub_repo_or_work_dir_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    err = _build_error(["--recipe", "smoke", "--out", str(out), "--push-to-hub", "not a repo"], capsys)
    assert "--push-to-hub 'not a repo' is not a Hub repo id; use ORG/NAME" in err
    err = _build_error(["--recipe", "smoke", "--out", str(out), "--work-dir", str(out)], capsys)
    assert "--work-dir must not be --out or inside it" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    err = _build_error(["--recipe", "smoke", "--out", str(tmp_path / "out"), "--device", "cuda"], capsys)
    assert "--device cuda but no CUDA GPU is visible; use --device cpu" in err
    assert not (tmp_path / "out").exists()


def test_a_licence_placeholder_is_refused(tmp_path, capsys):
    data = yaml.safe_load(SMOKE)
    data["licenses"]["references"] = "State the licence of the reference photos here"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    err = _build_error(["--recipe", str(recipe), "--out", str(tmp_path / "out")], capsys)
    assert "key 'licenses.references' is the placeholder 'State the licence of the reference photos here'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kind, name, match",
    [
        ("recipe", "no_such_recipe", r"unknown recipe 'no_such_recipe'; shipped recipes are: .*smoke"),
        ("panel", "no/such/panel.yaml", r"panel file 'no/such/panel.yaml' does not exist; give a path to a YAML"),
    ],
)
def test_an_unknown_recipe_or_panel_name(kind, name, match):
    with pytest.raises(SpurbenchError, match=match):
        resources.load_yaml(kind, name)


@pytest.mark.parametrize(
    "text, match",
    [
        ("models: [a\n", r"panel file '.*p.yaml' is not valid YAML: "),
        ("- resnet18\n", r"panel file '.*p.yaml' must contain a YAML mapping at the top level"),
    ],
)
def test_a_panel_that_is_not_a_mapping(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        resources.load_yaml("panel", path)


def test_untrusted_yaml_is_bounded():
    with pytest.raises(SpurbenchError, match=r"the card is \d+ bytes, over the 1 KiB spurbench reads"):
        untrusted.load_yaml("a: " + "x" * 2000, "the card", max_bytes=1024)
    with pytest.raises(SpurbenchError, match=r"the card is not valid YAML.*; fix or remove it"):
        untrusted.load_yaml("a: [b\n", "the card")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh")
    )
    with pytest.raises(SpurbenchError, match=r"the card expands to more than \d+ values"):
        untrusted.load_yaml(bomb, "the card")


def test_untrusted_images_are_checked_before_decoding(tmp_path):
    with pytest.raises(SpurbenchError, match=r"cannot read row 3: not an image spurbench can open"):
        untrusted.image_size(b"not an image at all", "row 3")
    with pytest.raises(SpurbenchError, match=r"row 4 is 20000 x 20000 pixels, over spurbench's limit"):
        untrusted.check_image_size((20000, 20000), "row 4")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: imagenet.check_index(-1), r"class id -1 is not an ImageNet-1k class index \(expected an integer"),
        (lambda: imagenet.check_index("3"), r"class id '3' is not an ImageNet-1k class index"),
        (lambda: imagenet.wnid_to_index("n0000"), r"'n0000' is not an ImageNet-1k WordNet id"),
    ],
)
def test_a_bad_class_id_is_one_line(call, match):
    with pytest.raises(SpurbenchError, match=match):
        call()


def test_a_corrupt_work_dir_state_is_one_line_and_kept(tmp_path, capsys):
    from spurbench.files import WrittenFolder
    from spurbench.generate.stages import STATE_FILE

    work = tmp_path / "work"
    work.mkdir()
    WrittenFolder(work, "--work-dir").save()  # a work dir a build made carries spurbench's record
    (work / STATE_FILE).write_text("{not json")
    err = _build_error(
        ["--recipe", "smoke", "--out", str(tmp_path / "out"), "--work-dir", str(work), "--device", "cpu"], capsys
    )
    assert f"work dir state '{work / STATE_FILE}' is corrupt; delete the work dir" in err
    assert (work / STATE_FILE).read_text() == "{not json"
    assert not (tmp_path / "out").exists()


def test_a_group_column_with_a_missing_value():
    from spurbench.evaluate.shift import group_values

    with pytest.raises(SpurbenchError, match=r"dataset 'd' row 1 has no value in group column `place`; give every"):
        group_values(["land", None], "place", "d")


def test_a_base_model_that_cannot_be_fetched_is_one_line(tmp_path, capsys):
    data = yaml.safe_load(SMOKE)
    data["base_model"] = {"id": "org/no-such-diffusion-model"}
    data["licenses"]["base_model"] = "CreativeML Open RAIL-M"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    argv = ["--recipe", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(["build", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the build's progress lines
    assert err.startswith("spurbench build: error: ")
    assert "cannot get base model 'org/no-such-diffusion-model' (revision None) from the Hugging Face Hub" in err
    assert "HF_HUB_OFFLINE is set" in err
    assert not (tmp_path / "out").exists()
