"""Method `ddb` (Parast, Azam, Akhtar, "DDB: Diffusion Driven Balancing", ICCV 2025; code ArianYp/DDB):
counterfactuals made from *real* photos by repainting only the class object.

Per class k (its real photos are the `reference` split):
1. Source images: the `sources_per_class` photos with the lowest cross-entropy loss for k under the
   recipe's classifier (DDB repaints the ERM model's most confident images).
2. Masks: text-prompted segmentation of the object (spurbench.detection: detector boxes -> SAM masks),
   prompt `mask_prompt` (default the class's first lemma). No mask -> the image is skipped and counted.
3. Inpainting inside the mask grown by `feather` pixels (StableDiffusionInpaintPipeline), then
   compositing onto the full-size photo: every pixel farther than `feather` px from the mask is the
   photo's own (spurbench.generate.compositing).
   - `mode: remove` paints the object out with a background prompt -> a *spurious* set: `label` = k,
     object absent, context kept. Kept rows go to `test`.
   - `mode: swap` (DDB's own) paints another class's token, learned by textual inversion on that
     class's photos (spurbench.generate.textual_inversion), into the mask -> a group-labelled *shift* set:
     `label` = the painted class, `group` = "<label>/<context>" (context: the source class, or with
     `source_group` that group's context, e.g. waterbird/land). Kept rows go to `train`
     (the counterfactuals `spurbench finetune` balances with).
4. Pruning (spurbench.generate.pruning), DDB's rule, where one class -- the row's `label` -- is the
   integrated-gradients target, the class whose probability is compared, the class of the mean and the
   label the row is saved with: IG of the classifier's `label` logit, baseline = the original photo,
   signed sum inside the mask, > `pruning.ig_threshold`; and p(label | repainted) < the mean p(label) over
   that class's own selected source photos. In swap mode `label` is the painted class (DDB's `class_label`).
   In remove mode the set is a *spurious* test set, and a classifier-based filter would select images by
   the very behaviour the benchmark measures: by default nothing is pruned there (the verification stage,
   `verify:`, is the filter); `pruning.in_remove_mode: true` opts into the same rule for `label` = k, and
   the card says so. Pruned rows go to split `pruned` with their scores.
With `source: {dataset, split}` the photos are the rows of a dataset in spurbench's contract (e.g. a
Waterbirds import; `source_group` picks one group's rows), the classes are its labels and the export
keeps its label set, so `spurbench finetune --data <that set> --counterfactuals <this build>` follows.
Columns added: source_index (row of `reference` that was repainted), mask (white = repainted, before
the feather margin; embedded image bytes like `image`), feather, mask_prompt, ig_score (null where no
pruning ran), p_label (p(label | image)), p_label_mean (the mean p(label) over the label class's selected
source photos), and group (swap).
`export: {source_photos: false}` leaves split `reference` out (the real photos, e.g. ImageNet's, may not be
redistributable); `source_index` still names the repainted photo's place in the class listing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spurbench.errors import SpurbenchError
from spurbench.files import atomic_path
from spurbench.generate import cost
from spurbench.generate.methods import (
    CardParts,
    Export,
    generated_row,
    reference_control_lines,
    reference_offsets,
    reference_row,
    relative_to_recipe,
)
from spurbench.generate.recipe import BaseModel, References, ReferenceSource, TinyBase
from spurbench.once import build_once

KIND = "spurious"  # of `mode: remove`; `swap` sets are `shift` (see kind_of)
STAGES = "3-4/5 segment, repaint and prune"
MODES = ("remove", "swap")
KIND_OF_MODE = {"remove": "spurious", "swap": "shift"}


# ---------------------------------------------------------------------------------------------
# Recipe schema


@dataclass(frozen=True)
class DDBClass:
    """One class k: its real photos are repainted."""

    #: the class: an ImageNet-1k index, or with `source:` a label index of that dataset's label set
    index: int
    #: the class's real photos (folder: or samples:, as in other recipes); with `source:`, leave it out
    references: ReferenceSource | None = None
    #: with `source:`, only the rows of this `group` (e.g. waterbird/water: DDB repaints majority-group images)
    source_group: str | None = None
    #: what the segmenter looks for; None: the class's first ImageNet lemma (with `source:`, its label name)
    mask_prompt: str | None = None
    #: word the textual-inversion token starts from (swap targets); None: the last word of mask_prompt
    initializer: str | None = None
    #: swap mode: the recipe class whose learned token is painted into this class's photos
    swap_to: int | None = None
    #: remove mode: what replaces the object ({background} of prompts.remove)
    background: str = "the empty background"
    spurious_feature: str | None = None
    component: int | None = -1


@dataclass(frozen=True)
class Segmentation:
    detector: str = "owlv2"
    segmenter: str = "sam"
    #: detector score a box needs; None: the detector's presence threshold
    threshold: float | None = None


@dataclass(frozen=True)
class Inpainting:
    """The inpainting model (DDB: stabilityai/stable-diffusion-2-inpainting) and how it samples."""

    id: str | None = None
    revision: str | None = None
    #: spurbench's tiny random inpainting pipeline (spurbench.generate.inpainting), built into the work dir
    tiny: TinyBase | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    batch_size: int = 4


@dataclass(frozen=True)
class DDBPrompts:
    remove: str = "a photo of {background}"
    swap: str = "a photo of a {token}"


@dataclass(frozen=True)
class SourceDataset:
    """Take the photos from a dataset in spurbench's contract (e.g. `spurbench import waterbirds`) instead of
    per-class references; the classes are then its labels and the export keeps its label set."""

    dataset: str
    split: str = "train"


@dataclass(frozen=True)
class Pruning:
    ig_threshold: float = 0.3
    ig_steps: int = 50
    #: remove mode: prune with the classifier too (off by default: it would select by the measured behaviour)
    in_remove_mode: bool = False


@dataclass(frozen=True, kw_only=True)
class DDBRecipe:
    name: str
    description: str = ""
    mode: str
    #: the text-to-image model textual inversion trains on (DDB: stabilityai/stable-diffusion-2-base)
    base_model: BaseModel
    inpainting: Inpainting
    #: the classifier that picks source images and prunes (a classifier spec as in classifiers/*.yaml)
    classifier: dict
    segmentation: Segmentation = field(default_factory=Segmentation)
    textual_inversion: dict = field(default_factory=dict)
    prompts: DDBPrompts = field(default_factory=DDBPrompts)
    references: References = field(default_factory=References)
    source: SourceDataset | None = None
    #: k: photos repainted per class (the lowest-loss ones); None: all
    sources_per_class: int | None = None
    images_per_source: int = 1
    #: pixels around the mask where the repainted image blends into the photo
    feather: int = 8
    pruning: Pruning = field(default_factory=Pruning)
    export: Export = field(default_factory=Export)
    resolution: int = 512
    seed: int = 0
    mixed_precision: str = "no"
    keep_weights: bool = False
    classes: list[DDBClass]
    licenses: dict
    dataset_license: str = "other"
    created: str | None = None

    #: the method module (spurbench.generate.methods); not a field
    method: typing.ClassVar[str] = "ddb"

    def class_by_index(self) -> dict[int, DDBClass]:
        return {c.index: c for c in self.classes}

    @property
    def builder(self) -> str:
        return "ddb"

    @property
    def base_model_name(self) -> str:
        from spurbench.generate.recipe import base_model_name

        return base_model_name(self.base_model, self.resolution)

    @property
    def inpainting_name(self) -> str:
        i = self.inpainting
        if i.tiny is not None:
            return f"spurbench.inpainting.make_tiny_inpainting(prediction_type={i.tiny.prediction_type}, seed={i.tiny.seed}, image_size={self.resolution})"
        return str(i.id)

    def to_dict(self) -> dict[str, Any]:
        from spurbench.generate.schema import plain

        return plain(self)


def recipe_from_dict(data: Mapping[str, Any]) -> DDBRecipe:
    from spurbench.generate.schema import convert

    data = dict(data)
    data.pop("method", None)
    r = convert(DDBRecipe, data, "")
    if r.mode not in MODES:
        raise SpurbenchError(
            f"key 'mode' must be one of {', '.join(MODES)} (remove: spurious set; swap: group-labelled set), got {r.mode!r}"
        )
    _check_models(r)
    _check_settings(r)
    if not r.classes:
        raise SpurbenchError("key 'classes' must list at least one class")
    names = source_label_names(r.source) if r.source else None
    seen: set[int] = set()
    classes = [_checked_class(r, i, c, names, seen) for i, c in enumerate(r.classes)]
    return dataclasses.replace(r, classes=classes)


def _check_settings(r: DDBRecipe) -> None:
    """The numbers, prompts, textual inversion and models of a recipe (its classes aside)."""
    from spurbench.classifiers import ClassifierSpec
    from spurbench.detection import detector_spec, segmenter_spec
    from spurbench.generate.textual_inversion import InversionConfig

    if r.resolution <= 0 or r.resolution % 8:
        raise SpurbenchError(f"key 'resolution' must be a positive multiple of 8 (pixels), got {r.resolution}")
    for key, low in (("images_per_source", 1), ("feather", 0)):
        if getattr(r, key) < low:
            raise SpurbenchError(f"key '{key}' must be >= {low}, got {getattr(r, key)}")
    if r.sources_per_class is not None and r.sources_per_class < 1:
        raise SpurbenchError(f"key 'sources_per_class' must be >= 1 or null (all photos), got {r.sources_per_class}")
    if r.pruning.ig_steps < 1:
        raise SpurbenchError(f"key 'pruning.ig_steps' must be >= 1, got {r.pruning.ig_steps}")
    for key in ("num_inference_steps", "batch_size"):
        if getattr(r.inpainting, key) < 1:
            raise SpurbenchError(f"key 'inpainting.{key}' must be >= 1, got {getattr(r.inpainting, key)}")
    if "{background}" not in r.prompts.remove:
        raise SpurbenchError("key 'prompts.remove' must contain {background} (what replaces the object)")
    if "{token}" not in r.prompts.swap:
        raise SpurbenchError("key 'prompts.swap' must contain {token} (the painted class's learned token)")
    try:
        InversionConfig.from_dict(r.textual_inversion)
    except SpurbenchError as err:
        raise SpurbenchError(f"key 'textual_inversion': {err}") from None
    try:
        ClassifierSpec.from_dict(r.classifier)
        detector_spec(r.segmentation.detector)
        segmenter_spec(r.segmentation.segmenter)
    except SpurbenchError as err:
        raise SpurbenchError(f"key 'classifier' / 'segmentation': {err}") from None


def _checked_class(r: DDBRecipe, i: int, c: DDBClass, names: list[str] | None, seen: set[int]) -> DDBClass:
    """Class `i` of the recipe checked, with its mask prompt, initializer word and spurious feature filled in."""
    from spurbench.generate.recipe import check_class_index

    indices = [other.index for other in r.classes]
    where = f"classes[{i}]"
    if names is not None:
        if not 0 <= c.index < len(names):
            raise SpurbenchError(
                f"key '{where}.index': {c.index} is not a label of '{r.source.dataset}' (0..{len(names) - 1}: {', '.join(names[:10])})"
            )
    check_class_index(where, c.index, seen, None if names is None else len(names))
    ref = c.references
    if names is not None:
        if ref is not None:
            raise SpurbenchError(f"key '{where}.references': the photos come from `source:`; leave references out")
    elif c.source_group is not None:
        raise SpurbenchError(f"key '{where}.source_group' applies only with `source:` (a dataset with a group column)")
    elif ref is None or len([v for v in (ref.folder, ref.samples) if v]) != 1 or ref.spurious_imagenet:
        raise SpurbenchError(
            f"key '{where}.references' needs exactly one of folder: <path> or samples: [<photo>, ...] (the class's real photos)"
        )
    if r.mode == "swap":
        if c.swap_to is None:
            raise SpurbenchError(
                f"key '{where}.swap_to' is required in mode swap: the recipe class whose token is painted in"
            )
        if c.swap_to not in indices or c.swap_to == c.index:
            raise SpurbenchError(
                f"key '{where}.swap_to': {c.swap_to} is not another class of the recipe (its classes: {', '.join(map(str, indices))})"
            )
    mask_prompt = c.mask_prompt or (names[c.index] if names is not None else _first_lemma(c.index))
    return dataclasses.replace(
        c,
        mask_prompt=mask_prompt,
        initializer=c.initializer or mask_prompt.split()[-1],
        spurious_feature=c.spurious_feature or _feature(r.mode, mask_prompt),
    )


def _check_models(r: DDBRecipe) -> None:
    for key, m in (("base_model", r.base_model), ("inpainting", r.inpainting)):
        if (m.id is None) == (m.tiny is None):
            raise SpurbenchError(
                f"key '{key}' needs exactly one of `id` (Hub id or local folder) or `tiny` (built locally)"
            )
        if m.tiny is not None and m.revision is not None:
            raise SpurbenchError(f"key '{key}.revision' only applies to a Hub `id`, not to `tiny`")


def _first_lemma(index: int) -> str:
    from spurbench.detection import class_lemmas

    return class_lemmas(index)[0]


def _feature(mode: str, mask_prompt: str) -> str:
    return f"context of the {mask_prompt}, object painted out" if mode == "remove" else f"context of the {mask_prompt}"


def kind_of(recipe: DDBRecipe) -> str:
    return KIND_OF_MODE[recipe.mode]


def source_label_names(source: SourceDataset) -> list[str]:
    """The class names of the `source:` dataset's label set (its `label` ClassLabel)."""
    from datasets import ClassLabel

    from spurbench import dataset as ds_contract

    folder = Path(source.dataset).expanduser()
    if not folder.is_dir():
        raise SpurbenchError(
            f"key 'source.dataset': folder '{source.dataset}' does not exist; give a dataset folder such as `spurbench import waterbirds` writes"
        )
    if source.split not in ds_contract.split_names(folder):
        raise SpurbenchError(
            f"key 'source.split': '{source.dataset}' has no split '{source.split}'; its splits: {', '.join(ds_contract.split_names(folder))}"
        )
    _, feats = ds_contract.read_split_table(folder, source.split)
    if not isinstance(feats.get("label"), ClassLabel):
        raise SpurbenchError(
            f"key 'source.dataset': '{source.dataset}' has no ClassLabel `label` column; give a dataset in spurbench's contract"
        )
    return list(feats["label"].names)


