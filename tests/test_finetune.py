"""`spurbench finetune`: DDB's balanced loss, the minority groups, resuming, and the weights it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _photo
from test_waterbirds import make_waterbirds_tree

from spurbench import finetune as ft
from spurbench.classifiers import ClassifierSpec, create_classifier, load_panel
from spurbench.cli import main
from spurbench.dataset import DatasetCard, write_dataset
from spurbench.importers import waterbirds


def test_balanced_loss_against_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [0.0, 0.0], [1.0, -1.0], [-2.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    terms = torch.tensor([0, 0, 1, 2, 2])

    def ce(row: int) -> float:  # -log softmax by hand
        z = logits[row].tolist()
        return float(np.log(np.exp(z[0]) + np.exp(z[1])) - z[labels[row]])

    expected = (ce(0) + ce(1)) / 2 + 6 * ce(2) + 10 * (ce(3) + ce(4)) / 2
    loss, parts = ft.balanced_loss(logits, labels, terms, 6.0, 10.0)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert parts[1] == pytest.approx(ce(2), rel=1e-6)
    # a term with no rows in the batch adds nothing (not NaN, as a mean over no rows would)
    loss, parts = ft.balanced_loss(logits[:2], labels[:2], terms[:2], 6.0, 10.0)
    assert float(loss) == pytest.approx((ce(0) + ce(1)) / 2, rel=1e-6) and set(parts) == {0}


def test_minority_groups_and_loss_terms():
    groups = ["a/x"] * 5 + ["a/y"] * 2 + ["b/x"] * 1 + ["b/y"] * 7
    assert ft.default_minority_groups(groups) == ["a/y", "b/x"]  # the rarest (b/x) gets gamma2
    # with counterfactuals, their groups are the candidates; one the training split lacks is the rarest
    assert ft.default_minority_groups(groups, ["b/y", "c/x", "b/y"]) == ["b/y", "c/x"]
    assert ft.default_minority_groups(groups, ["c/x", "c/x"]) == ["c/x", None]  # one group kept: gamma2 unused
    assert ft.loss_terms(["b/x", "a/y", "b/y", "a/y"], ["a/y", "b/x"]).tolist() == [2, 1, 0, 1]
    with pytest.raises(Exception, match="weighs two"):
        ft.default_minority_groups(["a/x", "a/x"])


@pytest.fixture(scope="module")
def group_data(tmp_path_factory):
    """A Waterbirds-layout import and a few counterfactual rows in the same label set."""
    from datasets import Value

    root = tmp_path_factory.mktemp("ft")
    data = waterbirds.import_waterbirds(make_waterbirds_tree(root / "wb_src"), root / "wb")
    rows = []
    for i, (photo, label, group) in enumerate(
        [("chelsea", 1, "waterbird/land"), ("coffee", 0, "landbird/water"), ("rocket", 1, "waterbird/land")]
    ):
        rows.append(
            dict(
                image=_photo(photo)[:80, :100],
                label=label,
                class_name=waterbirds.LABEL_NAMES[label],
                spurious_feature="",
                component=-1,
                source="generated",
                builder="ddb",
                prompt="p",
                seed=i,
                group=group,
            )
        )
    cf = write_dataset(
        root / "cf",
        {"train": rows},
        DatasetCard(pretty_name="cf for finetune test", kind="shift", label_set=waterbirds.LABEL_SET),
        extra_features={"group": Value("string")},
        label_names=waterbirds.LABEL_NAMES,
    )
    return data, cf


def _inputs(group_data, out: Path) -> ft.RunInputs:
    return ft.RunInputs(
        spec=load_panel("offline")[0], data=str(group_data[0]), counterfactuals=str(group_data[1]), out=str(out)
    )


@pytest.mark.slow
def test_resumed_finetune_equals_an_uninterrupted_one(group_data, tmp_path):
    cfg = dict(epochs=3, lr=1e-3, batch_size=4, seed=3)
    whole = ft.finetune(ft.FinetuneConfig(**cfg), _inputs(group_data, tmp_path / "whole"), progress=False)
    part = ft.finetune(
        ft.FinetuneConfig(**cfg), _inputs(group_data, tmp_path / "resumed"), progress=False, stop_after_epochs=1
    )
    assert part["epochs_done"] == 1
    resumed = ft.finetune(ft.FinetuneConfig(**cfg), _inputs(group_data, tmp_path / "resumed"), progress=False)
    assert resumed["epochs_done"] == 3 and resumed["chosen_epoch"] == whole["chosen_epoch"]
    a, b = (tmp_path / "whole" / ft.WEIGHTS).read_bytes(), (tmp_path / "resumed" / ft.WEIGHTS).read_bytes()
    assert a == b
    la = [json.loads(x) for x in (tmp_path / "whole" / ft.LOG).read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "resumed" / ft.LOG).read_text().splitlines()]
    assert la == lb and [r["epoch"] for r in la] == [0, 1, 2, 3]  # epoch 0: the starting model
    assert all(r["ce_minority1"] > 0 for r in la[1:])  # the counterfactuals entered the loss
    assert whole["before"]["val_worst_group_accuracy"] == la[0]["val_worst_group_accuracy"]
    # training moved the weights (the last epoch's, in the checkpoint), and the written file loads as a 2-class classifier
    trained = torch.load(tmp_path / "whole" / ft.CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    clf = create_classifier(
        ClassifierSpec("tf_efficientnet_lite0", weights={"file": str(tmp_path / "whole" / ft.WEIGHTS)}), num_classes=2
    )
    assert clf.model.num_classes == 2
    start = create_classifier(load_panel("offline")[0]).model.state_dict()
    assert not torch.equal(trained["conv_stem.weight"], start["conv_stem.weight"])
    # a resumed run with other settings is refused, not mixed
    with pytest.raises(Exception, match="other settings"):
        ft.finetune(ft.FinetuneConfig(**{**cfg, "lr": 1e-4}), _inputs(group_data, tmp_path / "whole"), progress=False)


def test_reinit_head_is_xavier_uniform_with_zero_bias_from_the_seed():
    import timm

    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ft.reinit_head(model, seed=5)
    fc = model.get_classifier()
    fan_out, fan_in = fc.weight.shape
    bound = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot & Bengio's uniform bound, gain 1
    expected = torch.empty(fc.weight.shape).uniform_(-bound, bound, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(fc.weight, expected) and float(fc.bias.detach().abs().max()) == 0.0
    assert all(
        torch.equal(v, before[k]) for k, v in model.state_dict().items() if not k.startswith("fc.")
    )  # only the head


def test_ddb_augmentation_and_the_eval_transform():
    from PIL import Image
    from timm.data import create_transform
    from torchvision import transforms

    cfg = create_classifier(load_panel("offline")[0]).data_config
    aug = ft.train_transform(cfg, "ddb")
    crop, flip = aug.transforms[0], aug.transforms[1]
    assert isinstance(crop, transforms.RandomResizedCrop) and crop.size == tuple(cfg["input_size"][1:])
    assert crop.scale == (0.7, 1.0) and crop.ratio == pytest.approx((0.75, 4 / 3))
    assert crop.interpolation == transforms.InterpolationMode.BILINEAR  # DDB's interpolation=2
    assert isinstance(flip, transforms.RandomHorizontalFlip) and flip.p == 0.5
    photo = Image.fromarray(_photo("chelsea"))
    torch.manual_seed(0)
    a = aug(photo)
    torch.manual_seed(0)
    assert torch.equal(aug(photo), a) and not torch.equal(aug(photo), a)  # seeded, and random
    assert a.shape == (3, *cfg["input_size"][1:])
    assert torch.equal(ft.train_transform(cfg, "none")(photo), create_transform(**cfg)(photo))


@pytest.mark.slow
def test_the_starting_model_is_a_candidate(group_data, tmp_path):
    """A fine-tune that only makes things worse (a learning rate that wrecks the model) ends with the model it
    started from: epoch 0 is scored before any head re-initialisation and is kept when no epoch beats it."""
    from safetensors.torch import load_file

    cfg = ft.FinetuneConfig(epochs=1, lr=1e4, batch_size=4, seed=1, head="reinit", augment="ddb")
    summary = ft.finetune(cfg, _inputs(group_data, tmp_path / "ft"), progress=False)
    log = [json.loads(x) for x in (tmp_path / "ft" / ft.LOG).read_text().splitlines()]
    assert log[1]["val_worst_group_accuracy"] <= log[0]["val_worst_group_accuracy"]
    assert summary["chosen_epoch"] == 0 and summary["chosen_is_the_starting_model"]
    assert summary["val_worst_group_accuracy"] == summary["before"]["val_worst_group_accuracy"]
    start, _ = ft.load_trainable(load_panel("offline")[0], 2, seed=1)  # the model as given (its new head from the seed)
    chosen = load_file(str(tmp_path / "ft" / ft.WEIGHTS))
    assert all(torch.equal(chosen[k], v) for k, v in start.model.state_dict().items())
    assert summary["head"] == "reinit" and summary["augment"] == "ddb"


def test_cli_one_line_errors(group_data, tmp_path, capsys):
    data, cf = group_data
    base = [
        "finetune",
        "--panel",
        "offline",
        "--model",
        "tf_efficientnet_lite0",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "1",
    ]
    assert main(base + ["--minority-groups", "waterbird/land", "nosuch/group"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nosuch/group" in err and "its groups:" in err, err
    assert main(base[:4] + ["nosuch_model"] + base[5:]) == 2
    assert "no entry named 'nosuch_model'" in capsys.readouterr().err
    assert main(base + ["--group-column", "place_x"]) == 2
    assert "no `place_x` column" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(group_data, tmp_path):
    """Two real CPU processes (gloo, DESIGN.md "Distributed"): each takes half of every epoch, one writes."""
    import os
    import subprocess
    import sys

    accelerate = Path(sys.executable).with_name("accelerate")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "HF_DATASETS_CACHE": str(tmp_path / "hf"),
    }
    out = tmp_path / "ft"
    proc = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "-m",
            "spurbench",
            "finetune",
            "--panel",
            "offline",
            "--model",
            "tf_efficientnet_lite0",
            "--data",
            str(group_data[0]),
            "--counterfactuals",
            str(group_data[1]),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("chose epoch") == 1
    summary = json.loads((out / ft.SUMMARY).read_text())
    assert summary["epochs_done"] == 1 and (out / ft.WEIGHTS).is_file()


def test_settings_come_from_defaults_then_config_then_flags(tmp_path):
    from spurbench.cli import build_parser

    def cfg(*extra):
        args = build_parser(["finetune"]).parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o", *extra])
        return ft.config_from(args)

    assert (cfg().gamma1, cfg().gamma2, cfg().lr, cfg().epochs, cfg().batch_size) == (6.0, 10.0, 5e-6, 200, 32)  # DDB's
    assert (cfg().head, cfg().augment) == ("reinit", "ddb") and (
        cfg("--head", "keep").head,
        cfg("--augment", "none").augment,
    ) == ("keep", "none")
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 1.0e-4\nminority_groups: [a/x, b/y]\n")
    c = cfg("--config", str(tmp_path / "c.yaml"), "--epochs", "5")
    assert (c.epochs, c.lr, c.minority_groups, c.gamma2) == (5, 1e-4, ["a/x", "b/y"], 10.0)
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    with pytest.raises(Exception, match="unknown setting"):
        cfg("--config", str(tmp_path / "bad.yaml"))
