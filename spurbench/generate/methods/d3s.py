"""Method `d3s`: background-shift images, the class object present on backgrounds it rarely appears on.

After D3S (Kattakinda, Levine, Feizi, "Invariant Learning via Diffusion Dreamed Distribution Shifts",
arXiv 2211.10370), in diffusers instead of the CompVis scripts. For class k, background b and image i:

1. The init image ("image guide"): b's template center-cropped to a square and resized to the
   resolution; a photo of k (a foreground) center-cropped to a square, resized to round(fg_scale x
   resolution) and pasted at a uniformly random position drawn from the image's seed.
2. Stable Diffusion img2img from that guide (DDIM, eta 0, 50 steps, strength 0.9 -- so 45 denoising
   steps --, guidance 5), prompt "a photo of a {name}, {definition}, {background}": the class's first
   WordNet lemma and its gloss, read from the installed timm, and b's phrase ("in snow").

Kind `shift`: the object is there, predicting k is the success. The export's `test` split holds the
generated images with columns `background`, `fg_scale`, `init_image`, `init_box` ([x0, y0, x1, y1] of the
pasted foreground in init_image pixels) and `reference_index` (the row of split `reference`, the
foregrounds as they were before pasting, whose photo was pasted). `export: {source_photos: false}` leaves
the foreground photos out (no `reference` split, no `init_image`) for a set meant for the Hub: ImageNet's
photos may not be redistributable. D3S's training side (fg/bg
disentanglement with a mutual-information penalty) is not part of spurbench.
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spurbench.errors import SpurbenchError
from spurbench.generate import cost
from spurbench.generate.methods import (
    CardParts,
    Export,
    flagged_text,
    generated_row,
    reference_control_lines,
    reference_offsets,
    reference_row,
)
from spurbench.generate.recipe import BaseModel, ReferenceSource

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

KIND = "shift"
STAGES = "3-4/5 guides and img2img"
PROMPT_PLACEHOLDERS = ("name", "definition", "background")
DEFAULT_PROMPT = "a photo of a {name}, {definition}, {background}"


# ---------------------------------------------------------------------------------------------
# Recipe schema


def _default_phrases() -> dict:
    from spurbench.generate.backgrounds import D3S_BACKGROUNDS

    return dict(D3S_BACKGROUNDS)


@dataclass(frozen=True)
class Foregrounds:
    """Photos of each class: a folder of folders named by WordNet id (ImageNet train in real use)."""

    folder: str | None = None
    #: use at most this many photos per class (the first by file name); None: all
    per_class: int | None = None


@dataclass(frozen=True)
class Backgrounds:
    """Background templates: `folder` (a folder of folders named by the background word) or `builtin`."""

    folder: str | None = None
    builtin: bool = False
    #: background label word -> prompt phrase; the ten of D3S by default
    phrases: dict = field(default_factory=_default_phrases)
    #: use at most this many templates per background (the first by file name); None: all
    per_background: int | None = None


@dataclass(frozen=True)
class D3SClass:
    index: int
    #: this class's photos instead of foregrounds.folder: `folder: <path>` or `samples: [chelsea, ...]`
    foregrounds: ReferenceSource | None = None


@dataclass(frozen=True)
class Img2Img:
    num_inference_steps: int = 50
    #: noise strength: img2img runs int(strength x num_inference_steps) denoising steps
    strength: float = 0.9
    guidance_scale: float = 5.0
    eta: float = 0.0
    scheduler: str = "DDIMScheduler"
    #: images per pipeline call; part of the recipe because results can differ in the last bit with it
    batch_size: int = 8
    safety_checker: bool = False

    @property
    def denoising_steps(self) -> int:
        """The UNet calls of one image: diffusers' img2img runs int(strength x num_inference_steps)."""
        return min(int(self.strength * self.num_inference_steps), self.num_inference_steps)


