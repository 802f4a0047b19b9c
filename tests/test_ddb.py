"""`method: ddb`: the recipe's checks, and the smoke build in both modes on real photos with a real
classifier (tiny random segmentation, textual-inversion and inpainting models: plumbing, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spurbench.cli import main
from spurbench.generate import compositing, pruning
from spurbench.generate.methods import ddb
from spurbench.generate.recipe import load_recipe

SMOKE = Path(__file__).resolve().parents[1] / "builders" / "ddb_smoke.yaml"


def _smoke(**changes) -> dict:
    data = yaml.safe_load(SMOKE.read_text())
    data.update(changes)
    return data


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_recipes_load():
    _, smoke = load_recipe("ddb_smoke")
    assert smoke.mode == "swap" and [c.mask_prompt for c in smoke.classes] == ["egyptian cat", "espresso"]
    assert [c.initializer for c in smoke.classes] == ["cat", "espresso"]
    _, real = load_recipe("ddb")
    assert real.base_model.id == "stabilityai/stable-diffusion-2-base" and real.base_model.revision
    assert real.inpainting.id == "stabilityai/stable-diffusion-2-inpainting" and real.inpainting.revision
    assert real.pruning.ig_threshold == 0.3


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"mode": "erase"}, "key 'mode' must be one of remove, swap"),
        ({"classes": [{"index": 1000, "references": {"samples": ["chelsea"]}, "swap_to": 967}]}, "classes[0].index"),
        (
            {"classes": [{"index": 285, "references": {"samples": ["chelsea"]}, "swap_to": 1}]},
            "classes[0].swap_to': 1 is not another class",
        ),
        ({"classes": [{"index": 285, "references": {"samples": ["chelsea"]}}]}, "classes[0].swap_to' is required"),
        ({"prompts": {"swap": "a photo"}}, "prompts.swap' must contain {token}"),
        ({"segmentation": {"detector": "nosuch"}}, "unknown detector 'nosuch'"),
        ({"source": {"dataset": "/no/such/folder"}}, "key 'source.dataset': folder '/no/such/folder' does not exist"),
    ],
)
def test_bad_recipes_are_one_line_errors_and_write_nothing(tmp_path, capsys, change, needle):
    recipe = _write(tmp_path, _smoke(**change))
    out = tmp_path / "out"
    assert main(["build", "--recipe", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists() and not (tmp_path / "out.work").exists()


def test_lowest_loss_order():
    assert ddb.lowest_loss([0.5, 0.1, 0.5, 0.0], 3) == [3, 1, 0]
    assert ddb.lowest_loss([0.2, 0.2], None) == [0, 1]


def _check_ig_against_captum(ds) -> None:
    """Every generated row's ig_score and p_label are about its own `label` (the painted class), computed here
    with captum and torch on hand-made inputs from the exported rows alone."""
    import torch
    from captum.attr import IntegratedGradients

    from spurbench.classifiers import create_classifier, load_panel

    clf = create_classifier(load_panel("offline")[0])
    cfg = clf.data_config
    h, w = cfg["input_size"][1:]
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def to_input(im):
        a = torch.from_numpy(np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0)
        return (a.permute(2, 0, 1)[None] - mean) / std

    rows = [r for s in ("train", "pruned") for r in ds[s]]
    for row in rows:
        mask = np.asarray(row["mask"].convert("L")) > 127
        ri = ((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int)
        ci = ((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int)
        small = torch.from_numpy(mask[np.ix_(ri, ci)].astype(np.float32))
        x, x0 = to_input(row["image"]), to_input(ds["reference"][row["source_index"]]["image"])
        attr = IntegratedGradients(clf.model).attribute(x, baselines=x0, target=row["label"], n_steps=8)
        assert row["ig_score"] == pytest.approx(float((attr[0] * small).sum()), rel=1e-3, abs=1e-4)
        with torch.no_grad():
            assert row["p_label"] == pytest.approx(float(torch.softmax(clf.model(x), -1)[0, row["label"]]), rel=1e-4)


def _check_build(out: Path, kept_split: str, ig_threshold: float) -> dict:
    """Shared checks of a DDB export against the work dir's markers and the reference photos."""
    from datasets import load_dataset

    ds = load_dataset(str(out))
    prov = yaml.safe_load((out / "README.md").read_text().split("---")[1])["spurbench"]
    assert prov["ig_threshold"] == ig_threshold
    assert prov["classifier"]["model"] == "tf_efficientnet_lite0"
    # the card names the classifier that built the set (issue 24 §4) and the source photos as its control (§2)
    used = {u["model"]: u["roles"] for u in prov["models_used"]}
    assert used["tf_efficientnet_lite0"][0] == "selection" and set(used["tf_efficientnet_lite0"]) <= {
        "selection",
        "pruning",
    }
    assert "- Control: split `reference` (the source photos" in (out / "README.md").read_text()
    refs = ds["reference"]
    gen_rows = [r for s in (kept_split, "pruned") if s in ds for r in ds[s]]
    assert gen_rows, "the smoke build repainted nothing"
    threshold = prov["ig_threshold"]
    for s in (kept_split, "pruned"):
        if s not in ds or not prov["pruning"].startswith("ddb"):
            continue
        rows = ds[s]
        keep = pruning.keep_mask(rows["ig_score"], rows["p_label"], rows["p_label_mean"], threshold)
        assert keep.all() if s == kept_split else not keep.any()  # every row is where the rule puts it
    for row in gen_rows:
        src = refs[row["source_index"]]
        original = np.asarray(src["image"].convert("RGB"))
        mask = np.asarray(row["mask"].convert("L")) > 127
        assert mask.shape == original.shape[:2] and mask.any()
        outside = ~compositing.grow_mask(mask, row["feather"])
        assert np.array_equal(np.asarray(row["image"].convert("RGB"))[outside], original[outside])
    return {"ds": ds, "prov": prov}


