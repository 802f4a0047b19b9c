"""Method `sfsl` (and its alias `dreambooth`): spurious images of class k with the object absent.

Per class: fine-tune Stable Diffusion with DreamBooth (UNet and text encoder, prior preservation) on the
class's reference spurious images, plus the spurious-feature similarity loss (SFSL) of a frozen
classifier (spurbench.generate.dreambooth, spurbench.generate.features); then sample the recipe's prompts
text-to-image with one seed per image. `training.sfsl_weight: 0` is plain DreamBooth (`method:
dreambooth`, builder column `dreambooth`). Class-prior images are made once per noun with the base model.
The recipe schema is spurbench.generate.recipe.Recipe. Kind `spurious`: predicting k is the failure.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spurbench.errors import SpurbenchError
from spurbench.generate import cost
from spurbench.generate.methods import CardParts, flagged_text, generated_row, reference_row, relative_to_recipe

if TYPE_CHECKING:  # for the hints of the plan helpers only
    from spurbench.generate.cost import Memory, Photos, Plan, SDArch
    from spurbench.generate.dreambooth import TrainConfig

KIND = "spurious"
STAGES = "3-4/5 fine-tune and generate"


def recipe_from_dict(data: Mapping[str, Any]):
    from spurbench.generate.recipe import sfsl_recipe_from_dict

    data = dict(data)
    method = data.pop("method", "sfsl")
    recipe = sfsl_recipe_from_dict(data)
    if method == "dreambooth" and recipe.sfsl_weight != 0:
        raise SpurbenchError(
            f"method dreambooth is sfsl without the similarity loss, but training.sfsl_weight is {recipe.sfsl_weight}; "
            "set it to 0 (or leave it out), or use method: sfsl"
        )
    return recipe


def provenance(recipe) -> dict[str, Any]:
    out: dict[str, Any] = {"feature_model": recipe.feature_model}
    if recipe.mine is not None:  # which surrogates chose the exported images (eval: transfer of the others)
        m = recipe.mine
        out["mine"] = {
            "panel": m.panel,
            "min_fooled": m.min_fooled,
            "surrogates": [{"model": s.model, "weights_sha256": s.sha256.lower()} for s in m.surrogates],
        }
    return out


def models_used(ctx) -> list[tuple[str, dict]]:
    """The classifiers this method's build used (stages.models_used): the SFSL feature model, unless the
    similarity loss is off (plain DreamBooth never loads it)."""
    spec = _feature_spec(ctx)
    return [("feature model", spec)] if spec is not None and ctx.recipe.sfsl_weight != 0 else []


# ---------------------------------------------------------------------------------------------
# Stage 1: reference spurious images


def resolve_references(ctx, entry, samples_dir, cache: dict):
    from spurbench.generate.references import resolve_class

    return resolve_class(ctx.recipe, entry, samples_dir, spurious_root=ctx.spurious_root, _scan_cache=cache)


# ---------------------------------------------------------------------------------------------
# Per process: weights of finished classes, the feature model, class priors (stage 2)


def prepare(ctx, pending: list, refs: dict, base_model: str, base_revision: str | None) -> dict[str, Any]:
    from spurbench.generate.stages import check_surrogates

    check_surrogates(ctx)  # a mis-pinned mining surrogate fails before minutes of generation
    if not ctx.keep_weights:
        for entry in ctx.classes[ctx.rank :: ctx.world]:
            if entry not in pending:  # a build killed between a class's marker and the deletion of its weights
                shutil.rmtree(ctx.class_dir(entry.index) / "model", ignore_errors=True)
    # Loaded before the priors are made, so missing weights fail the build before minutes of sampling.
    feature_model = None
    if pending and ctx.recipe.sfsl_weight != 0:
        from spurbench.generate.features import load_feature_model

        feature_model = load_feature_model(_feature_spec(ctx), ctx.device)
        features = ctx.recipe.features
        if features is not None and features.decoder == "tiny":  # SFSL decodes with AutoencoderTiny (recipe docs)
            from spurbench.generate.features import load_tiny_decoder

            feature_model.decoder = load_tiny_decoder(features.tiny_decoder, features.tiny_decoder_revision, ctx.device)
    priors = stage_priors(ctx, pending, base_model)
    stage_control(ctx, pending, base_model)
    return {"feature_model": feature_model, "priors": priors, "accelerator": None}


def _feature_spec(ctx) -> dict | None:
    """The recipe's feature model, with a local weights file taken relative to the recipe file."""
    spec = ctx.recipe.feature_model
    return None if spec is None else relative_to_recipe(ctx, spec)


