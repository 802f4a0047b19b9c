"""Other zoos (spurbench/zoo/): open_clip zero-shot, transformers classifiers and transformers CLIP zero-shot.

Tiny random models are built here and saved the way their libraries save them (an open_clip
`open_clip_config.json` + `open_clip_model.safetensors` folder loaded as `local-dir:`; transformers
`save_pretrained` folders), loaded through the same paths as Hub models, and every prediction is held
image by image against the library's own computation: open_clip's `build_zero_shot_classifier` and eval
`preprocess`; `AutoImageProcessor` + the model's logits; the `zero-shot-image-classification` pipeline.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import open_clip  # the [zoo] extra, part of [test]
import pytest
import torch
from PIL import Image

from spurbench import cli, imagenet
from spurbench.classifiers import ClassifierSpec, create_classifier, load_panel
from spurbench.errors import SpurbenchError
from spurbench.evaluate.class_subset import load_class_subset
from spurbench.evaluate.entry import evaluate
from spurbench.evaluate.inputs import open_dataset
from spurbench.evaluate.preprocessing import normalise_batch

TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}."]
# preds vs the library's own computation: the same float32 operations, batched differently
REL, ABS = 1e-4, 1e-6


@pytest.fixture(scope="module")
def photos(photo_dataset):
    from datasets import load_dataset

    rows = load_dataset(str(photo_dataset.path), split="test")
    return [rows[i]["image"].convert("RGB") for i in range(len(rows))], np.array(rows["label"])


@pytest.fixture(scope="module")
def templates_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("templates") / "two.json"
    path.write_text(json.dumps({"imagenet1k": TEMPLATES}))  # CLIP_benchmark's layout: dataset -> templates
    return path


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A CLIP with embed_dim 32, a 2-layer width-64 ViT at 32 px and a 2-layer text tower, saved as open_clip
    saves one (`open_clip_config.json` with model_cfg and preprocess_cfg + open_clip_model.safetensors)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip") / "tiny-clip"
    folder.mkdir()
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    preprocess = {
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


def _vit_config(id2label: dict[int, str]):
    from transformers import ViTConfig

    return ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )


def _save_vit(folder, id2label: dict[int, str], seed: int = 0):
    from transformers import ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    ViTForImageClassification(_vit_config(id2label)).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.45, 0.5, 0.55], image_std=[0.3, 0.2, 0.25]
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vits(tmp_path_factory):
    """Two tiny ViT classifiers: id2label = ImageNet WordNet ids in order; and the Hub's names
    ("tench, Tinca tinca") in a shuffled order, which spurbench maps back onto ImageNet's."""
    from timm.data import ImageNetInfo

    root = tmp_path_factory.mktemp("vit")
    info = ImageNetInfo("imagenet-1k")
    perm = np.random.default_rng(0).permutation(1000)
    by_wnid = _save_vit(root / "vit-wnids", dict(enumerate(imagenet.wnids())))
    # ImageNet's two "crane"s (bird, machine) share their name: those two go by WordNet id
    name = {
        k: imagenet.wnids()[k] if info.index_to_description(k) == "crane" else info.index_to_description(k)
        for k in range(1000)
    }
    shuffled = _save_vit(root / "vit-shuffled", {i: name[int(k)] for i, k in enumerate(perm)}, seed=1)
    return by_wnid, shuffled, perm


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory):
    """A tiny transformers CLIPModel + CLIPProcessor (byte-level BPE tokenizer), via save_pretrained; its
    logit_scale is log(100), so the pipeline's softmax of logits_per_image is CLIP_benchmark's 100 x cosine."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from spurbench.tiny_models import tiny_clip_tokenizer

    folder = tmp_path_factory.mktemp("hf_clip") / "tiny-hf-clip"
    tokenizer = tiny_clip_tokenizer(folder.parent, model_max_length=77)
    vocab = tokenizer.get_vocab()
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=24, logit_scale_init_value=math.log(100.0))
    )
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _image(cell: dict) -> Image.Image:
    """A row's image cell as spurbench reads it (bytes, or a path), decoded with PIL."""
    import io

    return (
        Image.open(io.BytesIO(cell["bytes"])) if cell.get("bytes") is not None else Image.open(cell["path"])
    ).convert("RGB")


