"""Zero-shot classification: class names x templates -> a head of class embeddings, cached on disk.

Templates hold `{c}` where the class name goes (CLIP_benchmark's JSON format); a class's embedding is the
mean of its normalised prompt embeddings, normalised again; logits = 100 x cosine(image, class), the scale
CLIP_benchmark uses (not the model's learned logit_scale), so p_k = softmax over the label set.

Defaults: open_clip's OPENAI_IMAGENET_TEMPLATES (80) and IMAGENET_CLASSNAMES for ImageNet-1k; the
dataset's own label names for another label set. `--templates openai|simple|FILE`, `--classnames FILE`:
a JSON list, or a JSON mapping of dataset name -> list (CLIP_benchmark's files; `imagenet1k` is taken
when present, else the only key).

The head depends only on the model, its weights, the templates and the class names: it is computed once
(with a progress bar) and kept under `$SPURBENCH_CACHE` (default `~/.cache/spurbench`) `/zero_shot/`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from spurbench.errors import SpurbenchError
from spurbench.files import atomic_path

LOGIT_SCALE = 100.0
TEMPLATE_SETS = ("openai", "simple")
#: prompts encoded per text-tower forward
TEXT_BATCH = 256
_CACHE_FORMAT = 1


def text_sha256(items: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(items), ensure_ascii=False).encode("utf-8")).hexdigest()


def _json_list(path_text: str, what: str, flag: str, wanted_key: str | None) -> list[str]:
    path = Path(path_text).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpurbenchError(f"{flag} '{path_text}' does not exist; give a JSON file of {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpurbenchError(
            f"cannot read {flag} '{path_text}' ({err.__class__.__name__}); give a UTF-8 JSON file of {what}"
        ) from None
    if isinstance(data, dict):
        key = wanted_key if wanted_key in data else (next(iter(data)) if len(data) == 1 else None)
        if key is None:
            raise SpurbenchError(
                f"{flag} '{path_text}' maps {len(data)} datasets ({', '.join(list(data)[:6])}); "
                f"keep one, or name it `{wanted_key}`"
            )
        data = data[key]
    if not isinstance(data, list) or not data or not all(isinstance(x, str) and x.strip() for x in data):
        raise SpurbenchError(
            f"{flag} '{path_text}' must hold a non-empty JSON list of {what} (strings), "
            "or a mapping of dataset name to such a list"
        )
    return data


def load_templates(templates: str | None) -> tuple[list[str], str]:
    """(templates with `{c}`, their source): `openai` (default), `simple`, or a JSON file."""
    name = templates or "openai"
    if name in TEMPLATE_SETS:
        import open_clip

        fns = open_clip.OPENAI_IMAGENET_TEMPLATES if name == "openai" else open_clip.SIMPLE_IMAGENET_TEMPLATES
        return [t("{c}") for t in fns], f"open_clip {name.upper()}_IMAGENET_TEMPLATES"
    items = _json_list(name, "templates holding {c}", "--templates", "imagenet1k")
    bad = [t for t in items if "{c}" not in t]
    if bad:
        raise SpurbenchError(f"--templates '{name}': template {bad[0]!r} has no {{c}} where the class name goes")
    return items, f"file:{Path(name).name}"


def load_classnames(classnames: str | None, label_names: list[str] | None) -> tuple[list[str], str]:
    """(one name per class of the label set, their source): a JSON file, the dataset's label names, or
    open_clip's IMAGENET_CLASSNAMES for ImageNet-1k."""
    n = 1000 if label_names is None else len(label_names)
    if classnames is not None:
        items = _json_list(classnames, "class names", "--classnames", "imagenet1k" if label_names is None else None)
        if len(items) != n:
            raise SpurbenchError(
                f"--classnames '{classnames}' holds {len(items)} names but the label set has {n} classes; "
                "give one name per class, in label order"
            )
        return items, f"file:{Path(classnames).name}"
    if label_names is not None:
        return list(label_names), "the dataset's label names"
    import open_clip

    return list(open_clip.IMAGENET_CLASSNAMES), "open_clip IMAGENET_CLASSNAMES"