def label_set(recipe: DDBRecipe) -> tuple[str, list[str]] | None:
    """(name, class names) of the `source:` dataset's label set when it is not ImageNet-1k; None otherwise."""
    return None if recipe.source is None else _source_label_set(recipe.source)


@functools.lru_cache(maxsize=8)
def _source_label_set(source: SourceDataset) -> tuple[str, list[str]] | None:
    from spurbench import dataset as ds_contract

    name = ds_contract.read_provenance(Path(source.dataset).expanduser()).get(
        "label_set", ds_contract.IMAGENET_LABEL_SET
    )
    return None if name == ds_contract.IMAGENET_LABEL_SET else (name, source_label_names(source))


def class_name(recipe: DDBRecipe, k: int) -> str:
    from spurbench import imagenet

    names = label_set(recipe)
    return names[1][k] if names else imagenet.class_name(k)


def context_name(recipe: DDBRecipe, entry: DDBClass) -> str:
    """The context part of a swap row's group: the source group's context when the photos come from one
    group of a `<label>/<context>` set (a waterbird painted into landbird/land photos: waterbird/land, one of
    Waterbirds' own groups), else the source class's name."""
    if recipe.source is not None and entry.source_group and "/" in entry.source_group:
        return entry.source_group.split("/", 1)[1]
    return class_name(recipe, entry.index)