def _library_probs(logits: torch.Tensor, labels: np.ndarray):
    probs = logits.double().softmax(-1).numpy()
    return probs[np.arange(len(labels)), labels], np.argsort(-probs, axis=1, kind="stable")[:, :5]


def _check_against(preds, target: np.ndarray, top5: np.ndarray) -> None:
    order = np.argsort(preds.index)
    np.testing.assert_allclose(preds.target_prob[order], target, rtol=REL, atol=ABS)
    assert (preds.top5[order] == top5).all()


# ------------------------------------------------------------------------------------------------
# open_clip


def test_open_clip_preprocessing_is_bit_identical(tiny_open_clip, photos):
    """Workers' uint8 output + normalise_batch == open_clip's own `preprocess`, exactly (tolerance 0)."""
    clf = create_classifier(ClassifierSpec(model=f"open_clip:local-dir:{tiny_open_clip}", templates="simple"))
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    assert clf.data_config["mean"] == pytest.approx((0.5, 0.4, 0.3)) and clf.data_config["input_size"] == (3, 32, 32)
    import pickle

    transform = pickle.loads(pickle.dumps(clf.transform))  # workers receive it pickled (spawn / forkserver)
    for img in photos[0]:
        x = transform(img)
        assert x.dtype == torch.uint8
        assert torch.equal(normalise_batch(x.unsqueeze(0), clf.data_config)[0], preprocess(img))


@pytest.mark.slow
def test_open_clip_zero_shot_equals_build_zero_shot_classifier(tiny_open_clip, templates_file, photo_dataset, photos):
    spec = ClassifierSpec(model=f"open_clip:local-dir:{tiny_open_clip}", templates=str(templates_file))
    entry, preds = evaluate(spec, photo_dataset.path, workers=1, batch_size=5)  # decoded in a worker process

    images, labels = photos
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip}")
    with torch.inference_mode():
        head = open_clip.build_zero_shot_classifier(
            model.eval(),
            tokenizer,
            open_clip.IMAGENET_CLASSNAMES,
            [lambda c, t=t: t.replace("{c}", c) for t in TEMPLATES],
            num_classes_per_batch=50,
        )
        feats = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
    _check_against(preds, *_library_probs(100.0 * feats @ head, labels))

    zs = entry["zoo"]["zero_shot"]
    assert entry["zoo"]["library"] == "open_clip" and entry["zoo"]["version"] == open_clip.__version__
    assert zs["templates"] == {"source": "file:two.json", "count": 2, "sha256": zs["templates"]["sha256"]}
    assert zs["classnames"]["source"] == "open_clip IMAGENET_CLASSNAMES" and zs["classnames"]["count"] == 1000
    assert entry["weights"]["source"] == "open_clip:local-dir:tiny-clip/open_clip_model.safetensors"
    assert (
        entry["model"] == "open_clip:local-dir:tiny-clip+templates:two"
        and entry["architecture"] == "open_clip:local-dir:tiny-clip"
    )
    assert str(tiny_open_clip.parent) not in json.dumps(
        {k: v for k, v in entry.items() if k != "command"}
    )  # no local path


@pytest.mark.slow
def test_zero_shot_head_is_cached_on_disk(tiny_open_clip, templates_file, monkeypatch, tmp_path):
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    calls = []
    encode_text = open_clip.CLIP.encode_text

    def counting(self, *a, **k):
        calls.append(1)
        return encode_text(self, *a, **k)

    monkeypatch.setattr(open_clip.CLIP, "encode_text", counting)
    spec = ClassifierSpec(model=f"open_clip:local-dir:{tiny_open_clip}", templates=str(templates_file))
    first = create_classifier(spec)
    assert calls and len(list((tmp_path / "cache" / "zero_shot").glob("*.safetensors"))) == 1
    calls.clear()
    again = create_classifier(spec)
    assert not calls  # the head came from the cache: no prompt encoded
    assert torch.equal(first.model.head, again.model.head)
    other = create_classifier(ClassifierSpec(model=spec.model, templates="simple"))  # other templates: another head
    assert calls and not torch.equal(first.model.head, other.model.head)
    assert len(list((tmp_path / "cache" / "zero_shot").glob("*.safetensors"))) == 2


