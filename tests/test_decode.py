"""The evaluation loop's decode path and its batch size: torchvision's decoder + the transform's own steps on
uint8 tensors, held against timm's eval transform on PIL images (the stated tolerance, real photos, both
encodings, both preprocessings, and a real classifier's predictions); the CPU calibration of batch size and
memory format, and `--batch-size` overriding it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm.data
import torch
from PIL import Image

from spurbench.classifiers import create_classifier, load_panel
from spurbench.evaluate import predict as predict_mod
from spurbench.evaluate.inputs import open_dataset
from spurbench.evaluate.predict import ImageItems, choose_batch, predict
from spurbench.evaluate.preprocessing import (
    DECODE_MAX_ABS_DIFF,
    DECODE_MEAN_ABS_DIFF,
    build_uint8_transforms,
    tensor_transform,
)


@pytest.fixture(scope="module")
def lite0():
    return create_classifier(load_panel("offline")[0])


def _photos(photo_dataset, encoding: str) -> list[bytes]:
    """The test photos' rows re-encoded as `encoding` bytes (PNG as the dataset holds them; JPEG as the
    Spurious ImageNet release ships)."""
    rows = open_dataset(photo_dataset.path).rows
    out = []
    for r in rows:
        img = Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format=encoding, **({"quality": 90} if encoding == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["PNG", "JPEG"])
@pytest.mark.parametrize("preprocessing", ["timm", "spurious-imagenet"])
def test_tensor_path_within_tolerance_of_the_pil_transform(photo_dataset, lite0, encoding, preprocessing):
    config = timm.data.resolve_data_config(model=lite0.model, use_test_size=preprocessing == "spurious-imagenet")
    for pil_tf in build_uint8_transforms(dict(config), preprocessing):  # spurious images and positives
        tensor_tf = tensor_transform(pil_tf)
        assert tensor_tf is not None
        diffs = []
        for data in _photos(photo_dataset, encoding):
            want = pil_tf(Image.open(io.BytesIO(data)).convert("RGB"))  # the reference: timm's own transform on PIL
            items = ImageItems(
                pil_tf, np.zeros(1, int), rows=[{"image": {"bytes": data}}], size=config["input_size"][-2:]
            )
            got, _, _, err = items[0]
            assert err == "" and items.decode == "torchvision"
            assert got.dtype == torch.uint8 and got.shape == want.shape
            diffs.append((got.int() - want.int()).abs())
        worst = max(int(d.max()) for d in diffs)
        mean = float(np.mean([d.float().mean() for d in diffs]))
        assert worst <= DECODE_MAX_ABS_DIFF and mean <= DECODE_MEAN_ABS_DIFF, (worst, mean)
        assert worst > 0 or mean == 0  # (the check can fail: the two paths are computed independently)


@pytest.mark.slow
def test_same_predictions_as_the_pil_path(photo_dataset, lite0):
    """A real classifier over the real photos: the same top-1 everywhere, p_label within 0.05 (measured: 0.022)."""
    data = open_dataset(photo_dataset.path)
    tf, _ = build_uint8_transforms(dict(lite0.data_config), "timm")
    size = lite0.data_config["input_size"][-2:]
    fast = predict(lite0, ImageItems(tf, data.labels, rows=data.rows, size=size), workers=0, batch_size=8)
    ref_items = ImageItems(tf, data.labels, rows=data.rows, size=size, decode="pil")
    assert ref_items.decode == "pil"
    ref = predict(lite0, ref_items, workers=0, batch_size=8)
    assert (fast.top5[:, 0] == ref.top5[:, 0]).all()
    assert np.abs(fast.target_prob - ref.target_prob).max() < 0.05


def test_other_transforms_and_formats_take_the_pil_path(photo_dataset, lite0):
    from torchvision import transforms as T

    # a transform with a step torchvision cannot run on a uint8 tensor the same way (a zoo's own): PIL
    own = T.Compose([T.Resize(64), T.ColorJitter(0.1), T.PILToTensor()])
    assert tensor_transform(own) is None and ImageItems(own, np.zeros(1, int), rows=[]).decode == "pil"
    assert tensor_transform(T.Compose([T.Resize(64), T.ToTensor()])) is None  # float output: not this path
    # a format torchvision's decoder does not take (TIFF): decoded by PIL, the same pixels as the PIL path
    tf, _ = build_uint8_transforms(dict(lite0.data_config), "timm")
    img = Image.open(io.BytesIO(_photos(photo_dataset, "PNG")[0])).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    items = ImageItems(tf, np.zeros(1, int), rows=[{"image": {"bytes": buf.getvalue()}}])
    got, _, _, err = items[0]
    assert err == "" and torch.equal(got, tf(img))
    # a broken or truncated image goes to PIL, which names its error (libpng would only print to stderr)
    good = _photos(photo_dataset, "PNG")[0]
    for bad in (b"\x89PNG\r\n\x1a\n broken", good[: len(good) // 2]):
        broken = ImageItems(tf, np.zeros(1, int), rows=[{"image": {"bytes": bad}}])
        assert predict_mod._decode_tensor(bad) is None and broken[0][3].startswith("cannot ")


def test_batch_size_chosen_for_the_device(lite0, monkeypatch):
    assert choose_batch(lite0, "cpu", (224, 224), batch_size=7) == {
        "batch_size": 7,
        "memory_format": "channels_last",
        "batch_size_from": "--batch-size",
    }
    monkeypatch.setattr(predict_mod, "CPU_BATCH_CANDIDATES", (4, 2, 1))
    monkeypatch.setattr(predict_mod, "CALIBRATION_BUDGET_S", 60.0)
    got = choose_batch(lite0, "cpu", (96, 96))
    assert got["batch_size_from"] == "cpu calibration" and got["batch_size"] in (1, 2, 4)
    assert got["memory_format"] in ("channels_last", "contiguous")
    timings = got["calibration"]["ms_per_image"]
    assert f"channels_last b{got['batch_size']}" in timings and f"contiguous b{got['batch_size']}" in timings
    # the chosen one is the fastest measured
    best = min(timings.values())
    chosen = timings[f"{got['memory_format']} b{got['batch_size']}"]
    assert chosen == best