def provenance(recipe: DDBRecipe) -> dict[str, Any]:
    return {
        "mode": recipe.mode,
        "classifier": recipe.classifier,
        "ig_threshold": recipe.pruning.ig_threshold,
        "ig_steps": recipe.pruning.ig_steps,
        "pruning": "ddb: ig(label) > ig_threshold and p_label < p_label_mean" if prunes(recipe) else "none",
        "source_photos": recipe.export.source_photos,
        "feather": recipe.feather,
        "inpainting_model": recipe.inpainting_name,
        "inpainting_revision": recipe.inpainting.revision,
        "segmentation": dataclasses.asdict(recipe.segmentation),
    }


# ---------------------------------------------------------------------------------------------
# Stage 1: the class's real photos


def models_used(ctx) -> list[tuple[str, dict]]:
    """The classifiers this method's build used (stages.models_used): the one that selects the source photos,
    and prunes the counterfactuals when the recipe prunes."""
    spec = relative_to_recipe(ctx, ctx.recipe.classifier)
    return [("selection", spec)] + ([("pruning", spec)] if prunes(ctx.recipe) else [])


def resolve_references(ctx, entry, samples_dir, cache: dict):
    from spurbench.generate.references import resolve_class

    if ctx.recipe.source is not None:
        return _dataset_references(ctx.recipe, entry, Path(samples_dir).parent / "source")
    return resolve_class(ctx.recipe, entry, samples_dir, _scan_cache=cache)


