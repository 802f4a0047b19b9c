"""Score timm ImageNet-1k classifiers on a spurious-image dataset and record them in a leaderboard.

For every image of the split (each labelled with the class k it is spurious for, i.e. whose object
it does NOT contain), the classifier's softmax gives p_k and the top 5. The spurious rate of class k
is the fraction of its images with top-1 = k (lower is better); with --positives (real images of
the classes), the spurious score AP/AUROC says how well p_k separates real k from spurious k
(higher is better). Per-image predictions go to <leaderboard folder>/predictions/<model>.csv and the
model's entry is added to (or replaced in) the leaderboard JSON, whose cross-classifier consistency
is recomputed over every model in it.

Images are preprocessed exactly as timm evaluates each model (its resolved data config and eval
transform) unless --preprocessing spurious-imagenet asks for the released Spurious ImageNet code's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spurbench import dataset as ds_contract
from spurbench.classifiers import (
    ClassifierSpec,
    HeadMismatch,
    LoadedClassifier,
    check_model_name,
    create_classifier,
    load_panel,
)
from spurbench.errors import SpurbenchError
from spurbench.evaluate.entry import check_batch_size, evaluate, format_table, probe_entry, summary_line, utc_now
from spurbench.evaluate.inputs import open_dataset, open_positives
from spurbench.evaluate.predict import ImageDecodeError, default_workers, precision_for, resolve_device
from spurbench.evaluate.preprocessing import (
    DECODE_PATHS,
    DEFAULT_DECODE,
    PREPROCESSING,
)
from spurbench.evaluate.record import record

# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _classifier_arguments(parser.add_argument_group("classifiers (at least one --model, a --models-file or a --panel)"))
    _zero_shot_arguments(parser.add_argument_group("zero-shot models (open_clip:..., transformers: CLIP / SigLIP)"))
    _data_arguments(parser.add_argument_group("data"))
    run_group = parser.add_argument_group("run")
    _board_arguments(run_group)
    _loop_arguments(run_group)


def _classifier_arguments(group: argparse._ArgumentGroup) -> None:
    from spurbench.resources import shipped_names  # the help lists what ships, never a copy of it

    group.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|PATTERN",
        help="timm model to score, repeatable: an architecture (resnet50), arch.tag (resnet50.a1_in1k), hf-hub:org/repo, "
        "or a quoted wildcard pattern ('convnext*') expanded like timm.list_models(pattern, pretrained=True) to its "
        "ImageNet-1k classifiers; weights are timm's pretrained ones from the Hugging Face Hub unless --weights. "
        "Other zoos: open_clip:ARCH/TAG (patterns like 'open_clip:ViT-B-32/*' expand over open_clip.list_pretrained()), "
        "open_clip:hf-hub:org/repo, open_clip:local-dir:DIR (zero-shot), transformers:org/repo or transformers:DIR "
        "(an image classifier, or CLIP / SigLIP zero-shot)",
    )
    group.add_argument(
        "--models-file",
        metavar="FILE",
        help="text file of model names or patterns, one per line (# comments and blank lines ignored)",
    )
    group.add_argument(
        "--list", action="store_true", help="print the models this command would score (patterns expanded) and exit"
    )
    group.add_argument(
        "--weights",
        metavar="FILE",
        help="local state dict for the single --model: .safetensors, or a torch file loadable with weights_only=True",
    )
    group.add_argument(
        "--key-map",
        default="none",
        metavar="MAP",
        help="how --weights' tensor names map onto the timm model: none, positional, or strip_prefix:<prefix> "
        "(e.g. strip_prefix:module.model. for a robustness-library checkpoint)",
    )
    group.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help="divide the single --model's logits by T before the softmax (a temperature-calibrated checkpoint)",
    )
    group.add_argument(
        "--name",
        help="name to record the single --model under; unset: the model name, plus '+<file stem>' with --weights",
    )
    group.add_argument(
        "--panel",
        metavar="NAME|FILE",
        help="score every classifier of a panel: a shipped name (" + ", ".join(shipped_names("panel")) + ") or a "
        "YAML file like classifiers/offline.yaml",
    )


def _zero_shot_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--templates",
        metavar="openai|simple|FILE",
        help="prompt templates: open_clip's OPENAI_IMAGENET_TEMPLATES (openai, the default, 80), SIMPLE_IMAGENET_TEMPLATES "
        "(simple), or a JSON file in CLIP_benchmark's format (a list of templates holding {c}, or dataset -> list)",
    )
    group.add_argument(
        "--classnames",
        metavar="FILE",
        help="class names: a JSON list (or CLIP_benchmark's dataset -> list), one per class in label order; default "
        "open_clip's IMAGENET_CLASSNAMES for ImageNet-1k, the dataset's label names for another label set",
    )


def _data_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--dataset",
        metavar="ID|FOLDER",
        help="spurious-image dataset: a local folder or a Hugging Face Hub id (required unless --list)",
    )
    group.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --dataset")
    group.add_argument("--split", default=ds_contract.DEFAULT_SPLIT, help="split of --dataset to score")
    group.add_argument(
        "--positives",
        metavar="FOLDER|ID",
        help="real images of the classes, for the spurious score (AP, AUROC): a folder of <WordNet id>/<image> "
        "or a dataset (folder or Hub id) with an ImageNet-1k `label` column",
    )
    group.add_argument(
        "--positives-split",
        help="split of a --positives dataset; unset: validation, val or test, or its only split",
    )
    group.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="report accuracy (shift sets) or spurious rate (spurious sets) per value of this column; default on a "
        "shift set: its `background` column. Shift sets rank by the worst group's accuracy",
    )
    group.add_argument(
        "--limit", type=int, default=None, metavar="N", help="score only the first N images of the split (quick checks)"
    )
    group.add_argument(
        "--include-unverified",
        action="store_true",
        help="on a verified set (`spurbench verify`), also score the images whose check failed (spurious set: object "
        "present; shift set: object absent) and those a person dropped; by default they are left out and counted",
    )
    group.add_argument(
        "--class-subset",
        metavar="FILE|spurious-imagenet",
        help="restrict the softmax and the top 5 to these ImageNet classes (timm validate.py's --valid-labels): "
        "spurious-imagenet (its 100 classes) or a text file, one ImageNet index or WordNet id per line; "
        "entries with another subset (or none) are ranked apart",
    )


def _board_arguments(group: argparse._ArgumentGroup) -> None:
    """Where the results go and what makes an entry comparable."""
    from spurbench.evaluate.leaderboard import DEFAULT_LEADERBOARD

    group.add_argument(
        "--leaderboard",
        metavar="FILE",
        help=f"leaderboard JSON to add the entries to (a folder means FOLDER/leaderboard.json); predictions go to "
        f"<its folder>/predictions/; unset: {DEFAULT_LEADERBOARD} (a folder's own name or a Hub id with / as --; "
        f"`<name>-<split>` for a split other than test), one board per dataset",
    )
    group.add_argument(
        "--preprocessing",
        choices=PREPROCESSING,
        default="timm",
        help="timm: each model's own eval transform; spurious-imagenet: the released Spurious ImageNet code's "
        "(size = the model's test_input_size if declared, else input_size; spurious images: shorter side to that "
        "size, no crop; positives: resize x256/224 + center crop; bicubic)",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="re-score models already on the leaderboard for the same data, preprocessing and precision (default: skip them)",
    )


def _loop_arguments(group: argparse._ArgumentGroup) -> None:
    """How the forward loop runs: batches, decoding, processes and threads, device and precision."""
    group.add_argument(
        "--batch-size",
        type=int,
        help="images per forward pass; unset: chosen for the device (CPU: a few seconds' calibration of batch size "
        "and memory format, once per model and machine and cached, run only for sets of 256 images or more, smaller "
        "ones use a cached calibration or batch 8; CUDA: 32), recorded in the entry's `loop`",
    )
    group.add_argument(
        "--decode",
        choices=DECODE_PATHS,
        default=DEFAULT_DECODE,
        help="pil (default): PIL decode and timm's eval transform on PIL images, bit for bit timm's own loader; "
        "torchvision: torchvision's decoder and the resize/crop on uint8 tensors, faster on PNG but not bit-equal "
        "(measured tolerance in evaluate/preprocessing.py; it can change a top-1). Recorded in the entry's `loop`; "
        "entries of different decode paths are ranked apart",
    )
    group.add_argument(
        "--workers",
        type=int,
        help="DataLoader worker processes decoding images (0: in the main process); unset: min(8, CPU cores), or 0 on a CPU run with 2 cores or fewer",
    )
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads of the scoring process (unset: torch's default, one per core); on a CPU shared with "
        "decoding --workers or other jobs, fewer threads avoid oversubscription (see benchmarks/eval_throughput.py)",
    )
    group.add_argument(
        "--device",
        help="torch device; unset: cuda (cuda:LOCAL_RANK under torchrun / accelerate launch) when available, else cpu",
    )
    group.add_argument(
        "--amp",
        action="store_true",
        help="on CUDA, run the model under float16 autocast (faster; default float32, as timm's validate.py and the "
        "published numbers); CPU always runs float32. The entry records its `precision`",
    )


def _specs_from_args(args: argparse.Namespace) -> tuple[list[ClassifierSpec], dict[str, list[str]], int]:
    """The classifiers to score (patterns expanded, --models-file read, panel appended); per pattern, the
    matches left out because they are not ImageNet-1k classifiers; how many of the specs come before the panel's."""
    from spurbench.evaluate.sweep import expand_models, is_pattern, read_models_file

    single_flags = [
        f
        for f, v in (("--weights", args.weights), ("--name", args.name), ("--temperature", args.temperature))
        if v is not None
    ]
    if single_flags and (len(args.model) != 1 or is_pattern(args.model[0]) or args.models_file):
        raise SpurbenchError(
            f"{single_flags[0]} applies to exactly one --model (not a pattern or --models-file); "
            "give a single --model NAME with it (or use a --panel file)"
        )
    if args.key_map != "none" and args.weights is None:
        raise SpurbenchError("--key-map applies to --weights; add --weights FILE")
    names = list(args.model) + (read_models_file(args.models_file) if args.models_file else [])
    expanded, left_out = expand_models(names)
    specs: list[ClassifierSpec] = []
    for model in expanded:
        weights, name = None, args.name
        if args.weights is not None:
            weights = {"file": args.weights, "key_map": args.key_map}
            name = name or f"{model}+{Path(args.weights).stem}"
        specs.append(ClassifierSpec(model=model, weights=weights, name=name, temperature=args.temperature))
    n_named = len(specs)
    if args.panel is not None:
        specs.extend(load_panel(args.panel))
    _zero_shot_flags(args, specs)
    if not specs:
        raise SpurbenchError(
            "no classifier given; pass --model NAME|PATTERN (repeatable), --models-file FILE and/or --panel NAME|FILE"
        )
    names = [s.display_name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpurbenchError(f"classifier {', '.join(dupes)} given more than once; drop the repeat or give --name")
    return specs, left_out, n_named


def _zero_shot_flags(args: argparse.Namespace, specs: list[ClassifierSpec]) -> None:
    """--templates / --classnames go to every zoo model whose panel entry does not set its own."""
    from spurbench.zoo import zoo_of

    given = [(f, k, getattr(args, k, None)) for f, k in (("--templates", "templates"), ("--classnames", "classnames"))]
    given = [g for g in given if g[2] is not None]
    if not given:
        return
    zoo_specs = [s for s in specs if zoo_of(s.model)]
    if not zoo_specs:
        raise SpurbenchError(
            f"{given[0][0]} applies to zero-shot models (open_clip:..., transformers: CLIP / SigLIP); no such --model given"
        )
    for spec in zoo_specs:
        for _, key, value in given:
            if getattr(spec, key) is None:
                setattr(spec, key, value)


def _portable_model(model: str) -> str:
    """A model name as a recorded command may hold it: a local folder (`open_clip:local-dir:DIR`,
    `transformers:DIR`) relative to the working directory or by its name, never an absolute path."""
    zoo, _, rest = model.partition(":")
    if zoo == "open_clip" and rest.startswith("local-dir:"):
        return f"open_clip:local-dir:{ds_contract.portable_path(rest[len('local-dir:') :])}"
    if zoo == "transformers" and Path(rest).expanduser().is_dir():
        return f"transformers:{ds_contract.portable_path(rest)}"
    return model


def command_line(args: argparse.Namespace, model: str | None = None) -> str:
    """The `spurbench eval ...` command that reproduces this run (flags that change results, as given);
    with `model`, the command for that one model of a sweep."""
    parts = ["spurbench", "eval"]
    for m in [model] if model is not None else args.model:
        parts += ["--model", _portable_model(m)]
    sweep_only = model is not None
    for flag, value, default in (
        ("--models-file", None if sweep_only else args.models_file, None),
        ("--weights", args.weights, None),
        ("--key-map", args.key_map, "none"),
        ("--temperature", args.temperature, None),
        ("--name", args.name, None),
        ("--panel", None if sweep_only else args.panel, None),
        ("--dataset", args.dataset, None),
        ("--revision", args.revision, None),
        ("--split", args.split, ds_contract.DEFAULT_SPLIT),
        ("--positives", args.positives, None),
        ("--positives-split", args.positives_split, None),
        ("--group-by", getattr(args, "group_by", None), None),
        ("--limit", args.limit, None),
        ("--preprocessing", args.preprocessing, "timm"),
        ("--leaderboard", args.leaderboard, None),
        ("--templates", getattr(args, "templates", None), None),
        ("--classnames", getattr(args, "classnames", None), None),
        ("--class-subset", getattr(args, "class_subset", None), None),
    ):
        if value is not None and value != default:
            if flag in (
                "--models-file",
                "--weights",
                "--dataset",
                "--positives",
                "--leaderboard",
                "--class-subset",
                "--templates",
                "--classnames",
            ):
                value = ds_contract.dataset_display_name(value)  # recorded with the results: no absolute local path
            parts += [flag, str(value)]
    if args.amp:
        parts.append("--amp")
    if getattr(args, "include_unverified", False):
        parts.append("--include-unverified")
    return " ".join(shlex.quote(p) for p in parts)


def _sweep_device(requested: str | None, world: int, local_rank: int) -> torch.device:
    """The device of this process: --device if given, else cuda:LOCAL_RANK when several processes share GPUs."""
    if requested is None and world > 1 and torch.cuda.is_available():
        return resolve_device(f"cuda:{local_rank % torch.cuda.device_count()}")
    return resolve_device(requested)


def run(args: argparse.Namespace) -> int:
    """`spurbench eval`: check the flags, open the board and the data, then score each model and record it."""
    from spurbench.evaluate import sweep
    from spurbench.evaluate.leaderboard import load_leaderboard

    if not sys.stderr.isatty():
        # piped / logged runs: no progress bars from `datasets`, so stderr holds only what matters
        import datasets

        datasets.disable_progress_bars()
    # Everything that can be wrong with the inputs is checked before anything is written.
    _check_run_flags(args)
    specs, left_out, n_named = _specs_from_args(args)
    class_subset = _class_subset(args)
    if args.list:
        _print_list(specs, left_out)
        return 0
    if args.dataset is None:
        raise SpurbenchError(
            "--dataset is required (a local folder or a Hugging Face Hub id); only --list runs without it"
        )
    rank, world, local_rank = sweep.process_share()
    device = _sweep_device(args.device, world, local_rank)
    if args.workers is None:
        args.workers = default_workers(device)
    # one model named: its mistakes are input errors (exit 2, nothing written); a sweep records them and goes on
    single = len(specs) == 1 and not args.models_file and not any(sweep.is_pattern(m) for m in args.model)
    if single and not specs[0].model.startswith(("hf-hub:", "hf_hub:")):
        check_model_name(specs[0].model, pretrained=specs[0].weights is None)  # a typo should not wait for the dataset
    named = {s.display_name for s in specs[:n_named]}
    leaderboard = _board_path(args)
    # only the entries of the models to score (a big board is not read whole); corrupt -> SpurbenchError, file untouched
    board = load_leaderboard(leaderboard, models=[s.display_name for s in specs])
    data, positives = _open_data(args, board, leaderboard)
    if single:  # loaded before anything is written, so a bad checkpoint is an input error
        specs = [_load_single(args, specs[0], data)]
    mine = sweep.my_share(specs, rank, world)
    precision = precision_for(device, args.amp)[0]
    _print_dataset_line(
        data, positives, f"; process {rank} of {world}: {len(mine)} of {len(specs)} models" if world > 1 else ""
    )
    run_state = _Run(args, data, positives, leaderboard, device, precision, single, world, rank)
    probe = probe_entry(
        data, positives, args.preprocessing, precision, class_subset, args.decode
    )  # what decides "already scored"
    for item in mine:
        _score_and_record(run_state, item, board, probe, named, class_subset)
    return _print_summary(run_state, leaderboard)


def _check_run_flags(args: argparse.Namespace) -> None:
    check_batch_size(args.batch_size)
    if args.workers is not None and args.workers < 0:
        raise SpurbenchError(f"--workers must be 0 or more, got {args.workers}")
    if args.threads is not None:
        if args.threads < 1:
            raise SpurbenchError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def _class_subset(args: argparse.Namespace):
    if getattr(args, "class_subset", None) is None:
        return None
    from spurbench.evaluate.class_subset import load_class_subset

    return load_class_subset(args.class_subset)


def _print_list(specs: list, left_out: dict[str, list[str]]) -> None:
    for pattern, names in left_out.items():
        print(
            f"# {pattern}: {len(names)} match(es) left out, their pretrained head is not ImageNet-1k's",
            file=sys.stderr,
        )
    print("\n".join(s.display_name for s in specs))


def _board_path(args: argparse.Namespace) -> Path:
    """The board's JSON path (a folder means FOLDER/leaderboard.json; unset: one board per dataset), checked
    writable before any model is scored."""
    from spurbench.evaluate.leaderboard import check_writable, default_leaderboard

    if args.leaderboard is None:
        args.leaderboard = str(default_leaderboard(args.dataset, args.split))
    leaderboard = Path(args.leaderboard)
    if leaderboard.is_dir():
        leaderboard = leaderboard / "leaderboard.json"
    check_writable(leaderboard)
    return leaderboard


def _open_data(args: argparse.Namespace, board: dict, leaderboard: Path):
    """The split to score (refused when the board holds another dataset) and the --positives."""
    data = open_dataset(
        args.dataset,
        split=args.split,
        revision=args.revision,
        limit=args.limit,
        include_unverified=args.include_unverified,
        group_by=args.group_by,
    )
    held = board.get("dataset")
    if held and board.get("num_entries", len(board["entries"])) and held.get("fingerprint") != data.info["fingerprint"]:
        raise SpurbenchError(
            f"leaderboard '{leaderboard}' holds results for dataset {held.get('id')!r} (fingerprint {str(held.get('fingerprint'))[:12]}...), "
            f"not for '{args.dataset}' split '{args.split}' (fingerprint {data.info['fingerprint'][:12]}...); pass another --leaderboard file"
        )
    positives = None
    if args.positives is not None:
        positives = open_positives(args.positives, data.info["classes"], split=args.positives_split, revision=None)
        if not len(positives):
            raise SpurbenchError(
                f"--positives '{args.positives}' has no images of the dataset's classes ({', '.join(map(str, data.info['classes'][:10]))}"
                f"{' ...' if len(data.info['classes']) > 10 else ''}); point it at real images of those classes"
            )
    return data, positives


def _load_single(args: argparse.Namespace, spec: ClassifierSpec, data) -> LoadedClassifier:
    try:
        return create_classifier(spec, "cpu", num_classes=data.num_classes, label_names=data.label_names)
    except HeadMismatch as err:
        if data.label_names is None:
            raise
        raise HeadMismatch(
            f"{err}; dataset '{args.dataset}' is labelled with label set {data.info.get('label_set')!r} "
            f"({data.num_classes} classes: {', '.join(data.label_names[:5])})"
        ) from None


def _print_dataset_line(data, positives, share: str) -> None:
    total = data.info["num_images"] - data.num_excluded
    subset = f" (first {len(data.labels)} of {total})" if len(data.labels) < total else ""
    print(
        f"dataset {data.source} split {data.split}: {len(data.labels)} images{subset}, {len(data.info['classes'])} classes"
        + (f"; kind {data.kind}" if data.kind != ds_contract.DEFAULT_KIND else "")
        + (f"; groups by `{data.group_by}`" if data.group_by else "")
        + (f"; {len(positives)} positives" if positives is not None else "")
        + (
            f"; {data.num_excluded} left out by verification (--include-unverified keeps them)"
            if data.num_excluded
            else ""
        )
        + share
    )


@dataclass
class _Run:
    """What every model of one `spurbench eval` shares, and what it has done so far."""

    args: argparse.Namespace
    data: Any
    positives: Any
    leaderboard: Path
    device: torch.device
    precision: str
    single: bool
    world: int
    rank: int
    summaries: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _score_and_record(run: _Run, item, board: dict, probe: dict, named: set[str], class_subset) -> None:
    """One model: skipped when already scored, else scored and recorded (or, in a sweep, its failure recorded)."""
    from spurbench.evaluate.leaderboard import already_scored

    args, data = run.args, run.data
    spec = item.spec if isinstance(item, LoadedClassifier) else item
    name = spec.display_name
    if not args.force and already_scored(board, name, probe) and _same_groups(board, name, data.group_by):
        print(
            f"skip {name}: already on the leaderboard for these rows, positives, preprocessing and precision (--force re-scores it)"
        )
        run.skipped.append(name)
        return
    # a model named on the command line (or matched by a pattern) gets its own one-model command
    command = command_line(args, spec.model) if not run.single and name in named else command_line(args)
    try:
        clf = (
            item
            if isinstance(item, LoadedClassifier)
            else create_classifier(spec, "cpu", num_classes=data.num_classes, label_names=data.label_names)
        )
        entry, preds = evaluate(
            clf,
            data,
            positives=run.positives,
            preprocessing=args.preprocessing,
            batch_size=args.batch_size,
            workers=args.workers,
            device=run.device,
            amp=args.amp,
            command=command,
            class_subset=class_subset,
            decode=args.decode,
        )
    except (ImageDecodeError, KeyboardInterrupt):
        raise  # the data is broken, or the user stopped: not this model's failure
    except Exception as err:
        _record_model_failure(run, name, err, command)
        return
    finally:
        clf = None  # one model in memory at a time  # noqa: F841
    if run.world > 1:
        entry["process"] = {"rank": run.rank, "world_size": run.world}
    record(run.leaderboard, data.info, entry, preds)
    print(format_table(entry, data.label_names))
    print()
    run.summaries.append(summary_line(entry))


def _record_model_failure(run: _Run, name: str, err: Exception, command: str) -> None:
    from spurbench.evaluate import sweep
    from spurbench.evaluate.leaderboard import record_failure

    data = run.data
    reason = sweep.failure_reason(err)
    if isinstance(err, HeadMismatch) and data.label_names is not None:
        # one short line naming both label sets (the weights' path says nothing the user can act on)
        which = "an ImageNet-1k classifier" if " 1000 " in f" {err} " else "a classifier with another head"
        reason = (
            f"{which} cannot score label set {data.info.get('label_set')!r} "
            f"({data.num_classes} classes: {', '.join(data.label_names[:5])}); score one trained on it "
            "(`spurbench finetune`)"
        )
    if run.single:
        raise SpurbenchError(f"cannot score '{name}': {reason}") from None
    run.failed[name] = reason
    print(f"FAILED {name}: {reason}", file=sys.stderr)
    record_failure(
        run.leaderboard,
        data.info,
        {
            "model": name,
            "reason": reason,
            "preprocessing": run.args.preprocessing,
            "precision": run.precision,
            "date": utc_now(),
            "command": command,
        },
    )
    if run.device.type == "cuda":
        torch.cuda.empty_cache()


def _print_summary(run: _Run, leaderboard: Path) -> int:
    if len(run.summaries) > 1 or run.skipped or run.failed:
        print("summary:")
        for s in run.summaries:
            print(f"  {s}")
        if run.skipped:
            print(f"  skipped {len(run.skipped)} already scored: {', '.join(run.skipped)}")
        if run.failed:  # each one's reason was printed when it failed
            print(
                f"  FAILED {len(run.failed)}: {', '.join(run.failed)} (reasons above and in the leaderboard's failures)"
            )
    print(f"leaderboard: {leaderboard} (show it: spurbench leaderboard --leaderboard {shlex.quote(str(leaderboard))})")
    return 1 if run.failed else 0


def _same_groups(board: dict, model: str, group_by: str | None) -> bool:
    """Whether the model's entry was grouped by the same column (another --group-by re-scores it)."""
    entry = next((e for e in board.get("entries", []) if e.get("model") == model), {})
    return (entry.get("metrics") or {}).get("group_by") == group_by
