"""DDB's pruning rule, integrated gradients inside the mask, and compositing onto the real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import _photo
from PIL import Image

from spurbench.generate import compositing, pruning

# --------------------------------------------------------------------------------------------
# the keep rule, by hand


def test_keep_rule_against_a_hand_computation_with_equality_edges():
    threshold = 0.3
    ig = [0.5, 0.3, 0.30000001, 0.9, -1.0, 0.31, 0.7]
    p = [0.10, 0.10, 0.10, 0.40, 0.05, 0.399999, 0.2]
    mean = [0.40, 0.40, 0.40, 0.40, 0.40, 0.40, 0.2]
    # row by row: ig > 0.3 ?  p < mean ?
    #   0.5  yes, 0.10 < 0.40 yes -> keep
    #   0.3  no (equal: strict)            -> prune
    #   0.30000001 yes, yes                -> keep
    #   0.9  yes, 0.40 < 0.40 no (equal)   -> prune
    #   -1   no                            -> prune
    #   0.31 yes, 0.399999 < 0.4 yes       -> keep
    #   0.7  yes, 0.2 < 0.2 no (equal)     -> prune
    expected = [True, False, True, False, False, True, False]
    assert pruning.keep_mask(ig, p, mean, threshold).tolist() == expected
    # one class mean for all rows broadcasts the same way
    assert pruning.keep_mask(ig[:6], p[:6], 0.4, threshold).tolist() == expected[:6]
    # a higher threshold only removes rows
    assert pruning.keep_mask(ig, p, mean, 0.6).tolist() == [False, False, False, False, False, False, False]


# --------------------------------------------------------------------------------------------
# integrated gradients inside the mask, against captum called directly


@pytest.fixture(scope="module")
def lite0():
    from spurbench.classifiers import create_classifier, load_panel

    return create_classifier(load_panel("offline")[0])


def _pair():
    """A real photo and a copy with a rectangle painted over (the 'counterfactual'), plus that rectangle's mask."""
    original = Image.fromarray(_photo("chelsea"))
    arr = np.asarray(original).copy()
    mask = np.zeros(arr.shape[:2], dtype=bool)
    mask[60:250, 80:300] = True
    arr[mask] = (arr[mask] * 0.2 + np.array([30, 120, 40]) * 0.8).astype(np.uint8)
    return original, Image.fromarray(arr), mask


