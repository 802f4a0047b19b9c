"""Build recipes: what `spurbench build` makes, as data (`builders/*.yaml`).

A recipe names the base Stable Diffusion, the frozen feature model behind the spurious-feature
similarity loss, the classes with their reference images, the prompts, the training
hyperparameters, how many images to sample, the seeds and the licences of every input. It is
validated when it is loaded: every error names the offending key (`classes[2].index`,
`prompts.generation[1]`, ...) and says what is expected.

Prompt templates use two placeholders, in `str.format` syntax:

- `{token}`: the rare identifier token the fine-tuned model binds the class's reference images to
  (DreamBooth's "[V]", e.g. `sks`);
- `{noun}`:  the class's noun, the word for what the reference images show (for "bee" with its
  spurious feature "violet flowers" the noun is `flower`).

So `"a photo of a {token} {noun} on the beach"` renders to "a photo of a sks flower on the beach".
Instance and generation templates must contain `{token}`; the prior (class) template must contain
`{noun}` and must not contain `{token}`. Literal braces are written `{{` and `}}`.

`recipe_hash(recipe)` is the sha256 of the canonical JSON of the *validated* recipe (defaults filled
in), so two files that differ only in comments, key order or spelled-out defaults hash the same.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import string
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spurbench import imagenet, spurious_imagenet
from spurbench.errors import SpurbenchError
from spurbench.generate.schema import convert, plain

#: the placeholders a prompt template may use
PLACEHOLDERS = ("token", "noun")
#: mixed-precision modes (the `accelerate` names)
MIXED_PRECISION = ("no", "fp16", "bf16")
#: built-in sample photos a class may use as references (scikit-image's `data` and scikit-learn's
#: `load_sample_images`), each optionally with a variant suffix (`flower:mirror`, `flower:crop`)
SAMPLE_PHOTOS = (
    "astronaut",
    "brick",
    "chelsea",
    "coffee",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "motorcycle_left",
    "retina",
    "rocket",
    "china",
    "flower",
)
SAMPLE_VARIANTS = ("mirror", "crop")

# Where Spurious ImageNet (Neuhaus et al., ICCV 2023) is downloaded from, as its repository's
# setup_download.sh has it; the zip unpacks into `images/<...>_<class>_..._<component>/`.
SPURIOUS_IMAGENET_URL = spurious_imagenet.RELEASE_URL


# ---------------------------------------------------------------------------------------------
# Schema. Field order is the order keys are documented in; every field without a default is required.


@dataclass(frozen=True)
class TinyBase:
    """Build spurbench's tiny random Stable Diffusion (spurbench.tiny_models) into the work dir."""

    prediction_type: str = "epsilon"
    seed: int = 0


@dataclass(frozen=True)
class BaseModel:
    """The Stable Diffusion every class is fine-tuned from: a Hub id or a local diffusers folder
    (`id`, with `revision` for a Hub id), or `tiny` for the locally built toy model."""

    id: str | None = None
    revision: str | None = None
    tiny: TinyBase | None = None


@dataclass(frozen=True)
class ReferenceSource:
    """Where one class's reference images come from: exactly one of
    `spurious_imagenet: true` (the class's folder in the Spurious ImageNet download),
    `folder: <path>` (every image in a plain folder) or `samples: [flower, flower:mirror, ...]`."""

    spurious_imagenet: bool = False
    folder: str | None = None
    samples: list[str] | None = None


@dataclass(frozen=True)
class ClassEntry:
    """One class k: the images generated for it must make classifiers say k without showing k."""

    index: int
    noun: str
    references: ReferenceSource
    #: defaults to the feature listed for the class in Spurious ImageNet's 100 classes
    spurious_feature: str | None = None
    #: Spurious ImageNet neural-PCA component; None: from the reference folder's name, else -1
    component: int | None = None


