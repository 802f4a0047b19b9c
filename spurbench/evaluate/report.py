"""`spurbench leaderboard`: print a leaderboard of classifiers scored on one dataset, ranked, as a
markdown table, JSON, timm's results CSV, a static HTML page, or the Hub's evaluation-results files.

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
    default_leaderboard,
    load_leaderboard,
    to_markdown,
    to_ranked_json,
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leaderboard", default=None, metavar="FILE",
                        help="leaderboard JSON written by `spurbench eval` (a folder means FOLDER/leaderboard.json); unset: "
                             f"--dataset's default board ({DEFAULT_LEADERBOARD}), else the only board under leaderboard/")
    parser.add_argument("--format", choices=("md", "json", "csv", "html", "eval-results"), default="md",
                        help="md: ranked markdown table; json: the board with ranked entries; csv: one row per model in timm's "
                             "results-CSV convention; html: a static page written into --out; eval-results: the Hub's "
                             "`.eval_results/<dataset>.yaml` for every model, under --out/<model>/")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="html: folder for the page (default: <leaderboard folder>/site); eval-results: folder for the "
                             "per-model files (required); md/json/csv: write DIR/leaderboard.md, leaderboard-ranked.json or "
                             "leaderboard.csv instead of printing")
    parser.add_argument("--dataset-id", metavar="ORG/NAME", default=None,
                        help="eval-results only: the dataset's Hub id, when the board was scored on a local folder")
    parser.add_argument("--dataset", metavar="FOLDER", default=None,
                        help="html only: local dataset folder, so the page can show the images")


def _default_board(dataset: str | None) -> Path:
    """Without --leaderboard: the default board of --dataset, else the one board under leaderboard/ (eval's defaults)."""
    if dataset is not None:
        return default_leaderboard(dataset)
    found = sorted(Path("leaderboard").glob("leaderboard.json")) + sorted(Path("leaderboard").glob("*/leaderboard.json"))
    if len(found) > 1:
        raise SpurbenchError(f"several leaderboards under leaderboard/ ({', '.join(map(str, found))}); pick one with --leaderboard FILE")
    return found[0] if found else Path("leaderboard/leaderboard.json")


def run(args: argparse.Namespace) -> int:
    path = Path(args.leaderboard) if args.leaderboard is not None else _default_board(args.dataset)
    if path.is_dir():
        path = path / "leaderboard.json"
    if not path.is_file():
        raise SpurbenchError(
            f"no leaderboard at '{path}'; create one with `spurbench eval --model NAME --dataset FOLDER --leaderboard {path}`"
        )
    if args.dataset is not None and args.format != "html":
        raise SpurbenchError("--dataset is only used by --format html; drop it or add --format html")
    if args.dataset_id is not None and args.format != "eval-results":
        raise SpurbenchError("--dataset-id is only used by --format eval-results; drop it or add --format eval-results")
    if args.format == "eval-results" and not args.out:
        raise SpurbenchError("--format eval-results writes one folder per model: add --out DIR")
    board = load_leaderboard(path)

    if args.format == "eval-results":
        from spurbench.evaluate.hub_results import write_eval_results

        for written in write_eval_results(board, args.out, args.dataset_id):
            print(written)
        return 0

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
    elif args.format == "csv":
        from spurbench.evaluate.hub_results import to_csv

        text, name = to_csv(board), "leaderboard.csv"
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
