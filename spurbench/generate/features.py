"""The frozen feature model behind the spurious-feature similarity loss (SFSL).

A classifier g with pre-logit features phi(x) and a linear ImageNet head W gives the class-wise
features a_k(x) = w_k * phi(x) (elementwise; w_k = row k of W). Summing a_k gives the logit of class k
minus the bias, so a_k says *which* features make g see class k; Spurious ImageNet's neural PCA finds
spurious components in this space. SFSL (DESIGN.md) asks the fine-tuned generator to reproduce the
class-wise features of the reference spurious images:

    L_sfsl = 1 - cos(a_k(x_hat), a_k(x))

Everything here is differentiable with respect to the *images*, while the classifier itself is frozen
(eval mode, no gradients for its weights): the generator learns, the judge does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from spurbench.errors import SpurbenchError

if TYPE_CHECKING:  # classifiers.py is owned by the "eval" helper
    from spurbench.classifiers import ClassifierSpec

__all__ = ["FeatureModel", "load_feature_model", "load_tiny_decoder", "sfsl_loss"]

_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear"}


class FeatureModel(nn.Module):
    """A frozen timm classifier seen as the class-wise feature map a_k(x) = w_k * phi(x).

    Inputs are images as the VAE decodes them: float tensors [B, 3, H, W] in [-1, 1]. They are mapped
    to [0, 1], resized to the classifier's input size without cropping (what Spurious ImageNet's code
    does for spurious images; a crop could cut the spurious feature out) and normalised with the
    classifier's mean/std, all as tensor ops so gradients reach the images. Values are not clamped:
    a decoded image may overshoot [-1, 1] slightly, and clamping would zero its gradient there.
    """

    def __init__(self, model: nn.Module, data_config: dict[str, Any]) -> None:
        super().__init__()
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(head, nn.Linear):
            raise SpurbenchError(
                f"feature model {type(model).__name__} has no linear classifier head (got {type(head).__name__}); "
                "SFSL needs a timm ImageNet classifier whose get_classifier() is an nn.Linear"
            )
        self.model = model
        self.data_config = dict(data_config)
        _, height, width = self.data_config["input_size"]
        self.input_size = (int(height), int(width))
        self.interpolation = _INTERPOLATION.get(self.data_config.get("interpolation", "bicubic"), "bilinear")
        self.register_buffer("mean", torch.tensor(self.data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.data_config["std"], dtype=torch.float32).view(1, 3, 1, 1))
        self.num_classes = head.out_features
        self.requires_grad_(False)
        self.eval()

    @property
    def head_weight(self) -> torch.Tensor:
        """W, [num_classes, feature_dim]."""
        return self.model.get_classifier().weight

    def train(self, mode: bool = True) -> FeatureModel:
        # Frozen for good: batch-norm statistics and dropout must not change when a caller puts a
        # larger module containing this one into training mode.
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the classifier's normalised input, differentiably (no PIL)."""
        # float32: antialiased resizing has no half-precision kernels, and it is cheap next to the model
        x = (images.float() + 1) / 2
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode=self.interpolation, antialias=True, align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x) for an already preprocessed batch: [B, feature_dim]."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def class_features(self, images: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """a_k(x) = w_k * phi(x) for [-1, 1] images; `k` is one class or a LongTensor with one per image."""
        phi = self.pre_logits(self.preprocess(images))
        if isinstance(k, int):
            if not 0 <= k < self.num_classes:
                raise SpurbenchError(f"class index {k} is outside the feature model's 0..{self.num_classes - 1}")
            w = self.head_weight[k].unsqueeze(0)
        else:
            k = torch.as_tensor(k, device=phi.device).long().reshape(-1)
            if k.numel() != phi.shape[0]:
                raise ValueError(f"got {k.numel()} class indices for {phi.shape[0]} images")
            w = self.head_weight[k]
        return w.to(phi.dtype) * phi

    def forward(self, images: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        return self.class_features(images, k)

    def decode(self, latents: torch.Tensor, vae: nn.Module) -> torch.Tensor:
        """Latents in the UNet's (scaled) space -> [-1, 1] images, with gradients to the latents: by the attached
        tiny decoder (`decoder`, an AutoencoderTiny; a recipe's `features.decoder: tiny`) if any, else by `vae`."""
        decoder = getattr(self, "decoder", None)
        if decoder is None:
            decoder = vae
        return decoder.decode((latents / decoder.config.scaling_factor).to(decoder.dtype)).sample


def sfsl_loss(
    feature_model: FeatureModel,
    generated: torch.Tensor,
    reference: torch.Tensor,
    k: int | torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """1 - cos(a_k(generated), a_k(reference)), averaged over the batch (`reduction="none"`: per image).

    `generated`: [-1, 1] images [B, 3, H, W], gradients flow into them. `reference`: either the
    reference images (same layout; their features are computed without gradients) or their class-wise
    features [B, D] computed beforehand, so a training loop computes them once per class.
    The cosine is taken in float32 so mixed precision does not blur small differences.
    """
    if reference.dim() == 4:
        with torch.no_grad():
            reference = feature_model.class_features(reference, k)
    elif reference.dim() != 2:
        raise ValueError(f"reference must be images [B,3,H,W] or features [B,D], got shape {tuple(reference.shape)}")
    features = feature_model.class_features(generated, k)
    per_image = 1 - F.cosine_similarity(features.float(), reference.detach().float().to(features.device), dim=1)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def load_feature_model(spec: dict | ClassifierSpec, device: str | torch.device = "cpu") -> FeatureModel:
    """Build the frozen SFSL feature model from a classifier spec (a dict as in a recipe, or a
    ClassifierSpec), loading weights exactly as `spurbench eval` does."""
    from spurbench import classifiers

    if isinstance(spec, dict):
        spec = classifiers.ClassifierSpec.from_dict(spec)
    loaded = classifiers.create_classifier(spec, device=device)
    return FeatureModel(loaded.model, loaded.data_config).to(device)


def load_tiny_decoder(source: str, revision: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """diffusers' AutoencoderTiny from a Hub id or a local `save_pretrained` folder, frozen, for `FeatureModel.decoder`."""
    from pathlib import Path

    from diffusers import AutoencoderTiny

    from spurbench.errors import hub_failure_reason

    local = Path(source).expanduser()
    try:
        decoder = (
            AutoencoderTiny.from_pretrained(str(local))
            if local.is_dir()
            else AutoencoderTiny.from_pretrained(source, revision=revision)
        )
    except Exception as err:  # offline, typo, not an AutoencoderTiny folder: all fixable by the user
        raise SpurbenchError(
            f"cannot load the SFSL tiny decoder '{source}'"
            + (f" at revision {revision}" if revision else "")
            + f" ({hub_failure_reason(err) if not local.is_dir() else type(err).__name__ + ': ' + str(err).splitlines()[0]}); "
            "set features.tiny_decoder to an AutoencoderTiny Hub id (madebyollin/taesd) or a local folder, or features.decoder: full"
        ) from None
    return decoder.requires_grad_(False).eval().to(device)
