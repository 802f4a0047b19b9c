"""Evaluation at leaderboard scale: exact Spurious ImageNet parity, temperature and URL weights, sweeps
(patterns, models files, resume, failures, several processes) and precision.

Every check runs real timm models: the offline EfficientNet-Lite panel (real ImageNet weights) and, where
only a timm config matters (the test input size), timm's resnet18 architecture with random weights.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

from spurbench import cli
from spurbench.classifiers import ClassifierSpec, LoadedClassifier, create_classifier, load_panel
from spurbench.errors import SpurbenchError
from spurbench.evaluate.entry import evaluate
from spurbench.evaluate.inputs import open_dataset, open_positives
from spurbench.evaluate.leaderboard import load_leaderboard
from spurbench.evaluate.predict import ImageItems, predict
from spurbench.evaluate.preprocessing import build_uint8_transforms, data_config_for, normalise_batch
from spurbench.evaluate.sweep import expand_models, my_share, read_models_file

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# The reference: Spurious ImageNet's released preprocessing, copied for comparison only.
# From github.com/YanNeu/spurious_imagenet (MIT License, Copyright (c) 2022 YanNeu):
# utils/datasets/augmentations/imagenet_augmentation.py `get_imageNet_augmentation` (branches
# 'no_crop' for the spurious images and 'test' for ImageNet val, as dataset/spurious_dataset.py calls
# them with interpolation=BICUBIC), and utils/model_normalization.py `NormalizationWrapper.forward`.


def _reference_transform(type, out_size, interpolation):
    from torchvision import transforms

    if type == "test":
        transform_list = [
            transforms.Resize(int(256 / 224 * out_size), interpolation=interpolation),
            transforms.CenterCrop(out_size),
        ]
    elif type == "no_crop":
        transform_list = [
            transforms.Resize(out_size, interpolation=interpolation),
        ]
    transform_list.append(transforms.ToTensor())
    return transforms.Compose(transform_list)


def _reference_normalize(x, mean, std):
    mean = torch.tensor(mean)[..., None, None]
    std = torch.tensor(std)[..., None, None]
    return (x - mean) / std


# (end of the copied reference)
# ------------------------------------------------------------------------------------------------


def _reference_size(model) -> int:
    # spurious_score.py get_model: test_input_size when the timm config declares one, else input_size
    cfg = model.pretrained_cfg
    return (cfg.get("test_input_size") or cfg["input_size"])[1]


def _photos(photo_dataset) -> list[Image.Image]:
    data = open_dataset(photo_dataset.path)
    return [Image.open(__import__("io").BytesIO(r["image"]["bytes"])).convert("RGB") for r in data.rows]


@pytest.fixture(scope="module")
def resnet18():
    """timm's resnet18 architecture (random weights): its config declares test_input_size 288 > input_size 224."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    assert model.pretrained_cfg["test_input_size"] == (3, 288, 288) and model.pretrained_cfg["input_size"] == (
        3,
        224,
        224,
    )
    return model


@pytest.fixture(scope="module")
def lite0():
    return create_classifier(load_panel("offline")[0])


def test_parity_transform_equals_the_released_code_image_by_image(photo_dataset, resnet18, lite0):
    photos = _photos(photo_dataset) + [
        Image.open(f).convert("RGB") for f in sorted(photo_dataset.positives.rglob("*.png"))
    ]
    assert len({p.size for p in photos}) >= 6 and any(p.width != p.height for p in photos)  # non-square, varied
    bicubic = __import__("torchvision").transforms.InterpolationMode.BICUBIC
    for model, images in ((resnet18, photos), (lite0.model, photos[::4])):
        cfg = data_config_for(model, "spurious-imagenet")
        size = _reference_size(model)
        assert cfg["input_size"] == (3, size, size)
        spurious, positive = build_uint8_transforms(cfg, "spurious-imagenet")
        for ours, kind in ((spurious, "no_crop"), (positive, "test")):
            ref = _reference_transform(kind, size, bicubic)
            for img in images:
                expect = _reference_normalize(ref(img), cfg["mean"], cfg["std"])
                got = normalise_batch(ours(img).unsqueeze(0), cfg)[0]
                assert got.shape == expect.shape and torch.equal(got, expect), (kind, img.size)
    # the size is the test size where declared: 288 for resnet18 (timm's eval would use 224), 224 for Lite0
    assert data_config_for(resnet18, "spurious-imagenet")["input_size"] == (3, 288, 288)
    assert data_config_for(resnet18, "timm")["input_size"] == (3, 224, 224)
    # timm preprocessing: uint8 + batch normalisation is bit-identical to timm's own float eval transform
    cfg = data_config_for(lite0.model, "timm")
    t, _ = build_uint8_transforms(cfg, "timm")
    for img in photos[:4]:
        assert torch.equal(normalise_batch(t(img).unsqueeze(0), cfg)[0], timm.data.create_transform(**cfg)(img))