def test_open_clip_names_patterns_and_errors(tmp_path, templates_file):
    from spurbench.evaluate.sweep import expand_models

    names, _ = expand_models(["open_clip:ViT-B-32/*"])
    assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in names and all(n.startswith("open_clip:ViT-B-32/") for n in names)
    assert set(names) == {f"open_clip:ViT-B-32/{t}" for a, t in open_clip.list_pretrained() if a == "ViT-B-32"}
    for bad, pattern in [
        (
            ClassifierSpec(model="open_clip:ViT-B-32/laion2b_s34b_b78k"),
            r"unknown open_clip model .*close: ViT-B-32/laion2b_s34b_b79k",
        ),
        (ClassifierSpec(model=f"open_clip:local-dir:{tmp_path}"), r"has no open_clip_config.json"),
    ]:
        with pytest.raises(SpurbenchError, match=pattern):
            create_classifier(bad)
    bad_templates = tmp_path / "bad.json"
    bad_templates.write_text(json.dumps(["a photo of a thing."]))
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(["tench", "goldfish"]))
    spec = "open_clip:ViT-B-32/laion2b_s34b_b79k"
    from spurbench.zoo import zero_shot

    with pytest.raises(SpurbenchError, match=r"has no \{c\}"):
        zero_shot.load_templates(str(bad_templates))
    with pytest.raises(SpurbenchError, match=r"holds 2 names but the label set has 1000 classes"):
        zero_shot.load_classnames(str(names_file), None)
    with pytest.raises(SpurbenchError, match=r"templates apply to zero-shot models"):
        ClassifierSpec(model="resnet50", templates="simple")
    with pytest.raises(SpurbenchError, match=r"weights apply to timm models"):
        ClassifierSpec(model=spec, weights={"file": "x.pth"})
    assert (
        zero_shot.load_templates("openai")[0][0] == "a bad photo of a {c}."
        and len(zero_shot.load_templates("openai")[0]) == 80
    )


# ------------------------------------------------------------------------------------------------
# transformers


def _processor_logits(folder, images):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model(**processor(images=images, return_tensors="pt")).logits


def test_transformers_classifier_equals_image_processor_and_logits(tiny_vits, photo_dataset, photos):
    by_wnid, shuffled, perm = tiny_vits
    images, labels = photos
    # one decoding worker process: the processor runs there, pickled over
    entry, preds = evaluate(
        ClassifierSpec(model=f"transformers:{by_wnid}"), photo_dataset.path, workers=1, batch_size=4
    )
    _check_against(preds, *_library_probs(_processor_logits(by_wnid, images), labels))
    assert entry["zoo"]["library"] == "transformers" and entry["zoo"]["image_processor"].startswith("ViTImageProcessor")
    assert (
        entry["weights"]["source"] == "transformers:vit-wnids/model.safetensors"
        and len(entry["weights"]["sha256"]) == 64
    )

    # id2label as the Hub's names in another order: output i scores ImageNet class perm[i]
    _, preds = evaluate(ClassifierSpec(model=f"transformers:{shuffled}"), photo_dataset.path, workers=0, batch_size=4)
    raw = _processor_logits(shuffled, images)
    in_imagenet_order = torch.empty_like(raw)
    in_imagenet_order[:, torch.as_tensor(perm)] = raw
    _check_against(preds, *_library_probs(in_imagenet_order, labels))


def test_transformers_label_set_mismatch_is_one_clear_error(tmp_path, photo_dataset):
    ten = _save_vit(tmp_path / "ten", {i: f"class {i}" for i in range(10)})
    odd = {i: w for i, w in enumerate(imagenet.wnids())}
    odd[7] = "not a class"
    unknown = _save_vit(tmp_path / "unknown", odd)
    twice = dict(enumerate(imagenet.wnids()))
    twice[1] = twice[0]
    twice_dir = _save_vit(tmp_path / "twice", twice)
    for folder, pattern in [
        (ten, r"has 10 outputs .* ImageNet-1k has 1000 classes"),
        (unknown, r"output 7 label 'not a class' names no class of ImageNet-1k"),
        (twice_dir, r"outputs 0 and 1 both name class 0"),
    ]:
        with pytest.raises(SpurbenchError, match=pattern) as err:
            create_classifier(ClassifierSpec(model=f"transformers:{folder}"))
        assert "\n" not in str(err.value)
    with pytest.raises(SpurbenchError, match=r"apply to zero-shot models; 'transformers:.*ten' is an image classifier"):
        create_classifier(ClassifierSpec(model=f"transformers:{ten}", templates="simple"))
    with pytest.raises(SpurbenchError, match=r"neither a folder nor a Hub model id"):
        create_classifier(ClassifierSpec(model=f"transformers:{tmp_path / 'missing'}"))


