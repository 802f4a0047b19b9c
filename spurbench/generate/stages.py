"""Build a dataset from a recipe: the stages every generation method shares.

The recipe's `method:` (spurbench.generate.methods: `sfsl`, its alias `dreambooth`, `d3s`, ...) says what
is made per class and how one image is made; this module does the rest, the same for every method:
the work dir (bound to the recipe's hash), the base model, each class's reference images (stage 1),
sharding classes over processes, a completion marker per class, and the export (Parquet shards +
dataset card) that `datasets.load_dataset(<out>)` reads.

Every stage is resumable: kill the build at any moment and re-run the same command; finished work is
kept, finished classes are not redone, and the export is byte-identical to an uninterrupted build.
State lives in the work dir (default `<out>.work`).

Several processes: `accelerate launch --num_processes N -m spurbench build ...` gives process i the
classes i, i+N, ...; the main process exports once all are done.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spurbench.errors import SpurbenchError, hub_failure_reason
from spurbench.files import RECORD_NAME, WrittenFolder, has_record
from spurbench.once import build_once

#: per-class completion marker, written (atomically) only once all its images are on disk
CLASS_MARKER = "done.json"
STATE_FILE = "state.json"
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# how long processes wait for each other at the end (the slowest process may still be fine-tuning)
_BARRIER_TIMEOUT = datetime.timedelta(hours=48)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --out is required unless --plan is given, which argparse cannot say: the usage line says it
    parser.usage = "%(prog)s --recipe NAME|PATH --out DIR [flags]\n       %(prog)s --recipe NAME|PATH --plan [flags]"
    # Flags without a meaningful default use SUPPRESS, so --help does not print "(default: None)".
    _recipe_and_folder_flags(parser, argparse.SUPPRESS)
    _run_flags(parser, argparse.SUPPRESS)
    _plan_flags(parser)


def _recipe_and_folder_flags(parser: argparse.ArgumentParser, none: str) -> None:
    from spurbench.resources import shipped_names  # the help lists what ships, never a copy of it

    parser.add_argument(
        "--recipe",
        required=True,
        metavar="NAME|PATH",
        default=none,
        help="build recipe: a shipped name (" + ", ".join(shipped_names("recipe")) + ") or a path to a YAML file "
        "like builders/smoke.yaml",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=none,
        help="folder to export the dataset to (Parquet shards + README.md card); replaced whole at the end. "
        "Required, except with --plan",
    )
    parser.add_argument(
        "--work-dir",
        default=none,
        metavar="DIR",
        help="folder for resumable state: references, class priors, fine-tuned models, generated images (default: <out>.work)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        default=none,
        metavar="K",
        help="build and export only these ImageNet class indices of the recipe, space- or comma-separated (default: all)",
    )


def _run_flags(parser: argparse.ArgumentParser, none: str) -> None:
    """Where and how the build runs, its inputs' folders, and the upload."""
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train and sample; auto: CUDA if available (under `accelerate launch`, each process's GPU)",
    )
    parser.add_argument(
        "--keep-weights",
        action=argparse.BooleanOptionalAction,
        default=none,
        help="keep each class's fine-tuned pipeline in <work>/classes/<k>/model (diffusers layout, safetensors) "
        "or delete it after generation (default: the recipe's keep_weights)",
    )
    parser.add_argument(
        "--spurious-imagenet",
        default=none,
        metavar="DIR",
        help="where the Spurious ImageNet download is (the folder holding images/); overrides the recipe's references root",
    )
    parser.add_argument(
        "--foregrounds",
        default=none,
        metavar="DIR",
        help="method d3s: the folder of class photos, one folder per WordNet id (e.g. ImageNet train); overrides the recipe's foregrounds.folder",
    )
    parser.add_argument(
        "--backgrounds",
        default=none,
        metavar="DIR",
        help="method d3s: the folder of background templates, one folder per background word; overrides the recipe's backgrounds.folder",
    )
    parser.add_argument(
        "--push-to-hub",
        default=none,
        metavar="ORG/NAME",
        help="after exporting, upload the dataset folder to this Hub dataset repo (token from `hf auth login`, never printed)",
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the Hub repo as private")
    parser.add_argument(
        "--no-progress", action="store_true", help="hide progress bars (stage messages are still printed)"
    )


def _plan_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what the build would cost and exit: stages, models and download sizes, images, disk, GPU-hours "
        "(FLOPs counted on the real architectures without loading any weights; spurbench.generate.cost)",
    )
    parser.add_argument(
        "--plan-gpu",
        default="H100",
        metavar="GPU",
        help="with --plan: the GPU to price GPU-hours on (H100, H200, A100, L40S, L4; CPU with --plan-profile)",
    )
    parser.add_argument(
        "--plan-profile",
        default=None,
        metavar="FILE",
        help="with --plan: a measured cost profile (benchmarks/cost_model.py --measure --write-profile FILE); default "
        "the shipped profile of --plan-gpu in spurbench/generate/profiles/, else stated defaults per kind of stage",
    )
    parser.add_argument(
        "--plan-memory",
        action="store_true",
        help="with --plan: also estimate each stage's peak memory and which GPUs it fits (MemTracker on fake "
        "tensors, no GPU; seconds for sampling, minutes for a real-size training step)",
    )
    parser.add_argument(
        "--plan-utilization",
        type=float,
        default=None,
        metavar="F",
        help="with --plan: one fraction of the GPU's peak FLOP/s for every stage, instead of the profile's per-stage "
        "utilisations (the memory traffic and fixed costs are still added)",
    )


# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    """Everything one process of a build needs."""

    recipe: Any  # spurbench.generate.recipe.Recipe
    recipe_path: Path
    recipe_sha256: str
    classes: list  # ClassEntry, the selection of this run, recipe order
    out: Path
    work: Path
    rank: int
    world: int
    device: Any  # torch.device
    mixed_precision: str
    keep_weights: bool
    spurious_root: str | None
    progress: bool
    command: str
    #: the method's module (spurbench.generate.methods)
    method: Any = None
    #: local folder of the base pipeline, once stage "base model" has run
    base_model: str | None = None
    foregrounds_root: str | None = None
    backgrounds_root: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def log(self, msg: str) -> None:
        prefix = f"[build {self.rank}/{self.world}]" if self.world > 1 else "[build]"
        print(f"{prefix} {msg}", file=sys.stderr, flush=True)

    def class_dir(self, index: int) -> Path:
        return self.work / "classes" / str(index)


def run(args: argparse.Namespace) -> int:
    """`spurbench build`: read the recipe and its classes; with --plan print the bill and stop; else check the flags
    and the output folders, build every class (references, base model, per-class stages; resumable), export the
    set (verified when the recipe says so) and push it on request."""
    from spurbench.generate.recipe import load_recipe

    _fill_defaults(args)
    recipe_path, recipe = load_recipe(args.recipe)
    classes = _select_classes(recipe, args.classes)
    if getattr(args, "plan", False):  # the bill, before anything is loaded or written
        _print_plan(args, recipe, classes, recipe_path)
        return 0
    # a plan is priced before the inputs are chosen; a build needs the real licence of every input for its card
    check_licences(recipe_path, recipe)
    _check_flags(args)
    out = Path(args.out).expanduser()
    from spurbench.dataset import check_out_folder

    # the export replaces --out whole: never a folder holding anything spurbench did not write, nor ., ~ or an input's folder
    check_out_folder(
        out, [recipe_path] + [p for p in (args.spurious_imagenet, args.foregrounds, args.backgrounds) if p]
    )
    work = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
    if out.resolve() == work.resolve() or out.resolve() in work.resolve().parents:
        raise SpurbenchError(
            "--work-dir must not be --out or inside it (the export replaces --out whole); pick another folder"
        )
    # the work dir is spurbench's own (it resumes from what it finds there): a new or empty folder, or one holding
    # the record a build left; a quoted '~', the home folder or a user's non-empty folder is refused, nothing written
    WrittenFolder.claim(work, f"--work-dir '{work}'", create=False)

    state, ctx = _context(args, recipe_path, recipe, classes, out, work)
    started = time.perf_counter()
    _quiet_libraries()
    created = _init_work_dir(ctx)
    base_revision = build_classes(ctx, state)
    if ctx.world > 1:
        ctx.log("waiting for the other processes to finish their classes")
        state.wait_for_everyone()
    if ctx.main:
        export_and_verify(ctx, base_revision, created)
        ctx.log(f"exported {out} in {time.perf_counter() - started:.1f} s")
        if args.push_to_hub:
            push_to_hub(
                out,
                args.push_to_hub,
                private=args.private,
                message=f"spurbench build {recipe.name} (recipe sha256 {ctx.recipe_sha256[:12]})",
            )
            ctx.log(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    if ctx.world > 1:
        state.wait_for_everyone()  # nobody leaves before the export is in place
    return 0


#: the defaults of the flags: None where --help suppresses it (see add_arguments); the others for a caller building its
#: own Namespace
_FLAG_DEFAULTS = {
    **dict.fromkeys(("out", "work_dir", "classes", "keep_weights", "spurious_imagenet", "foregrounds", "backgrounds")),
    "push_to_hub": None,
    "device": "auto",
    "private": False,
    "no_progress": False,
}


def _fill_defaults(args: argparse.Namespace) -> None:
    for name, value in _FLAG_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)


