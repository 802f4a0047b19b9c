"""`spurbench import waterbirds DIR --out DIR`: the Waterbirds dataset (Sagawa et al., 2020) in
spurbench's contract.

DIR is the standard Waterbirds folder (e.g. `waterbird_complete95_forest2water2/`): a `metadata.csv`
with at least the columns `img_filename, y, split, place` and the images at the relative paths it
names. `y` is the bird (0 landbird, 1 waterbird), `place` the background (0 land, 1 water), `split`
0/1/2 for train/val/test.

The result is a group-labelled `shift` set over its own two-class label set `waterbirds`
(landbird, waterbird): `label` = y, `group` = "<y>/<place>" spelled with names (e.g. `waterbird/land`,
one of the two minority groups), `place` = the background's name, splits train/val/test. Score it with
`spurbench eval --group-by group`; fine-tune on it with `spurbench finetune`.

Every row is checked before anything is written; a missing image or a malformed `metadata.csv`
stops the import with one line and leaves --out as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spurbench.dataset import DatasetCard, encode_image, read_csv_lines, write_dataset
from spurbench.errors import SpurbenchError
from spurbench.files import inside
from spurbench.importers import add_out_argument

LABEL_SET = "waterbirds"
LABEL_NAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")
SPLIT_NAMES = ("train", "val", "test")
REQUIRED = ("img_filename", "y", "split", "place")
CITATION = (
    "Sagawa, Koh, Hashimoto, Liang. Distributionally Robust Neural Networks for Group Shifts. ICLR 2020 "
    "(images from CUB-200-2011 and Places)."
)


def group_name(y: int, place: int) -> str:
    """`<y>/<place>` with names: the group of a Waterbirds image."""
    return f"{LABEL_NAMES[y]}/{PLACE_NAMES[place]}"


def read_metadata(root: Path) -> list[dict]:
    """Parsed, checked rows of `root/metadata.csv`: {path, y, place, split} with split as its name."""
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise SpurbenchError(
            f"'{root}' has no metadata.csv; give the Waterbirds folder (the one holding metadata.csv and the image folders)"
        )
    raw = read_csv_lines(
        meta,
        REQUIRED,
        lambda missing: SpurbenchError(
            f"'{meta}' lacks column(s) {', '.join(missing)}; a Waterbirds metadata.csv has {', '.join(REQUIRED)} (and img_id, place_filename)"
        ),
        lambda err: SpurbenchError(
            f"cannot parse '{meta}' as CSV ({err.__class__.__name__}: {err}); restore the original metadata.csv"
        ),
    )
    if not raw:
        raise SpurbenchError(f"'{meta}' has a header but no rows; restore the original metadata.csv")
    rows = []
    for line, r in enumerate(raw, start=2):
        values = {}
        for col, allowed in (("y", 2), ("place", 2), ("split", 3)):
            v = (r.get(col) or "").strip()
            try:
                n = int(float(v))
                ok = float(v) == n and 0 <= n < allowed
            except ValueError:
                ok = False
            if not ok:
                raise SpurbenchError(
                    f"'{meta}' line {line}: {col} is {v!r}, expected an integer 0..{allowed - 1}; restore the original metadata.csv"
                )
            values[col] = n
        name = (r.get("img_filename") or "").strip()
        if not name:
            raise SpurbenchError(f"'{meta}' line {line}: img_filename is empty; restore the original metadata.csv")
        # a path read from a file: refused unless it stays inside the Waterbirds folder (no absolute or ../ path)
        path = inside(root, name, f"'{meta}' line {line} (img_filename)")
        if not path.is_file():
            raise SpurbenchError(
                f"image '{path}' named on line {line} of '{meta}' does not exist; re-extract the Waterbirds archive"
            )
        rows.append({"path": path, "y": values["y"], "place": values["place"], "split": SPLIT_NAMES[values["split"]]})
    return rows


def contract_row(r: dict) -> dict:
    # encoded here, so a truncated or oversized image is refused with its file named (encode_image checks both)
    return {
        "image": encode_image(r["path"], f"image '{r['path']}' (named in metadata.csv)"),
        "label": r["y"],
        "class_name": LABEL_NAMES[r["y"]],
        "spurious_feature": f"{PLACE_NAMES[r['place']]} background",
        "component": -1,
        "source": "reference",
        "builder": "waterbirds",
        "prompt": "",
        "seed": -1,
        "group": group_name(r["y"], r["place"]),
        "place": PLACE_NAMES[r["place"]],
    }


def import_waterbirds(root: str | Path, out: str | Path) -> Path:
    """Write the Waterbirds folder `root` as a contract dataset at `out`; returns `out`."""
    from datasets import Value

    from spurbench.dataset import check_out_folder

    root = Path(root).expanduser()
    out = check_out_folder(out, [root])  # before reading anything: the import replaces --out whole
    if not root.is_dir():
        raise SpurbenchError(
            f"Waterbirds folder '{root}' does not exist; download and extract waterbird_complete95_forest2water2.tar.gz and pass its folder"
        )
    rows = read_metadata(root)
    splits = {s: [contract_row(r) for r in rows if r["split"] == s] for s in SPLIT_NAMES}
    splits = {s: v for s, v in splits.items() if v}
    counts = {
        s: {g: sum(1 for r in v if r["group"] == g) for g in sorted({r["group"] for r in v})} for s, v in splits.items()
    }
    card = DatasetCard(
        pretty_name="Waterbirds (imported by spurbench)",
        body=(
            "The Waterbirds dataset in spurbench's contract: `label` is the bird (landbird / waterbird), `group` is "
            "`<bird>/<background>`, `place` the background. Groups per split: "
            + "; ".join(f"{s}: " + ", ".join(f"{g} {n}" for g, n in c.items()) for s, c in counts.items())
            + f".\n\nSource: {CITATION} Licence: that of CUB-200-2011 and Places (research use)."
        ),
        provenance={"source": "waterbirds", "imported_from": root.resolve().name, "group_counts": counts},
        tags=["spurious-correlations", "robustness", "waterbirds", "group-shift"],
        kind="shift",
        label_set=LABEL_SET,
        # labels come from the bird species (CUB-200-2011's expert annotations) grouped by Sagawa et al.;
        # the images are composites of CUB birds on Places backgrounds, so the set extends both
        annotations_creators=["expert-generated"],
        source_datasets=["extended"],
    )
    return write_dataset(
        out, splits, card, extra_features={"group": Value("string"), "place": Value("string")}, label_names=LABEL_NAMES
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", metavar="DIR", help="the Waterbirds folder holding metadata.csv and the images it names"
    )
    add_out_argument(parser)


def run(args: argparse.Namespace) -> int:
    out = import_waterbirds(args.folder, args.out)
    print(f"wrote Waterbirds to {out} (label set {LABEL_SET}, group = <bird>/<background>)")
    return 0