@pytest.mark.slow
def test_parity_evaluation_scores_mixed_shapes_as_the_reference_would(photo_dataset, resnet18):
    clf = LoadedClassifier(
        resnet18,
        dict(timm.data.resolve_data_config(model=resnet18)),
        {"source": "random"},
        sum(p.numel() for p in resnet18.parameters()),
        ClassifierSpec("resnet18"),
    )
    data = open_dataset(photo_dataset.path)
    positives = open_positives(photo_dataset.positives, data.info["classes"])
    # batch 4 over images of several shapes: each batch is grouped by shape, one forward per group
    entry, preds = evaluate(clf, data, positives=positives, preprocessing="spurious-imagenet", batch_size=4, workers=0)
    assert entry["data_config"]["input_size"] == [3, 288, 288] and entry["preprocessing"] == "spurious-imagenet"
    assert entry["precision"] == "float32"
    ref = _reference_transform("no_crop", 288, __import__("torchvision").transforms.InterpolationMode.BICUBIC)
    cfg = entry["data_config"]
    with torch.inference_mode():
        expect = [
            resnet18(_reference_normalize(ref(img), cfg["mean"], cfg["std"]).unsqueeze(0)).softmax(-1)[0]
            for img in _photos(photo_dataset)
        ]
    np.testing.assert_allclose(
        preds.target_prob, [float(p[k]) for p, k in zip(expect, preds.label)], rtol=1e-4, atol=1e-7
    )
    np.testing.assert_array_equal(preds.top5, np.stack([p.topk(5).indices.numpy() for p in expect]))
    assert entry["metrics"]["num_positives"] == len(positives) and entry["metrics"]["spurious_score_ap"] is not None


def test_temperature_divides_the_logits(photo_dataset, lite0):
    spec = load_panel("offline")[0]
    hot = create_classifier(
        ClassifierSpec(spec.model, weights=spec.weights, name="lite0-T", temperature=0.7155761122703552)
    )
    assert hot.temperature == pytest.approx(0.7155761122703552)
    data = open_dataset(photo_dataset.path, limit=5)
    cfg = data_config_for(lite0.model, "timm")
    t, _ = build_uint8_transforms(cfg, "timm")
    # PIL decoding, to compare with timm's own PIL transform to 1e-4 (the torchvision path: tests/test_decode.py)
    plain = predict(lite0, ImageItems(t, data.labels, rows=data.rows, decode="pil"), workers=0)
    scaled = predict(hot, ImageItems(t, data.labels, rows=data.rows, decode="pil"), workers=0)
    # independent: the model's logits on timm's own float transform, divided by T, softmaxed
    transform = timm.data.create_transform(**cfg)
    with torch.inference_mode():
        logits = torch.stack(
            [
                lite0.model.to(memory_format=torch.contiguous_format)(transform(img).unsqueeze(0))[0]
                for img in _photos(photo_dataset)[:5]
            ]
        )
    expect = (logits / 0.7155761122703552).softmax(-1)
    np.testing.assert_allclose(
        scaled.target_prob, expect[torch.arange(5), torch.as_tensor(data.labels)].numpy(), rtol=1e-4
    )
    np.testing.assert_array_equal(scaled.top5, plain.top5)  # a temperature never reorders the classes
    assert not np.allclose(scaled.target_prob, plain.target_prob, rtol=1e-3)
    entry, _ = evaluate(hot, data, workers=0)
    assert (
        entry["temperature"] == pytest.approx(0.7155761122703552)
        and "temperature" not in evaluate(lite0, data, workers=0)[0]
    )


