"""The build's copy check (spurbench.generate.copies): planted copies of a reference image are caught, distinct real
images of the same class are not, and `spurbench eval` treats a near-duplicate like an image that failed verification."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spurbench.errors import SpurbenchError
from spurbench.generate import copies
from spurbench.verification import NEAR_DUPLICATE, NEAREST, PRESENT, REVIEWED, SIMILARITY, excluded_in


def _png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).convert("RGB").save(b, "PNG")
    return b.getvalue()


def _resized_jpeg(data: bytes, scale: float, quality: int) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.BILINEAR)
    b = io.BytesIO()
    im.save(b, "JPEG", quality=quality)
    return b.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos as files: a reference set (astronaut, chelsea the cat, coffee) and LFW faces (one class)."""
    import skimage.data as d

    root = tmp_path_factory.mktemp("copies")
    out = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        out[name] = root / f"{name}.png"
        out[name].write_bytes(_png(getattr(d, name)()))
    faces = d.lfw_subset()[:100]
    out["faces"] = []
    for i, f in enumerate(faces):
        p = root / f"face{i:03d}.png"
        p.write_bytes(_png((f * 255).astype(np.uint8)))
        out["faces"].append(p)
    return out


def test_planted_exact_and_resized_reencoded_copies_are_caught(photos, tmp_path):
    refs = [photos["astronaut"], photos["chelsea"], photos["coffee"]]
    exact = tmp_path / "exact.png"
    exact.write_bytes(photos["chelsea"].read_bytes())
    resized = tmp_path / "resized.jpg"
    resized.write_bytes(_resized_jpeg(photos["coffee"].read_bytes(), 0.5, 60))
    mirrored = tmp_path / "mirrored.png"
    mirrored.write_bytes(_png(np.asarray(Image.open(photos["astronaut"]))[:, ::-1]))
    distinct = photos["rocket"]
    result = copies.check_class([exact, resized, mirrored, distinct], refs, copies.DEFAULT_THRESHOLD, "class 1")
    assert result.near_duplicate == [True, True, True, False]
    assert result.nearest[:3] == ["chelsea.png", "coffee.png", "astronaut.png (mirrored)"]
    assert result.similarity[0] == pytest.approx(1.0, abs=1e-4)
    assert result.similarity[1] >= 0.9 and result.similarity[3] < 0.3
    assert result.self_duplicates == 0


def test_distinct_images_of_one_class_are_not_copies(photos):
    """100 different LFW faces: none is a near-duplicate of the others (nor of their mirrors) at the default."""
    faces = photos["faces"]
    result = copies.check_class(faces[50:], faces[:50], copies.DEFAULT_THRESHOLD, "faces")
    assert not any(result.near_duplicate)
    assert max(result.similarity) < copies.DEFAULT_THRESHOLD - 0.05
    assert result.self_duplicates == 0


def test_self_duplicates_are_counted_per_class(photos, tmp_path):
    again = tmp_path / "again.jpg"
    again.write_bytes(_resized_jpeg(photos["rocket"].read_bytes(), 0.7, 80))
    rows = [
        {"image": str(p), "label": k, "source": s}
        for p, k, s in [
            (photos["rocket"], 3, "generated"),
            (again, 3, "generated"),
            (photos["coffee"], 3, "generated"),
            (photos["chelsea"], 5, "generated"),
            (photos["astronaut"], 3, "reference"),
        ]
    ]
    out, summary = copies.annotate_rows(rows, {3: [str(photos["coffee"])], 5: [str(photos["astronaut"])]}, 0.8)
    assert [r[NEAR_DUPLICATE] for r in out] == [False, False, True, False, False]
    assert out[2][NEAREST] == "coffee.png" and out[4][SIMILARITY] is None  # reference rows are not checked
    assert summary["classes"]["3"] == {
        "checked": 3,
        "near_duplicates": 1,
        "self_duplicates": 1,
        "max_similarity": pytest.approx(1.0, abs=1e-4),
    }
    assert summary["classes"]["5"]["self_duplicates"] == 0 and summary["near_duplicates"] == 1
    card = copies.card_section({**summary, "splits": {"test": summary}})
    assert "| test | 3 | 3 | 1 | 1 | 1.00 |" in card


def test_near_duplicates_are_left_out_like_failed_checks_unless_kept():
    cols = {
        PRESENT: [False, True, False, False],
        REVIEWED: ["", "", "keep", ""],
        NEAR_DUPLICATE: [False, False, True, True],
    }
    assert excluded_in("spurious", cols).tolist() == [False, True, False, True]
    # an unverified set with the copy check alone: its near-duplicates are still left out
    assert excluded_in("spurious", {NEAR_DUPLICATE: [True, False]}).tolist() == [True, False]
    assert excluded_in("spurious", {"label": [1, 2]}) is None


def test_copies_section_checked():
    assert copies.parse_copies_section(None).threshold == copies.DEFAULT_THRESHOLD
    assert copies.parse_copies_section({"threshold": 0.9}).threshold == 0.9
    with pytest.raises(SpurbenchError, match=r"key 'copies.threshold' must be a similarity between -1 and 1"):
        copies.parse_copies_section({"threshold": 1.5})
    with pytest.raises(SpurbenchError, match=r"copies"):
        copies.parse_copies_section({"treshold": 0.5})


def test_recipe_copies_key_is_validated_and_not_hashed(tmp_path):
    import yaml

    from spurbench import resources
    from spurbench.generate.recipe import load_recipe, recipe_hash

    _, data = resources.load_yaml("recipe", "smoke")
    base = recipe_hash(load_recipe("smoke")[1])
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**data, "copies": {"threshold": 0.9}}))
    assert recipe_hash(load_recipe(good)[1]) == base
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**data, "copies": {"threshold": 7}}))
    with pytest.raises(SpurbenchError, match=r"bad.yaml.*copies.threshold"):
        load_recipe(bad)


def test_images_are_bounded_before_decoding_and_corrupt_ones_named(tmp_path, monkeypatch):
    from spurbench import untrusted

    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setattr(untrusted, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(SpurbenchError, match=r"big.png"):
        copies.check_class([big], [], 0.8, "class 1")
    monkeypatch.undo()
    broken = tmp_path / "broken.png"
    broken.write_bytes(_png(np.zeros((64, 64, 3), np.uint8))[:60])
    with pytest.raises(SpurbenchError, match=r"broken.png"):
        copies.check_class([broken], [], 0.8, "class 1")


def test_eval_leaves_near_duplicates_out_and_include_unverified_keeps_them(photos, tmp_path):
    """Through `spurbench eval`'s own reader (evaluate/inputs.py): a set with the copy check's columns only."""
    from spurbench import imagenet
    from spurbench.dataset import DatasetCard, write_dataset
    from spurbench.evaluate.inputs import open_dataset

    rows = [
        dict(
            image=str(p),
            label=1,
            class_name=imagenet.class_name(1),
            spurious_feature="x",
            component=-1,
            source="generated",
            builder="sfsl",
            prompt="p",
            seed=i,
        )
        for i, p in enumerate([photos["rocket"], photos["coffee"], photos["chelsea"]])
    ]
    rows, _ = copies.annotate_rows(rows, {1: [str(photos["coffee"])]}, copies.DEFAULT_THRESHOLD)
    folder = write_dataset(
        tmp_path / "set", {"test": rows}, DatasetCard(pretty_name="t", body="b"), extra_features=copies.copy_features()
    )
    data = open_dataset(folder)
    assert data.num_excluded == 1 and list(data.row_index) == [0, 2]
    assert open_dataset(folder, include_unverified=True).num_excluded == 0