def _dataset_references(r: DDBRecipe, entry: DDBClass, folder: Path):
    """The class's rows of the `source:` split (of `source_group` when given), their image bytes written
    as files under `folder/<index>/` (named by split row) so the shared stages track them like references."""
    from spurbench import dataset as ds_contract
    from spurbench.generate.references import ClassReferences, check_image
    from spurbench.untrusted import open_image

    table, _ = ds_contract.read_split_table(Path(r.source.dataset).expanduser(), r.source.split)
    labels = table.column("label").to_pylist()
    groups = table.column("group").to_pylist() if "group" in table.column_names else None
    if entry.source_group is not None and groups is None:
        raise SpurbenchError(
            f"'{r.source.dataset}' has no `group` column for source_group {entry.source_group!r} of class {entry.index}"
        )
    rows = [
        i
        for i, k in enumerate(labels)
        if k == entry.index and (entry.source_group is None or groups[i] == entry.source_group)
    ]
    if not rows:
        raise SpurbenchError(
            f"'{r.source.dataset}' split '{r.source.split}' has no rows of class {entry.index}"
            + (f" in group {entry.source_group!r}" if entry.source_group else "")
        )
    out = folder / str(entry.index)
    out.mkdir(parents=True, exist_ok=True)
    images = table.column("image").to_pylist()
    files = []
    for i in rows:
        data = images[i]["bytes"]
        # the header only (size checked against the one limit); check_image below decodes it in full
        with open_image(data, f"row {i} of '{r.source.dataset}' split '{r.source.split}'") as im:
            ext = {"JPEG": ".jpg", "PNG": ".png"}.get(im.format, ".img")
        path = out / f"{i:07d}{ext}"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        files.append(path)
    return ClassReferences(
        index=entry.index,
        component=-1,
        source=f"dataset {r.source.dataset} split {r.source.split}"
        + (f" group {entry.source_group}" if entry.source_group else ""),
        images=[str(f.resolve()) for f in files],
        sha256=[check_image(f) for f in files],
    )


# ---------------------------------------------------------------------------------------------
# Per process: classifier, segmentation models, inpainting pipeline


def prepare(ctx, pending: list, refs: dict, base_model: str, base_revision: str | None) -> dict[str, Any]:
    state: dict[str, Any] = {"base_model": base_model, "base_revision": base_revision, "tokens_loaded": set()}
    if not pending:
        return state
    from spurbench import detection
    from spurbench.classifiers import ClassifierSpec, create_classifier
    from spurbench.generate.inpainting import load_inpainting
    from spurbench.generate.sampling import torch_dtype

    r = ctx.recipe
    names = label_set(r)
    state["classifier"] = create_classifier(
        ClassifierSpec.from_dict(relative_to_recipe(ctx, r.classifier)),
        ctx.device,
        **({"num_classes": len(names[1])} if names else {}),
    )
    state["detector"] = detection.load_detector(r.segmentation.detector, device=str(ctx.device))
    state["segmenter"] = detection.load_segmenter(r.segmentation.segmenter, device=str(ctx.device))
    source, revision = _inpainting_model(ctx)
    state["pipe"] = load_inpainting(source, ctx.device, torch_dtype(ctx.mixed_precision, ctx.device), revision)
    return state


def _inpainting_model(ctx) -> tuple[str, str | None]:
    """Local folder (tiny: built once into the work dir) or Hub id of the inpainting pipeline."""
    from spurbench.generate.inpainting import make_tiny_inpainting

    i = ctx.recipe.inpainting
    if i.tiny is None:
        return str(i.id), i.revision
    folder = build_once(
        ctx.work / "inpainting",
        "model_index.json",
        lambda tmp: make_tiny_inpainting(
            tmp, prediction_type=i.tiny.prediction_type, seed=i.tiny.seed, image_size=ctx.recipe.resolution
        ),
    )
    return str(folder), None


def scheduler_source(ctx) -> tuple[str, str | None, str | None]:
    """The inpainting pipeline samples the counterfactuals: its own scheduler (spurbench.generate.stages.scheduler_record)."""
    i = ctx.recipe.inpainting
    return (str(ctx.work / "inpainting"), None, None) if i.tiny is not None else (str(i.id), i.revision, None)


def token_name(index: int) -> str:
    return f"<ddb-{index}>"


def _learned_token(ctx, index: int, refs: dict, state: dict) -> str:
    """Folder of class `index`'s learned token (trained once, under a lock, on the class's photos)."""
    from spurbench.generate.references import load_image
    from spurbench.generate.sampling import image_seed
    from spurbench.generate.textual_inversion import EMBEDDINGS_FILE, InversionConfig, learn_token

    r = ctx.recipe
    entry = r.class_by_index()[index]

    def learn(tmp: Path) -> None:
        # the target class may belong to another process: its photos are resolved here if needed
        class_refs = refs.get(index) or resolve_references(ctx, entry, ctx.work / "references" / "samples", {})
        cfg = InversionConfig.from_dict(
            {"resolution": r.resolution, "seed": image_seed(r.seed, "token", index), **r.textual_inversion}
        )
        learn_token(
            state["base_model"],
            [load_image(p) for p in class_refs.images],
            token_name(index),
            entry.initializer,
            tmp,
            cfg,
            revision=state["base_revision"],
            device=ctx.device,
            progress=ctx.progress,
        )

    return str(build_once(ctx.work / "tokens" / str(index), EMBEDDINGS_FILE, learn))