def _prior_settings(ctx) -> tuple[bool, int]:
    from spurbench.generate.recipe import train_config_dict

    prior = bool(train_config_dict(ctx.recipe).get("with_prior_preservation", True))
    return prior, ctx.recipe.num_class_images if prior else 0


def stage_priors(ctx, pending: list, base_model: str) -> dict[str, list]:
    from tqdm.auto import tqdm

    from spurbench.generate.sampling import class_prior_images

    use_prior, n = _prior_settings(ctx)
    nouns = list(dict.fromkeys(c.noun for c in pending))
    if not use_prior or not nouns:
        return {}
    r = ctx.recipe
    get_pipeline = _base_pipeline(ctx, base_model)

    ctx.log(f"stage 2/5 class priors: {n} images for each of {len(nouns)} noun(s) ({', '.join(nouns)})")
    out = {}
    for noun in tqdm(nouns, desc="2/5 class priors", unit="noun", disable=not ctx.progress, leave=False):
        out[noun] = class_prior_images(
            ctx.work / "priors",
            noun,
            r.prior_prompt(noun),
            n,
            r.seed,
            get_pipeline,
            **_sampling(ctx),
        )
    return out


def _sampling(ctx) -> dict[str, Any]:
    """The recipe's sampling settings, as `sample` and `class_prior_images` take them."""
    g = ctx.recipe.generation
    return dict(
        batch_size=g.batch_size,
        num_inference_steps=g.num_inference_steps,
        guidance_scale=g.guidance_scale,
        resolution=ctx.recipe.resolution,
        progress=ctx.progress,
    )


def _load_pipeline(ctx, model, device):
    """A text-to-image pipeline of `model` (base or fine-tuned) with the recipe's sampler."""
    from spurbench.generate.sampling import load_pipeline, torch_dtype

    g = ctx.recipe.generation
    dtype = torch_dtype(ctx.mixed_precision, device)
    return load_pipeline(model, device, dtype, scheduler=g.scheduler, safety_checker=g.safety_checker)


def _base_pipeline(ctx, base_model: str):
    """A loader of the base (not fine-tuned) pipeline with the recipe's sampler, loaded on first use only."""
    held: list = []

    def get_pipeline():
        if not held:
            held.append(_load_pipeline(ctx, base_model, ctx.device))
        return held[0]

    return get_pipeline


# ---------------------------------------------------------------------------------------------
# The control split (recipe `control:`): the base model, the prompts without the identifier, the test seeds


