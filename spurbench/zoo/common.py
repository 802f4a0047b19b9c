"""What every zoo adapter returns (`ZooModel`) and small helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ZooModel:
    model: torch.nn.Module  # eval mode, frozen; normalised batch -> logits over the label set; has `num_classes`
    data_config: dict  # input_size, mean, std, interpolation, crop_pct (as far as the library defines them)
    transform: Callable  # PIL image -> uint8 CHW tensor (normalised with data_config's mean/std) or a float tensor
    weights: dict  # {"source": ..., "sha256": ...}
    num_params: int
    info: dict = field(default_factory=dict)  # recorded in the entry as `zoo`


def short_error(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {msg[0][:200]}" if msg else err.__class__.__name__


def weights_in_folder(folder: Any, names: tuple[str, ...]) -> Any:
    """The first of `names` present in `folder` (a pathlib.Path), or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None