def _print_plan(args: argparse.Namespace, recipe, classes: list, recipe_path: Path) -> None:
    from spurbench.generate.cost import format_plan, plan

    gpu, utilization = getattr(args, "plan_gpu", "H100"), getattr(args, "plan_utilization", None)
    profile = getattr(args, "plan_profile", None)
    memory = bool(getattr(args, "plan_memory", False))
    p = plan(recipe, classes, recipe_path, gpu=gpu, utilization=utilization, profile=profile, memory=memory)
    print(format_plan(p))


def _check_flags(args: argparse.Namespace) -> None:
    if getattr(args, "out", None) is None:
        raise SpurbenchError(
            "the following argument is required: --out DIR (the folder to export the dataset to); or give --plan to see the cost only"
        )
    if args.push_to_hub is not None and not _HUB_REPO.match(args.push_to_hub):
        raise SpurbenchError(
            f"--push-to-hub {args.push_to_hub!r} is not a Hub repo id; use ORG/NAME, e.g. my-org/spurious-imagenet-sfsl"
        )


def _context(args: argparse.Namespace, recipe_path: Path, recipe, classes: list, out: Path, work: Path):
    """The processes (Accelerate) and the build's Context; the method checks its inputs before anything is written."""
    from spurbench.dataset import portable_path
    from spurbench.generate.methods import get_method
    from spurbench.generate.recipe import recipe_hash

    try:
        import torch
        from accelerate import PartialState
    except ImportError as err:
        raise SpurbenchError(
            f'`spurbench build` needs the builder stack ({err.name} is missing); install it with: pip install "spurbench[build]"'
        ) from None

    cpu = args.device == "cpu" or not torch.cuda.is_available()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SpurbenchError(
            "--device cuda but no CUDA GPU is visible; use --device cpu (slow) or run on a GPU machine"
        )
    state = PartialState(cpu=cpu, timeout=_BARRIER_TIMEOUT)
    mixed_precision = recipe.mixed_precision
    if cpu and mixed_precision == "fp16":
        mixed_precision = "no"  # fp16 autocast is a GPU feature; on CPU train in float32
    # recorded in the card: paths relative to the working directory (or the folder's name), never a local absolute path
    command = " ".join(
        ["spurbench", "build", "--recipe", portable_path(args.recipe), "--out", portable_path(args.out)]
        + (["--classes", *[str(c.index) for c in classes]] if args.classes else [])
    )
    ctx = Context(
        recipe=recipe,
        recipe_path=recipe_path,
        recipe_sha256=recipe_hash(recipe),
        classes=classes,
        out=out,
        work=work,
        rank=state.process_index,
        world=state.num_processes,
        device=state.device,
        mixed_precision=mixed_precision,
        keep_weights=recipe.keep_weights if args.keep_weights is None else args.keep_weights,
        spurious_root=args.spurious_imagenet,
        progress=not args.no_progress,
        command=command,
        method=get_method(recipe.method),
        foregrounds_root=args.foregrounds,
        backgrounds_root=args.backgrounds,
    )
    if hasattr(ctx.method, "check_inputs"):
        ctx.method.check_inputs(ctx)  # before anything is written
    if ctx.mixed_precision != recipe.mixed_precision:
        ctx.log(f"note: mixed_precision {recipe.mixed_precision} needs a GPU; training in float32 on CPU")
    return state, ctx


def build_classes(ctx: Context, state) -> str | None:
    """Stages 1-4 for this process's classes: their references (first: a bad image fails fast), the base model,
    the method's per-process preparation, then every unfinished class. Returns the base model's revision."""
    mine = ctx.classes[ctx.rank :: ctx.world]
    ctx.log(
        f"recipe {ctx.recipe.name} (sha256 {ctx.recipe_sha256[:12]}), {len(ctx.classes)} classes"
        + (f", this process: {', '.join(str(c.index) for c in mine) or 'none'}" if ctx.world > 1 else "")
        + f", work dir {ctx.work}, device {ctx.device}"
    )
    refs = stage_references(ctx, mine)
    # The main process makes (tiny) or downloads (Hub) the base model first, the others then find it:
    # transformers >= 5 writes weights only on rank 0, and one download is enough.
    with state.main_process_first():
        ctx.base_model, base_revision = _base_model(ctx)
    pending = [c for c in mine if not _class_done(ctx, c.index)]
    prepared = ctx.method.prepare(ctx, pending, refs, ctx.base_model, base_revision)
    stage_classes(ctx, pending, refs, prepared)
    return base_revision


