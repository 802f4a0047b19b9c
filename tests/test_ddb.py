"""`method: ddb`: the recipe's checks, and the smoke build in both modes on real photos with a real
classifier (tiny random segmentation, textual-inversion and inpainting models: plumbing, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from spurbench.generate import compositing, pruning
from spurbench.generate.methods import ddb
from spurbench.generate.recipe import load_recipe
from spurbench.cli import main

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
        ({"classes": [{"index": 285, "references": {"samples": ["chelsea"]}, "swap_to": 1}]}, "classes[0].swap_to': 1 is not another class"),
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


def _check_build(out: Path, kept_split: str, ig_threshold: float) -> dict:
    """Shared checks of a DDB export against the work dir's markers and the reference photos."""
    from datasets import load_dataset

    ds = load_dataset(str(out))
    prov = yaml.safe_load((out / "README.md").read_text().split("---")[1])["spurbench"]
    assert prov["ig_threshold"] == ig_threshold
    assert prov["classifier"]["model"] == "tf_efficientnet_lite0"
    refs = ds["reference"]
    gen_rows = [r for s in (kept_split, "pruned") if s in ds for r in ds[s]]
    assert gen_rows, "the smoke build repainted nothing"
    threshold = prov["ig_threshold"]
    for s in (kept_split, "pruned"):
        if s not in ds:
            continue
        rows = ds[s]
        keep = pruning.keep_mask(rows["ig_score"], rows["p_source"], rows["p_source_mean"], threshold)
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
        assert row["group"] == f"{names[row['label']]}/{names[context]}" and row["prompt"].startswith("a photo of a <ddb-")
    # the learned tokens are in the standard file
    for k in (285, 967):
        assert (tmp_path / "ddb.work" / "tokens" / str(k) / "learned_embeds.safetensors").is_file()
    # the marker's mean is over the class's source photos
    for k in (285, 967):
        m = json.loads((tmp_path / "ddb.work" / "classes" / str(k) / "done.json").read_text())
        assert m["p_source_mean"] == pytest.approx(np.mean([m["p_source_reference"][i] for i in m["sources"]]))


@pytest.mark.slow
def test_remove_build_gives_a_spurious_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    data = _smoke(mode="remove", name="ddb_smoke_remove", pruning={"ig_threshold": -9.0, "ig_steps": 4})
    data["classes"] = [{k: v for k, v in c.items() if k != "swap_to"} for c in data["classes"][:1]]
    data["verify"] = {"detector": "tiny"}  # the shared verification stage: is the object really gone?
    out = tmp_path / "ddb_remove"
    assert main(["build", "--recipe", str(_write(tmp_path, data)), "--out", str(out), "--no-progress"]) == 0
    got = _check_build(out, "test", -9.0)
    ds, prov = got["ds"], got["prov"]
    assert prov["kind"] == "spurious" and "group" not in ds["reference"].column_names
    from spurbench import verification as verify

    assert verify.CARD_KEY in prov and verify.PRESENT in ds["test"].column_names
    assert all(r["label"] == 285 and r["prompt"] == "a photo of the empty background" for s in ("test", "pruned") if s in ds for r in ds[s])
    assert not (tmp_path / "ddb_remove.work" / "tokens").exists()  # remove mode learns no token


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

    from spurbench.classifiers import load_panel
    from spurbench.finetune import load_trainable
    from spurbench.importers import waterbirds
    from test_waterbirds import make_waterbirds_tree

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    wb = waterbirds.import_waterbirds(make_waterbirds_tree(tmp_path / "src"), tmp_path / "wb")
    clf, _ = load_trainable(load_panel("offline")[0], 2, seed=0)
    erm = tmp_path / "erm.safetensors"
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(erm))
    data = _smoke(name="ddb_waterbirds", source={"dataset": str(wb), "split": "train"},
                  classifier={"model": "tf_efficientnet_lite0", "weights": {"file": str(erm)}},
                  pruning={"ig_threshold": -1000.0, "ig_steps": 4}, sources_per_class=1)
    data["classes"] = [{"index": 1, "source_group": "waterbird/water", "mask_prompt": "bird", "swap_to": 0},
                       {"index": 0, "source_group": "landbird/land", "mask_prompt": "bird", "swap_to": 1}]
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
    assert main(["finetune", "--model", "tf_efficientnet_lite0", "--weights", str(erm), "--data", str(wb),
                 "--counterfactuals", str(out), "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--out", str(ft_out),
                 "--no-progress"]) == 0
    summary = json.loads((ft_out / "finetune.json").read_text())
    assert summary["num_counterfactuals"]["gamma1"] + summary["num_counterfactuals"]["gamma2"] == len(ds["train"])
    assert set(summary["minority_groups"].values()) - {None} == groups  # DDB's two minority groups