@pytest.mark.slow
def test_transformers_clip_equals_zero_shot_pipeline(tiny_hf_clip, tmp_path, photo_dataset, photos):
    from transformers import pipeline

    template = tmp_path / "pipeline.json"
    template.write_text(json.dumps(["This is a photo of {c}."]))  # the pipeline's default hypothesis_template
    entry, preds = evaluate(
        ClassifierSpec(model=f"transformers:{tiny_hf_clip}", templates=str(template)),
        photo_dataset.path,
        workers=0,
        batch_size=8,
    )
    assert entry["zoo"]["zero_shot"]["templates"]["count"] == 1 and entry["zoo"]["model_class"] == "CLIPModel"

    images, labels = photos
    names = list(open_clip.IMAGENET_CLASSNAMES)
    classify = pipeline("zero-shot-image-classification", model=str(tiny_hf_clip), device="cpu")
    order = np.argsort(preds.index)
    for i in (0, 5, 13):
        scores = classify(images[i], candidate_labels=names)
        # duplicated class names (two "crane"s) get one score each, in candidate order: index by position
        p = np.zeros(1000)
        for s in scores:
            k = names.index(s["label"])
            while p[k] != 0:
                k = names.index(s["label"], k + 1)
            p[k] = s["score"]
        j = order[i]
        assert preds.target_prob[j] == pytest.approx(p[labels[i]], rel=REL, abs=ABS)
        assert list(preds.top5[j]) == list(np.argsort(-p, kind="stable")[:5])


# ------------------------------------------------------------------------------------------------
# class subsets


def test_class_subset_restricts_softmax_and_top5(tiny_vits, photo_dataset, photos, tmp_path):
    by_wnid, _, _ = tiny_vits
    images, labels = photos
    keep = sorted({0, 285, 657, 967, 1, 2})
    subset_file = tmp_path / "six.txt"
    subset_file.write_text("# six classes\n0\nn01443537\n2\n285\n657\n967\n")  # n01443537 is class 1
    subset = load_class_subset(str(subset_file))
    assert subset.indices == tuple(keep)
    entry, preds = evaluate(
        ClassifierSpec(model=f"transformers:{by_wnid}"), photo_dataset.path, workers=0, class_subset=subset
    )
    logits = _processor_logits(by_wnid, images)[:, keep].double()
    probs = logits.softmax(-1).numpy()
    pos = {k: i for i, k in enumerate(keep)}
    order = np.argsort(preds.index)
    np.testing.assert_allclose(
        preds.target_prob[order], probs[np.arange(len(labels)), [pos[k] for k in labels]], rtol=REL, atol=ABS
    )
    assert (preds.top5[order] == np.array(keep)[np.argsort(-probs, axis=1, kind="stable")[:, :5]]).all()
    assert entry["class_subset"] == {"name": "six.txt", "sha256": subset.sha256, "num_classes": 6}

    small = tmp_path / "two.txt"
    small.write_text("285\n0\n")
    with pytest.raises(SpurbenchError, match=r"class 657 \(missile\), outside --class-subset 'two.txt'"):
        evaluate(
            ClassifierSpec(model=f"transformers:{by_wnid}"),
            photo_dataset.path,
            workers=0,
            class_subset=load_class_subset(str(small)),
        )
    assert len(load_class_subset("spurious-imagenet").indices) == 100
    bad = tmp_path / "bad.txt"
    bad.write_text("0\nn99999999\n")
    with pytest.raises(SpurbenchError, match=r"line 2: 'n99999999' is not an ImageNet-1k WordNet id"):
        load_class_subset(str(bad))