@pytest.mark.slow
def test_swap_build_gives_a_group_labelled_shift_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ddb"
    assert main(["build", "--recipe", "ddb_smoke", "--out", str(out), "--no-progress"]) == 0
    got = _check_build(out, "train", yaml.safe_load(SMOKE.read_text())["pruning"]["ig_threshold"])
    ds, prov = got["ds"], got["prov"]
    assert prov["kind"] == "shift" and prov["mode"] == "swap"
    names = {285: "Egyptian cat", 967: "espresso"}
    for row in [r for s in ("train", "pruned") if s in ds for r in ds[s]]:
        context = 285 if row["label"] == 967 else 967
        assert row["group"] == f"{names[row['label']]}/{names[context]}" and row["prompt"].startswith(
            "a photo of a <ddb-"
        )
    # the learned tokens are in the standard file
    for k in (285, 967):
        assert (tmp_path / "ddb.work" / "tokens" / str(k) / "learned_embeds.safetensors").is_file()
    # the means: over each class's own selected photos; a generated row is compared with its label's mean
    markers = {
        k: json.loads((tmp_path / "ddb.work" / "classes" / str(k) / "done.json").read_text()) for k in (285, 967)
    }
    for k, m in markers.items():
        assert m["p_reference_mean"] == pytest.approx(np.mean([m["p_reference"][i] for i in m["sources"]]))
        assert m["label"] == (967 if k == 285 else 285) and m["p_label_mean"] == markers[m["label"]]["p_reference_mean"]
    # DDB's threshold exercises both splits
    assert prov["ig_threshold"] == 0.3 and len(ds["train"]) and len(ds["pruned"])
    _check_ig_against_captum(ds)
    # the export stands alone: masks embedded, no local path anywhere (the build was given absolute paths)
    from stand_alone import assert_loads_without, assert_names_no_local_folder

    work = tmp_path / "ddb.work"
    assert assert_names_no_local_folder(out, tmp_path, work) >= 3
    assert assert_loads_without(out, work, tmp_path / "hf_alone") == len(ds["train"]) + len(ds["pruned"]) + len(
        ds["reference"]
    )
    assert prov["command"] == "spurbench build --recipe ddb_smoke --out ddb"
    assert prov["scheduler"]["config"]["prediction_type"] == "v_prediction" and "torch" in prov["versions"]
    # re-exported from the same work dir without the source photos (`export:` is not hashed: nothing is redone)
    data = _smoke(export={"source_photos": False})
    hub = tmp_path / "hub"
    assert (
        main(
            [
                "build",
                "--recipe",
                str(_write(tmp_path, data)),
                "--out",
                str(hub),
                "--work-dir",
                str(work),
                "--no-progress",
            ]
        )
        == 0
    )
    from datasets import load_dataset

    lean = load_dataset(str(hub), cache_dir=str(tmp_path / "hf_hub"))
    assert sorted(lean) == ["pruned", "train"] and lean["train"]["source_index"] == ds["train"]["source_index"]
    assert "left out of this export" in (hub / "README.md").read_text()
    assert "- Control: split `reference`" not in (hub / "README.md").read_text()  # no photos, no control named


