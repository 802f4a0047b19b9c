"""`spurbench import SOURCE ...`: turn a published dataset's own layout into a dataset in spurbench's
contract (Parquet shards + card, see `spurbench.dataset`), so `spurbench eval` and
`datasets.load_dataset(folder)` read it like any set spurbench builds.

One module per source, each exposing `add_arguments(parser)` and `run(args) -> int`, listed in
IMPORTERS. Importers need only the evaluation install (no diffusers).
"""

from __future__ import annotations

import argparse
import importlib

from spurbench.errors import SpurbenchError

#: source name -> (module, one-line summary)
IMPORTERS: dict[str, tuple[str, str]] = {
    "spurious-imagenet": (
        "spurbench.importers.spurious_imagenet",
        "the Spurious ImageNet release (images/<class>_<component> folders, or --download) as a spurious set",
    ),
    "waterbirds": (
        "spurbench.importers.waterbirds",
        "the Waterbirds folder (metadata.csv + images) as a group-labelled two-class set",
    ),
    "sample-photos": (
        "spurbench.importers.sample_photos",
        "the photos scikit-image and scikit-learn ship, labelled as a small spurious set (offline demo)",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="source",
        metavar="<source>",
        help="the dataset to import; `spurbench import <source> --help` for its flags",
    )
    for name, (module_name, summary) in IMPORTERS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_import_run=module.run)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "_import_run", None):
        known = ", ".join(IMPORTERS) or "none yet"
        raise SpurbenchError(
            f"name the source to import, one of: {known}; e.g. `spurbench import <source> DIR --out DIR`"
        )
    return int(args._import_run(args) or 0)


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """Every importer's --out."""
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="dataset folder to write (a new folder, or a spurbench dataset folder, which is replaced whole)",
    )