def test_class_subset_entries_are_ranked_apart(tiny_vits, photo_dataset, tmp_path, capsys):
    """Through the CLI: a subset run is recorded next to the full-label one, not skipped as already scored,
    and the two never share a ranking group."""
    from spurbench.evaluate.leaderboard import comparable_groups, load_leaderboard

    by_wnid, _, _ = tiny_vits
    lb = tmp_path / "lb.json"
    base = [
        "eval",
        "--model",
        f"transformers:{by_wnid}",
        "--dataset",
        str(photo_dataset.path),
        "--leaderboard",
        str(lb),
        "--workers",
        "0",
    ]
    assert cli.main(base) == 0
    capsys.readouterr()
    subset_file = tmp_path / "four.txt"
    subset_file.write_text("0\n285\n657\n967\n")
    assert cli.main([*base, "--class-subset", str(subset_file), "--name", "vit-four"]) == 0
    assert cli.main([*base, "--class-subset", str(subset_file), "--name", "vit-four"]) == 0
    out = capsys.readouterr().out
    assert "skip vit-four: already on the leaderboard" in out
    board = load_leaderboard(lb)
    groups = comparable_groups(board)
    by_model = {e["model"]: g["id"] for g in groups for e in g["entries"]}
    assert by_model["transformers:vit-wnids"] != by_model["vit-four"]
    assert any("class subset four.txt" in g["description"] for g in groups)
    four = next(e for e in board["entries"] if e["model"] == "vit-four")
    assert "--class-subset" in four["command"] and four["class_subset"]["num_classes"] == 4


# ------------------------------------------------------------------------------------------------
# CLI, panels


def test_cli_scores_open_clip_and_lists_patterns(tiny_open_clip, templates_file, photo_dataset, tmp_path, capsys):
    lb = tmp_path / "lb.json"
    model = f"open_clip:local-dir:{tiny_open_clip}"
    code = cli.main(
        [
            "eval",
            "--model",
            model,
            "--templates",
            str(templates_file),
            "--dataset",
            str(photo_dataset.path),
            "--leaderboard",
            str(lb),
            "--workers",
            "0",
        ]
    )
    assert code == 0
    entry = json.loads(lb.read_text())["entries"][0]
    assert (
        entry["model"] == "open_clip:local-dir:tiny-clip+templates:two"
        and entry["zoo"]["zero_shot"]["templates"]["count"] == 2
    )
    # the recorded command names local files relative to the working directory or by name, never absolutely
    assert f"--templates {templates_file.name}" in entry["command"]
    assert "--model open_clip:local-dir:tiny-clip " in entry["command"]
    assert not any(str(Path(d).parent) in entry["command"] for d in (tiny_open_clip, templates_file))
    capsys.readouterr()
    assert cli.main(["eval", "--list", "--model", "open_clip:ViT-B-32/laion*", "--model", "tf_efficientnet_lite0"]) == 0
    listed = capsys.readouterr().out.split()
    assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in listed and listed[-1] == "tf_efficientnet_lite0"

    for args, pattern in [
        (["--model", "tf_efficientnet_lite0", "--templates", "simple"], r"--templates applies to zero-shot models"),
        (["--model", "open_clip:ViT-B-32/nosuch"], r"unknown open_clip model 'ViT-B-32/nosuch'"),
        (
            ["--model", model, "--class-subset", str(tmp_path / "none.txt")],
            r"--class-subset .*none.txt' is neither spurious-imagenet",
        ),
        (["--model", "transformers:*"], r"transformers: models cannot be listed offline"),
    ]:
        code = cli.main(
            ["eval", *args, "--dataset", str(photo_dataset.path), "--leaderboard", str(tmp_path / "other.json")]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    assert not (tmp_path / "other.json").exists()


def test_clip_panel_names_known_open_clip_models():
    from spurbench.zoo import check_zoo_name

    specs = load_panel("clip")
    assert len(specs) >= 5 and all(s.model.startswith(("open_clip:", "transformers:")) for s in specs)
    for spec in specs:
        if spec.model.startswith("open_clip:"):
            check_zoo_name(spec.model)  # in open_clip.list_pretrained()


# ------------------------------------------------------------------------------------------------
# every kind of set, the default templates, Hub names offline


@pytest.mark.slow
def test_transformers_classifier_on_a_shift_set(tiny_vits, tmp_path):
    """A shift set (accuracy per background, against its reference split): the zoo model's top-1 on both
    splits is the processor + logits argmax, image by image."""
    from test_shift_eval import _shift_set
    from transformers import AutoImageProcessor

    by_wnid, _, _ = tiny_vits
    folder = _shift_set(tmp_path)
    entry, preds = evaluate(ClassifierSpec(model=f"transformers:{by_wnid}"), folder, workers=0)
    assert entry["kind"] == "shift" and entry["per_group"] and entry["zoo"]["library"] == "transformers"
    data = open_dataset(folder)
    images = [_image(data.rows[int(i)]["image"]) for i in preds.index]
    top1 = _processor_logits(by_wnid, images).argmax(-1).numpy()
    assert (preds.top5[:, 0] == top1).all()
    ref = open_dataset(folder, split="reference")
    ref_top1 = (
        _processor_logits(by_wnid, [_image(ref.rows[i]["image"]) for i in range(len(ref.labels))]).argmax(-1).numpy()
    )
    assert entry["metrics"]["reference_accuracy"] == pytest.approx(float(np.mean(ref_top1 == ref.labels)))
    assert AutoImageProcessor.from_pretrained(by_wnid).__class__.__name__ == entry["zoo"]["image_processor"]


@pytest.mark.slow
def test_open_clip_zero_shot_on_a_two_class_group_set(tiny_open_clip, templates_file, tmp_path, monkeypatch):
    """Waterbirds' two classes: the class names are the set's label names; p_k equals open_clip's own
    zero-shot classifier over those names."""
    from test_waterbirds import make_waterbirds_tree

    from spurbench.importers import waterbirds

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    folder = waterbirds.import_waterbirds(make_waterbirds_tree(tmp_path / "src"), tmp_path / "wb")
    data = open_dataset(folder, split="test")
    entry, preds = evaluate(
        ClassifierSpec(model=f"open_clip:local-dir:{tiny_open_clip}", templates=str(templates_file)), data, workers=0
    )
    assert entry["zoo"]["zero_shot"]["classnames"] == {
        "source": "the dataset's label names",
        "count": 2,
        "sha256": entry["zoo"]["zero_shot"]["classnames"]["sha256"],
    }
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip}")
    images = [_image(data.rows[int(i)]["image"]) for i in preds.index]
    with torch.inference_mode():
        head = open_clip.build_zero_shot_classifier(
            model.eval(), tokenizer, data.label_names, [lambda c, t=t: t.replace("{c}", c) for t in TEMPLATES]
        )
        feats = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
    probs = (100.0 * feats @ head).double().softmax(-1).numpy()
    np.testing.assert_allclose(preds.target_prob, probs[np.arange(len(images)), preds.label], rtol=REL, atol=ABS)
    assert (preds.top5[:, 0] == probs.argmax(1)).all() and (preds.top5[:, 2:] == -1).all()