def test_weights_from_a_url_are_downloaded_once(tmp_path, monkeypatch):
    w = load_panel("offline")[0].weights
    source = tmp_path / "served" / "lite0.pth"
    source.parent.mkdir()
    source.write_bytes(Path(md.distribution(w["package"]).locate_file(w["file"])).read_bytes())
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    spec = ClassifierSpec(
        "tf_efficientnet_lite0", weights={"url": source.as_uri(), "file": "lite0-test.pth", "key_map": "positional"}
    )
    clf = create_classifier(spec)  # a file:// URL goes through the same download code as https://
    assert (tmp_path / "hub" / "checkpoints" / "lite0-test.pth").is_file() and clf.weights["source"] == source.as_uri()
    source.unlink()  # the second load uses the cached file
    assert create_classifier(spec).weights["sha256"] == clf.weights["sha256"]
    bad = ClassifierSpec("tf_efficientnet_lite0", weights={"url": (tmp_path / "nothing.pth").as_uri(), "file": "x.pth"})
    with pytest.raises(SpurbenchError, match=r"cannot download the weights of 'tf_efficientnet_lite0' .* put it at"):
        create_classifier(bad)


def test_published_table_panel():
    specs = {s.display_name: s for s in load_panel("spurious-imagenet")}
    robust = specs["resnet50.robust_l2_improved_3_ep"]
    assert robust.temperature == 0.7155761122703552 and robust.model == "resnet50.tv_in1k" and robust.key_map == "none"
    madry = specs["resnet50.robustness_imagenet_l2_3_0"]
    assert (
        madry.weights["url"].startswith("https://")
        and madry.key_map == "strip_prefix:module.model."
        and madry.temperature is None
    )
    default = {s.display_name: s for s in load_panel("default")}
    assert "no published spurious score" in default["resnet50.madry_l2_eps3"].note
    assert not list(REPO.glob("classifiers/**/*.pt")) and not list(
        REPO.glob("classifiers/**/*.pth")
    )  # weights never committed


# ------------------------------------------------------------------------------------------------
# sweeps


def test_pattern_expansion_matches_timm(tmp_path, capsys):
    names, left_out = expand_models(["convnext_atto*", "tf_efficientnet_lite0", "convnext_atto.d2_in1k"])
    listed = timm.list_models("convnext_atto*", pretrained=True)
    assert names == listed + ["tf_efficientnet_lite0"]  # in order, repeats dropped
    assert not left_out
    names, left_out = expand_models(["vit_base_patch16_224.augreg*"])
    assert "vit_base_patch16_224.augreg_in21k_ft_in1k" in names and left_out["vit_base_patch16_224.augreg*"] == [
        "vit_base_patch16_224.augreg_in21k"
    ]
    with pytest.raises(SpurbenchError, match="pattern 'nosuchnet\\*' matches no timm model"):
        expand_models(["nosuchnet*"])

    models_file = tmp_path / "models.txt"
    models_file.write_text("# my sweep\nconvnext_atto*   # a pattern\n\nresnet18.a1_in1k\n")
    assert read_models_file(models_file) == ["convnext_atto*", "resnet18.a1_in1k"]
    assert cli.main(["eval", "--models-file", str(models_file), "--model", "tf_efficientnet_lite0", "--list"]) == 0
    out = capsys.readouterr().out.split()
    assert out == ["tf_efficientnet_lite0", *listed, "resnet18.a1_in1k"]
    models_file.write_text("resnet18 resnet34\n")
    assert cli.main(["eval", "--models-file", str(models_file), "--list"]) == 2
    assert "line 1 holds 'resnet18 resnet34'; write one model name or pattern per line" in capsys.readouterr().err


