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
This package never imports `spurbench.classifiers` (which imports it), so imports keep flowing one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from spurbench.errors import SpurbenchError

ZOOS = ("open_clip", "transformers")


def zoo_of(model: str) -> str | None:
    """`open_clip` or `transformers` for a zoo model name (`open_clip:...`, `transformers:...`), else None (timm)."""
    head, sep, _ = model.partition(":")
    return head if sep and head in ZOOS else None


@dataclass
class ZooModel:
    model: torch.nn.Module  # eval mode, frozen; normalised batch -> logits over the label set; has `num_classes`
    data_config: dict  # input_size, mean, std, interpolation, crop_pct (as far as the library defines them)
    transform: Callable  # PIL image -> uint8 CHW tensor (normalised with data_config's mean/std) or a float tensor
    weights: dict  # {"source": ..., "sha256": ...}
    num_params: int
    info: dict = field(default_factory=dict)  # recorded in the entry as `zoo`


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
        raise SpurbenchError(f"'{model}' is not a zoo model name; use open_clip:ARCH/TAG, open_clip:hf-hub:org/repo, "
                             "open_clip:local-dir:DIR, transformers:org/repo or transformers:DIR")


def load_zoo_model(model: str, device: str | torch.device, label_names: list[str] | None, templates: str | None,
                   classnames: str | None) -> ZooModel:
    """The zoo model `model` for a label set: ImageNet-1k (`label_names` None) or the dataset's own names."""
    check_zoo_name(model)
    zoo, rest = model.split(":", 1)
    if zoo == "open_clip":
        from spurbench.zoo.open_clip import load

        return load(rest, device, label_names, templates, classnames)
    from spurbench.zoo.transformers import load

    return load(rest, device, label_names, templates, classnames)


def short_error(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {msg[0][:200]}" if msg else err.__class__.__name__


def weights_in_folder(folder: Any, names: tuple[str, ...]) -> Any:
    """The first of `names` present in `folder` (a pathlib.Path), or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None