@pytest.mark.slow
def test_default_templates_head_equals_open_clip(tiny_open_clip):
    """The default: open_clip's 80 OPENAI_IMAGENET_TEMPLATES x its 1000 IMAGENET_CLASSNAMES (80,000 prompts,
    about 35 s with one thread); held against build_zero_shot_classifier on 40 classes spread over the 1000."""
    clf = create_classifier(ClassifierSpec(model=f"open_clip:local-dir:{tiny_open_clip}"))
    zs = clf.info["zero_shot"]
    assert zs["templates"]["count"] == 80 and zs["templates"]["source"] == "open_clip OPENAI_IMAGENET_TEMPLATES"
    assert clf.spec.display_name == "open_clip:local-dir:tiny-clip"
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip}")
    some = list(range(0, 1000, 25))
    with torch.inference_mode():
        ref = open_clip.build_zero_shot_classifier(
            model.eval(),
            tokenizer,
            [open_clip.IMAGENET_CLASSNAMES[k] for k in some],
            open_clip.OPENAI_IMAGENET_TEMPLATES,
        )
    torch.testing.assert_close(clf.model.head[:, some], ref, rtol=1e-5, atol=1e-6)


def test_hub_names_offline_are_one_line_errors():
    for model, pattern in [
        ("open_clip:hf-hub:nosuch-org/nosuch-model", r"cannot load open_clip model 'hf-hub:nosuch-org/nosuch-model'"),
        ("transformers:nosuch-org/nosuch-model", r"cannot load 'transformers:nosuch-org/nosuch-model'"),
    ]:
        with pytest.raises(SpurbenchError, match=pattern) as err:
            create_classifier(ClassifierSpec(model=model, templates="simple"))
        assert "\n" not in str(err.value)