def test_ig_summed_in_mask_matches_captum_called_directly(lite0):
    from captum.attr import IntegratedGradients

    original, generated, mask = _pair()
    cfg = lite0.data_config
    gen_t = pruning.classifier_input([generated], cfg)
    orig_t = pruning.classifier_input([original], cfg)
    mask_t = pruning.mask_input([mask], cfg)
    target = 285  # Egyptian cat: the source class
    ours = pruning.ig_in_mask(lite0.model, gen_t, orig_t, mask_t, target, n_steps=8)

    # independent: captum on hand-made tensors, mask resized by hand with nearest neighbour
    h, w = cfg["input_size"][1:]
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def to_input(im):
        a = torch.from_numpy(np.asarray(im.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0)
        return (a.permute(2, 0, 1)[None] - mean) / std

    # nearest neighbour by pixel centres
    rows = ((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int)
    cols = ((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int)
    hand_mask = torch.from_numpy(mask[np.ix_(rows, cols)].astype(np.float32))
    attr = IntegratedGradients(lite0.model).attribute(
        to_input(generated), baselines=to_input(original), target=target, n_steps=8
    )
    direct = float((attr[0] * hand_mask).sum())
    assert ours.shape == (1,)
    assert ours[0] == pytest.approx(direct, rel=1e-4, abs=1e-6)
    assert abs(direct) > 1e-3  # the painted rectangle does move the cat logit

    # additivity: the mask and its complement sum to the attribution over the whole image
    outside = pruning.ig_in_mask(lite0.model, gen_t, orig_t, 1 - mask_t, target, n_steps=8)
    whole = pruning.ig_in_mask(lite0.model, gen_t, orig_t, torch.ones_like(mask_t), target, n_steps=8)
    assert ours[0] + outside[0] == pytest.approx(whole[0], rel=1e-4, abs=1e-5)


def test_source_probability_is_the_softmax_of_the_real_classifier(lite0):
    original, generated, _ = _pair()
    x = pruning.classifier_input([original, generated], lite0.data_config)
    p = pruning.class_probabilities(lite0.model, x, 285)
    with torch.no_grad():
        direct = torch.softmax(lite0.model(x), dim=-1)[:, 285].double().numpy()
    np.testing.assert_allclose(p, direct, rtol=1e-6)
    assert p[0] > p[1]  # painting over the cat lowers p(Egyptian cat)


def test_a_successful_swap_is_kept_when_the_rule_is_about_the_painted_label(lite0):
    """Espresso painted into the cat photo, by hand: DDB's rule explains the row's label (espresso). Its IG in the
    mask is positive and p(espresso) stays below the mean over espresso's own photo, so it is kept; the source
    class (the cat), which spurbench explained before, gives a negative IG and would have pruned it."""
    cat, coffee = Image.fromarray(_photo("chelsea")), Image.fromarray(_photo("coffee"))
    arr = np.asarray(cat).copy()
    mask = np.zeros(arr.shape[:2], dtype=bool)
    mask[20:280, 60:400] = True
    arr[20:280, 60:400] = np.asarray(coffee.resize((340, 260)))
    cfg = lite0.data_config
    x, x0 = pruning.classifier_input([Image.fromarray(arr)], cfg), pruning.classifier_input([cat], cfg)
    m = pruning.mask_input([mask], cfg)
    label, source = 967, 285
    ig_label = pruning.ig_in_mask(lite0.model, x, x0, m, label, n_steps=16)
    ig_source = pruning.ig_in_mask(lite0.model, x, x0, m, source, n_steps=16)
    p_label = pruning.class_probabilities(lite0.model, x, label)
    mean = pruning.class_probabilities(lite0.model, pruning.classifier_input([coffee], cfg), label).mean()
    assert ig_label[0] > 0.3 and p_label[0] < mean
    assert pruning.keep_mask(ig_label, p_label, mean).tolist() == [True]
    assert ig_source[0] < 0


# --------------------------------------------------------------------------------------------
# compositing keeps the real photo outside mask + feather margin


@pytest.mark.parametrize("feather", [0, 3, 8])
def test_every_pixel_outside_mask_and_feather_is_the_original(feather):
    original = Image.fromarray(_photo("coffee"))
    rng = np.random.default_rng(0)
    generated = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))  # another size on purpose
    mask = np.zeros((original.height, original.width), dtype=bool)
    mask[100:130, 200:240] = True
    mask[300, 50] = True
    out = np.asarray(compositing.composite(original, generated, mask, feather))
    orig = np.asarray(original)
    # independent distance: brute force over the mask pixels, per pixel of a window around them
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[: orig.shape[0], : orig.shape[1]]
    dist = np.full(mask.shape, np.inf)
    for y, x in zip(ys, xs):
        dist = np.minimum(dist, np.hypot(yy - y, xx - x))
    outside = dist > feather
    assert np.array_equal(out[outside], orig[outside])
    gen = np.asarray(generated.resize(original.size, Image.BICUBIC))
    assert np.array_equal(out[mask], gen[mask])
    band = (dist > 0) & (dist <= feather)
    if feather:
        # in the band, a blend with weight 1 - d/(feather+1) on the generated pixel
        a = (1 - dist[band] / (feather + 1))[:, None]
        expected = np.rint(a * gen[band] + (1 - a) * orig[band])
        assert np.abs(out[band].astype(int) - expected).max() <= 1
    assert compositing.grow_mask(mask, feather).sum() == (dist <= feather).sum()


def test_composite_rejects_a_mask_of_another_size():
    original = Image.fromarray(_photo("coffee"))
    with pytest.raises(ValueError, match="mask has shape"):
        compositing.composite(original, original, np.zeros((10, 10), dtype=bool))