@pytest.mark.slow
def test_remove_build_gives_a_spurious_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    data = _smoke(mode="remove", name="ddb_smoke_remove", pruning={"ig_steps": 4})
    data["classes"] = [{k: v for k, v in c.items() if k != "swap_to"} for c in data["classes"][:1]]
    data["verify"] = {"detector": "tiny"}  # the shared verification stage: is the object really gone?
    out = tmp_path / "ddb_remove"
    assert main(["build", "--recipe", str(_write(tmp_path, data)), "--out", str(out), "--no-progress"]) == 0
    got = _check_build(out, "test", 0.3)
    ds, prov = got["ds"], got["prov"]
    assert prov["kind"] == "spurious" and "group" not in ds["reference"].column_names
    # remove mode: no classifier pruning by default, every repainted image is in `test`, none has an IG score
    assert prov["pruning"] == "none" and "pruned" not in ds and len(ds["test"]) == 2
    assert all(v is None for v in ds["test"]["ig_score"]) and all(0 <= p <= 1 for p in ds["test"]["p_label"])
    assert "No classifier pruning" in (out / "README.md").read_text()
    from spurbench import verification as verify

    assert verify.CARD_KEY in prov and verify.PRESENT in ds["test"].column_names
    assert all(
        r["label"] == 285 and r["prompt"] == "a photo of the empty background"
        for s in ("test", "pruned")
        if s in ds
        for r in ds[s]
    )
    assert not (tmp_path / "ddb_remove.work" / "tokens").exists()  # remove mode learns no token


def test_remove_mode_prunes_only_when_opted_in_and_the_card_says_which():
    data = _smoke(mode="remove")
    data["classes"] = [{k: v for k, v in c.items() if k != "swap_to"} for c in data["classes"]]
    default = ddb.recipe_from_dict(data)
    opted = ddb.recipe_from_dict({**data, "pruning": {"ig_threshold": 0.3, "ig_steps": 8, "in_remove_mode": True}})
    swap = ddb.recipe_from_dict(_smoke())
    assert not ddb.prunes(default) and ddb.prunes(opted) and ddb.prunes(swap)
    assert ddb.provenance(default)["pruning"] == "none" and ddb.provenance(opted)["pruning"].startswith("ddb")
    assert "No classifier pruning" in ddb._rule_text(default, "test")
    assert "opted in with `pruning.in_remove_mode`" in ddb._rule_text(opted, "test")
    assert "the painted class" in ddb._rule_text(swap, "train")


def test_recipe_hash_is_stable():
    from spurbench.generate.recipe import recipe_hash

    _, a = load_recipe("ddb_smoke")
    _, b = load_recipe(str(SMOKE))
    assert recipe_hash(a) == recipe_hash(b) and json.dumps(a.to_dict())  # canonical form is plain JSON


@pytest.mark.slow
def test_swap_build_from_a_waterbirds_import_feeds_finetune(tmp_path, monkeypatch):
    """DDB's own loop on a Waterbirds-layout import: counterfactuals in the set's two-class label set, then
    `spurbench finetune` balances with them (the classifier: Lite0 with a fresh two-class head)."""
    from safetensors.torch import save_file
    from test_waterbirds import make_waterbirds_tree

    from spurbench.classifiers import load_panel
    from spurbench.finetune import load_trainable
    from spurbench.importers import waterbirds

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    wb = waterbirds.import_waterbirds(make_waterbirds_tree(tmp_path / "src"), tmp_path / "wb")
    clf, _ = load_trainable(load_panel("offline")[0], 2, seed=0)
    erm = tmp_path / "erm.safetensors"
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(erm))
    data = _smoke(
        name="ddb_waterbirds",
        source={"dataset": str(wb), "split": "train"},
        classifier={"model": "tf_efficientnet_lite0", "weights": {"file": str(erm)}},
        pruning={"ig_threshold": -1000.0, "ig_steps": 4},
        sources_per_class=1,
    )
    data["classes"] = [
        {"index": 1, "source_group": "waterbird/water", "mask_prompt": "bird", "swap_to": 0},
        {"index": 0, "source_group": "landbird/land", "mask_prompt": "bird", "swap_to": 1},
    ]
    out = tmp_path / "cf"
    assert main(["build", "--recipe", str(_write(tmp_path, data)), "--out", str(out), "--no-progress"]) == 0
    from datasets import load_dataset

    ds = load_dataset(str(out))
    prov = yaml.safe_load((out / "README.md").read_text().split("---")[1])["spurbench"]
    assert prov["label_set"] == "waterbirds" and ds["reference"].features["label"].names == ["landbird", "waterbird"]
    # the reference split holds exactly the source groups' photos
    assert sorted(ds["reference"]["class_name"]) == ["landbird", "landbird", "waterbird"]
    # a landbird painted into waterbird/water photos is in Waterbirds' own group landbird/water, and vice versa
    groups = set(ds["train"]["group"]) if "train" in ds else set()
    assert groups <= {"landbird/water", "waterbird/land"} and groups
    ft_out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--model",
                "tf_efficientnet_lite0",
                "--weights",
                str(erm),
                "--data",
                str(wb),
                "--counterfactuals",
                str(out),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--lr",
                "1e-3",
                "--out",
                str(ft_out),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((ft_out / "finetune.json").read_text())
    assert summary["num_counterfactuals"]["gamma1"] + summary["num_counterfactuals"]["gamma2"] == len(ds["train"])
    assert set(summary["minority_groups"].values()) - {None} == groups  # DDB's two minority groups