def export_and_verify(ctx: Context, base_revision: str | None, created: str) -> None:
    """Stage 5 (main process): the export, checked by the recipe's `verify:` section when it has one (the check
    runs last, on the export), carrying people's decisions over from the export this build replaces."""
    from spurbench.generate.verify_stage import load_verify_section, stage_verify

    check = load_verify_section(ctx.recipe_path)
    previous = _decisions_before(ctx)
    exported = stage_export(ctx, base_revision, created, out=ctx.work / "unverified" if check else None)
    if check is not None:
        stage_verify(ctx, check, exported, carry=previous)
    elif previous:
        _park_decisions(ctx, previous)
    (ctx.work / DECISIONS_FILE).unlink(missing_ok=True)


#: a shipped recipe's licence line still to be filled in (e.g. builders/d3s.yaml's backgrounds)
_LICENCE_PLACEHOLDER = re.compile(r"^\s*state the licen[cs]e of .* here\s*$", re.IGNORECASE)


def check_licences(recipe_path: Path, recipe) -> None:
    """Refuse a recipe whose `licenses:` still holds a placeholder: the card would print it as the licence."""
    for key, value in (recipe.licenses or {}).items():
        if _LICENCE_PLACEHOLDER.match(str(value)):
            raise SpurbenchError(
                f"recipe '{recipe_path}': key 'licenses.{key}' is the placeholder {str(value).strip()!r}; "
                "write the real licence of those inputs there (it goes into the dataset card)"
            )


#: the decisions of the export a rebuild replaces (image sha256 -> decision), kept in the work dir until carried
DECISIONS_FILE = "decisions_before_rebuild.json"


def _decisions_before(ctx: Context) -> dict[str, str]:
    """Decisions people recorded in the export at --out (applied in place, as the review page says), by image bytes;
    saved in the work dir first, so a rebuild killed after replacing --out still carries them."""
    from spurbench.generate.sampling import write_json
    from spurbench.verify import decided_images

    saved = ctx.work / DECISIONS_FILE
    decided = decided_images(ctx.out) if ctx.out.is_dir() else {}
    if decided:
        write_json(saved, decided)
        ctx.log(
            f"--out holds {len(decided)} decision(s) by people; they are carried over to the rows with the same images"
        )
    elif saved.is_file():
        decided = json.loads(saved.read_text())
    return decided


def _park_decisions(ctx: Context, decided: dict[str, str]) -> None:
    """A recipe without `verify:` exports no `reviewed` column: write the carried decisions as a decisions.csv of
    the new rows, for `spurbench verify --decisions` (which has to check the new images anyway)."""
    from spurbench.dataset import portable_path
    from spurbench.verify import decisions_for

    lines, lost = decisions_for(ctx.out, decided)
    path = ctx.work / "decisions.csv"
    path.write_text("index,split,decision\n" + "".join(f"{i},{s},{d}\n" for i, s, d in lines))
    ctx.log(
        f"this recipe has no verify: stage, so the new export has no `reviewed` column: {len(lines)} decision(s) are in "
        f"{path}, apply them with `spurbench verify --dataset {portable_path(ctx.out)} --out {portable_path(ctx.out)} "
        f"--decisions {path}`; {lost} could not be carried (their images changed)"
    )


def _select_classes(recipe, wanted: list[str] | None) -> list:
    if not wanted:
        return list(recipe.classes)
    by_index = recipe.class_by_index()
    picked: list[int] = []
    for token in (t for w in wanted for t in w.split(",") if t.strip()):
        try:
            k = int(token)
        except ValueError:
            raise SpurbenchError(
                f"--classes: {token!r} is not an ImageNet class index; give integers like 309 or 309,324"
            ) from None
        if k not in by_index:
            known = [str(i) for i in by_index]
            listed = ", ".join(known) if len(known) <= 20 else ", ".join(known[:10]) + f", ... ({len(known)} classes)"
            raise SpurbenchError(f"--classes: class {k} is not in the recipe; its classes are {listed}")
        if k not in picked:
            picked.append(k)
    return [c for c in recipe.classes if c.index in picked]  # recipe order, whatever the flag's order


# ---------------------------------------------------------------------------------------------
# Work dir and base model


def _init_work_dir(ctx: Context) -> str:
    """Create or check `<work>/state.json`; return the `created` date of the build.

    The date is fixed at the first start, so a resumed build writes the same card."""
    from filelock import FileLock

    from spurbench.generate.sampling import write_json

    ctx.work.mkdir(parents=True, exist_ok=True)
    if not has_record(ctx.work):  # claimed as spurbench's (see `run`), so the next build may resume in it
        WrittenFolder(ctx.work, "--work-dir").save()
    path = ctx.work / STATE_FILE
    with FileLock(str(ctx.work / ".state.lock")):
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except ValueError:
                raise SpurbenchError(
                    f"work dir state '{path}' is corrupt; delete the work dir '{ctx.work}' to start over"
                ) from None
            if state.get("recipe_sha256") != ctx.recipe_sha256:
                raise SpurbenchError(
                    f"work dir '{ctx.work}' belongs to a build of recipe {state.get('recipe')!r} with sha256 {str(state.get('recipe_sha256'))[:12]}, "
                    f"but this recipe hashes to {ctx.recipe_sha256[:12]}; use another --work-dir (or delete that one) for a changed recipe"
                )
        else:
            state = {
                "recipe": ctx.recipe.name,
                "recipe_sha256": ctx.recipe_sha256,
                "created": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            }
            write_json(path, state)
    return ctx.recipe.created or state["created"]


