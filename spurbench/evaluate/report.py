"""`spurbench leaderboard`: print a leaderboard of classifiers scored on one dataset, ranked, as a
markdown table, JSON, timm's results CSV, a static HTML page, or the Hub's evaluation-results files.

Imports flow one way: this command uses the store (`leaderboard`) and the page (`page`); the page
uses the store; the store uses neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spurbench.errors import SpurbenchError
from spurbench.evaluate.leaderboard import (
    DEFAULT_LEADERBOARD,
    board_exists,
    default_leaderboard,
    export,
    load_leaderboard,
    to_markdown,
    to_ranked_json,
)
from spurbench.files import write_claimed
from spurbench.untrusted import printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--leaderboard",
        default=None,
        metavar="FILE",
        help="leaderboard written by `spurbench eval`: its JSON path or its folder (a folder means "
        "FOLDER/leaderboard.json), read from the store beside it (FOLDER/store/) when there is one; unset: "
        f"--dataset's default board ({DEFAULT_LEADERBOARD}), else the only board under leaderboard/",
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help="write the readable export FOLDER/leaderboard.json (the whole board in one file) from the store and "
        "exit; `spurbench eval` rewrites it on every record only while the board has at most 100 entries",
    )
    parser.add_argument(
        "--format",
        choices=("md", "json", "csv", "html", "eval-results"),
        default="md",
        help="md: ranked markdown table; json: the board with ranked entries; csv: one row per model in timm's "
        "results-CSV convention; html: a static page written into --out; eval-results: the Hub's "
        "`.eval_results/<dataset>.yaml` for every model, under --out/<model>/",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="html: folder for the page (default: <leaderboard folder>/site); eval-results: folder for the "
        "per-model files (required); md/json/csv: write DIR/leaderboard.md, leaderboard-ranked.json or "
        "leaderboard.csv instead of printing. Every format's DIR is a new or empty folder, or one spurbench wrote "
        "(it keeps a .spurbench-written.json record there): only files that record lists are replaced",
    )
    parser.add_argument(
        "--dataset-id",
        metavar="ORG/NAME",
        default=None,
        help="eval-results only: the dataset's Hub id, when the board was scored on a local folder",
    )
    parser.add_argument(
        "--dataset",
        metavar="FOLDER",
        default=None,
        help="html only: local dataset folder, so the page can show the images",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="print two entries' headline differences (A - B) on the images both scored, with paired 95 %% "
        "bootstrap intervals and an exact McNemar test; a name may be a unique part of the model name",
    )
    parser.add_argument(
        "--groups",
        metavar="canonical|all|ID,...",
        default=None,
        help="eval-results only: which comparable groups to export (default canonical: every row a default "
        "eval scores, timm preprocessing, float32); other groups go under task ids naming the group",
    )


def _default_board(dataset: str | None) -> Path:
    """Without --leaderboard: the default board of --dataset, else the one board under leaderboard/ (eval's defaults)."""
    if dataset is not None:
        return default_leaderboard(dataset)
    # a board is its export leaderboard.json or, above EXPORT_MAX_ENTRIES, only its store/ folder
    found = sorted(
        {
            p.parent / "leaderboard.json"
            for pattern in ("leaderboard.json", "store", "*/leaderboard.json", "*/store")
            for p in Path("leaderboard").glob(pattern)
        }
    )
    if len(found) > 1:
        raise SpurbenchError(
            f"several leaderboards under leaderboard/ ({', '.join(map(str, found))}); pick one with --leaderboard FILE"
        )
    return found[0] if found else Path("leaderboard/leaderboard.json")


def run(args: argparse.Namespace) -> int:
    path = Path(args.leaderboard) if args.leaderboard is not None else _default_board(args.dataset)
    if path.is_dir():
        path = path / "leaderboard.json"
    if not board_exists(path):
        raise SpurbenchError(
            f"no leaderboard at '{path}'; create one with `spurbench eval --model NAME --dataset FOLDER --leaderboard {path}`"
        )
    _check_flags(args)
    if args.export:
        print(export(path))
        return 0
    board = load_leaderboard(path)
    if getattr(args, "compare", None):
        from spurbench.evaluate.leaderboard import compare

        sys.stdout.write(compare(path, board, *args.compare))
    elif args.format == "eval-results":
        _write_eval_results(args, board)
    elif args.format == "html":
        _write_page(args, path)
    else:
        _write_text(args, board)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that do not go together, refused before the board is read."""
    if args.dataset is not None and args.format != "html":
        raise SpurbenchError("--dataset is only used by --format html; drop it or add --format html")
    if args.dataset_id is not None and args.format != "eval-results":
        raise SpurbenchError("--dataset-id is only used by --format eval-results; drop it or add --format eval-results")
    if getattr(args, "groups", None) is not None and args.format != "eval-results":
        raise SpurbenchError("--groups is only used by --format eval-results; drop it or add --format eval-results")
    if args.format == "eval-results" and not args.out:
        raise SpurbenchError("--format eval-results writes one folder per model: add --out DIR")
    if getattr(args, "compare", None) and (args.format != "md" or args.out or args.export):
        raise SpurbenchError("--compare prints to the terminal; drop --format, --out and --export")


def _write_eval_results(args: argparse.Namespace, board: Mapping[str, Any]) -> None:
    from spurbench.evaluate.hub_results import write_eval_results

    groups = getattr(args, "groups", None) or "canonical"
    if groups not in ("canonical", "all"):
        try:
            groups = [int(g) for g in groups.split(",")]
        except ValueError:
            raise SpurbenchError(f"--groups {args.groups!r}: give canonical, all, or group ids like 1,3") from None
    written, left_out = write_eval_results(board, args.out, args.dataset_id, groups)
    for path in written:
        print(path)
    for model, why in left_out.items():
        print(f"left out {printable(model)}: {printable(why)}", file=sys.stderr)


def _write_page(args: argparse.Namespace, path: Path) -> None:
    if args.dataset is not None and not Path(args.dataset).is_dir():
        raise SpurbenchError(
            f"--dataset '{args.dataset}' is not a folder; pass the local dataset folder or leave it out"
        )
    try:
        from spurbench.evaluate.page import render_page
    except ImportError as err:
        raise SpurbenchError(
            f"HTML rendering is unavailable in this install ({err}); use --format md or json"
        ) from None
    print(render_page(path, Path(args.out) if args.out else path.parent / "site", dataset_folder=args.dataset))


def _write_text(args: argparse.Namespace, board: Mapping[str, Any]) -> None:
    """md, csv or json: printed, or written into --out."""
    if args.format == "md":  # md and csv are read on a terminal: names with newlines or escape codes made visible
        text, name = to_markdown(printable_board(board)), "leaderboard.md"
    elif args.format == "csv":
        from spurbench.evaluate.hub_results import to_csv

        text, name = to_csv(printable_board(board)), "leaderboard.csv"
    else:
        text, name = json.dumps(to_ranked_json(board), indent=2, allow_nan=False) + "\n", "leaderboard-ranked.json"
    if args.out:
        print(*write_claimed(args.out, {name: text}), sep="\n")
    else:
        sys.stdout.write(text)


def printable_board(board: Any) -> Any:
    """A copy of `board` whose every string is `untrusted.printable` (for the md and csv reports: a model name
    read from a board someone else made must not break a table line or drive the terminal)."""
    if isinstance(board, str):
        return printable(board)
    if isinstance(board, Mapping):
        return {printable_board(k): printable_board(v) for k, v in board.items()}  # keys too: models key some tables
    if isinstance(board, list):
        return [printable_board(v) for v in board]
    return board