@dataclass(frozen=True)
class SpuriousImageNetSource:
    #: folder holding the unpacked download (`<root>/images/...`); relative to the working directory
    root: str = "data/spurious_imagenet"
    url: str = SPURIOUS_IMAGENET_URL


@dataclass(frozen=True)
class References:
    spurious_imagenet: SpuriousImageNetSource = field(default_factory=SpuriousImageNetSource)
    #: use at most this many reference images per class (the first ones by file name); None: all
    max_per_class: int | None = None


@dataclass(frozen=True)
class Prompts:
    instance: str = "a photo of a {token} {noun}"
    prior: str = "a photo of a {noun}"
    generation: list[str] = field(default_factory=lambda: ["a photo of a {token} {noun}"])


@dataclass(frozen=True)
class Generation:
    images_per_prompt: int
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    #: images per pipeline call; results depend on it (see generation.py), so it is part of the recipe
    batch_size: int = 8
    #: a diffusers scheduler class to sample with (e.g. DPMSolverMultistepScheduler); None: the model's own
    scheduler: str | None = None
    #: run the base model's safety checker (flagged images come back black and are counted in the card)
    safety_checker: bool = False


#: how the SFSL decodes z0_hat: the pipeline's own VAE, or diffusers' AutoencoderTiny (TAESD)
SFSL_DECODERS = ("full", "tiny")


@dataclass(frozen=True)
class Features:
    """How the SFSL gets an image from z0_hat (`features:`). `decoder: full` (the default) decodes with the base
    model's own VAE decoder; `tiny` with diffusers' AutoencoderTiny (`tiny_decoder`: a Hub id or a local
    save_pretrained folder, TAESD for SD 1.x/2.x latents), about 18x fewer FLOPs per decode at 512 px, at the price of
    a blurrier, less faithful x_hat (the loss then compares the features of TAESD's reconstruction)."""

    decoder: str = "full"
    tiny_decoder: str = "madebyollin/taesd"
    tiny_decoder_revision: str | None = None


@dataclass(frozen=True)
class Control:
    """The control split (`control:`): per class, `images_per_class` images sampled from the BASE model (never
    fine-tuned) with the class's generation prompts minus the identifier, the same sampler and the same seeds as the
    class's first test images. What the pipeline alone makes fool a classifier: eval's lift is test minus control."""

    images_per_class: int


@dataclass(frozen=True)
class Surrogate:
    """One classifier of the `mine:` panel, pinned: its panel name and the sha256 of its weights file."""

    model: str
    sha256: str