@dataclass(frozen=True, kw_only=True)
class D3SRecipe:
    method: str = "d3s"
    name: str
    description: str = ""
    base_model: BaseModel
    resolution: int = 512
    foregrounds: Foregrounds = field(default_factory=Foregrounds)
    backgrounds: Backgrounds
    #: `all` (the 1000 ImageNet classes) or a list of {index, foregrounds?}
    classes: list[D3SClass]
    images_per_background: int
    fg_scale: float = 0.4
    prompt: str = DEFAULT_PROMPT
    generation: Img2Img = field(default_factory=Img2Img)
    export: Export = field(default_factory=Export)
    seed: int = 0
    mixed_precision: str = "no"
    licenses: dict
    dataset_license: str = "other"
    created: str | None = None
    #: set when the recipe says `classes: all` (kept so the canonical form says `all`, not 1000 entries)
    all_classes: bool = False

    keep_weights = False  # nothing is fine-tuned

    @property
    def builder(self) -> str:
        return "d3s"

    @property
    def base_model_name(self) -> str:
        from spurbench.generate.recipe import base_model_name

        return base_model_name(self.base_model, self.resolution)

    @property
    def background_words(self) -> list[str]:
        return list(self.backgrounds.phrases)

    def class_by_index(self) -> dict[int, D3SClass]:
        return {c.index: c for c in self.classes}

    def prompt_for(self, index: int, background: str) -> str:
        from spurbench import imagenet

        name = imagenet.class_lemmas(index)[0]
        # "a photo of an Egyptian cat": the article before {name} follows its first letter (no ImageNet lemma
        # starts with a silent consonant or a "you"-sounding vowel in the first lemmas the recipes use)
        template = self.prompt.replace("a {name}", "an {name}") if name[:1].lower() in "aeiou" else self.prompt
        return template.format(
            name=name,
            definition=imagenet.class_definition(index),
            background=self.backgrounds.phrases[background],
        )

    def to_dict(self) -> dict[str, Any]:
        from spurbench.generate.schema import plain

        d = plain(self)
        del d["all_classes"]
        if self.all_classes:
            d["classes"] = "all"
        return d


def recipe_from_dict(data: Mapping[str, Any]) -> D3SRecipe:
    from spurbench import imagenet
    from spurbench.generate.recipe import check_common
    from spurbench.generate.schema import convert

    data = dict(data)
    data.pop("all_classes", None)  # not a user key
    every = data.get("classes") == "all"
    if every:
        data["classes"] = [{"index": i} for i in range(imagenet.NUM_CLASSES)]
    r = convert(D3SRecipe, data, "")
    r = dataclasses.replace(r, all_classes=every)
    check_common(r)
    _check(r)
    return r


def _check(r: D3SRecipe) -> None:
    _check_numbers(r)
    _check_prompt(r)
    _check_backgrounds(r)
    _check_classes(r)
    needed = ["base_model", "foregrounds", "backgrounds"]
    missing = [k for k in needed if not str(r.licenses.get(k) or "").strip()]
    if missing:
        raise SpurbenchError(
            f"key 'licenses' must state the licence of every input: missing {', '.join(f'licenses.{k}' for k in missing)}"
        )


def _check_numbers(r: D3SRecipe) -> None:
    """The guide's foreground scale, img2img's settings and the images per background."""
    if not 0 < r.fg_scale <= 1:
        raise SpurbenchError(
            f"key 'fg_scale' must be in (0, 1] (the foreground's side over the resolution), got {r.fg_scale}"
        )
    if round(r.fg_scale * r.resolution) < 1:
        raise SpurbenchError(
            f"key 'fg_scale': {r.fg_scale} x resolution {r.resolution} leaves no foreground pixel; raise either"
        )
    g = r.generation
    if not 0 < g.strength <= 1:
        raise SpurbenchError(f"key 'generation.strength' must be in (0, 1], got {g.strength}")
    for key in ("num_inference_steps", "batch_size"):
        if getattr(g, key) < 1:
            raise SpurbenchError(f"key 'generation.{key}' must be >= 1, got {getattr(g, key)}")
    if g.denoising_steps < 1:
        raise SpurbenchError(
            f"key 'generation.strength': {g.strength} x {g.num_inference_steps} steps is less than one denoising step; raise either"
        )
    if g.eta < 0:
        raise SpurbenchError(f"key 'generation.eta' must be >= 0 (0: deterministic DDIM), got {g.eta}")
    if r.images_per_background < 1:
        raise SpurbenchError(f"key 'images_per_background' must be >= 1, got {r.images_per_background}")


