"""`spurbench leaderboard`: print a leaderboard of classifiers scored on one dataset, ranked, as a
markdown table, JSON or a static HTML page.

Imports flow one way: this command uses the store (`leaderboard`) and the page (`page`); the page
uses the store; the store uses neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spurbench.errors import SpurbenchError
from spurbench.evaluate.leaderboard import (
    DEFAULT_LEADERBOARD,
    _write_atomic,
    load_leaderboard,
    to_markdown,
    to_ranked_json,
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leaderboard", default=DEFAULT_LEADERBOARD, metavar="FILE",
                        help="leaderboard JSON written by `spurbench eval` (a folder means FOLDER/leaderboard.json)")
    parser.add_argument("--format", choices=("md", "json", "html"), default="md",
                        help="md: ranked markdown table; json: the board with ranked entries; html: a static page written into --out")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="html: folder for the page (default: <leaderboard folder>/site); md/json: write "
                             "DIR/leaderboard.md or DIR/leaderboard-ranked.json instead of printing")
    parser.add_argument("--dataset", metavar="FOLDER", default=None,
                        help="html only: local dataset folder, so the page can show the images")


def run(args: argparse.Namespace) -> int:
    path = Path(args.leaderboard)
    if path.is_dir():
        path = path / "leaderboard.json"
    if not path.is_file():
        raise SpurbenchError(
            f"no leaderboard at '{path}'; create one with `spurbench eval --model NAME --dataset FOLDER --leaderboard {path}`"
        )
    if args.dataset is not None and args.format != "html":
        raise SpurbenchError("--dataset is only used by --format html; drop it or add --format html")
    board = load_leaderboard(path)

    if args.format == "html":
        if args.dataset is not None and not Path(args.dataset).is_dir():
            raise SpurbenchError(f"--dataset '{args.dataset}' is not a folder; pass the local dataset folder or leave it out")
        try:
            from spurbench.evaluate.page import render_page
        except ImportError as err:
            raise SpurbenchError(f"HTML rendering is unavailable in this install ({err}); use --format md or json") from None
        out_dir = Path(args.out) if args.out else path.parent / "site"
        written = render_page(path, out_dir, dataset_folder=args.dataset)
        print(written)
        return 0

    if args.format == "md":
        text, name = to_markdown(board), "leaderboard.md"
    else:
        text, name = json.dumps(to_ranked_json(board), indent=2, allow_nan=False) + "\n", "leaderboard-ranked.json"
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        target = out / name
        _write_atomic(target, text)
        print(target)
    else:
        sys.stdout.write(text)
    return 0