def test_panel_of_zoos_records_a_failure_and_goes_on(
    tiny_open_clip, tiny_vits, templates_file, photo_dataset, tmp_path, capsys
):
    """A panel mixing zoos: a relative `templates:` file is read next to the panel; a model that cannot be
    loaded (a Hub id, offline) is recorded in `failures` with its reason and the others are scored."""
    import shutil

    by_wnid, _, _ = tiny_vits
    panel = tmp_path / "panel" / "zoos.yaml"
    panel.parent.mkdir()
    shutil.copy(templates_file, panel.parent / "prompts.json")
    panel.write_text(
        f"name: zoos\nmodels:\n  - model: open_clip:local-dir:{tiny_open_clip}\n    templates: prompts.json\n"
        f"  - transformers:{by_wnid}\n  - transformers:nosuch-org/nosuch-model\n"
    )
    lb = tmp_path / "lb.json"
    code = cli.main(
        [
            "eval",
            "--panel",
            str(panel),
            "--dataset",
            str(photo_dataset.path),
            "--leaderboard",
            str(lb),
            "--workers",
            "0",
        ]
    )
    assert code == 1
    board = json.loads(lb.read_text())
    assert sorted(e["model"] for e in board["entries"]) == [
        "open_clip:local-dir:tiny-clip+templates:prompts",
        "transformers:vit-wnids",
    ]
    failure = board["failures"][0]
    assert failure["model"] == "transformers:nosuch-org/nosuch-model" and "cannot load" in failure["reason"]
    assert "FAILED transformers:nosuch-org/nosuch-model" in capsys.readouterr().err


def _hub_cache(cache, repo: str, folder) -> None:
    """Put `folder`'s files in a Hugging Face Hub cache as if `repo` had been downloaded (refs/main -> a snapshot)."""
    import shutil

    commit = "0" * 40
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    shutil.copytree(folder, base / "snapshots" / commit)