# ---------------------------------------------------------------------------------------------
# Stages 3 and 4: one class


def lowest_loss(losses, k: int | None) -> list[int]:
    """Indices of the k smallest losses, smallest first (ties: lower index first)."""
    order = sorted(range(len(losses)), key=lambda i: (float(losses[i]), i))
    return order if k is None else order[:k]


def prunes(recipe: DDBRecipe) -> bool:
    """Does the classifier prune this recipe's counterfactuals? Swap: always (DDB); remove: only when opted in."""
    return recipe.mode == "swap" or recipe.pruning.in_remove_mode


def class_selection(ctx, index: int, refs: dict, state: dict) -> dict[str, Any]:
    """Class `index`'s source photos under the classifier: p(index) of each of its photos, the selected
    (lowest-loss) ones, and the mean p(index) over those. Computed once per process; another process
    computes the same numbers from the same photos."""
    import numpy as np

    from spurbench.generate import pruning
    from spurbench.generate.references import load_image

    cache = state.setdefault("selections", {})
    if index not in cache:
        r = ctx.recipe
        clf = state["classifier"]
        class_refs = refs.get(index) or resolve_references(
            ctx, r.class_by_index()[index], ctx.work / "references" / "samples", {}
        )
        photos = [load_image(p) for p in class_refs.images]
        p_all = pruning.class_probabilities(clf.model, pruning.classifier_input(photos, clf.data_config), index)
        sources = lowest_loss(-np.log(np.clip(p_all, 1e-30, None)), r.sources_per_class)
        cache[index] = {
            "photos": photos,
            "p": [float(p) for p in p_all],
            "sources": sources,
            "mean": float(np.mean(p_all[sources])),
        }
    return cache[index]


def make_class(ctx, entry, refs: dict, state: dict) -> dict[str, Any]:
    """One class: its source photos (lowest loss for k), their object masks, the repainted images (one per source
    and `images_per_source`), and the pruning of each against the row's label."""
    from spurbench.generate.sampling import image_seed

    r = ctx.recipe
    cdir = ctx.class_dir(entry.index)
    (cdir / "images").mkdir(parents=True, exist_ok=True)
    (cdir / "masks").mkdir(parents=True, exist_ok=True)
    own = class_selection(ctx, entry.index, refs, state)  # 1. source images: lowest loss for k
    photos, sources = own["photos"], own["sources"]
    masks = _object_masks(ctx, entry, [photos[i] for i in sources], state)  # 2. masks
    with_mask = [(s, m) for s, m in zip(sources, masks) if m.any()]
    prompt = _paint_prompt(ctx, entry, refs, state)  # 3. prompts and seeds
    jobs = [
        (s, m, j, image_seed(r.seed, "ddb", entry.index, s, j))
        for s, m in with_mask
        for j in range(r.images_per_source)
    ]
    files = [f"s{s:04d}_{j}.png" for s, _, j, _ in jobs]
    _repaint_missing(ctx, cdir, jobs, files, photos, prompt, state)
    _save_masks(cdir, with_mask)
    # 4. pruning, all about the row's label (DDB's class_label)
    label = entry.swap_to if r.mode == "swap" else entry.index
    label_mean = class_selection(ctx, label, refs, state)["mean"]
    ig, p_gen, keep = _prune(ctx, cdir, jobs, files, photos, label, label_mean, state["classifier"])
    return {
        "images": [
            {
                "file": files[i],
                "mask_file": f"s{s:04d}.png",
                "source": s,
                "prompt": prompt,
                "seed": seed,
                "ig_score": ig[i],
                "p_label": p_gen[i],
                "kept": bool(keep[i]),
            }
            for i, (s, _, _, seed) in enumerate(jobs)
        ],
        "label": label,
        "sources": sources,
        # p(k) of every photo of this class k, and its mean over the selected ones (the reference rows' columns)
        "p_reference": own["p"],
        "p_reference_mean": own["mean"],
        # the mean p(label) the generated rows were compared with
        "p_label_mean": label_mean,
        "skipped_no_mask": [s for s, m in zip(sources, masks) if not m.any()],
        "mask_prompt": entry.mask_prompt,
    }


def _object_masks(ctx, entry, photos: list, state: dict) -> list:
    """The object's mask in each photo (detector boxes for the mask prompt, then the segmenter)."""
    from spurbench import detection

    return detection.segment(
        photos,
        [entry.mask_prompt] * len(photos),
        state["detector"],
        state["segmenter"],
        ctx.recipe.segmentation.threshold,
        progress=False,
    )


def _paint_prompt(ctx, entry, refs: dict, state: dict) -> str:
    """The inpainting prompt: remove mode paints the background; swap mode the target's learned token (learned
    and loaded into the pipeline on first use)."""
    r = ctx.recipe
    if r.mode != "swap":
        return r.prompts.remove.format(background=entry.background)
    token_dir = _learned_token(ctx, entry.swap_to, refs, state)
    if entry.swap_to not in state["tokens_loaded"]:
        state["pipe"].load_textual_inversion(token_dir)
        state["tokens_loaded"].add(entry.swap_to)
    return r.prompts.swap.format(token=token_name(entry.swap_to))