def _base_model(ctx: Context) -> tuple[str, str | None]:
    """Local folder of the base pipeline, and its resolved revision (a commit for Hub models)."""
    b = ctx.recipe.base_model
    if b.tiny is not None:
        from spurbench.tiny_models import make_tiny_stable_diffusion

        folder = ctx.work / "base"

        def build(tmp: Path) -> None:
            ctx.log(f"building the tiny Stable Diffusion ({b.tiny.prediction_type}, seed {b.tiny.seed}) into {folder}")
            make_tiny_stable_diffusion(
                tmp, prediction_type=b.tiny.prediction_type, seed=b.tiny.seed, image_size=ctx.recipe.resolution
            )

        return str(build_once(folder, "model_index.json", build)), None
    local = Path(b.id).expanduser()
    if not local.is_absolute():
        local = Path.cwd() / local
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise SpurbenchError(
                f"base_model.id '{b.id}' is a folder without model_index.json; give a diffusers pipeline folder or a Hub id"
            )
        return str(local), b.revision
    from diffusers import DiffusionPipeline

    try:
        path = Path(DiffusionPipeline.download(b.id, revision=b.revision))
    except Exception as err:  # offline, gated, typo: all fixable by the user
        raise SpurbenchError(
            f"cannot get base model '{b.id}' (revision {b.revision}) from the Hugging Face Hub "
            f"({hub_failure_reason(err)}); check the id, your login and network, "
            "or set base_model.id to a local diffusers folder"
        ) from None
    # The snapshot folder is named after the commit: record it, so `main` still pins what was used.
    revision = path.name if path.parent.name == "snapshots" else b.revision
    return str(path), revision


# ---------------------------------------------------------------------------------------------
# Stage 1: references


def stage_references(ctx: Context, mine: list) -> dict[int, Any]:
    from tqdm.auto import tqdm

    from spurbench.generate.references import ClassReferences
    from spurbench.generate.sampling import write_json

    folder = ctx.work / "references"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[int, ClassReferences] = {}
    scan_cache: dict = {}
    ctx.log(f"stage 1/5 references: {len(mine)} classes")
    for entry in tqdm(mine, desc="1/5 references", unit="class", disable=not ctx.progress, leave=False):
        manifest = folder / f"{entry.index}.json"
        if manifest.is_file():
            out[entry.index] = ClassReferences.from_json(manifest.read_text())
            continue
        refs = ctx.method.resolve_references(ctx, entry, folder / "samples", scan_cache)
        write_json(manifest, json.loads(refs.to_json()))
        out[entry.index] = refs
    return out


# ---------------------------------------------------------------------------------------------
# The method's per-class stage, one class at a time


def _class_done(ctx: Context, index: int) -> bool:
    marker = ctx.class_dir(index) / CLASS_MARKER
    if not marker.is_file():
        return False
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return False
    return done.get("recipe_sha256") == ctx.recipe_sha256 and all(
        (ctx.class_dir(index) / "images" / im["file"]).is_file() for im in done.get("images", [])
    )


def stage_classes(ctx: Context, pending: list, refs: dict, prepared: Any) -> None:
    """Run the method's `make_class` for every unfinished class, then write the class's marker."""
    from tqdm.auto import tqdm

    from spurbench.generate.sampling import write_json

    m = ctx.method
    if not pending:
        ctx.log(
            f"stages {m.STAGES}: every class of this process is already done"
            if ctx.classes[ctx.rank :: ctx.world]
            else f"stages {m.STAGES}: no classes for this process"
        )
        return
    number, _, what = m.STAGES.partition(" ")
    ctx.log(f"stages {m.STAGES}: {len(pending)} class(es)")
    bar = tqdm(pending, desc=f"{number} classes", unit="class", disable=not ctx.progress, leave=False)
    for entry in bar:
        bar.set_postfix_str(f"class {entry.index}")
        fields = m.make_class(ctx, entry, refs, prepared)
        _free_accelerator_memory()
        write_json(
            ctx.class_dir(entry.index) / CLASS_MARKER,
            {
                "index": entry.index,
                "recipe_sha256": ctx.recipe_sha256,
                "rank": ctx.rank,
                "world_size": ctx.world,
                **fields,
            },
        )
        after = getattr(m, "after_marker", None)
        if after is not None:
            after(ctx, entry)
    bar.close()


