"""DDB's pruning of counterfactuals with the classifier's own view of them.

In DDB's code (ArianYp/DDB, generate.py) one class is at once the integrated-gradients target, the class
whose probability is compared, the class of the mean and the label the counterfactual is saved with.
spurbench calls it the row's `label` (in swap mode, the painted class). A repainted image is kept when
both hold (strict inequalities, as DDB's code):
- the integrated-gradients attribution of the classifier's `label` logit, with the *original* photo as
  baseline, summed (signed) inside the object mask, is above `threshold` (DDB: 0.3): the repainted object
  is what moved the classifier towards the label;
- p(label | repainted) is below the mean p(label) over that class's own selected source photos: the
  counterfactual is one the classifier finds harder than the class's typical photo (DDB keeps these).

Images go to the classifier resized to its input size with no crop (so the whole mask counts) and
normalised with its mean/std; masks are resized with nearest-neighbour to the same grid.

By IG's completeness the attributions over the whole image sum to logit(repainted) - logit(original),
so `ig_score` is that difference's share inside the mask. Remove mode (a spurious test set) prunes with
this rule only when the recipe opts in (see spurbench.generate.methods.ddb).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: DDB's IG threshold
DEFAULT_IG_THRESHOLD = 0.3
#: integration steps of integrated gradients (captum's default)
DEFAULT_IG_STEPS = 50


def keep_mask(
    ig_scores: Sequence[float],
    p_label: Sequence[float],
    p_label_mean: Sequence[float] | float,
    threshold: float = DEFAULT_IG_THRESHOLD,
) -> np.ndarray:
    """Which counterfactuals survive: ig_score > threshold and p_label < p_label_mean (both strict)."""
    ig = np.asarray(ig_scores, dtype=np.float64)
    p = np.asarray(p_label, dtype=np.float64)
    mean = np.broadcast_to(np.asarray(p_label_mean, dtype=np.float64), p.shape)
    return (ig > threshold) & (p < mean)


def classifier_input(images: Sequence[object], data_config: dict) -> torch.Tensor:
    """(N, 3, H, W) float tensor: PIL images resized to the classifier's input size (bicubic, no crop), normalised."""
    from PIL import Image

    h, w = data_config["input_size"][-2:]
    mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32).view(3, 1, 1)
    out = []
    for im in images:
        arr = np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
        out.append((torch.from_numpy(arr).permute(2, 0, 1) - mean) / std)
    return torch.stack(out)


def mask_input(masks: Sequence[np.ndarray], data_config: dict) -> torch.Tensor:
    """(N, 1, H, W) float {0, 1} masks on the classifier's input grid (nearest neighbour)."""
    from PIL import Image

    h, w = data_config["input_size"][-2:]
    out = [
        np.asarray(Image.fromarray(np.asarray(m, dtype=np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        for m in masks
    ]
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def ig_in_mask(
    model: torch.nn.Module,
    generated: torch.Tensor,
    original: torch.Tensor,
    masks: torch.Tensor,
    target: int | Sequence[int],
    n_steps: int = DEFAULT_IG_STEPS,
    internal_batch_size: int | None = None,
) -> np.ndarray:
    """Integrated gradients of the `target` logit from baseline `original` to `generated`, summed inside `masks`.

    `generated`, `original`: (N, 3, H, W) classifier inputs; `masks`: (N, 1, H, W) in {0, 1}. Returns (N,) floats.
    """
    from captum.attr import IntegratedGradients

    model.eval()
    device = next(model.parameters()).device
    ig = IntegratedGradients(model)
    with torch.enable_grad():
        attributions = ig.attribute(
            generated.to(device),
            baselines=original.to(device),
            target=target,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
    return (attributions.detach().cpu() * masks.cpu()).sum(dim=(1, 2, 3)).double().numpy()


@torch.no_grad()
def class_probabilities(
    model: torch.nn.Module, inputs: torch.Tensor, target: int | Sequence[int], batch_size: int = 32
) -> np.ndarray:
    """Softmax probability of `target` (one class, or one per row) for each row of `inputs`."""
    model.eval()
    device = next(model.parameters()).device
    targets = torch.as_tensor(target).expand(len(inputs)) if np.ndim(target) == 0 else torch.as_tensor(list(target))
    out = []
    for i in range(0, len(inputs), batch_size):
        probs = torch.softmax(model(inputs[i : i + batch_size].to(device)).float(), dim=-1).cpu()
        out.append(probs.gather(1, targets[i : i + batch_size, None]).squeeze(1))
    return torch.cat(out).double().numpy() if out else np.zeros(0)
