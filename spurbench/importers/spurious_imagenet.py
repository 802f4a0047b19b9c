"""`spurbench import spurious-imagenet DIR --out DIR`: the Spurious ImageNet release (Neuhaus et al.,
ICCV 2023) in spurbench's contract.

DIR is the unpacked release: `images/<folder>/<images>`, one folder per class/component pair, the
ImageNet class at `_`-position 2 of the folder name and the neural-PCA component last (e.g.
`..._..._309_..._2`); plain files next to the folders (the release's `timestamp.txt`) are skipped.
With `--download`, the release archive (the URL of the release repository's `setup_download.sh`) is
fetched into DIR first, with a progress bar, resuming an interrupted download, and unpacked there;
its SHA-256 goes into the card.

The result is a `spurious` set, split `test`, one row per image: `label` = the class, `component`,
`spurious_feature` from Spurious ImageNet's class table, `source: reference`,
`builder: spurious_imagenet`, and `file` = `<folder>/<file name>` in the release. Score it with
`spurbench eval --dataset OUT --model NAME`, with `--positives` (ImageNet val) for the spurious score.

Every folder name and every image is checked before anything is written; a problem stops the
import with one line and leaves --out as it was.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from spurbench import imagenet
from spurbench import spurious_imagenet as release
from spurbench.dataset import DEFAULT_SPLIT, IMAGE_SUFFIXES, DatasetCard, encode_image, write_dataset
from spurbench.errors import SpurbenchError
from spurbench.importers import add_out_argument

BUILDER = "spurious_imagenet"


def release_rows(root: str | Path) -> list[dict]:
    """Contract rows for every image of the release at `root`, sorted by class, component, folder, file."""
    folders = release.scan(root)
    features = {c.index: c.spurious_feature for c in imagenet.spurious_imagenet_classes()}
    rows = []
    for f in folders:
        files = sorted(p for p in f.path.iterdir() if not p.name.startswith("."))
        others = [p.name for p in files if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)]
        if others:
            raise SpurbenchError(
                f"folder '{f.path}' holds {others[0]!r}, which is not an image ({', '.join(IMAGE_SUFFIXES)}); remove it or re-extract the release"
            )
        if not files:
            raise SpurbenchError(f"folder '{f.path}' holds no images; re-extract the release")
        for path in files:
            image = encode_image(path, f"image '{path}' of the release")  # size from the header, then every pixel
            rows.append(
                {
                    "image": image,
                    "label": f.index,
                    "class_name": imagenet.class_name(f.index),
                    "spurious_feature": features.get(f.index, ""),
                    "component": f.component,
                    "source": "reference",
                    "builder": BUILDER,
                    "prompt": "",
                    "seed": -1,
                    "file": f"{f.path.name}/{path.name}",
                }
            )
    return rows


def import_release(root: str | Path, out: str | Path, archive: dict | None = None) -> Path:
    """Write the unpacked release at `root` as a contract dataset at `out`; `archive` ({url, sha256})
    is recorded in the card when the release was downloaded."""
    from datasets import Value

    from spurbench.dataset import check_out_folder

    out = check_out_folder(out, [root])

    rows = release_rows(root)
    classes = sorted({r["label"] for r in rows})
    pairs = sorted({(r["label"], r["component"]) for r in rows})
    body = (
        f"Spurious ImageNet (Neuhaus et al., ICCV 2023) in spurbench's contract: {len(rows)} real photos in {len(pairs)} "
        f"class/component folders over {len(classes)} ImageNet classes. Each photo shows a spurious feature of its class "
        "`label` but not the class object: a classifier predicting `label` is fooled.\n\n"
        f"Release: {release.RELEASE_REPOSITORY} ({archive['url'] if archive else 'an unpacked copy'}"
        + (f", SHA-256 {archive['sha256']}" if archive else "")
        + ").\n\n"
        f"Licence: {release.LICENCE_NOTE}\n\nCitation:\n\n```bibtex\n{release.CITATION}\n```"
    )
    provenance = {
        "source": BUILDER,
        "release": release.RELEASE_REPOSITORY,
        "num_folders": len(pairs),
        "num_classes": len(classes),
    }
    if archive:
        provenance.update(archive_url=archive["url"], archive_sha256=archive["sha256"])
    card = DatasetCard(
        pretty_name="Spurious ImageNet (imported by spurbench)",
        body=body,
        provenance=provenance,
        tags=["spurious-correlations", "robustness", "imagenet", "spurious-imagenet"],
        kind="spurious",
        annotations_creators=["expert-generated"],
        source_datasets=["extended|other-open-images"],
    )
    return write_dataset(out, {DEFAULT_SPLIT: rows}, card, extra_features={"file": Value("string")})


def download_release(url: str, folder: str | Path, expected_sha256: str | None = None) -> dict:
    """Fetch the release archive into `folder` (resumable) and unpack it there; returns {url, sha256}."""
    from spurbench.download import fetch

    folder = Path(folder).expanduser()
    name = Path(urlparse(url).path).name or "spurious_imagenet.zip"
    archive = folder / name
    digest = fetch(url, archive, expected_sha256, desc=f"Spurious ImageNet ({name})")
    unpack(archive, folder)
    return {"url": url, "sha256": digest}


def unpack(archive: Path, folder: Path) -> None:
    """Unzip `archive` into `folder`, refusing members that would land outside it."""
    from tqdm.auto import tqdm

    try:
        with zipfile.ZipFile(archive) as zf:
            base = folder.resolve()
            members = zf.infolist()
            for m in members:
                if not (base / m.filename).resolve().is_relative_to(base):
                    raise SpurbenchError(
                        f"archive '{archive}' has a member '{m.filename}' outside its folder; not unpacking it"
                    )
            for m in tqdm(members, desc="unpacking", unit="file", disable=None, leave=False):
                zf.extract(m, base)
    except zipfile.BadZipFile:
        raise SpurbenchError(
            f"'{archive}' is not a zip archive (damaged download?); delete it and re-run with --download"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        metavar="DIR",
        help="the unpacked release (holding images/<class folders>); with --download, where to download and unpack it",
    )
    add_out_argument(parser)
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch the release archive into DIR first (resumes an interrupted download), unpack it, then import",
    )
    parser.add_argument("--url", default=release.RELEASE_URL, help="the release archive to fetch with --download")
    parser.add_argument(
        "--sha256", default=None, metavar="HEX", help="with --download: refuse an archive whose SHA-256 differs"
    )


def run(args: argparse.Namespace) -> int:
    from spurbench.dataset import check_out_folder

    if (args.url != release.RELEASE_URL or args.sha256) and not args.download:
        raise SpurbenchError("--url and --sha256 apply to --download; add --download or drop them")
    check_out_folder(args.out, [args.folder])  # before any download: the import replaces --out whole
    archive = download_release(args.url, args.folder, args.sha256) if args.download else None
    if not args.download and not Path(args.folder).expanduser().is_dir():
        raise SpurbenchError(
            f"Spurious ImageNet folder '{args.folder}' does not exist; unzip the release there or add --download to fetch it"
        )
    out = import_release(args.folder, args.out, archive)
    print(f"wrote Spurious ImageNet to {out}; score a model with `spurbench eval --dataset {out} --model <timm name>`")
    return 0