@dataclass(frozen=True)
class Mine:
    """The `mine:` stage: keep only the test images that fool at least `min_fooled` of the `surrogates` (taken from
    the classifier panel `panel`, spurbench/panels/), ImageNet-D's transfer protocol. Eval marks the surrogates
    (used_in_build) and reports the transfer rate of every other model."""

    panel: str
    surrogates: list[Surrogate]
    min_fooled: int = 1


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    description: str = ""
    base_model: BaseModel
    resolution: int
    #: the classifier spec ({model, weights}) of the frozen SFSL feature model; None only without SFSL
    feature_model: dict | None = None
    token: str
    prompts: Prompts = field(default_factory=Prompts)
    references: References = field(default_factory=References)
    classes: list[ClassEntry]
    training: dict
    num_class_images: int
    generation: Generation
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    #: keep each class's fine-tuned pipeline (diffusers layout, safetensors) after generation
    keep_weights: bool = False
    licenses: dict
    #: licence of the exported dataset (the card's `license:`)
    dataset_license: str = "other"
    #: date for the card's provenance; None: the date the build was first started (kept in the work dir)
    created: str | None = None
    #: how the SFSL decodes (Features); None: the base model's VAE. Left out of the hash when absent
    features: Features | None = None
    #: the control split (Control); None: no control split. Left out of the hash when absent
    control: Control | None = None
    #: the mining stage (Mine); None: every generated image is exported. Left out of the hash when absent
    mine: Mine | None = None

    #: the method module (spurbench.generate.methods); not a field, so recipes written before methods hash the same
    method: typing.ClassVar[str] = "sfsl"

    # -- derived -------------------------------------------------------------------------------
    def class_by_index(self) -> dict[int, ClassEntry]:
        return {c.index: c for c in self.classes}

    def instance_prompt(self, entry: ClassEntry) -> str:
        return render(self.prompts.instance, self.token, entry.noun)

    def prior_prompt(self, noun: str) -> str:
        return render(self.prompts.prior, self.token, noun)

    def generation_prompts(self, entry: ClassEntry) -> list[str]:
        return [render(t, self.token, entry.noun) for t in self.prompts.generation]

    def control_prompts(self, entry: ClassEntry) -> list[str]:
        """The generation prompts without the learned identifier ("a photo of a sks flower" -> "a photo of a flower"),
        for the base model's control images."""
        return [" ".join(render(t, "", entry.noun).split()) for t in self.prompts.generation]

    @property
    def sfsl_weight(self) -> float:
        return float(self.training.get("sfsl_weight", 0.0) or 0.0)

    @property
    def builder(self) -> str:
        """The `builder` column: plain DreamBooth when the SFSL term is off."""
        return "sfsl" if self.sfsl_weight != 0 else "dreambooth"

    @property
    def base_model_name(self) -> str:
        return base_model_name(self.base_model, self.resolution)

    def to_dict(self) -> dict[str, Any]:
        d = plain(self)
        # recipes without the key hash (and export) exactly as before it existed
        for key in ("features", "control", "mine"):
            if getattr(self, key) is None:
                del d[key]
        return d


def base_model_name(b: BaseModel, resolution: int) -> str:
    """How the card names the base model."""
    if b.tiny is not None:
        # The name is part of exported cards; it stays as it was before the building side became a subpackage,
        # so existing recipes keep exporting byte-identical datasets.
        return (
            f"spurbench.tiny_sd(prediction_type={b.tiny.prediction_type}, seed={b.tiny.seed}, image_size={resolution})"
        )
    return str(b.id)


def render(template: str, token: str, noun: str) -> str:
    return template.format(token=token, noun=noun)


def mine_specs(mine: Mine) -> list[dict]:
    """The `mine:` surrogates as classifier specs from their panel, each pinned to its sha256 (checked when the
    weights are read). Errors name the key: an unknown panel or surrogate, k outside 1..panel size, a bad hash."""
    from spurbench.classifiers import load_panel

    if not mine.surrogates:
        raise SpurbenchError("key 'mine.surrogates' must name at least one classifier of the panel")
    if not 1 <= mine.min_fooled <= len(mine.surrogates):
        raise SpurbenchError(
            f"key 'mine.min_fooled' must be between 1 and the {len(mine.surrogates)} surrogate(s), got {mine.min_fooled}"
        )
    panel = {s.model: s for s in load_panel(mine.panel)}
    specs = []
    for i, sur in enumerate(mine.surrogates):
        if sur.model not in panel:
            raise SpurbenchError(
                f"key 'mine.surrogates[{i}].model': {sur.model!r} is not in panel {mine.panel!r}; "
                f"its models: {', '.join(panel)}"
            )
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sur.sha256):
            raise SpurbenchError(
                f"key 'mine.surrogates[{i}].sha256' must be the 64 hex digits of the weights file's sha256, got {sur.sha256!r}"
            )
        spec = panel[sur.model]
        specs.append({"model": spec.model, "weights": {**(spec.weights or {}), "sha256": sur.sha256.lower()}})
    return specs


