"""What every zoo adapter returns (`ZooModel`) and small helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spurbench.errors import SpurbenchError, first_line, hub_failure_reason


@dataclass
class ZooModel:
    model: torch.nn.Module  # eval mode, frozen; normalised batch -> logits over the label set; has `num_classes`
    data_config: dict  # input_size, mean, std, interpolation, crop_pct (as far as the library defines them)
    transform: Callable  # PIL image -> uint8 CHW tensor (normalised with data_config's mean/std) or a float tensor
    weights: dict  # {"source": ..., "sha256": ...}
    num_params: int
    info: dict = field(default_factory=dict)  # recorded in the entry as `zoo`


def hub_cache_record(repo: str, names: tuple[str, ...]) -> dict:
    """The weights record of a Hub model: the first of `names` in the local Hub cache, with its sha256
    (`{"source": "hf-hub:<repo>/<file>", "sha256": ...}`), or the repo alone with sha256 None when none is cached."""
    from huggingface_hub import try_to_load_from_cache

    from spurbench.download import sha256_file

    for name in names:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and Path(found).is_file():
            return {"source": f"hf-hub:{repo}/{name}", "sha256": sha256_file(found)}
    return {"source": f"hf-hub:{repo}", "sha256": None}


def weights_in_folder(folder: Any, names: tuple[str, ...]) -> Any:
    """The first of `names` present in `folder` (a pathlib.Path), or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def load_failure(what: str, err: Exception, offline: str) -> SpurbenchError:
    """One line for a model its library could not load: the Hub's reason (or the error's first line), and what to
    use offline."""
    return SpurbenchError(f"cannot load {what} ({hub_failure_reason(err, first_line(err))}); offline, use {offline}")
