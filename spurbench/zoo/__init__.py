"""Classifiers from other model zoos, behind the same interface as timm's (`classifiers.LoadedClassifier`).

- `open_clip:ARCH/TAG`, `open_clip:hf-hub:org/repo`, `open_clip:local-dir:DIR`: an open_clip model scored
  zero-shot (zoo/open_clip.py).
- `transformers:org/repo`, `transformers:DIR`: an `AutoModelForImageClassification` with its
  `AutoImageProcessor`, or a dual encoder (CLIP, SigLIP) scored zero-shot (zoo/transformers.py).

Zero-shot: a head of class embeddings built from class names and templates (zoo/zero_shot.py), logits =
100 x the cosine of the normalised image and text embeddings (CLIP_benchmark's convention).

An adapter returns a `ZooModel`: a module mapping a normalised image batch to logits over the label set
(with a `num_classes` attribute), a data config (input size, mean, std), the library's own eval
preprocessing as a PIL -> tensor transform, the weights record, and what the entry records about it.
This package never imports `spurbench.classifiers` (which imports it), so imports keep flowing one way;
the adapters import only zoo/common.py and zoo/zero_shot.py, never this module.
"""

from __future__ import annotations

import torch

from spurbench.errors import SpurbenchError
from spurbench.zoo.common import ZooModel

ZOOS = ("open_clip", "transformers")


def zoo_of(model: str) -> str | None:
    """`open_clip` or `transformers` for a zoo model name (`open_clip:...`, `transformers:...`), else None (timm)."""
    head, sep, _ = model.partition(":")
    return head if sep and head in ZOOS else None


def public_name(model: str) -> str:
    """`model` with a local folder reduced to its name (`open_clip:local-dir:/a/b/tiny` -> `open_clip:local-dir:tiny`,
    `transformers:/a/b/vit` -> `transformers:vit`), so recorded names and exported files hold no local paths."""
    from pathlib import Path

    zoo, _, rest = model.partition(":")
    if zoo == "open_clip" and rest.startswith("local-dir:"):
        return f"open_clip:local-dir:{Path(rest[len('local-dir:') :]).name or rest}"
    if zoo == "transformers" and (
        rest.startswith(("/", ".", "~")) or rest.count("/") != 1 or Path(rest).expanduser().is_dir()
    ):
        return f"transformers:{Path(rest).name or rest}"
    return model


def check_zoo_name(model: str) -> None:
    """Raise SpurbenchError unless `model` is a well-formed zoo name (whether it exists is known on loading)."""
    zoo = zoo_of(model)
    rest = model.partition(":")[2]
    if zoo == "open_clip":
        from spurbench.zoo.open_clip import check_name

        check_name(rest)
    elif zoo == "transformers":
        if not rest.strip():
            raise SpurbenchError(f"'{model}' names no model; write transformers:org/repo or transformers:FOLDER")
    else:
        raise SpurbenchError(
            f"'{model}' is not a zoo model name; use open_clip:ARCH/TAG, open_clip:hf-hub:org/repo, "
            "open_clip:local-dir:DIR, transformers:org/repo or transformers:DIR"
        )


def load_zoo_model(
    model: str, device: str | torch.device, label_names: list[str] | None, templates: str | None, classnames: str | None
) -> ZooModel:
    """The zoo model `model` for a label set: ImageNet-1k (`label_names` None) or the dataset's own names."""
    check_zoo_name(model)
    zoo, rest = model.split(":", 1)
    if zoo == "open_clip":
        from spurbench.zoo.open_clip import load

        return load(rest, device, label_names, templates, classnames)
    from spurbench.zoo.transformers import load

    return load(rest, device, label_names, templates, classnames)