def recipe_hash(recipe: Recipe) -> str:
    """sha256 of the canonical JSON of the validated recipe. An `export:` section (what the export leaves out)
    is not part of it: changing it re-exports, never regenerates."""
    data = recipe.to_dict()
    data.pop("export", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_recipe(name_or_path: str | Path) -> tuple[Path, Any]:
    """Resolve a recipe by name or path, parse and validate it (by its method's schema).
    Errors name the file and the key."""
    from spurbench import resources

    path, data = resources.load_yaml("recipe", name_or_path)
    try:
        return path, recipe_from_dict(data)
    except SpurbenchError as err:
        raise SpurbenchError(f"recipe '{path}': {err}") from None


def recipe_from_dict(data: Mapping[str, Any]) -> Any:
    """Parse and validate a recipe of any method (`method:`, default sfsl) with that method's schema."""
    from spurbench.generate.methods import get_method, method_name

    data = dict(data)
    if isinstance(data.get("created"), datetime.date):  # YAML reads an unquoted 2025-01-31 as a date
        data["created"] = data["created"].isoformat()
    # `verify:` is checked here but is not part of any method's recipe (nor its hash): see generate/verify_stage.py
    from spurbench.generate.verify_stage import SECTION, parse_verify_section

    parse_verify_section(data.pop(SECTION, None))
    # `copies:` likewise (the copy check's threshold: re-checked, never regenerated): see generate/copies.py
    from spurbench.generate import copies

    copies.parse_copies_section(data.pop(copies.SECTION, None))
    return get_method(method_name(data)).recipe_from_dict(data)


def sfsl_recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    """The sfsl/dreambooth schema (`Recipe`), without the `method` key."""
    recipe = convert(Recipe, data, "")
    _check_semantics(recipe)
    return _with_defaults(recipe)


def _with_defaults(recipe: Recipe) -> Recipe:
    """Fill per-class defaults from the Spurious ImageNet table, so the hash covers what is used."""
    known = {c.index: c for c in imagenet.spurious_imagenet_classes()}
    classes = []
    for entry in recipe.classes:
        if entry.spurious_feature is None:
            entry = dataclasses.replace(entry, spurious_feature=known[entry.index].spurious_feature)
        if entry.component is None and not entry.references.spurious_imagenet:
            entry = dataclasses.replace(entry, component=-1)
        classes.append(entry)
    return dataclasses.replace(recipe, classes=classes)


def check_common(r: Any) -> None:
    """Checks every method's recipe shares: name, base model, resolution, mixed precision, licences, date."""
    if not r.name.strip() or not re.fullmatch(r"[\w.-]+", r.name):
        raise SpurbenchError(f"key 'name' must be a short identifier of letters, digits, '_', '-', '.', got {r.name!r}")
    b = r.base_model
    if (b.id is None) == (b.tiny is None):
        raise SpurbenchError(
            "key 'base_model' needs exactly one of `id` (Hub id or local folder) or `tiny` (built locally)"
        )
    if b.tiny is not None:
        if b.revision is not None:
            raise SpurbenchError("key 'base_model.revision' only applies to a Hub `id`, not to `tiny`")
        if b.tiny.prediction_type not in ("epsilon", "v_prediction"):
            raise SpurbenchError(
                f"key 'base_model.tiny.prediction_type' must be 'epsilon' or 'v_prediction', got {b.tiny.prediction_type!r}"
            )
    elif not b.id.strip():
        raise SpurbenchError("key 'base_model.id' must be a Hub id like org/name or a local folder")
    if r.resolution <= 0 or r.resolution % 8:
        raise SpurbenchError(f"key 'resolution' must be a positive multiple of 8 (pixels), got {r.resolution}")
    if r.mixed_precision not in MIXED_PRECISION:
        raise SpurbenchError(
            f"key 'mixed_precision' must be one of {', '.join(MIXED_PRECISION)}, got {r.mixed_precision!r}"
        )
    for k, v in r.licenses.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpurbenchError(f"key 'licenses.{k}' must be a string (the licence's name), got {type(v).__name__}")
    if r.created is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.created):
        raise SpurbenchError(f"key 'created' must be a date YYYY-MM-DD (quote it in YAML) or null, got {r.created!r}")