def _free_accelerator_memory() -> None:
    """Drop the finished class's models before the next one is loaded (GPU memory is per process)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _quiet_libraries() -> None:
    """Libraries' own per-file bars (loading components, writing shards) would drown the stage bars."""
    for module in ("diffusers.utils.logging", "transformers.utils.logging", "datasets.utils.logging"):
        try:
            importlib.import_module(module).disable_progress_bar()
        except (ImportError, AttributeError):
            pass


# ---------------------------------------------------------------------------------------------
# Stage 5: export


def _finished_classes(ctx: Context) -> tuple[dict, dict]:
    """Every class's marker and references, by class index; refused unless every class is done and its references
    are unchanged."""
    from spurbench.generate.references import ClassReferences, verify_unchanged

    missing = [c.index for c in ctx.classes if not _class_done(ctx, c.index)]
    if missing:
        raise SpurbenchError(
            f"classes {', '.join(map(str, missing))} are not finished in '{ctx.work}'; re-run the same command to finish them"
        )
    markers = {c.index: json.loads((ctx.class_dir(c.index) / CLASS_MARKER).read_text()) for c in ctx.classes}
    refs = {
        c.index: ClassReferences.from_json((ctx.work / "references" / f"{c.index}.json").read_text())
        for c in ctx.classes
    }
    for c in ctx.classes:
        verify_unchanged(refs[c.index])
    return markers, refs


def _export_card(ctx: Context, parts, base_revision: str | None, created: str, copied, label_set) -> Any:
    """The dataset card: the method's parts in the shared skeleton, the licences, the provenance record."""
    from spurbench.dataset import DatasetCard, card_license
    from spurbench.generate import copies

    r = ctx.recipe
    return DatasetCard(
        pretty_name=parts.pretty_name,
        body=card_body(ctx, parts, base_revision, created)
        + ("" if copied is None else "\n\n" + copies.card_section(copied)),
        **card_license(r.dataset_license, r.licenses),  # derived from the inputs' licences where sound
        provenance={
            "recipe": r.name,
            "recipe_sha256": ctx.recipe_sha256,
            "builder": r.builder,
            "base_model": r.base_model_name,
            "base_model_revision": base_revision,
            **ctx.method.provenance(r),
            "classes": [c.index for c in ctx.classes],
            "created": created,
            "command": ctx.command,
            "spurbench_version": _version(),
            "versions": software_versions(),
            "scheduler": scheduler_record(ctx),
            **({copies.SECTION: copied} if copied is not None else {}),
            **_models_block(ctx),
        },
        kind=ctx.method.kind_of(r) if hasattr(ctx.method, "kind_of") else ctx.method.KIND,
        **({"label_set": label_set[0]} if label_set else {}),
    )


def stage_export(ctx: Context, base_revision: str | None, created: str, out: Path | None = None) -> Path:
    """Write the dataset to `out` (default ctx.out; the verify stage exports into the work dir first)."""
    from tqdm.auto import tqdm

    from spurbench.dataset import write_dataset
    from spurbench.generate import copies

    markers, refs = _finished_classes(ctx)
    splits, extra_features, counts = ctx.method.export_splits(ctx, markers, refs)
    splits, extra_features, copied = copies.check_export(ctx, splits, refs, extra_features)
    parts = ctx.method.card_parts(ctx, markers, refs, counts)
    ctx.log(f"stage 5/5 export: {' + '.join(f'{n} {s}' for s, n in counts.items())} images -> {out or ctx.out}")
    # (name, class names) of a set labelled with another label set than ImageNet-1k (ddb from a Waterbirds import)
    label_set = ctx.method.label_set(ctx.recipe) if hasattr(ctx.method, "label_set") else None
    card = _export_card(ctx, parts, base_revision, created, copied, label_set)
    bar = tqdm(total=sum(counts.values()), desc="5/5 export", unit="img", disable=not ctx.progress, leave=False)

    def counted(rows: Iterator[dict]) -> Iterator[dict]:
        for row in rows:
            yield row
            bar.update()

    # a build killed during a previous export leaves temporary siblings behind: write_dataset removes those of dead
    # processes (`files.remove_stale_temporaries`), never a folder a user named
    out = out or ctx.out
    write_dataset(
        out,
        {split: counted(rows) for split, rows in splits.items()},
        card,
        extra_features=extra_features,
        label_names=label_set[1] if label_set else None,
    )
    bar.close()
    return out


def _version() -> str:
    from spurbench import __version__

    return __version__


#: the libraries whose versions decide what a build makes, recorded in every card
VERSIONED = ("torch", "diffusers", "transformers", "timm", "datasets")


