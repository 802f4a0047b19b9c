"""Command-line entry point: `spurbench <command> ...` and `python -m spurbench <command> ...`.

Each command lives in the module of its stage, which exposes `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command is used, and must not import
heavy optional stacks (diffusers) at module level, so `spurbench eval` runs without them.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Sequence

from spurbench import __version__
from spurbench.errors import SpurbenchError

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("spurbench.generate.stages", "build a spurious-image dataset from a recipe (fine-tune, sample, export)"),
    "eval": (
        "spurbench.evaluate.cli",
        "score timm classifiers on a spurious-image dataset and record them in a leaderboard",
    ),
    "finetune": (
        "spurbench.finetune",
        "balanced fine-tuning of a timm classifier on a group-labelled set plus DDB counterfactuals",
    ),
    "import": (
        "spurbench.importers",
        "turn a published dataset (Spurious ImageNet, Waterbirds, ...) into a dataset in spurbench's contract",
    ),
    "leaderboard": (
        "spurbench.evaluate.report",
        "print or render a leaderboard (markdown, JSON or a static HTML page)",
    ),
    "verify": (
        "spurbench.verify",
        "check with an open-vocabulary detector that each image's object is really absent (or present), and review the doubtful ones",
    ),
}


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching (`--leader` is not `--leaderboard`: scripts must never depend on an
    abbreviation that a new flag could make ambiguous); every subcommand's parser is one of these."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _chosen_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The innermost (sub)command parser that `argv` selects (`spurbench import waterbirds ...` -> waterbirds')."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for i, token in enumerate(argv):
                if token in action.choices:
                    return _chosen_parser(action.choices[token], argv[i + 1 :])
    return parser


def check_command(argv: Sequence[str]) -> None:
    """A mistyped command is named, with the closest one (argparse alone would complain about its flags instead:
    `spurbench evl --panel offline` said "unrecognized argument --panel")."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in COMMANDS and not any(a in ("-h", "--help", "--version") for a in argv):
        close = difflib.get_close_matches(first, list(COMMANDS), n=1, cutoff=0.5)
        hint = f"did you mean `spurbench {close[0]}`?" if close else "`spurbench --help` lists them"
        print(f"spurbench: error: unknown command '{first}'; {hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        raise SystemExit(2)


def check_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """An unknown --flag is reported by the subcommand it was given to, with its usage and the closest flag
    (argparse alone would print the top-level usage, or only complain about the required flags it then misses)."""
    target = _chosen_parser(parser, argv)
    known = [opt for action in target._actions for opt in action.option_strings]
    for token in argv:
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; `{target.prog} --help` lists the flags"
            target.error(f"unrecognized argument {flag}{hint}")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default appended once: only when there is one worth saying (not None or False) and the help
    text does not already state it (argparse's ArgumentDefaultsHelpFormatter printed "(default 0.05) (default:
    None)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default in (None, False, argparse.SUPPRESS)
            or action.option_strings == []
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="spurbench",
        description="Build test sets of spurious images and measure image classifiers on them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `spurbench <command> --help` for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"spurbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    # Only the module of the command asked for is imported: the top-level --help and --version need the one-line
    # summaries alone, and answer without importing torch.
    wanted = next((a for a in (argv or []) if a in COMMANDS), None)
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name) if wanted == name else None
        p = sub.add_parser(
            name,
            help=summary,
            # the summary, written for users (module docstrings are written for the code's readers)
            description=summary[0].upper() + summary[1:] + ".",
            formatter_class=HelpFormatter,
        )
        if module is not None:
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


#: the libraries' own switches, set (unless the user set them) before any of them is imported: their warnings and
#: progress bars (diffusers' float32 notes, the CLIP tokenizer's length warning, `datasets`' "Generating ... split"
#: bars) say nothing a spurbench user can act on; spurbench prints its own line for what they can (prompts cut to
#: CLIP's length, for one). Errors still show. Set e.g. TRANSFORMERS_VERBOSITY=warning to see them again.
QUIET_LIBRARIES = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_libraries() -> None:
    """Silence the library noise above for this process and its children (the entry point's business, never a
    library module's import)."""
    import logging

    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    for lib, var in (
        ("transformers", "TRANSFORMERS_VERBOSITY"),
        ("diffusers", "DIFFUSERS_VERBOSITY"),
        ("datasets", "DATASETS_VERBOSITY"),
    ):
        if lib in sys.modules:  # already imported (spurbench used as a library, then main()): its level was read
            logging.getLogger(lib).setLevel(getattr(logging, os.environ[var].upper(), logging.ERROR))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_libraries()
    check_command(argv)
    parser = build_parser(argv)
    check_flags(parser, argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from spurbench.progress import plain_progress_in_logs

    try:
        with plain_progress_in_logs():  # a log file gets whole lines, not redrawn bars
            return int(args._run(args) or 0)
    except SpurbenchError as err:
        print(f"spurbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"spurbench {args.command}: interrupted; finished work is kept, re-run the same command to resume.",
            file=sys.stderr,
        )
        return 130