def _check_semantics(r: Recipe) -> None:
    check_common(r)
    _check_prompts(r)
    if r.num_class_images < 0:
        raise SpurbenchError(f"key 'num_class_images' must be >= 0, got {r.num_class_images}")
    if r.control is not None and r.control.images_per_class < 1:
        raise SpurbenchError(
            f"key 'control.images_per_class' must be >= 1 (base-model images per class), got {r.control.images_per_class}; "
            "remove the `control:` section for no control split"
        )
    if r.mine is not None:
        mine_specs(r.mine)
    g = r.generation
    for key in ("images_per_prompt", "num_inference_steps", "batch_size"):
        if getattr(g, key) < 1:
            raise SpurbenchError(f"key 'generation.{key}' must be >= 1, got {getattr(g, key)}")
    if r.references.max_per_class is not None and r.references.max_per_class < 1:
        raise SpurbenchError(f"key 'references.max_per_class' must be >= 1 or null, got {r.references.max_per_class}")
    _check_classes(r)
    if r.feature_model is not None:
        from spurbench.classifiers import ClassifierSpec

        try:
            ClassifierSpec.from_dict(r.feature_model)
        except SpurbenchError as err:
            raise SpurbenchError(f"key 'feature_model': {err}") from None
    _check_training(r)
    _check_sfsl_inputs(r)


def _check_prompts(r: Recipe) -> None:
    if not re.fullmatch(r"\S+", r.token):
        raise SpurbenchError(f"key 'token' must be one rare word without spaces (e.g. sks), got {r.token!r}")
    _check_template(r.prompts.instance, "prompts.instance", need_token=True)
    _check_template(r.prompts.prior, "prompts.prior", need_token=False)
    if not r.prompts.generation:
        raise SpurbenchError("key 'prompts.generation' must list at least one prompt template")
    for i, t in enumerate(r.prompts.generation):
        _check_template(t, f"prompts.generation[{i}]", need_token=True)
    if len(set(r.prompts.generation)) != len(r.prompts.generation):
        raise SpurbenchError("key 'prompts.generation' lists a template twice; each template must be distinct")


def _check_classes(r: Recipe) -> None:
    if not r.classes:
        raise SpurbenchError("key 'classes' must list at least one class")
    known = {c.index for c in imagenet.spurious_imagenet_classes()}
    seen: set[int] = set()
    for i, c in enumerate(r.classes):
        where = f"classes[{i}]"
        check_class_index(where, c.index, seen)
        if not c.noun.strip():
            raise SpurbenchError(
                f"key '{where}.noun' must be a word naming what the reference images show (e.g. flower)"
            )
        if c.spurious_feature is None and c.index not in known:
            raise SpurbenchError(
                f"key '{where}.spurious_feature' is required: class {c.index} is not one of Spurious ImageNet's 100 classes"
            )
        if c.component is not None and c.component < -1:
            raise SpurbenchError(
                f"key '{where}.component' must be a component id >= 0, or -1 for none, got {c.component}"
            )
        ref = c.references
        given = [
            k
            for k, v in (("spurious_imagenet", ref.spurious_imagenet), ("folder", ref.folder), ("samples", ref.samples))
            if v
        ]
        if len(given) != 1:
            raise SpurbenchError(
                f"key '{where}.references' needs exactly one of spurious_imagenet: true, folder: <path>, samples: [<photo>, ...]"
                + (f"; got {', '.join(given)}" if given else "")
            )
        for j, s in enumerate(ref.samples or []):
            photo, _, variant = s.partition(":")
            if photo not in SAMPLE_PHOTOS or (variant and variant not in SAMPLE_VARIANTS):
                raise SpurbenchError(
                    f"key '{where}.references.samples[{j}]': unknown sample photo {s!r}; use one of {', '.join(SAMPLE_PHOTOS)}, "
                    f"optionally with :{' or :'.join(SAMPLE_VARIANTS)}"
                )