@pytest.mark.slow
def test_hub_names_load_from_the_hub_cache_offline(
    tiny_open_clip, tiny_vits, templates_file, tmp_path, monkeypatch, photo_dataset
):
    """`open_clip:hf-hub:org/repo` and `transformers:org/repo` go through the Hub download path (served
    from the cache, offline) and give the same predictions as the same files loaded from their folder."""
    import huggingface_hub.constants

    by_wnid, _, _ = tiny_vits
    cache = tmp_path / "hub"
    _hub_cache(cache, "spurbench-test/tiny-clip", tiny_open_clip)
    _hub_cache(cache, "spurbench-test/tiny-vit", by_wnid)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    data = open_dataset(photo_dataset.path)
    for hub, local in [
        (
            ClassifierSpec(model="open_clip:hf-hub:spurbench-test/tiny-clip", templates=str(templates_file)),
            ClassifierSpec(model=f"open_clip:local-dir:{tiny_open_clip}", templates=str(templates_file)),
        ),
        (ClassifierSpec(model="transformers:spurbench-test/tiny-vit"), ClassifierSpec(model=f"transformers:{by_wnid}")),
    ]:
        entry, preds = evaluate(hub, data, workers=0)
        local_entry, local_preds = evaluate(local, data, workers=0)
        assert entry["weights"]["source"].startswith("hf-hub:spurbench-test/tiny-")
        assert entry["weights"]["sha256"] == local_entry["weights"]["sha256"]
        np.testing.assert_array_equal(preds.top5, local_preds.top5)
        np.testing.assert_allclose(preds.target_prob, local_preds.target_prob, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    """A tiny transformers SiglipModel + SiglipProcessor (a word-level tokenizer over the ImageNet class names'
    words), via save_pretrained; logit_scale 0 and logit_bias 0, so the pipeline's sigmoid scores are the
    sigmoid of the plain cosine, from which CLIP_benchmark's softmax of 100 x cosine follows."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    folder = tmp_path_factory.mktemp("siglip") / "tiny-siglip"
    words = sorted(
        {w for n in open_clip.IMAGENET_CLASSNAMES for w in n.lower().replace(",", " ").split()}
        | {"this", "is", "a", "photo", "of"}
    )
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", model_max_length=64
    )
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "eos_token_id": 2,
        "bos_token_id": None,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_scale.zero_()
        model.logit_bias.zero_()
    model.save_pretrained(folder)
    SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_transformers_siglip_equals_zero_shot_pipeline(tiny_siglip, tmp_path, photo_dataset, photos):
    from transformers import pipeline

    template = tmp_path / "pipeline.json"
    template.write_text(json.dumps(["This is a photo of {c}."]))
    entry, preds = evaluate(
        ClassifierSpec(model=f"transformers:{tiny_siglip}", templates=str(template)), photo_dataset.path, workers=0
    )
    assert entry["zoo"]["model_class"] == "SiglipModel"
    images, labels = photos
    names = list(open_clip.IMAGENET_CLASSNAMES)
    classify = pipeline("zero-shot-image-classification", model=str(tiny_siglip), device="cpu")
    order = np.argsort(preds.index)
    for i in (0, 7, 14):
        cos = np.zeros(1000)
        for s in classify(images[i], candidate_labels=names):
            k = names.index(s["label"])
            while cos[k] != 0:
                k = names.index(s["label"], k + 1)
            cos[k] = math.log(s["score"] / (1 - s["score"]))  # sigmoid(cosine) -> cosine (logit_scale 0, bias 0)
        p = torch.as_tensor(100.0 * cos).softmax(-1).numpy()
        j = order[i]
        assert preds.target_prob[j] == pytest.approx(p[labels[i]], rel=1e-3, abs=1e-6)
        assert list(preds.top5[j]) == list(np.argsort(-p, kind="stable")[:5])


def test_text_padding_comes_from_the_checkpoint_not_its_name(tiny_hf_clip, tmp_path):
    """A SigLIP text tower pools a fixed position, so its prompts are padded to the full length its checkpoint
    declares (here 16, not a hard-coded 64); CLIP masks its padding, so its prompts are padded to the longest, as
    transformers' zero-shot pipeline does; a processor's own text defaults (SigLIP 2) win."""
    from transformers import AutoModel, AutoProcessor, SiglipConfig, SiglipModel

    from spurbench.tiny_models import tiny_clip_tokenizer
    from spurbench.zoo.transformers import text_padding

    cpu = torch.device("cpu")
    tokenizer = tiny_clip_tokenizer(tmp_path, model_max_length=16)
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
    )
    siglip = SiglipModel(config).eval()
    assert text_padding(siglip, object(), tokenizer, config, cpu) == {
        "padding": "max_length",
        "max_length": 16,
        "truncation": True,
    }
    clip = AutoModel.from_pretrained(tiny_hf_clip).eval()
    processor = AutoProcessor.from_pretrained(tiny_hf_clip)
    assert text_padding(clip, processor, processor.tokenizer, clip.config, cpu) == {"padding": True}

    class Declares:  # a processor that declares its own text defaults, as Siglip2Processor does
        text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 12}

    assert text_padding(siglip, Declares(), tokenizer, config, cpu) == {
        "padding": "max_length",
        "max_length": 12,
        "truncation": True,
    }


def test_transformers_image_processor_is_the_fast_one_and_agrees_with_the_slow(tiny_hf_clip):
    """transformers picks the torchvision-backed image processor where one exists (its default since 5.x); spurbench
    keeps that choice (recorded as `zoo.image_processor`). Held against the PIL-backed one on real photos of several
    sizes: measured at most 1 level of 255 per pixel, mean 0.003 levels (CLIP's processor, 20 photos)."""
    import skimage.data
    from transformers import AutoImageProcessor
    from transformers.image_processing_backends import TorchvisionBackend

    from spurbench.zoo.transformers import ProcessorTransform

    clf = create_classifier(ClassifierSpec(model=f"transformers:{tiny_hf_clip}"))
    assert isinstance(clf.transform, ProcessorTransform)
    assert isinstance(clf.transform.image_processor, TorchvisionBackend)
    slow = ProcessorTransform(AutoImageProcessor.from_pretrained(tiny_hf_clip, backend="pil"))
    assert not isinstance(slow.image_processor, TorchvisionBackend)
    level = 1 / 255 / min(slow.image_processor.image_std)  # one uint8 level in normalised units
    worst, means = 0.0, []
    for photo in (skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()):
        for size in ((97, 131), (300, 451), (640, 480)):
            img = Image.fromarray(photo).resize(size, Image.BICUBIC)
            d = (clf.transform(img) - slow(img)).abs()
            worst, means = max(worst, float(d.max())), means + [float(d.mean())]
    assert worst <= 1.01 * level and np.mean(means) <= 0.05 * level, (worst / level, np.mean(means) / level)