def describe(templates: list[str], t_source: str, classnames: list[str], c_source: str) -> dict:
    """What the entry records about a zero-shot head."""
    return {
        "logit_scale": LOGIT_SCALE,
        "templates": {"source": t_source, "count": len(templates), "sha256": text_sha256(templates)},
        "classnames": {"source": c_source, "count": len(classnames), "sha256": text_sha256(classnames)},
    }


def build_head(
    encode_text: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    desc: str = "zero-shot head",
) -> torch.Tensor:
    """[D, C] class embeddings: per class, the normalised mean of its normalised prompt embeddings.

    `encode_text(prompts)` returns [len(prompts), D] embeddings; prompts go in batches of about TEXT_BATCH.
    """
    from tqdm.auto import tqdm

    per_batch = max(1, TEXT_BATCH // len(templates))
    columns = []
    with torch.inference_mode(), tqdm(total=len(classnames), desc=desc, unit="class", disable=None, leave=False) as bar:
        for start in range(0, len(classnames), per_batch):
            names = classnames[start : start + per_batch]
            prompts = [t.replace("{c}", c) for c in names for t in templates]
            emb = encode_text(prompts).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            emb = emb.reshape(len(names), len(templates), -1).mean(dim=1)
            columns.append(emb / emb.norm(dim=-1, keepdim=True))
            bar.update(len(names))
    return torch.cat(columns).T.contiguous().cpu()


def cache_dir() -> Path:
    from spurbench.resources import cache_dir as spurbench_cache

    return spurbench_cache("zero_shot")


def cached_head(key: dict, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """(head, whether it came from the cache). `key` names everything the head depends on; without a
    weights sha256 in it the head is computed every time (nothing identifies the weights)."""
    from safetensors.torch import load_file, save_file

    if not key.get("weights_sha256"):
        return compute(), False
    digest = hashlib.sha256(json.dumps({**key, "format": _CACHE_FORMAT}, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / f"{digest}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["head"], True
        except Exception:  # a damaged cache file is recomputed and replaced
            pass
    head = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"head": head}, str(tmp), metadata={"key": json.dumps(key, sort_keys=True)})
    return head, False


class ZeroShotClassifier(torch.nn.Module):
    """Normalised image batch -> LOGIT_SCALE x cosine with each class embedding of `head` ([D, C])."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        encode_image: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
        head: torch.Tensor,
    ):
        super().__init__()
        self.encoder = encoder
        self._encode_image = encode_image
        self.register_buffer("head", head)
        self.num_classes = int(head.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self._encode_image(self.encoder, x).float()
        f = f / f.norm(dim=-1, keepdim=True)
        return LOGIT_SCALE * (f @ self.head)


def head_device(device: str | torch.device) -> torch.device:
    """Where to encode the prompts: the given device, or this process's GPU when there is one."""
    dev = torch.device(device)
    if dev.type == "cpu" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0) % torch.cuda.device_count())
    return dev


def zero_shot_model(
    model: torch.nn.Module,
    device: str | torch.device,
    key: dict,
    text_encoder: Callable[[torch.device], Callable[[list[str]], torch.Tensor]],
    encode_image: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    names: list[str],
    prompts: list[str],
    desc: str,
) -> ZeroShotClassifier:
    """`model` scored zero-shot on `device`: its head of class embeddings, cached under `key` (what identifies the
    model) with the prompts' and class names' hashes, the prompts encoded by `text_encoder(head_device(device))`."""
    dev = head_device(device)
    model.to(dev)
    encode_text = text_encoder(dev)
    key = {**key, "templates": text_sha256(prompts), "classnames": text_sha256(names)}
    head, _ = cached_head(key, lambda: build_head(encode_text, names, prompts, desc=desc))
    model.to(device)
    return ZeroShotClassifier(model, encode_image, head.to(device))