def software_versions() -> dict[str, str]:
    """Installed versions of the libraries that made the set, and spurbench's."""
    from importlib import metadata

    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["spurbench"] = _version()
    return out


def scheduler_record(ctx: Context) -> dict[str, Any] | None:
    """The sampling scheduler's class and config as the build used it: the pipeline's own scheduler config (of the
    base model, or of the folder the method names with `scheduler_source(ctx) -> (folder or Hub id, revision,
    class name or None)`), re-configured into the recipe's scheduler class where it names one. None if unknown."""
    hook = getattr(ctx.method, "scheduler_source", None)
    own = getattr(getattr(ctx.recipe, "generation", None), "scheduler", None)
    source, revision, name = hook(ctx) if hook is not None else (ctx.base_model, None, own)
    if source is None:
        return None
    path = Path(source) / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        try:  # a Hub id: only what is already in the local cache, never a download at export time
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(source), "scheduler/scheduler_config.json", revision=revision)
        except Exception:
            cached = None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    config = json.loads(path.read_text())
    cls_name = name or config.get("_class_name")
    if name:
        import diffusers

        config = dict(getattr(diffusers, name).from_config(config).config)
    plain = json.loads(
        json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True, default=list)
    )
    return {"class": cls_name, "config": plain}


def card_body(ctx: Context, parts, base_revision: str | None, created: str) -> str:
    """The dataset card's text: deterministic (no clock, no local paths), so exports compare byte for byte.

    The skeleton is shared; `parts` (a methods.CardParts) holds what the method says."""
    import yaml

    r = ctx.recipe
    lines = [
        f"{parts.headline} generated by `spurbench build` with the recipe **{r.name}**"
        + (f": {r.description.strip()}" if r.description.strip() else "."),
        "",
        parts.intro,
        "",
        "## Provenance",
        "",
        f"- Recipe: `{r.name}`, sha256 of its canonical JSON: `{ctx.recipe_sha256}`",
        f"- Base model: `{r.base_model_name}`, revision `{base_revision}`",
        *parts.provenance_lines,
        f"- Created: {created}; spurbench {_version()}",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in software_versions().items()),
        *_scheduler_lines(ctx),
        parts.images_line,
        *_models_lines(ctx),
        "",
        "Reproduce (same machine and thread count give byte-identical images):",
        "",
        "```",
        ctx.command,
        "```",
        "",
        "## Licences of the inputs",
        "",
        *[f"- {k}: {v}" for k, v in r.licenses.items()],
        f"- this dataset: {r.dataset_license}",
        "",
        "## Classes",
        "",
        *parts.classes_table,
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(r.to_dict(), sort_keys=False, allow_unicode=True, width=1000).strip(),
        "```",
    ]
    return "\n".join(lines)


def models_used(ctx: Context) -> list[dict[str, Any]]:
    """Every classifier and detector that chose, shaped or checked the set's images, for the card: `[{"model",
    "roles", "weights_sha256", "weights_source"}]`, one item per (model, weights) with all its roles. Eval marks an
    entry of the same model and weights (spurbench.evaluate.validity.used_in_build). The method says which of
    its models it used (`models_used(ctx) -> [(role, classifier spec dict)]`); the verify stage adds its detector."""
    from spurbench.generate.verify_stage import load_verify_section

    hook = getattr(ctx.method, "models_used", None)
    used: dict[tuple, dict[str, Any]] = {}
    surrogates = [("mining surrogate", s) for s in check_surrogates(ctx)]
    for role, spec in [*(hook(ctx) if hook is not None else []), *surrogates]:
        sha, source = classifier_weights(spec)
        item = used.setdefault((spec["model"], sha), {"model": spec["model"], "roles": [], "weights_sha256": sha})
        item["weights_source"] = source
        if role not in item["roles"]:
            item["roles"].append(role)
    section = load_verify_section(ctx.recipe_path)
    if section is not None:  # a detector is no classifier an entry could be, but the card names it all the same
        name = section.model or section.detector
        used[(name, None)] = {
            "model": name,
            "roles": ["verification"],
            "weights_sha256": None,
            "weights_source": f"{section.detector} detector" + (f"@{section.revision}" if section.revision else ""),
        }
    return list(used.values())


def classifier_weights(spec: dict) -> tuple[str | None, str]:
    """sha256 of a classifier spec's weights file and where it came from, without building the model (the hash
    `spurbench eval` records in an entry's `weights`). timm's pretrained weights: the cached file's hash when found."""
    from spurbench import classifiers
    from spurbench.download import sha256_file

    parsed = classifiers.ClassifierSpec.from_dict(spec)
    if parsed.weights is None:
        import timm

        cfg = timm.models.get_pretrained_cfg(parsed.model)
        source, path = classifiers._pretrained_location(cfg.to_dict() if cfg is not None else {})
        return (sha256_file(path) if path else None), source
    path, source = classifiers._weights_file(parsed)
    if source.startswith("file:"):  # a local file: its name only, never a local folder in the card
        source = "local file"
    return sha256_file(path), source