def _check_prompt(r: D3SRecipe) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(r.prompt) if f is not None]
    except ValueError as err:
        raise SpurbenchError(f"key 'prompt': template {r.prompt!r} is malformed ({err})") from None
    bad = [n for n in names if n not in PROMPT_PLACEHOLDERS]
    if bad:
        raise SpurbenchError(
            f"key 'prompt': unknown placeholder {{{bad[0]}}}; use {{name}}, {{definition}} and {{background}}"
        )


def _check_backgrounds(r: D3SRecipe) -> None:
    """Where the templates come from, their phrases, and how many templates and photos a build takes."""
    b = r.backgrounds
    if (b.folder is None) == (not b.builtin):
        raise SpurbenchError(
            "key 'backgrounds' needs exactly one of folder: <path> (a folder per background word) or builtin: true"
        )
    if not b.phrases:
        raise SpurbenchError("key 'backgrounds.phrases' must map at least one background word to its prompt phrase")
    for word, phrase in b.phrases.items():
        if not isinstance(word, str) or not word.strip() or "/" in word or not isinstance(phrase, str):
            raise SpurbenchError(
                f"key 'backgrounds.phrases.{word}': a background word (folder name) must map to a phrase string like 'in snow'"
            )
    for key, value in (
        ("backgrounds.per_background", r.backgrounds.per_background),
        ("foregrounds.per_class", r.foregrounds.per_class),
    ):
        if value is not None and value < 1:
            raise SpurbenchError(f"key '{key}' must be >= 1 or null, got {value}")


def _check_classes(r: D3SRecipe) -> None:
    """Each class once, each with exactly one source of foreground photos."""
    from spurbench.generate.recipe import check_class_index

    if not r.classes:
        raise SpurbenchError("key 'classes' must list at least one class, or be `all`")
    seen: set[int] = set()
    for i, c in enumerate(r.classes):
        check_class_index(f"classes[{i}]", c.index, seen)
        src = c.foregrounds
        if src is not None:
            given = [k for k, v in (("folder", src.folder), ("samples", src.samples)) if v]
            if src.spurious_imagenet or len(given) != 1:
                raise SpurbenchError(
                    f"key 'classes[{i}].foregrounds' needs exactly one of folder: <path> or samples: [<photo>, ...]"
                )
        elif r.foregrounds.folder is None:
            raise SpurbenchError(
                f"key 'classes[{i}]': class {c.index} has no foregrounds; set foregrounds.folder (a folder per WordNet id) "
                "or the class's own foregrounds"
            )


def provenance(recipe: D3SRecipe) -> dict[str, Any]:
    g = recipe.generation
    return {
        "method": "d3s",
        "backgrounds": recipe.background_words,
        "fg_scale": recipe.fg_scale,
        "img2img": {
            "scheduler": g.scheduler,
            "eta": g.eta,
            "num_inference_steps": g.num_inference_steps,
            "strength": g.strength,
            "guidance_scale": g.guidance_scale,
        },
    }


# ---------------------------------------------------------------------------------------------
# The image guide