def _repaint_missing(ctx, cdir: Path, jobs: list, files: list[str], photos: list, prompt: str, state: dict) -> None:
    """Inpaint the jobs whose image is not on disk yet (resumable) and composite each onto its photo."""
    from spurbench.generate import compositing
    from spurbench.generate.inpainting import repaint

    r = ctx.recipe
    todo = [i for i, f in enumerate(files) if not (cdir / "images" / f).is_file()]
    if not todo:
        return
    painted = repaint(
        state["pipe"],
        [photos[jobs[i][0]] for i in todo],
        [compositing.grow_mask(jobs[i][1], r.feather) for i in todo],
        [prompt] * len(todo),
        [jobs[i][3] for i in todo],
        r.resolution,
        r.inpainting.num_inference_steps,
        r.inpainting.guidance_scale,
        r.inpainting.batch_size,
    )
    for i, gen in zip(todo, painted):
        s, m, _, _ = jobs[i]
        out = compositing.composite(photos[s], gen, m, r.feather)
        with atomic_path(cdir / "images" / files[i]) as tmp:
            out.save(tmp, format="PNG")


def _save_masks(cdir: Path, with_mask: list) -> None:
    import numpy as np
    from PIL import Image

    for s, m in with_mask:
        Image.fromarray(m.astype(np.uint8) * 255).save(cdir / "masks" / f"s{s:04d}.png")


def _prune(ctx, cdir: Path, jobs: list, files: list[str], photos: list, label: int, label_mean: float, clf):
    """(IG scores, p(label), kept) of every image: IG of the label's logit in the mask (baseline: the photo) and
    p(label) against the mean p(label) over the label class's own selected photos."""
    import numpy as np

    from spurbench.generate import pruning
    from spurbench.generate.references import load_image

    r = ctx.recipe
    ig, p_gen = [], []
    for i, (s, m, _, _) in enumerate(jobs):
        x = pruning.classifier_input([load_image(cdir / "images" / files[i])], clf.data_config)
        if prunes(r):
            x0 = pruning.classifier_input([photos[s]], clf.data_config)
            mt = pruning.mask_input([m], clf.data_config)
            ig.append(float(pruning.ig_in_mask(clf.model, x, x0, mt, label, n_steps=r.pruning.ig_steps)[0]))
        else:
            ig.append(None)
        p_gen.append(float(pruning.class_probabilities(clf.model, x, label)[0]))
    if not jobs:
        keep = np.zeros(0, dtype=bool)
    elif prunes(r):
        keep = pruning.keep_mask(ig, p_gen, label_mean, r.pruning.ig_threshold)
    else:
        keep = np.ones(len(jobs), dtype=bool)
    return ig, p_gen, keep


# ---------------------------------------------------------------------------------------------
# Stage 5: export


def _extra_features(swap: bool) -> dict:
    """The `datasets` features of DDB's columns beyond the contract's (swap mode: the group too)."""
    from datasets import Image, Value

    extra = {
        "source_index": Value("int64"),
        "mask": Image(),
        "feather": Value("int32"),
        "mask_prompt": Value("string"),
        "ig_score": Value("float64"),
        "p_label": Value("float64"),
        "p_label_mean": Value("float64"),
    }
    return {**extra, "group": Value("string")} if swap else extra


def _row_columns(r: DDBRecipe, entry, label: int) -> dict:
    """The columns every row of a class has, for the row's `label` (swap mode: the group too)."""
    row = dict(
        label=label,
        class_name=class_name(r, label),
        spurious_feature=entry.spurious_feature,
        component=-1,
        builder="ddb",
        feather=r.feather,
        mask_prompt=entry.mask_prompt,
    )
    if r.mode == "swap":
        row["group"] = f"{class_name(r, label)}/{context_name(r, entry)}"
    return row


def _generated_rows(ctx, markers: dict, offsets: dict, kept: bool):
    """The repainted images that were kept (`kept`) or pruned, with their masks and scores."""
    r = ctx.recipe
    for entry in ctx.classes:
        cdir = ctx.class_dir(entry.index)
        label = entry.swap_to if r.mode == "swap" else entry.index
        mean = float(markers[entry.index]["p_label_mean"])
        for im in markers[entry.index]["images"]:
            if im["kept"] != kept:
                continue
            # the mask's bytes are embedded (dataset.write_dataset encodes every Image column): nothing
            # in the export points into the work dir
            yield generated_row(
                cdir / "images" / im["file"],
                im,
                source_index=offsets[entry.index] + int(im["source"]),
                mask=str(cdir / "masks" / im["mask_file"]),
                ig_score=None if im["ig_score"] is None else float(im["ig_score"]),
                p_label=float(im["p_label"]),
                p_label_mean=mean,
                **_row_columns(r, entry, label),
            )


def _reference_rows(ctx, markers: dict, refs: dict, offsets: dict):
    """The source photos, with p(k) of each and its mean over the class's selected photos."""
    for entry in ctx.classes:
        p_ref = markers[entry.index]["p_reference"]
        mean = float(markers[entry.index]["p_reference_mean"])
        for i, path in enumerate(refs[entry.index].images):
            yield reference_row(
                path,
                source_index=offsets[entry.index] + i,
                mask=None,
                ig_score=None,
                p_label=float(p_ref[i]),
                p_label_mean=mean,
                **_row_columns(ctx.recipe, entry, entry.index),
            )


def export_splits(ctx, markers: dict, refs: dict):
    r = ctx.recipe
    offsets, n = reference_offsets(ctx.classes, refs)
    swap = r.mode == "swap"
    kept_split = "train" if swap else "test"
    counts = {
        kept_split: sum(im["kept"] for m in markers.values() for im in m["images"]),
        "pruned": sum(not im["kept"] for m in markers.values() for im in m["images"]),
        "reference": n if r.export.source_photos else 0,
    }
    splits = {
        kept_split: _generated_rows(ctx, markers, offsets, True),
        "pruned": _generated_rows(ctx, markers, offsets, False),
        "reference": _reference_rows(ctx, markers, refs, offsets),
    }
    # a split with no rows would be listed in the card without a file, which `load_dataset` refuses
    return (
        {s: rows for s, rows in splits.items() if counts[s]},
        _extra_features(swap),
        {s: n for s, n in counts.items() if n},
    )