def test_processes_share_models_without_overlap():
    items = list(range(11))
    shares = [my_share(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and all(not set(a) & set(b) for a in shares for b in shares if a is not b)


def _lite_panel(tmp_path: Path, n: int) -> Path:
    panel = yaml.safe_load((REPO / "classifiers" / "offline.yaml").read_text())
    panel["models"] = panel["models"][:n]
    path = tmp_path / "lite.yaml"
    path.write_text(yaml.safe_dump(panel))
    return path


@pytest.mark.slow
def test_sweep_records_failures_goes_on_and_resumes(photo_dataset, tmp_path, capsys):
    lb = tmp_path / "lb.json"
    args = [
        "eval",
        "--model",
        "resnet50.a1_in1k",
        "--model",
        "resnet_not_a_model",
        "--panel",
        str(_lite_panel(tmp_path, 1)),
        "--dataset",
        str(photo_dataset.path),
        "--leaderboard",
        str(lb),
        "--limit",
        "4",
        "--workers",
        "0",
    ]
    assert cli.main(args) == 1  # some failed: exit status 1, the working model is scored all the same
    out, err = capsys.readouterr()
    board = load_leaderboard(lb)
    assert [e["model"] for e in board["entries"]] == ["tf_efficientnet_lite0"]
    failures = {f["model"]: f for f in board["failures"]}
    assert set(failures) == {"resnet50.a1_in1k", "resnet_not_a_model"}
    assert "cannot be fetched from the Hugging Face Hub" in failures["resnet50.a1_in1k"]["reason"]
    assert "unknown model 'resnet_not_a_model'" in failures["resnet_not_a_model"]["reason"]
    assert failures["resnet50.a1_in1k"]["command"].startswith("spurbench eval --model resnet50.a1_in1k --dataset")
    assert "FAILED resnet_not_a_model: unknown model" in err and "Traceback" not in err
    entry = board["entries"][0]
    assert entry["precision"] == "float32" and entry["metrics"]["num_images"] == 4

    # the same command again resumes: the scored model is skipped (its entry untouched), the failed ones retried
    assert cli.main(args) == 1
    out, _ = capsys.readouterr()
    assert "skip tf_efficientnet_lite0: already on the leaderboard" in out
    again = load_leaderboard(lb)
    assert again["entries"] == board["entries"] and len(again["failures"]) == 2
    # --force re-scores; other data (--limit 5) is not "already scored"
    assert cli.main([*args[:-4], "--limit", "5", "--workers", "0", "--force"]) == 1
    assert load_leaderboard(lb)["entries"][0]["metrics"]["num_images"] == 5


@pytest.mark.slow
def test_two_accelerate_processes_take_alternate_models(photo_dataset, tmp_path):
    lb = tmp_path / "lb.json"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",  # the launcher picks a free port itself (no window between checking and binding)
        "-m",
        "spurbench",
        "eval",
        "--panel",
        str(_lite_panel(tmp_path, 2)),
        "--model",
        "resnet_not_a_model",
        "--dataset",
        str(photo_dataset.path),
        "--leaderboard",
        str(lb),
        "--limit",
        "3",
        "--workers",
        "0",
    ]
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one model failed
    board = load_leaderboard(lb)
    # order: resnet_not_a_model (named), lite0, lite1 (panel): process 0 takes #0 and #2, process 1 takes #1
    by_model = {e["model"]: e["process"] for e in board["entries"]}
    assert by_model == {
        "tf_efficientnet_lite0": {"rank": 1, "world_size": 2},
        "tf_efficientnet_lite1": {"rank": 0, "world_size": 2},
    }
    assert [f["model"] for f in board["failures"]] == ["resnet_not_a_model"]
    assert "process 0 of 2: 2 of 3 models" in proc.stdout and "process 1 of 2: 1 of 3 models" in proc.stdout
    assert set(board["consistency"]["models"]) == {"tf_efficientnet_lite0", "tf_efficientnet_lite1"}


def test_run_flag_mistakes_are_one_line(photo_dataset, tmp_path, capsys):
    data = ["--dataset", str(photo_dataset.path), "--leaderboard", str(tmp_path / "lb.json")]
    for args, message in [
        (["--model", "tf_efficientnet_lite0", "--threads", "0", *data], "--threads must be at least 1, got 0"),
        (
            ["--model", "convnext_atto*", "--weights", "w.pth", *data],
            r"--weights applies to exactly one --model \(not a pattern",
        ),
        (["--model", "tf_efficientnet_lite0"], "--dataset is required"),
        (["--models-file", str(tmp_path / "none.txt"), *data], "--models-file '.*none.txt' does not exist"),
    ]:
        assert cli.main(["eval", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and __import__("re").search(message, err[0]), err
    assert not (tmp_path / "lb.json").exists()