def square_crop(image: Image.Image) -> Image.Image:
    """The largest centred square of an image."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def make_guide(
    background: Image.Image, foreground: Image.Image, resolution: int, fg_scale: float, rng: np.random.Generator
) -> tuple[Image.Image, list[int]]:
    """D3S's init image: the background squared and resized to `resolution`, the foreground squared,
    resized to round(fg_scale x resolution) and pasted at a uniformly random position (from `rng`).

    Returns the guide and the pasted box [x0, y0, x1, y1] (x1, y1 exclusive) in guide pixels."""
    from PIL import Image

    guide = square_crop(background.convert("RGB")).resize((resolution, resolution), Image.Resampling.BICUBIC)
    side = round(fg_scale * resolution)
    fg = square_crop(foreground.convert("RGB")).resize((side, side), Image.Resampling.BICUBIC)
    x0, y0 = (int(v) for v in rng.integers(0, resolution - side + 1, size=2))
    guide.paste(fg, (x0, y0))
    return guide, [x0, y0, x0 + side, y0 + side]


# ---------------------------------------------------------------------------------------------
# Inputs: checked before anything is written, foregrounds as the shared stage 1 references


def check_inputs(ctx) -> None:
    """Every selected class's foreground folder and every background folder exist (one clear line if not)."""
    from spurbench import imagenet
    from spurbench.generate.backgrounds import folder_templates
    from spurbench.generate.references import check_image

    r = ctx.recipe
    if r.backgrounds.folder is not None:
        root = _path(ctx.backgrounds_root or r.backgrounds.folder)
        if not root.is_dir():
            raise SpurbenchError(
                f"backgrounds folder '{root}' does not exist; give a folder holding one folder per background word"
            )
        for word in r.background_words:
            for f in folder_templates(root, word):
                check_image(f)  # an unreadable template: one line naming it, before anything is written
    for entry in ctx.classes:
        if entry.foregrounds is None:
            root = _path(ctx.foregrounds_root or r.foregrounds.folder)
            wnid = imagenet.wnids()[entry.index]
            if not (root / wnid).is_dir():
                raise SpurbenchError(
                    f"foregrounds folder '{root}' has no folder '{wnid}' for class {entry.index} ({imagenet.class_name(entry.index)}); "
                    "add its photos there or leave the class out with --classes"
                )


def _path(p: str | Path) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def resolve_references(ctx, entry, samples_dir, cache: dict):
    from spurbench import imagenet
    from spurbench.generate.references import ClassReferences, check_image, list_images, materialise_samples

    r = ctx.recipe
    src = entry.foregrounds
    if src is not None and src.samples:
        files = materialise_samples(src.samples, samples_dir)
        source = "sample photos " + ", ".join(src.samples)
    else:
        folder = (
            _path(src.folder)
            if src is not None
            else _path(ctx.foregrounds_root or r.foregrounds.folder) / imagenet.wnids()[entry.index]
        )
        files = list_images(folder)
        source = f"folder {folder.name}"
    if r.foregrounds.per_class is not None:
        files = files[: r.foregrounds.per_class]
    return ClassReferences(
        index=entry.index,
        component=-1,
        source=source,
        images=[str(Path(f).resolve()) for f in files],
        sha256=[check_image(f) for f in files],
    )


def background_templates(ctx) -> dict[str, list[Path]]:
    """Each background word's template files (built-in ones written into the work dir first)."""
    from spurbench.generate.backgrounds import folder_templates, materialise_builtin

    r = ctx.recipe
    out = {}
    for word in r.background_words:
        if r.backgrounds.builtin:
            files = materialise_builtin(word, ctx.work / "backgrounds")
        else:
            files = folder_templates(_path(ctx.backgrounds_root or r.backgrounds.folder), word)
        out[word] = files[: r.backgrounds.per_background] if r.backgrounds.per_background else files
    return out


# ---------------------------------------------------------------------------------------------
# Per process and per class


def prepare(ctx, pending: list, refs: dict, base_model: str, base_revision: str | None) -> dict[str, Any]:
    import diffusers

    # D3S's prompts carry a WordNet gloss and may pass CLIP's 77 tokens; the pipeline then warns once per
    # batch that it truncates them. That is expected here (D3S's own code truncated them the same way).
    diffusers.utils.logging.get_logger(
        "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img"
    ).setLevel(40)
    return {"templates": background_templates(ctx), "pipe": None, "cut_said": False}


def cut_prompts(tokenizer, prompts: list[str]) -> dict[str, str]:
    """prompt -> the words the text encoder never sees, for every prompt longer than the tokenizer's maximum
    length (CLIP's 77 tokens, start and end tokens included): the cut the pipeline makes."""
    limit = tokenizer.model_max_length
    cut = {}
    for prompt in dict.fromkeys(prompts):
        ids = tokenizer(prompt, truncation=False).input_ids
        if len(ids) > limit:
            cut[prompt] = tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True)
    return cut


