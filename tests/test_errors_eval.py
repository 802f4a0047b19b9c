"""`spurbench eval`'s one-line errors for flag values, model names, class subsets, model lists, zero-shot
template / class-name files and predictions CSVs: each triggered in-process with a small input, checked by its
message (and by the exit status 2 and a single stderr line where it goes through the CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.evaluate.class_subset import load_class_subset
from spurbench.evaluate.predictions_csv import read_predictions
from spurbench.evaluate.sweep import expand_pattern, process_share, read_models_file
from spurbench.zoo import check_zoo_name
from spurbench.zoo.open_clip import check_name
from spurbench.zoo.zero_shot import load_classnames, load_templates


def _eval_error(argv: list[str], capsys) -> str:
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("spurbench eval: error: "), err
    return err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--model", "resnet18", "--batch-size", "0"], r"--batch-size must be at least 1, got 0"),
        (["--model", "resnet18", "--workers", "-1"], r"--workers must be 0 or more, got -1"),
        (["--model", "resnet18", "--threads", "0"], r"--threads must be at least 1, got 0"),
        (["--model", "resnet18", "--model", "resnet34", "--weights", "w.pth"], r"--weights applies to exactly one"),
        (["--model", "resnet*", "--name", "x"], r"--name applies to exactly one --model"),
        (["--model", "resnet18", "--key-map", "positional"], r"--key-map applies to --weights; add --weights FILE"),
        ([], r"no classifier given; pass --model NAME\|PATTERN"),
        (["--model", "resnet18", "--templates", "simple"], r"--templates applies to zero-shot models .* no such"),
        (["--model", "resnet18"], r"--dataset is required \(a local folder or a Hugging Face Hub id\)"),
        (["--model", "no_such_net*"], r"model pattern 'no_such_net\*' matches no timm model with pretrained"),
        (["--model", "resnet18", "--class-subset", "/no/such/subset.txt"], r"--class-subset '/no/such/subset.txt' is"),
    ],
)
def test_an_eval_flag_mistake_is_one_line(argv, match, capsys):
    import re

    assert re.search(match, _eval_error(argv, capsys))


def test_a_model_given_by_flag_and_panel_is_one_line(tmp_path, capsys):
    panel = tmp_path / "panel.yaml"
    panel.write_text("models: [resnet18]\n")
    err = _eval_error(["--model", "resnet18", "--panel", str(panel), "--list"], capsys)
    assert "classifier resnet18 given more than once; drop the repeat or give --name" in err


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"names no class; write one ImageNet index or WordNet id per line"),
        ("# only a comment\n\n", r"names no class"),
        ("1\n2\n1\n", r"names class 1 more than once"),
        ("1\n1000\n", r"line 2: .*0..999"),
        ("n99999999\n", r"line 1: "),
    ],
)
def test_a_bad_class_subset_file_is_one_line(tmp_path, text, match):
    path = tmp_path / "subset.txt"
    path.write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        load_class_subset(str(path))
    assert path.read_text() == text


def test_class_subset_files_that_cannot_be_read_and_labels_outside_it(tmp_path):
    with pytest.raises(SpurbenchError, match=r"cannot read --class-subset '.*' \(IsADirectoryError\); give a UTF-8"):
        load_class_subset(str(tmp_path))
    (tmp_path / "latin1.txt").write_bytes(b"1 # caf\xe9\n")
    with pytest.raises(SpurbenchError, match=r"\(UnicodeDecodeError\); give a UTF-8 text file"):
        load_class_subset(str(tmp_path / "latin1.txt"))
    subset = load_class_subset("spurious-imagenet")
    with pytest.raises(SpurbenchError, match=r"the set has images of class 1 \(goldfish\), outside --class-subset"):
        subset.check_labels(np.array([1, 285]), "the set")


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"names no model; write one timm model name or pattern per line"),
        ("resnet18 resnet34\n", r"line 1 holds 'resnet18 resnet34'; write one model name or pattern per line"),
    ],
)
def test_a_bad_models_file_is_one_line(tmp_path, text, match):
    path = tmp_path / "models.txt"
    path.write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        read_models_file(path)


def test_models_files_that_are_missing_or_unreadable(tmp_path):
    with pytest.raises(SpurbenchError, match=r"--models-file '.*nope.txt' does not exist"):
        read_models_file(tmp_path / "nope.txt")
    with pytest.raises(SpurbenchError, match=r"cannot read --models-file .*\(IsADirectoryError\)"):
        read_models_file(tmp_path)


def test_model_patterns_of_other_zoos():
    with pytest.raises(SpurbenchError, match=r"model pattern 'open_clip:NoSuch\*' matches no open_clip ARCH/TAG"):
        expand_pattern("open_clip:NoSuch*")
    with pytest.raises(SpurbenchError, match=r"transformers: models cannot be listed offline"):
        expand_pattern("transformers:google/*")


@pytest.mark.parametrize(
    "env, match",
    [
        ({"WORLD_SIZE": "two"}, r"environment variable WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK=2 and WORLD_SIZE=2 are inconsistent"),
    ],
)
def test_a_bad_launcher_environment_is_one_line(monkeypatch, env, match):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SpurbenchError, match=match):
        process_share()


@pytest.mark.parametrize(
    "name, match",
    [
        ("transformers:", r"'transformers:' names no model; write transformers:org/repo"),
        ("timm:resnet18", r"'timm:resnet18' is not a zoo model name; use open_clip:ARCH/TAG"),
        ("open_clip:hf-hub:", r"'open_clip:hf-hub:' is not a Hub model name"),
        ("open_clip:ViT-B-32/no-such-tag", r"unknown open_clip model 'ViT-B-32/no-such-tag'; write ARCH/TAG"),
    ],
)
def test_a_bad_zoo_name_is_one_line(name, match):
    with pytest.raises(SpurbenchError, match=match):
        check_zoo_name(name)


def test_an_open_clip_local_folder_without_its_files(tmp_path):
    with pytest.raises(SpurbenchError, match=r"has no open_clip_config.json; point local-dir: at a folder"):
        check_name(f"local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(SpurbenchError, match=r"folder '.*' has no open_clip_model.safetensors"):
        check_name(f"local-dir:{tmp_path}")


@pytest.mark.parametrize(
    "content, match",
    [
        (None, r"--templates '.*' does not exist; give a JSON file of templates"),
        ("not json", r"cannot read --templates '.*' \(JSONDecodeError\)"),
        ({"a": ["{c}"], "b": ["{c}"]}, r"maps 2 datasets \(a, b\); keep one, or name it `imagenet1k`"),
        ([], r"must hold a non-empty JSON list of templates"),
        (["a photo of a {c}", "a photo"], r"template 'a photo' has no \{c\} where the class name goes"),
    ],
)
def test_a_bad_templates_file_is_one_line(tmp_path, content, match):
    path = tmp_path / "templates.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SpurbenchError, match=match):
        load_templates(str(path))


def test_a_classnames_file_of_the_wrong_length(tmp_path):
    path = tmp_path / "names.json"
    path.write_text(json.dumps(["bird", "fish", "cat"]))
    with pytest.raises(SpurbenchError, match=r"holds 3 names but the label set has 2 classes; give one name per"):
        load_classnames(str(path), ["landbird", "waterbird"])


@pytest.mark.parametrize(
    "text, match",
    [
        ("index,label\n0,1\n", r"lacks column\(s\) fooled_top1; re-run `spurbench eval` for that model"),
        ("index,label,fooled_top1\n0,1,maybe\n", r"has a bad value in column 'fooled_top1'"),
        ("index,label,fooled_top1\nx,1,0\n", r"has a bad value in column 'index'"),
    ],
)
def test_a_bad_predictions_csv_is_one_line(tmp_path, text, match):
    path = tmp_path / "preds.csv"
    path.write_text(text)
    with pytest.raises(SpurbenchError, match=match):
        read_predictions(path)
    assert path.read_text() == text


def test_a_missing_or_unreadable_predictions_csv(tmp_path):
    with pytest.raises(SpurbenchError, match=r"predictions file '.*none.csv' is missing; re-run `spurbench eval`"):
        read_predictions(tmp_path / "none.csv")
    with pytest.raises(SpurbenchError, match=r"cannot read predictions file '.*': .*; re-run `spurbench eval`"):
        read_predictions(tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preprocessing": "imagenet"}, r"unknown preprocessing 'imagenet'; use one of timm, spurious-imagenet"),
        ({"batch_size": 0}, r"--batch-size must be at least 1, got 0"),
        ({"workers": -1}, r"--workers must be 0 \(decode in the main process\) or more, got -1"),
    ],
)
def test_evaluate_refuses_bad_settings_before_loading_anything(photo_dataset, kwargs, match):
    from spurbench.classifiers import ClassifierSpec
    from spurbench.evaluate.entry import evaluate

    with pytest.raises(SpurbenchError, match=match):
        evaluate(ClassifierSpec(model="resnet18"), photo_dataset.path, **kwargs)