def check_surrogates(ctx: Context) -> list[dict]:
    """The recipe's `mine:` surrogates as classifier specs, each weights file checked against its pinned sha256
    before anything is generated (a mismatch is one line naming the recipe key)."""
    from spurbench.generate.recipe import mine_specs

    mine = getattr(ctx.recipe, "mine", None)
    if mine is None:
        return []
    specs = mine_specs(mine)
    for i, spec in enumerate(specs):
        sha, source = classifier_weights(
            {**spec, "weights": {k: v for k, v in spec["weights"].items() if k != "sha256"}}
        )
        if sha != spec["weights"]["sha256"]:
            raise SpurbenchError(
                f"key 'mine.surrogates[{i}].sha256': the weights of {spec['model']} ({source}) have sha256 {sha}, "
                f"not the pinned {spec['weights']['sha256']}; pin the weights you mean or install those"
            )
    return specs


def mine_fooled(ctx: Context, images: list[tuple[Path, int]]) -> list[int]:
    """How many of the `mine:` surrogates each (image file, label) fools (top-1 = label), with timm's eval
    transform of each surrogate. Cached in <work>/mine.json by file name, size and surrogate hashes (resumable)."""
    import numpy as np
    import torch

    from spurbench import classifiers
    from spurbench.files import atomic_write
    from spurbench.generate.references import load_image

    specs = check_surrogates(ctx)
    cache_path = ctx.work / "mine.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    key = ",".join(s["weights"]["sha256"] for s in specs)
    cached = cache.get(key, {})
    ids = [f"{p.parent.parent.name}/{p.name}:{p.stat().st_size}" for p, _ in images]
    todo = [i for i, ident in enumerate(ids) if ident not in cached]
    if todo:
        ctx.log(f"stage mine: {len(todo)} image(s) scored by {len(specs)} surrogate(s)")
        hits = np.zeros((len(todo), len(specs)), dtype=bool)
        for j, spec in enumerate(specs):
            import timm

            loaded = classifiers.create_classifier(classifiers.ClassifierSpec.from_dict(spec), "cpu")
            transform = timm.data.create_transform(**loaded.data_config)
            for start in range(0, len(todo), 16):
                rows = todo[start : start + 16]
                batch = torch.stack([transform(load_image(images[i][0])) for i in rows])
                with torch.no_grad():
                    top1 = loaded.model(batch).argmax(-1).numpy()
                hits[start : start + len(rows), j] = top1 == np.array([images[i][1] for i in rows])
        for n, i in enumerate(todo):
            cached[ids[i]] = int(hits[n].sum())
        cache[key] = cached
        atomic_write(cache_path, json.dumps(cache, sort_keys=True).encode())
    return [int(cached[ident]) for ident in ids]


def _models_block(ctx: Context) -> dict[str, Any]:
    used = models_used(ctx)
    return {"models_used": used} if used else {}


def _models_lines(ctx: Context) -> list[str]:
    used = models_used(ctx)
    if not used:
        return []
    lines = [
        "",
        "## Models used to build this set",
        "",
        "These models chose, shaped or checked the images: scored on this set they are not independent of it, so "
        "`spurbench eval` marks an entry of the same model and weights (`used_in_build`) and ranks it apart.",
        "",
        "| model | used for | weights sha256 | weights from |",
        "|---|---|---|---|",
    ]
    for u in used:
        lines.append(
            f"| `{u['model']}` | {', '.join(u['roles'])} | `{u['weights_sha256'] or 'n/a'}` | {u['weights_source']} |"
        )
    return lines


def _scheduler_lines(ctx: Context) -> list[str]:
    record = scheduler_record(ctx)
    if record is None:
        return []
    return [f"- Scheduler: `{record['class']}` with config `{json.dumps(record['config'], sort_keys=True)}`"]


# ---------------------------------------------------------------------------------------------


def push_to_hub(folder: Path, repo_id: str, private: bool = False, message: str = "spurbench build") -> None:
    """Upload the exported folder as a Hub dataset repo (token from the usual login; never printed)."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        # the record of what spurbench wrote is this machine's business: a downloaded copy must not claim to be ours
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message,
            ignore_patterns=[RECORD_NAME, "**/" + RECORD_NAME],
        )
    except Exception as err:
        raise SpurbenchError(
            f"could not push '{folder}' to the Hub dataset repo {repo_id} ({hub_failure_reason(err)}); the export is complete on disk: "
            "log in with `hf auth login`, check the repo name and network, and re-run the same command"
        ) from None