def class_jobs(ctx, entry, refs: dict, templates: dict) -> list[dict]:
    """Every image of a class, background by background: its seed, foreground, template and paste position."""
    import numpy as np

    from spurbench.generate.sampling import image_seed

    r = ctx.recipe
    fgs = refs[entry.index].images
    jobs = []
    for word in r.background_words:
        for i in range(r.images_per_background):
            seed = image_seed(r.seed, "d3s", entry.index, word, i)
            rng = np.random.default_rng(seed)
            jobs.append(
                {
                    "background": word,
                    "seed": seed,
                    "file": f"{word}_{i:04d}.png",
                    "init": f"{word}_{i:04d}_init.png",
                    "prompt": r.prompt_for(entry.index, word),
                    "foreground": i % len(fgs),  # every foreground in turn: each background sees the same ones
                    "template": int(rng.integers(len(templates[word]))),
                    "rng": rng,
                }
            )
    return jobs


def make_class(ctx, entry, refs: dict, state: dict) -> dict[str, Any]:
    from spurbench.generate.references import load_image
    from spurbench.generate.sampling import Job, load_pipeline, sample, save_png, torch_dtype

    r = ctx.recipe
    g = r.generation
    images = ctx.class_dir(entry.index) / "images"
    jobs = class_jobs(ctx, entry, refs, state["templates"])
    fgs = [load_image(p) for p in refs[entry.index].images]
    for job in jobs:
        bg = load_image(state["templates"][job["background"]][job["template"]])
        guide, box = make_guide(bg, fgs[job["foreground"]], r.resolution, r.fg_scale, job.pop("rng"))
        job["init_box"] = box
        if not (images / job["init"]).is_file():
            save_png(guide, images / job["init"])
    if state["pipe"] is None:
        state["pipe"] = load_pipeline(
            ctx.base_model,
            ctx.device,
            torch_dtype(ctx.mixed_precision, ctx.device),
            scheduler=g.scheduler,
            safety_checker=g.safety_checker,
            img2img=True,
        )
    cut = cut_prompts(state["pipe"].tokenizer, [j["prompt"] for j in jobs])
    if cut:  # one line per class naming what is lost (the tokenizer's own warning is silenced by the CLI)
        words = list(dict.fromkeys(j["background"] for j in jobs if j["prompt"] in cut))
        first = next(iter(cut.values()))
        why = (
            ""
            if state["cut_said"]
            else f" (the text encoder reads {state['pipe'].tokenizer.model_max_length} tokens; D3S's own code cut them too)"
        )
        ctx.log(
            f"class {entry.index}: prompts cut to fit{why}: backgrounds {', '.join(words)}; e.g. '{words[0]}' loses {first!r}"
        )
        state["cut_said"] = True
    flagged = sample(
        state["pipe"],
        [Job(j["prompt"], j["seed"], images / j["file"], images / j["init"]) for j in jobs],
        batch_size=g.batch_size,
        num_inference_steps=g.num_inference_steps,
        guidance_scale=g.guidance_scale,
        resolution=r.resolution,
        progress=ctx.progress,
        desc=f"img2img class {entry.index}",
        strength=g.strength,
        eta=g.eta,
    )
    return {
        "images": [
            {k: j[k] for k in ("file", "init", "prompt", "seed", "background", "foreground", "template", "init_box")}
            for j in jobs
        ],
        "nsfw_flagged": flagged,
    }


# ---------------------------------------------------------------------------------------------
# Export


def extra_features() -> dict:
    from datasets import Image, Sequence, Value

    return {
        "background": Value("string"),
        "fg_scale": Value("float32"),
        "init_image": Image(),
        "init_box": Sequence(Value("int32"), length=4),
        "reference_index": Value("int64"),
    }


