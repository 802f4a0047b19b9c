"""open_clip models scored zero-shot: `open_clip:ARCH/TAG` (as `open_clip.list_pretrained()` names them),
`open_clip:hf-hub:org/repo`, `open_clip:local-dir:DIR` (a folder with open_clip_config.json + weights).

Preprocessing is open_clip's own eval transform (the `preprocess` of `create_model_and_transforms`): its
resize / crop / RGB steps run on PIL in the workers and end in a uint8 tensor; its ToTensor + Normalize
(divide by 255, subtract the mean, divide by the std) run per batch as `normalise_batch`, the same float32
arithmetic, so the normalised batch equals open_clip's image by image, bit for bit
(tests/test_zoo.py checks it).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from spurbench.download import sha256_file
from spurbench.errors import SpurbenchError
from spurbench.zoo import zero_shot
from spurbench.zoo.common import ZooModel, hub_cache_record, load_failure, weights_in_folder

_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _import():
    try:
        import open_clip
    except ImportError:
        raise SpurbenchError(
            'open_clip models need the open_clip_torch package; `pip install "spurbench[zoo]"`'
        ) from None
    return open_clip


@lru_cache(maxsize=1)
def pretrained_names() -> tuple[str, ...]:
    """Every `ARCH/TAG` open_clip has pretrained weights for."""
    return tuple(f"{arch}/{tag}" for arch, tag in _import().list_pretrained())


def list_models(pattern: str) -> list[str]:
    """`open_clip:ARCH/TAG` names matching an fnmatch pattern over `ARCH/TAG` (`*` also crosses the slash)."""
    import fnmatch

    return [f"open_clip:{n}" for n in pretrained_names() if fnmatch.fnmatchcase(n, pattern)]


def check_name(rest: str) -> None:
    """`rest` is what follows `open_clip:`: hf-hub:org/repo, local-dir:DIR, or ARCH/TAG from list_pretrained()."""
    if rest.startswith("hf-hub:"):
        if rest.count("/") < 1 or not rest[len("hf-hub:") :].strip("/"):
            raise SpurbenchError(f"'open_clip:{rest}' is not a Hub model name; write open_clip:hf-hub:org/repo")
        return
    if rest.startswith("local-dir:"):
        folder = Path(rest[len("local-dir:") :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise SpurbenchError(
                f"'open_clip:{rest}': folder '{folder}' has no open_clip_config.json; point local-dir: at a folder "
                "holding open_clip_config.json and open_clip_model.safetensors"
            )
        if weights_in_folder(folder, _WEIGHT_FILES) is None:
            raise SpurbenchError(f"'open_clip:{rest}': folder '{folder}' has no {' or '.join(_WEIGHT_FILES)}")
        return
    if rest not in pretrained_names():
        close = difflib.get_close_matches(rest, pretrained_names(), n=5, cutoff=0.6)
        raise SpurbenchError(
            f"unknown open_clip model '{rest}'; write ARCH/TAG as open_clip.list_pretrained() names them"
            + (f" (close: {', '.join(close)})" if close else "")
            + ", or open_clip:hf-hub:org/repo, open_clip:local-dir:DIR"
        )


def split_transform(preprocess: Any) -> tuple[Callable, dict | None]:
    """(PIL -> tensor transform, {mean, std} or None): open_clip's eval Compose without its final ToTensor +
    Normalize, ending in PILToTensor (uint8) instead, when it has that shape; else the whole transform (float)."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize):
        norm = steps[-1]
        return T.Compose([*steps[:-2], T.PILToTensor()]), {
            "mean": tuple(map(float, norm.mean)),
            "std": tuple(map(float, norm.std)),
        }
    return preprocess, None


def _weights_record(rest: str, open_clip: Any) -> dict:
    if rest.startswith("local-dir:"):
        folder = Path(rest[len("local-dir:") :]).expanduser()
        path = weights_in_folder(folder, _WEIGHT_FILES)
        return {"source": f"open_clip:local-dir:{folder.name}/{path.name}", "sha256": sha256_file(path)}
    if rest.startswith("hf-hub:"):
        return hub_cache_record(rest[len("hf-hub:") :], _WEIGHT_FILES)
    arch, tag = rest.split("/", 1)
    path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(arch, tag))  # in the cache after loading
    return {"source": f"open_clip:{rest}", "sha256": sha256_file(path) if path and Path(path).is_file() else None}


def _data_config(model: Any, norm: dict | None) -> dict:
    size = model.visual.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return {
        "input_size": (3, int(h), int(w)),
        "mean": norm["mean"] if norm else tuple(cfg.get("mean", ())),
        "std": norm["std"] if norm else tuple(cfg.get("std", ())),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
        "resize_mode": cfg.get("resize_mode", "shortest"),
    }


def load(
    rest: str, device: str | torch.device, label_names: list[str] | None, templates: str | None, classnames: str | None
) -> ZooModel:
    open_clip = _import()
    names, names_from = zero_shot.load_classnames(classnames, label_names)
    prompts, prompts_from = zero_shot.load_templates(templates)
    if rest.startswith("local-dir:"):
        model_name, tag = f"local-dir:{Path(rest[len('local-dir:') :]).expanduser()}", None
    elif rest.startswith("hf-hub:"):
        model_name, tag = rest, None
    else:
        model_name, tag = rest.split("/", 1)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=tag)
        tokenizer = open_clip.get_tokenizer(model_name)
        weights = _weights_record(rest, open_clip)
    except Exception as err:
        raise load_failure(
            f"open_clip model '{rest}'",
            err,
            "open_clip:local-dir:DIR with the model's open_clip_config.json and weights",
        ) from None
    model.eval().requires_grad_(False)
    local = rest.startswith("local-dir:")
    key = {"library": "open_clip", "model": "local-dir" if local else rest, "weights_sha256": weights["sha256"]}
    if local:  # a folder is known by its files: the config (text tower, tokenizer) and the weights
        key["config_sha256"] = sha256_file(Path(model_name[len("local-dir:") :]) / "open_clip_config.json")
    clf = zero_shot.zero_shot_model(
        model,
        device,
        key,
        lambda dev: lambda texts: model.encode_text(tokenizer(texts).to(dev), normalize=True),
        lambda m, x: m.encode_image(x, normalize=True),
        names,
        prompts,
        f"open_clip:{rest} head",
    )
    transform, norm = split_transform(preprocess)
    info = {
        "library": "open_clip",
        "version": open_clip.__version__,
        "transform": repr(transform).replace("\n", " "),
        "zero_shot": zero_shot.describe(prompts, prompts_from, names, names_from),
    }
    return ZooModel(
        model=clf,
        data_config=_data_config(model, norm),
        transform=transform,
        weights=weights,
        num_params=sum(p.numel() for p in model.parameters()),
        info=info,
    )
