"""Command-line entry point: `spurbench <command> ...` and `python -m spurbench <command> ...`.

Each command lives in the module of its stage, which exposes `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command is used, and must not import
heavy optional stacks (diffusers) at module level, so `spurbench eval` runs without them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from spurbench import __version__
from spurbench.errors import SpurbenchError

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("spurbench.generate.stages", "build a spurious-image dataset from a recipe (fine-tune, sample, export)"),
    "eval": ("spurbench.evaluate.cli", "score timm classifiers on a spurious-image dataset and record them in a leaderboard"),
    "finetune": ("spurbench.finetune", "balanced fine-tuning of a timm classifier on a group-labelled set plus DDB counterfactuals"),
    "import": ("spurbench.importers", "turn a published dataset (Spurious ImageNet, Waterbirds, ...) into a dataset in spurbench's contract"),
    "leaderboard": ("spurbench.evaluate.report", "print or render a leaderboard (markdown, JSON or a static HTML page)"),
    "verify": ("spurbench.verify", "check with an open-vocabulary detector that each image's object is really absent (or present), and review the doubtful ones"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spurbench",
        description="Build test sets of spurious images and measure image classifiers on them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `spurbench <command> --help` for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"spurbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    # Only import the module of the command actually asked for (plus all of them for top-level --help).
    wanted = next((a for a in (argv or []) if a in COMMANDS), None)
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name) if wanted in (None, name) else None
        p = sub.add_parser(
            name,
            help=summary,
            description=(module.__doc__ if module is not None and module.__doc__ else summary),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if module is not None:
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SpurbenchError as err:
        print(f"spurbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spurbench {args.command}: interrupted; finished work is kept, re-run the same command to resume.", file=sys.stderr)
        return 130