def export_splits(ctx, markers: dict, refs: dict):
    from spurbench import imagenet
    from spurbench.dataset import encode_image

    r = ctx.recipe
    first, offset = reference_offsets(ctx.classes, refs)

    def common(entry) -> dict:
        return dict(label=entry.index, class_name=imagenet.class_name(entry.index), component=-1, builder=r.builder)

    def test_rows():
        for entry in ctx.classes:
            folder = ctx.class_dir(entry.index) / "images"
            for im in markers[entry.index]["images"]:
                yield generated_row(
                    folder / im["file"],
                    im,
                    spurious_feature=r.backgrounds.phrases[im["background"]],
                    background=im["background"],
                    fg_scale=r.fg_scale,
                    init_box=im["init_box"],
                    # embedded bytes, like `image`; the guide holds the foreground photo, so it goes with them
                    init_image=encode_image(folder / im["init"]) if r.export.source_photos else None,
                    reference_index=first[entry.index] + im["foreground"],
                    **common(entry),
                )

    def reference_rows():
        for entry in ctx.classes:
            for j, path in enumerate(refs[entry.index].images):
                yield reference_row(
                    path,
                    spurious_feature="",
                    background=None,
                    fg_scale=None,
                    init_image=None,
                    init_box=None,
                    reference_index=first[entry.index] + j,
                    **common(entry),
                )

    counts = {"test": sum(len(m["images"]) for m in markers.values()), "reference": offset}
    if not r.export.source_photos:  # `reference_index` and `init_box` stay: they say which photo went where
        return {"test": test_rows()}, extra_features(), {"test": counts["test"]}
    return {"test": test_rows(), "reference": reference_rows()}, extra_features(), counts


def _photos_text(r) -> str:
    licence = r.licenses.get("foregrounds")
    held = (
        "They are exported as split `reference` and inside every `init_image`. "
        if r.export.source_photos
        else "This export leaves them out (`export.source_photos: false`): no split `reference`, `init_image` is empty, "
        "`reference_index` and `init_box` still say which photo was pasted where. "
    )
    return (
        "The foreground photos are the recipe's own inputs" + (f" (licence: {licence})" if licence else "") + "; "
        "photos from ImageNet (as in builders/d3s.yaml) come under ImageNet's terms of access and may not be redistributable. "
        + held
        + (
            "For a set meant for the Hub, `export: {source_photos: false}` leaves them out."
            if r.export.source_photos
            else ""
        )
    )


def card_parts(ctx, markers: dict, refs: dict, counts: dict) -> CardParts:
    from spurbench import imagenet

    r = ctx.recipe
    g = r.generation
    return CardParts(
        pretty_name=f"spurbench {r.name}: background-shift images (d3s)",
        headline="Background-shift images",
        intro=(
            "Each image in split `test` shows an object of ImageNet class `label` on a background it rarely appears on "
            "(column `background`), made the way D3S (Kattakinda et al., arXiv 2211.10370) makes them: a photo of the class "
            "(split `reference`, row `reference_index`) pasted on a background template (`init_image`, box `init_box`) and "
            "redrawn by Stable Diffusion img2img. Set kind `shift`: a classifier should still predict `label`; score it by "
            "accuracy per background against its accuracy on the `reference` photos, paired image by image (each image "
            "against the photo it was made from). The reference is therefore the pasted photos themselves, not D3S's "
            "(accuracy on ImageNet val): it is a fair reference only when those photos are held out from the classifiers' "
            "training data (the `d3s` recipe takes ImageNet val; see the foregrounds row of each class below). "
            + _photos_text(r)
        ),
        provenance_lines=[
            *reference_control_lines(r, "the class photos pasted onto the backgrounds"),
            f"- Img2img: `{g.scheduler}`, eta {g.eta}, {g.num_inference_steps} steps at strength {g.strength} "
            f"({g.denoising_steps} denoising steps), guidance {g.guidance_scale}, batch size {g.batch_size}",
            f"- Guide: foreground at {r.fg_scale} x {r.resolution} px = {round(r.fg_scale * r.resolution)} px, random position; "
            f"prompt template `{r.prompt}`",
            "- Backgrounds: "
            + ", ".join(f"{w} ({p})" for w, p in r.backgrounds.phrases.items())
            + (
                " -- built-in templates (scikit-image textures and images drawn in code)"
                if r.backgrounds.builtin
                else ""
            ),
        ],
        images_line=(
            f"- Images: {counts['test']} generated ({len(ctx.classes)} classes x {len(r.background_words)} backgrounds x "
            f"{r.images_per_background} images), "
            + (
                f"{counts['reference']} reference (the foregrounds before pasting)"
                if r.export.source_photos
                else f"{sum(len(x.images) for x in refs.values())} foreground photos left out of this export"
            )
            + flagged_text(markers)
        ),
        classes_table=[
            "| k | class | prompt name | foregrounds | generated |",
            "|---|---|---|---|---|",
            *[
                f"| {c.index} | {imagenet.class_name(c.index)} | {imagenet.class_lemmas(c.index)[0]} | "
                f"{len(refs[c.index].images)} ({refs[c.index].source}) | {len(markers[c.index]['images'])} |"
                for c in ctx.classes
            ],
        ],
    )