def control_jobs(ctx, entry) -> list:
    """The class's control images: prompt after prompt, the i-th control image of prompt p with the seed of the
    class's test image p{p}_{i} (class_jobs), so each control image is paired with a test image by its seed."""
    from spurbench.generate.sampling import Job, image_seed

    r = ctx.recipe
    if r.control is None:
        return []
    prompts = r.control_prompts(entry)
    folder = ctx.class_dir(entry.index) / "control"
    return [
        Job(prompts[p], image_seed(r.seed, "class", entry.index, p, i), folder / f"p{p}_{i:04d}.png")
        for n in range(r.control.images_per_class)
        for p, i in [(n % len(prompts), n // len(prompts))]
    ]


def stage_control(ctx, pending: list, base_model: str) -> None:
    """Sample every pending class's control images with the base model (resumable by whole batches, like the
    test images); make_class then lists them in the class's marker."""
    from spurbench.generate.sampling import sample

    if ctx.recipe.control is None or not pending:
        return
    get_pipeline = _base_pipeline(ctx, base_model)
    ctx.log(f"stage 2/5 control: {ctx.recipe.control.images_per_class} base-model image(s) per class")
    for entry in pending:
        jobs = control_jobs(ctx, entry)
        if all(j.path.is_file() for j in jobs):
            continue
        for j in jobs:
            j.path.parent.mkdir(parents=True, exist_ok=True)
        sample(get_pipeline(), jobs, **_sampling(ctx), desc=f"control class {entry.index}")


# ---------------------------------------------------------------------------------------------
# Stages 3 and 4: fine-tune and generate one class


def class_jobs(ctx, entry) -> list:
    """Every image of a class: prompt by prompt, image by image, each with its own seed."""
    from spurbench.generate.sampling import Job, image_seed

    r = ctx.recipe
    images = ctx.class_dir(entry.index) / "images"
    return [
        Job(prompt, image_seed(r.seed, "class", entry.index, p, i), images / f"p{p}_{i:04d}.png")
        for p, prompt in enumerate(r.generation_prompts(entry))
        for i in range(r.generation.images_per_prompt)
    ]


def _train_seed(ctx, index: int) -> int:
    from spurbench.generate.sampling import image_seed

    return int(ctx.recipe.training.get("seed", image_seed(ctx.recipe.seed, "train", index)))


def make_class(ctx, entry, refs: dict, state: dict) -> dict[str, Any]:
    from spurbench.generate.dreambooth import make_accelerator
    from spurbench.generate.sampling import sample

    if state["accelerator"] is None:
        state["accelerator"] = make_accelerator(ctx.mixed_precision)
    accelerator = state["accelerator"]
    model_dir = ctx.class_dir(entry.index) / "model"
    if not (model_dir / "model_index.json").is_file():
        _fine_tune(ctx, entry, refs, state, model_dir)
    pipe = _load_pipeline(ctx, model_dir, accelerator.device)
    jobs = class_jobs(ctx, entry)
    flagged = sample(pipe, jobs, **_sampling(ctx), desc=f"generate class {entry.index}")
    del pipe
    fields = {
        "component": refs[entry.index].component,
        "images": [{"file": j.path.name, "prompt": j.prompt, "seed": j.seed} for j in jobs],
        "nsfw_flagged": flagged,
        **_control_record(ctx, entry),
        "model": str(model_dir) if ctx.keep_weights else None,
    }
    return fields


def _fine_tune(ctx, entry, refs: dict, state: dict, model_dir) -> None:
    """Stage 3: DreamBooth (+ SFSL) on the class's reference images, the fine-tuned pipeline saved in `model_dir`."""
    from spurbench.generate.dreambooth import TrainConfig, finetune_class
    from spurbench.generate.recipe import train_config_dict
    from spurbench.generate.references import load_image

    r = ctx.recipe
    cfg = train_config_dict(r)
    cfg["mixed_precision"] = ctx.mixed_precision
    cfg["seed"] = _train_seed(ctx, entry.index)
    config = TrainConfig.from_dict(cfg)
    finetune_class(
        ctx.base_model,
        [load_image(p) for p in refs[entry.index].images],
        r.instance_prompt(entry),
        [load_image(p) for p in state["priors"].get(entry.noun, [])],
        r.prior_prompt(entry.noun),
        entry.index,
        config,
        model_dir,
        feature_model=state["feature_model"],
        accelerator=state["accelerator"],
        progress=ctx.progress,
    )


def _control_record(ctx, entry) -> dict[str, Any]:
    """The marker's `control` list (only when the recipe has a control split, so other markers stay as they were)."""
    jobs = control_jobs(ctx, entry)
    return {"control": [{"file": j.path.name, "prompt": j.prompt, "seed": j.seed} for j in jobs]} if jobs else {}


def after_marker(ctx, entry) -> None:
    """Once the class's marker is written, its fine-tuned weights can go."""
    if not ctx.keep_weights:
        shutil.rmtree(ctx.class_dir(entry.index) / "model", ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Stage 5: export


def export_splits(ctx, markers: dict, refs: dict):
    from spurbench import imagenet

    r = ctx.recipe

    def common(entry) -> dict:
        return dict(
            label=entry.index,
            class_name=imagenet.class_name(entry.index),
            spurious_feature=entry.spurious_feature,
            component=int(refs[entry.index].component),
            builder=r.builder,
        )

    kept = _mined(ctx, markers)

    def test_rows():
        for entry in ctx.classes:
            for im in markers[entry.index]["images"]:
                if kept is not None and (entry.index, im["file"]) not in kept:
                    continue
                yield generated_row(ctx.class_dir(entry.index) / "images" / im["file"], im, **common(entry))

    def reference_rows():
        for entry in ctx.classes:
            for path in refs[entry.index].images:
                yield reference_row(path, **common(entry))

    def control_rows():
        for entry in ctx.classes:
            for im in markers[entry.index].get("control") or []:
                # source "generated" (by the base model): the split says it is the control
                yield generated_row(ctx.class_dir(entry.index) / "control" / im["file"], im, **common(entry))

    counts = {
        "test": sum(len(m["images"]) for m in markers.values()) if kept is None else len(kept),
        "reference": sum(len(x.images) for x in refs.values()),
    }
    splits = {"test": test_rows(), "reference": reference_rows()}
    if r.control is not None:
        counts["control"] = sum(len(m.get("control") or []) for m in markers.values())
        splits["control"] = control_rows()
    return splits, None, counts


#: what the card says of the control split
CONTROL_INTRO = (
    " Split `control` is the control: per class, images sampled from the base model (never fine-tuned) with the "
    "same prompts without the identifier, the same sampler and the same seeds as the class's first test images. "
    "A classifier fooled as often by `control` as by `test` is fooled by the generation, not by a learned spurious "
    "feature: `spurbench eval` reports the lift (test rate minus control rate) per class with its interval."
)


def _mined(ctx, markers: dict) -> set | None:
    """The (class, file) of the test images the `mine:` stage keeps (fooling >= min_fooled surrogates); None: all."""
    from spurbench.generate.stages import mine_fooled

    mine = ctx.recipe.mine
    if mine is None:
        return None
    images = [(c.index, im["file"]) for c in ctx.classes for im in markers[c.index]["images"]]
    fooled = mine_fooled(ctx, [(ctx.class_dir(k) / "images" / f, k) for k, f in images])
    ctx.log(
        f"stage mine: {sum(n >= mine.min_fooled for n in fooled)} of {len(images)} image(s) fool >= {mine.min_fooled}"
    )
    return {image for image, n in zip(images, fooled, strict=True) if n >= mine.min_fooled}


def _mine_text(r, markers: dict, counts: dict) -> str:
    generated = sum(len(m["images"]) for m in markers.values())
    names = ", ".join(f"`{s.model}` (sha256 `{s.sha256.lower()}`)" for s in r.mine.surrogates)
    return (
        f"; mined: the {counts['test']} of {generated} generated images that fool at least {r.mine.min_fooled} of "
        f"the surrogates {names} (panel `{r.mine.panel}`): scores of those models on this set are not transfer"
    )


def card_parts(ctx, markers: dict, refs: dict, counts: dict) -> CardParts:
    from spurbench import imagenet

    r = ctx.recipe
    return CardParts(
        pretty_name=f"spurbench {r.name}: spurious images ({r.builder})",
        headline="Spurious images",
        intro=(
            "Each image in split `test` was sampled from Stable Diffusion fine-tuned on reference images of a spurious "
            "feature of one ImageNet class k (`label`), with DreamBooth"
            + (" plus the spurious-feature similarity loss (SFSL)" if r.builder == "sfsl" else "")
            + ". The images are meant to make classifiers predict k without showing k. Split `reference` holds the "
            "reference images the models were fine-tuned on." + (CONTROL_INTRO if r.control is not None else "")
        ),
        provenance_lines=[
            f"- Feature model (SFSL): `{json.dumps(r.feature_model, sort_keys=True) if r.feature_model else 'none'}`"
            + ("" if r.builder == "sfsl" else " (unused: sfsl_weight is 0)"),
        ],
        images_line=(
            f"- Images: {counts['test']} generated ({len(ctx.classes)} classes x {len(r.prompts.generation)} prompts x "
            f"{r.generation.images_per_prompt} images), {counts['reference']} reference"
            + (f", {counts['control']} control (base model)" if "control" in counts else "")
            + (_mine_text(r, markers, counts) if r.mine is not None else "")
            + flagged_text(markers)
        ),
        classes_table=[
            "| k | class | spurious feature | component | noun | references | generated |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {c.index} | {imagenet.class_name(c.index)} | {c.spurious_feature} | {refs[c.index].component} | {c.noun} | "
                f"{len(refs[c.index].images)} ({refs[c.index].source}) | {len(markers[c.index]['images'])} |"
                for c in ctx.classes
            ],
        ],
    )


# ---------------------------------------------------------------------------------------------
# What a build costs (`spurbench build --plan`; spurbench.generate.cost counts the units)


def sfsl_decoder(recipe: Any) -> str:
    """Which decoder the recipe's SFSL decodes with: `full` (the pipeline's VAE) or `tiny` (AutoencoderTiny)."""
    features = getattr(recipe, "features", None)
    return str(getattr(features, "decoder", None) or "full")


def plan(p, r, classes: list) -> None:
    """Stages 2-4 of `classes` into the plan `p` (a spurbench.generate.Plan): per stage its FLOPs, kind, memory
    traffic, fixed per-class costs and peak memory; every file the build writes on `p.disk`."""
    from spurbench.generate.dreambooth import TrainConfig
    from spurbench.generate.recipe import train_config_dict

    arch = cost.add_sd_download(p, "base model", r.base_model, r.resolution)
    feature = cost.add_timm_download(p, "SFSL feature model", r.feature_model)
    cfg = TrainConfig.from_dict(train_config_dict(r))
    g = r.generation
    sample = cost.sample_image(arch, r.resolution, g.num_inference_steps, g.guidance_scale)
    weights = cost.pipeline_bytes(arch)
    png = cost.png_bytes(r.resolution, noise=p.tiny)
    batch_memory = p.batch_memory(arch, g.batch_size, g.guidance_scale)
    _plan_priors(p, r, classes, cfg, sample, weights, png, batch_memory)
    _plan_fine_tune(p, r, classes, cfg, arch, feature, weights)
    n, control = _plan_sampling(p, r, classes, sample, batch_memory)
    _plan_mining(p, r, n)
    photos = _plan_reference_photos(r, classes)
    _plan_disk(p, r, classes, photos, n, control, png, weights)


def _plan_priors(
    p: Plan,
    r: Any,
    classes: list,
    cfg: TrainConfig,
    sample: int,
    weights: int,
    png: int,
    batch_memory: Memory | None,
) -> None:
    """Stage 2: the class-prior images, sampled once per noun with the base model (prior preservation only)."""
    nouns = {c.noun for c in classes}
    if cfg.with_prior_preservation and r.num_class_images:
        p.extra_images += len(nouns) * r.num_class_images
        p.add(
            "2 class priors (sampling, base model)",
            p.extra_images,
            "image",
            sample,
            f"{len(nouns)} noun(s) x {r.num_class_images}, batch {r.generation.batch_size}",
            kind="sample",
            reads=weights,
            builds=1,
            fixed_note="the base pipeline loaded once",
            memory=batch_memory,
        )
        p.add_disk("class priors (work/priors)", "work", p.extra_images * png, f"{png:,} B each")


def _plan_fine_tune(
    p: Plan, r: Any, classes: list, cfg: TrainConfig, arch: SDArch, feature: str | None, weights: int
) -> None:
    """Stage 3: DreamBooth's steps per class and, with SFSL, the similarity loss's extra cost on its steps."""
    steps = len(classes) * cfg.max_train_steps
    # what a DreamBooth step is: the same for its FLOPs and its peak memory
    setting = (
        arch,
        r.resolution,
        cfg.train_batch_size,
        cfg.with_prior_preservation,
        cfg.train_text_encoder,
        cfg.gradient_checkpointing,
    )
    traffic, traffic_note = cost.step_traffic(
        cost.trained_parameters(arch, cfg.train_text_encoder), p.precision, cfg.gradient_checkpointing
    )
    use_sfsl = cfg.sfsl_weight > 0 and feature
    decoder = sfsl_decoder(r) if use_sfsl else None
    p.add(
        "3 fine-tune: DreamBooth step",
        steps,
        "step",
        cost.dreambooth_step(*setting),
        f"batch {cfg.train_batch_size}"
        + (" + prior" if cfg.with_prior_preservation else "")
        + (", gradient checkpointing (recomputed forward counted)" if cfg.gradient_checkpointing else ""),
        kind="train",
        traffic_each=traffic,
        traffic_note=traffic_note,
        # per class: the base pipeline loaded to train, again to assemble the saved pipeline, the fine-tuned one
        # loaded to sample; the fine-tuned one written once
        reads=3 * len(classes) * weights,
        writes=len(classes) * weights,
        builds=3 * len(classes),
        fixed_note="per class: base loaded twice (train, save), fine-tuned pipeline saved and loaded to sample",
        memory=cost.train_memory(*setting, p.precision, (feature, decoder) if use_sfsl else None) if p.memory else None,
    )
    if use_sfsl:
        t_max = cfg.sfsl_max_timestep
        extra = cost.sfsl_extra(arch, r.resolution, feature, decoder, cfg.train_batch_size, cfg.gradient_checkpointing)
        # the similarity loss runs only on steps whose timestep t < sfsl_max_timestep (t uniform in [0, 1000))
        share = min(t_max, 1000) / 1000 if t_max is not None else 1.0
        p.add(
            f"3 fine-tune: SFSL extra ({decoder} decoder)",
            round(steps * share),
            "step",
            extra,
            f"steps with t < {t_max} of 1000 (uniform t)" if t_max is not None else "every step",
            kind="train",
        )


def _plan_sampling(p: Plan, r: Any, classes: list, sample: int, batch_memory: Memory | None) -> tuple[int, int]:
    """Stage 4: the fine-tuned models' images and the control split's (base model); returns both counts."""
    g = r.generation
    n = len(classes) * len(r.prompts.generation) * g.images_per_prompt
    p.images += n
    p.add(
        "4 sampling (fine-tuned model)",
        n,
        "image",
        sample,
        f"{g.num_inference_steps} steps, guidance {g.guidance_scale}, batch {g.batch_size}",
        kind="sample",
        memory=batch_memory,
    )
    control = 0
    if r.control is not None:  # the control split: the base model, no fine-tuning
        control = len(classes) * r.control.images_per_class
        p.images += control
        p.add(
            "4 control sampling (base model)",
            control,
            "image",
            sample,
            f"{r.control.images_per_class} per class",
            kind="sample",
            memory=batch_memory,
        )
    return n, control


def _plan_mining(p: Plan, r: Any, n: int) -> None:
    """The mine: stage, one forward of each surrogate per generated image (recipes with `mine:` only)."""
    if r.mine is not None:
        from spurbench.generate.recipe import mine_specs

        for spec in mine_specs(r.mine):
            name = cost.add_timm_download(p, f"mining surrogate {spec['model']}", spec)
            p.add(
                f"mine: {name} forward",
                n,
                "image",
                cost.classifier_pass(name),
                "keeps images fooling >= k",
                kind="vision",
            )


def _plan_reference_photos(r: Any, classes: list) -> Photos:
    """The reference photos of each class (the reference split's rows), counted or assumed where not on disk."""
    photos = cost.Photos()
    for c in classes:
        ref = c.references
        limit = r.references.max_per_class
        if ref.samples:
            photos.add(c.index, samples=ref.samples, limit=limit)
        elif ref.folder is not None:
            photos.add(c.index, folder=ref.folder, limit=limit)
        else:
            folder = cost.spurious_imagenet_folder(r.references.spurious_imagenet.root, c.index)
            photos.add(c.index, folder=folder, limit=limit, assumed=cost.SPURIOUS_IMAGENET_PER_CLASS)
    return photos


def _plan_disk(p: Plan, r: Any, classes: list, photos: Photos, n: int, control: int, png: int, weights: int) -> None:
    """Every file the build writes after the priors: work folder and export, on `p.disk`."""
    p.add_photos_written(photos, "reference")
    p.add_disk("generated images (work/classes)", "work", n * png, f"{png:,} B each")
    if r.keep_weights:
        p.add_disk("fine-tuned pipelines (keep_weights)", "work", len(classes) * weights)
    else:
        p.add_disk("one fine-tuned pipeline at a time", "work", weights, transient=True)
    p.add_disk("export: test split", "export", n * png)
    if control:
        p.add_disk("control images (work)", "work", control * png, f"{png:,} B each")
        p.add_disk("export: control split", "export", control * png)
    p.add_export_end(photos)