def _rule_text(r: DDBRecipe, kept_split: str) -> str:
    if not prunes(r):
        return (
            f"No classifier pruning (remove mode's default): every repainted image is in split `{kept_split}`. A filter by "
            "the classifier's own view would select images by the very behaviour this spurious set measures; whether the "
            "object is really gone is checked by the verification stage when the recipe has one (`ig_score` is empty, "
            "`p_label` is p(label | image) for information). "
        )
    what = "the painted class" if r.mode == "swap" else "the class painted out (opted in with `pruning.in_remove_mode`)"
    return (
        f"Kept images (split `{kept_split}`) pass DDB's pruning, every part of it about the row's `label` ({what}): integrated "
        f"gradients of the classifier's `label` logit, from the original photo (baseline) to the repainted image, summed "
        f"inside the mask, above {r.pruning.ig_threshold} (`ig_score`), and p(label | repainted) below the mean p(label) over "
        "that class's own selected source photos (`p_label` < `p_label_mean`); the rest are in split `pruned`. "
    )


def _photos_text(r: DDBRecipe) -> str:
    held = (
        "The source photos are in split `reference`. "
        if r.export.source_photos
        else "The source photos are left out of this export (`export.source_photos: false`); `source_index` still numbers them "
        "in the recipe's class order. "
    )
    return (
        held
        + "Outside the mask every generated image is the source photo's own pixels, so the licence of the source photos "
        "(e.g. ImageNet's terms of access: research use, not redistributable) applies to the whole set; check it before publishing."
    )


def card_parts(ctx, markers: dict, refs: dict, counts: dict) -> CardParts:
    r = ctx.recipe
    swap = r.mode == "swap"
    kept_split = "train" if swap else "test"
    skipped = sum(len(m["skipped_no_mask"]) for m in markers.values())
    return CardParts(
        pretty_name=f"spurbench {r.name}: DDB counterfactuals ({r.mode})",
        headline="Counterfactuals of real photos",
        intro=(
            "DDB-style counterfactuals (Parast et al., ICCV 2025): each generated image is a real photo of class k (split "
            "`reference`) whose object, found by text-prompted segmentation (`mask`), was repainted with Stable Diffusion "
            f"inpainting; every pixel farther than {r.feather} px (`feather`) from the mask is the photo's own. "
            + (
                "The object is painted out, so `label` is the class the image must NOT show (a spurious set). "
                if not swap
                else "Another class's token, learned by textual inversion, is painted in: `label` is the painted class and `group` is "
                "`<label>/<context class>` (a group-labelled set for `spurbench finetune`). "
            )
            + _rule_text(r, kept_split)
            + _photos_text(r)
        ),
        provenance_lines=[
            *reference_control_lines(r, "the source photos the counterfactuals were painted from"),
            f"- Inpainting model: `{r.inpainting_name}`, revision `{r.inpainting.revision}`",
            f"- Classifier (source selection, pruning): `{json.dumps(r.classifier, sort_keys=True)}`",
            f"- Segmentation: detector `{r.segmentation.detector}`, segmenter `{r.segmentation.segmenter}`, threshold {r.segmentation.threshold}",
            (
                f"- Pruning: IG threshold {r.pruning.ig_threshold} ({r.pruning.ig_steps} steps) on the `label` logit, feather {r.feather} px, mode `{r.mode}`"
                if prunes(r)
                else f"- Pruning: none (mode `{r.mode}`; `pruning.in_remove_mode` is off), feather {r.feather} px"
            ),
        ],
        images_line=(
            f"- Images: {counts.get(kept_split, 0)} kept, {counts.get('pruned', 0)} pruned, "
            + (
                f"{counts.get('reference', 0)} reference photos; "
                if r.export.source_photos
                else f"{sum(len(x.images) for x in refs.values())} source photos (left out of this export); "
            )
            + f"{skipped} source photo(s) skipped because no mask was found"
        ),
        classes_table=[
            "| k | class | mask prompt | "
            + ("painted class | " if swap else "")
            + "sources | no mask | kept | pruned |",
            "|---|---|---|" + ("---|" if swap else "") + "---|---|---|---|",
            *[
                f"| {c.index} | {class_name(r, c.index)} | {c.mask_prompt} | "
                + (f"{c.swap_to} {class_name(r, c.swap_to)} | " if swap else "")
                + f"{len(markers[c.index]['sources'])} | {len(markers[c.index]['skipped_no_mask'])} | "
                f"{sum(im['kept'] for im in markers[c.index]['images'])} | {sum(not im['kept'] for im in markers[c.index]['images'])} |"
                for c in ctx.classes
            ],
        ],
    )


# ---------------------------------------------------------------------------------------------
# What a build costs (`spurbench build --plan`; spurbench.generate.cost counts the units)


def _photo_count(classes: list) -> tuple[int, bool]:
    """Source photos of `classes`, and whether a folder absent from this machine was assumed an ImageNet class."""
    photos, assumed = 0, False
    for c in classes:
        ref = getattr(c, "references", None)
        folder = getattr(ref, "folder", None)
        if getattr(ref, "samples", None):
            photos += len(ref.samples)
        elif folder and Path(folder).expanduser().is_dir():
            photos += sum(1 for f in Path(folder).expanduser().iterdir() if f.is_file())
        else:
            photos += cost.IMAGENET_PHOTOS_PER_CLASS
            assumed = True
    return photos, assumed