# ---------------------------------------------------------------------------------------------
# What a build costs (`spurbench build --plan`; spurbench.generate.cost counts the units)


def plan(p, r: D3SRecipe, classes: list) -> None:
    """Stage 3 of `classes` into the plan `p` (a spurbench.generate.cost.Plan): the img2img stage with its kind,
    pipeline load and peak memory, and every file the build writes (guides, backgrounds, photos, export with
    `export.source_photos` on or off) on `p.disk`."""
    from spurbench import imagenet

    arch = cost.add_sd_download(p, "base model", r.base_model, r.resolution)
    g = r.generation
    n = len(classes) * len(r.background_words) * r.images_per_background
    p.images += n
    p.add(
        "3 img2img (D3S)",
        n,
        "image",
        cost.img2img_image(arch, r.resolution, g.num_inference_steps, g.strength, g.guidance_scale),
        f"{len(r.background_words)} backgrounds x {r.images_per_background}, {g.denoising_steps} steps, batch {g.batch_size}",
        kind="sample",
        reads=cost.pipeline_bytes(arch),
        builds=1,
        fixed_note="the pipeline loaded once per process",
        memory=p.batch_memory(arch, g.batch_size, g.guidance_scale),
    )
    photos = cost.Photos()
    limit = r.foregrounds.per_class
    for c in classes:
        src = c.foregrounds
        if src is not None and src.samples:
            photos.add(c.index, samples=src.samples, limit=limit)
        elif src is not None and src.folder:
            photos.add(c.index, folder=src.folder, limit=limit)
        else:  # the class's folder (named by WordNet id) in foregrounds.folder
            root = r.foregrounds.folder
            photos.add(c.index, folder=root and Path(root).expanduser() / imagenet.wnids()[c.index], limit=limit)
    png = cost.png_bytes(r.resolution, noise=p.tiny)
    guide = cost.png_bytes(r.resolution)  # a photo pasted on a template: photo-like, not noise
    p.add_photos_written(photos, "foreground")
    if r.backgrounds.builtin:
        p.add_disk(
            "built-in background templates (work/backgrounds)", "work", _builtin_bytes(tuple(r.background_words))
        )
    p.add_disk("generated images (work/classes)", "work", n * png, f"{png:,} B each")
    p.add_disk("init_image guides (work/classes)", "work", n * guide, f"one per image, ~{guide:,} B each")
    p.add_disk("export: test split images", "export", n * png)
    if r.export.source_photos:
        p.add_disk("export: init_image guides", "export", n * guide, "in every test row")
    p.add_export_end(photos, r.export.source_photos, "no reference split and no init_image guides in the export")


@functools.cache
def _builtin_bytes(words: tuple) -> int:
    """Exact bytes of the built-in templates stage 1 writes (PNG-encoded in memory)."""
    import io

    from PIL import Image

    from spurbench.generate.backgrounds import BUILTIN

    total = 0
    for word in words:
        buf = io.BytesIO()
        Image.fromarray(BUILTIN[word]()).save(buf, format="PNG")
        total += len(buf.getvalue())
    return total
