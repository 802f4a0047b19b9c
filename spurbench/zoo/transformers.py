"""transformers models: `transformers:org/repo` or `transformers:DIR`, loaded with `from_pretrained`.

- An image classifier (`AutoModelForImageClassification`): its `id2label` must name the label set, in
  order or as a permutation that is checked class by class: ImageNet-1k by WordNet id or by name (the
  Hub's "tench, Tinca tinca", or the short "tench" where unique), another label set by its label names.
- A dual encoder (a config with `text_config` and `vision_config`: CLIP, SigLIP): scored zero-shot like
  open_clip's (zoo/zero_shot.py), text embedded with the checkpoint's tokenizer.

Preprocessing is the checkpoint's `AutoImageProcessor`, run as is on each image in the workers (it hands
over the normalised float tensor), so the model sees exactly what the processor gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spurbench import imagenet
from spurbench.download import sha256_file
from spurbench.errors import SpurbenchError
from spurbench.zoo import zero_shot
from spurbench.zoo.common import ZooModel, hub_cache_record, load_failure, weights_in_folder

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _where(rest: str) -> tuple[str, bool]:
    """(what from_pretrained gets, whether it is a local folder)."""
    folder = Path(rest).expanduser()
    if folder.is_dir():
        return str(folder), True
    if rest.startswith((".", "/", "~")) or rest.count("/") != 1:
        raise SpurbenchError(f"'transformers:{rest}' is neither a folder nor a Hub model id (org/repo)")
    return rest, False


def _weights_record(rest: str, where: str, local: bool) -> dict:
    if local:
        path = weights_in_folder(Path(where), _WEIGHT_FILES)
        return {
            "source": f"transformers:{Path(where).name}" + (f"/{path.name}" if path else ""),
            "sha256": sha256_file(path) if path else None,
        }
    return hub_cache_record(where, _WEIGHT_FILES)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").split())


def label_order(id2label: dict, label_names: list[str] | None, model: str) -> list[int]:
    """For each class of the label set, the model output that scores it; one clear error when `id2label`
    does not name the label set (ImageNet-1k when `label_names` is None)."""
    labels = [id2label.get(i, id2label.get(str(i))) for i in range(len(id2label))]
    wanted = imagenet.NUM_CLASSES if label_names is None else len(label_names)
    what = (
        "ImageNet-1k"
        if label_names is None
        else f"the dataset's label set ({', '.join(label_names[:4])}{' ...' if wanted > 4 else ''})"
    )
    if len(labels) != wanted or any(label is None for label in labels):
        raise SpurbenchError(
            f"'{model}' has {len(labels)} outputs (config id2label) but {what} has {wanted} classes; "
            "pick a checkpoint trained on that label set"
        )
    # ways of naming a class, most specific first; a label is taken at the first way that names one class
    levels: list[dict[str, set[int]]] = []
    if label_names is None:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        for text_of in (lambda k: imagenet.wnids()[k], info.index_to_description, imagenet.class_name):
            level: dict[str, set[int]] = {}
            for k in range(wanted):
                level.setdefault(_norm(text_of(k)), set()).add(k)
            levels.append(level)
    else:
        levels.append({})
        for k, name in enumerate(label_names):
            levels[0].setdefault(_norm(name), set()).add(k)

    def matches(label: str) -> set[int]:
        found: set[int] = set()
        for level in levels:
            found = level.get(_norm(label), set())
            if len(found) == 1:
                return found
        return found

    # in order: output i names class i (a name may be shared, e.g. the two "crane"s)
    if all(i in set().union(*(level.get(_norm(label), set()) for level in levels)) for i, label in enumerate(labels)):
        return list(range(wanted))
    order = [-1] * wanted
    for i, label in enumerate(labels):
        match = matches(label)
        if len(match) != 1:
            how = "names no class of" if not match else f"is ambiguous in ({len(match)} classes)"
            raise SpurbenchError(
                f"'{model}': output {i} label {label!r} {how} {what}; its id2label must name every class "
                "(ImageNet-1k: WordNet ids or names like 'tench, Tinca tinca')"
            )
        k = next(iter(match))
        if order[k] >= 0:
            raise SpurbenchError(
                f"'{model}': outputs {order[k]} and {i} both name class {k} of {what}; its id2label is not a mapping of the label set"
            )
        order[k] = i
    return order


class ImageClassifier(torch.nn.Module):
    """pixel_values -> logits, columns in the label set's order."""

    def __init__(self, model: torch.nn.Module, order: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("order", torch.tensor(order, dtype=torch.long))
        self.identity = order == list(range(len(order)))
        self.num_classes = len(order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=x).logits
        return logits if self.identity else logits[:, self.order]


def _features(out: Any) -> torch.Tensor:
    """get_*_features returns the projected embeddings as a tensor, or (newer transformers) as pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ProcessorTransform:
    """PIL image -> the processor's normalised float CHW tensor, one image as the processor sees it
    (a class, not a closure, so DataLoader workers can receive it under any start method)."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, img: Any) -> torch.Tensor:
        return self.image_processor(images=img, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"ProcessorTransform({type(self.image_processor).__name__})"


def text_padding(model: Any, processor: Any, tokenizer: Any, config: Any, device: torch.device) -> dict[str, Any]:
    """How the checkpoint's text tower wants its prompts padded, from the checkpoint itself, not its name: the
    processor's own text defaults where it declares them (SigLIP 2: max_length); else, when the tower's features
    depend on the padding (it pools a fixed position, as SigLIP does: one prompt encoded padded to the longest and
    to the full length differs), padding to the full length it was trained at (the tokenizer's model_max_length,
    at most the text config's max_position_embeddings); else padding to the longest prompt, as transformers'
    zero-shot pipeline does for CLIP."""
    own = dict(getattr(processor, "text_kwargs", None) or {})
    if own.get("padding"):
        return {k: own[k] for k in ("padding", "max_length", "truncation") if k in own}
    positions = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    # model_max_length is a huge sentinel where a tokenizer declares none
    lengths = [
        v for v in (getattr(tokenizer, "model_max_length", None), positions) if isinstance(v, int) and 0 < v < 10**5
    ]
    if not lengths:
        return {"padding": True}
    length = min(lengths)
    full = {"padding": "max_length", "max_length": length, "truncation": True}
    with torch.inference_mode():
        probe = [
            _features(model.get_text_features(**tokenizer(["a photo."], return_tensors="pt", **pad).to(device)))
            for pad in ({"padding": True}, full)
        ]
    return {"padding": True} if torch.allclose(probe[0], probe[1], rtol=1e-4, atol=1e-5) else full


def _data_config(image_processor: Any) -> dict:
    size = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    size = size or getattr(image_processor, "size", None) or {}
    size = dict(size) if not isinstance(size, int) else {"height": size, "width": size}
    h = size.get("height") or size.get("shortest_edge") or 224
    w = size.get("width") or size.get("shortest_edge") or h
    resample = getattr(image_processor, "resample", None)
    return {
        "input_size": (3, int(h), int(w)),
        "mean": tuple(map(float, image_processor.image_mean)),
        "std": tuple(map(float, image_processor.image_std)),
        "interpolation": str(getattr(resample, "name", resample)).lower(),
        "crop_pct": None,
        "image_processor": type(image_processor).__name__,
    }


def _is_dual_encoder(config: Any) -> bool:
    """A dual encoder, unless its checkpoint is a classifier built on one (CLIPForImageClassification)."""
    return (
        hasattr(config, "text_config")
        and hasattr(config, "vision_config")
        and not any(str(a).endswith("ForImageClassification") for a in (getattr(config, "architectures", None) or []))
    )


@dataclass
class _Checkpoint:
    rest: str
    where: str  # what from_pretrained gets
    local: bool
    config: Any
    model: Any  # eval mode, frozen
    image_processor: Any
    processor: Any = None  # a dual encoder's AutoProcessor
    tokenizer: Any = None
    weights: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"transformers:{self.rest}"


def _from_pretrained(rest: str) -> _Checkpoint:
    from transformers import AutoConfig, AutoImageProcessor

    where, local = _where(rest)
    try:
        config = AutoConfig.from_pretrained(where)
        if _is_dual_encoder(config):
            from transformers import AutoModel, AutoProcessor

            model = AutoModel.from_pretrained(where)
            processor = AutoProcessor.from_pretrained(where)
            ck = _Checkpoint(
                rest, where, local, config, model, processor.image_processor, processor, processor.tokenizer
            )
        else:
            from transformers import AutoModelForImageClassification

            model = AutoModelForImageClassification.from_pretrained(where)
            ck = _Checkpoint(rest, where, local, config, model, AutoImageProcessor.from_pretrained(where))
        ck.weights = _weights_record(rest, where, local)
    except SpurbenchError:
        raise
    except Exception as err:
        raise load_failure(
            f"'transformers:{rest}'",
            err,
            "transformers:FOLDER with the files save_pretrained writes (config, weights, preprocessor_config.json)",
        ) from None
    ck.model.eval().requires_grad_(False)
    return ck


def _zero_shot(ck: _Checkpoint, device, label_names, templates, classnames) -> tuple[torch.nn.Module, dict]:
    """A dual encoder scored zero-shot, and what the entry records about its head."""
    model, tokenizer = ck.model, ck.tokenizer
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise SpurbenchError(
            f"'{ck.name}' ({type(model).__name__}) has no get_text_features / get_image_features; only dual "
            "encoders like CLIP and SigLIP are scored zero-shot"
        )
    names, names_from = zero_shot.load_classnames(classnames, label_names)
    prompts, prompts_from = zero_shot.load_templates(templates)

    def text_encoder(dev: torch.device):
        pad = text_padding(model, ck.processor, tokenizer, ck.config, dev)
        return lambda texts: _features(model.get_text_features(**tokenizer(texts, return_tensors="pt", **pad).to(dev)))

    key = {"library": "transformers", "model": "local" if ck.local else ck.rest, "weights_sha256": ck.weights["sha256"]}
    if ck.local:  # a folder is known by its files: the config and the tokenizer's, with the weights
        key["files_sha256"] = {
            p.name: sha256_file(p)
            for p in sorted(Path(ck.where).iterdir())
            if p.is_file() and p.suffix in (".json", ".txt", ".model")
        }
    clf = zero_shot.zero_shot_model(
        model,
        device,
        key,
        text_encoder,
        lambda m, x: _features(m.get_image_features(pixel_values=x)),
        names,
        prompts,
        f"{ck.name} head",
    )
    return clf, zero_shot.describe(prompts, prompts_from, names, names_from)


def load(
    rest: str, device: str | torch.device, label_names: list[str] | None, templates: str | None, classnames: str | None
) -> ZooModel:
    import transformers

    ck = _from_pretrained(rest)
    model, image_processor, name = ck.model, ck.image_processor, ck.name
    info: dict[str, Any] = {
        "library": "transformers",
        "version": transformers.__version__,
        "model_class": type(model).__name__,
        "image_processor": type(image_processor).__name__,
    }
    if ck.processor is not None:
        clf, info["zero_shot"] = _zero_shot(ck, device, label_names, templates, classnames)
    else:
        if templates is not None or classnames is not None:
            raise SpurbenchError(
                f"--templates / --classnames apply to zero-shot models; '{name}' is an image classifier with its own head"
            )
        order = label_order(dict(model.config.id2label), label_names, name)
        clf = ImageClassifier(model, order).to(device)
        if not clf.identity:
            info["label_order"] = "permuted (id2label mapped onto the label set)"
    return ZooModel(
        model=clf,
        data_config=_data_config(image_processor),
        transform=ProcessorTransform(image_processor),
        weights=ck.weights,
        num_params=sum(p.numel() for p in model.parameters()),
        info=info,
    )