def plan(p, r: DDBRecipe, classes: list) -> None:
    """Stages 3-4 of `classes` into the plan `p` (a spurbench.generate.cost.Plan)."""
    base = cost.add_sd_download(p, "base model (textual inversion)", r.base_model, r.resolution)
    paint = cost.add_sd_download(p, "inpainting model", r.inpainting, r.resolution, inpainting=True)
    clf = cost.add_timm_download(p, "classifier (selection, pruning)", r.classifier)
    if r.segmentation.detector == "owlv2":
        cost.add_model_download(p, "detector", "google/owlv2-base-patch16-ensemble", "owlv2", cost.OWLV2)
    if r.segmentation.segmenter == "sam":
        cost.add_model_download(p, "segmenter", "facebook/sam-vit-base", "sam", {})
    _plan_textual_inversion(p, r, classes, base)
    sources = _plan_selection_and_masks(p, r, classes, clf)
    n = sources * r.images_per_source
    _plan_repainting(p, r, n, paint, clf)
    _plan_disk(p, r, classes, sources, n)


def _plan_textual_inversion(p: cost.Plan, r: DDBRecipe, classes: list, base) -> None:
    """Stage 3: one token learned per class on the base model."""
    from spurbench.generate.textual_inversion import InversionConfig

    ti = InversionConfig.from_dict(r.textual_inversion)
    # textual inversion trains the token embeddings only (the embedding table's rows; AdamW over the whole table)
    traffic, traffic_note = cost.step_traffic(_embedding_parameters(base), p.precision, False, clipping=False)
    p.add(
        "3 textual inversion (micro-steps)",
        len(classes) * ti.max_train_steps * ti.gradient_accumulation_steps,
        "step",
        cost.textual_inversion_step(base, r.resolution, ti.train_batch_size),
        f"{ti.max_train_steps} steps x {ti.gradient_accumulation_steps} accumulation per class",
        kind="train",
        traffic_each=traffic,
        traffic_note=traffic_note,
        reads=len(classes) * cost.pipeline_bytes(base),
        builds=len(classes),
        fixed_note="per class: the base model's parts loaded to learn the token",
        memory=cost.textual_inversion_memory(base, r.resolution, ti.train_batch_size, p.precision)
        if p.memory
        else None,
    )


def _plan_selection_and_masks(p: cost.Plan, r: DDBRecipe, classes: list, clf: str) -> int:
    """Stages 3-4: the classifier on every photo (to pick the sources), then each source's mask; returns the
    number of source photos."""
    photos, assumed = _photo_count(classes)
    p.add(
        "3 classifier on every source photo",
        photos,
        "image",
        cost.classifier_pass(clf),
        f"{cost.IMAGENET_PHOTOS_PER_CLASS} photos per class assumed where the folder is absent"
        if assumed
        else "photos on disk",
        kind="vision",
    )
    sources = min(photos, len(classes) * r.sources_per_class) if r.sources_per_class else photos
    seg = r.segmentation
    p.add(
        f"4 masks ({seg.detector} + {seg.segmenter})",
        sources,
        "photo",
        cost.detect_image(seg.detector, seg.segmenter),
        "tiny toy models count 0" if "tiny" in (seg.detector, seg.segmenter) else "",
        kind="vision",
    )
    return sources


def _plan_repainting(p: cost.Plan, r: DDBRecipe, n: int, paint, clf: str) -> None:
    """Stage 4: `n` inpaintings and the pruning of each."""
    paint_cfg = r.inpainting
    p.add(
        "4 inpainting",
        n,
        "image",
        cost.inpaint_image(paint, r.resolution, paint_cfg.num_inference_steps, paint_cfg.guidance_scale),
        f"{paint_cfg.num_inference_steps} steps, guidance {paint_cfg.guidance_scale}, batch {paint_cfg.batch_size}",
        kind="sample",
        reads=cost.pipeline_bytes(paint),
        builds=1,
        fixed_note="the inpainting pipeline loaded once per process",
        memory=p.batch_memory(paint, paint_cfg.batch_size, paint_cfg.guidance_scale),
    )
    p.add(
        "4 pruning (integrated gradients + p(source))",
        n,
        "image",
        cost.integrated_gradients(clf, r.pruning.ig_steps) + cost.classifier_pass(clf),
        f"{r.pruning.ig_steps} IG steps",
        kind="vision",
    )
    p.images += n


def _plan_disk(p: cost.Plan, r: DDBRecipe, classes: list, sources: int, n: int) -> None:
    """Every file the build writes: photos, repainted images and masks in the work folder, and the export."""
    photos = cost.Photos()
    for c in classes:
        ref = getattr(c, "references", None)
        if getattr(ref, "samples", None):
            photos.add(c.index, samples=ref.samples)
        else:
            photos.add(c.index, folder=getattr(ref, "folder", None))
    each = photos.row_bytes / max(photos.rows, 1)
    # a repainted image is the source photo with its mask repainted, saved as PNG at the photo's size: about the
    # photo's bytes for PNG photos; JPEG photos (ImageNet's) grow about 2.5x as PNG
    repainted = int(each * (1.0 if not photos.assumed else 2.5))
    p.add_photos_written(photos, "source")
    p.add_disk("repainted images (work/classes)", "work", n * repainted, f"~{repainted:,} B each, {photos.note()}")
    p.add_disk("masks (work/classes)", "work", sources * MASK_BYTES, f"one per source photo, ~{MASK_BYTES:,} B")
    p.add_disk("export: counterfactual rows", "export", n * repainted)
    p.add_export_end(photos, r.export.source_photos, "no reference split in the export")


# a source photo's mask as a PNG (binary, compresses well; ~3 KB measured on the smoke build's photos)
MASK_BYTES = 3_100


def _embedding_parameters(arch) -> int:
    """Parameters of the text encoder's token embedding table (what textual inversion's optimizer holds)."""
    return int(arch.text.get("vocab_size", 49408)) * int(arch.text.get("hidden_size", 768))