def _check_sfsl_inputs(r: Recipe) -> None:
    """The feature model and decoder the SFSL needs, and a licence for every input the card names."""
    if r.sfsl_weight != 0 and r.feature_model is None:
        raise SpurbenchError(
            "key 'feature_model' is required when training.sfsl_weight is not 0 (the SFSL needs a classifier)"
        )
    if r.features is not None and r.features.decoder not in SFSL_DECODERS:
        raise SpurbenchError(
            f"key 'features.decoder' must be one of {', '.join(SFSL_DECODERS)}, got {r.features.decoder!r}"
        )
    tiny_decoder = r.features is not None and r.features.decoder == "tiny" and r.sfsl_weight != 0
    if tiny_decoder and not r.features.tiny_decoder.strip():
        raise SpurbenchError(
            "key 'features.tiny_decoder' must be a Hub id (e.g. madebyollin/taesd) or a local AutoencoderTiny folder"
        )
    needed = (
        ["base_model", "references"]
        + (["feature_model"] if r.sfsl_weight != 0 else [])
        + (["sfsl_decoder"] if tiny_decoder else [])
    )
    missing = [k for k in needed if not str(r.licenses.get(k) or "").strip()]
    if missing:
        raise SpurbenchError(
            f"key 'licenses' must state the licence of every input: missing {', '.join(f'licenses.{k}' for k in missing)}"
        )


def check_class_index(where: str, index: int, seen: set[int], num_labels: int | None = None) -> None:
    """`<where>.index` names a class of the label set (ImageNet-1k unless `num_labels` is given) not
    already in `seen`; adds it. Every method's recipe checks its class list with this."""
    if num_labels is None:
        try:
            imagenet.check_index(index)
        except SpurbenchError as err:
            raise SpurbenchError(f"key '{where}.index': {err}") from None
    if index in seen:
        raise SpurbenchError(f"key '{where}.index': class {index} is listed twice; each class appears once")
    seen.add(index)


def _check_template(template: str, key: str, need_token: bool) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise SpurbenchError(
            f"key '{key}': template {template!r} is malformed ({err}); write literal braces as {{{{ }}}}"
        ) from None
    bad = [n for n in names if n not in PLACEHOLDERS]
    if bad:
        raise SpurbenchError(
            f"key '{key}': unknown placeholder {{{bad[0]}}} in {template!r}; use {{token}} (the identifier) and {{noun}}"
        )
    if need_token and "token" not in names:
        raise SpurbenchError(
            f"key '{key}': template {template!r} must contain {{token}}, the rare identifier the model learns"
        )
    if not need_token and "token" in names:
        raise SpurbenchError(
            f"key '{key}': the prior template {template!r} must not contain {{token}}; it describes the plain noun"
        )
    if not need_token and "noun" not in names:
        raise SpurbenchError(f"key '{key}': template {template!r} must contain {{noun}}")


# Recipe-level settings that are training knobs too: passed into TrainConfig unless the
# `training:` block sets them itself.
_SHARED_TRAINING_KEYS = ("resolution", "mixed_precision", "gradient_checkpointing", "seed")


def train_config_dict(recipe: Recipe) -> dict[str, Any]:
    """The dict given to TrainConfig.from_dict: the `training:` block plus the recipe-level knobs
    TrainConfig knows about (resolution, mixed precision, gradient checkpointing, seed)."""
    from spurbench.generate.dreambooth import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = dict(recipe.training)
    for key in _SHARED_TRAINING_KEYS:
        if key in known and key not in out:
            out[key] = getattr(recipe, key)
    return out


def _check_training(r: Recipe) -> None:
    try:
        from spurbench.generate.dreambooth import TrainConfig
    except ImportError:  # the builder stack is not installed; `build` reports that itself
        return
    try:
        TrainConfig.from_dict(train_config_dict(r))
    except SpurbenchError as err:  # TrainConfig.validate checks every type before comparing: nothing else raises
        raise SpurbenchError(f"key 'training': {err}") from None
