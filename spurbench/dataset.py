"""The dataset contract shared by `build` (writer) and `eval` (reader).

A Hub-layout folder: `data/<split>-NNNNN-of-NNNNN-<content>.parquet` shards with embedded image bytes
(`<content>`: the first 16 hex digits of the shard's sha256), a `README.md` card whose YAML carries
`configs` (listing those exact files), `dataset_info` and spurbench's provenance, and an `eval.yaml`
naming the benchmark's tasks for the Hub's evaluation results, and `.spurbench-written.json`, the record of
the files spurbench wrote (`spurbench.files`): only a folder whose record covers all it holds is replaced. It
loads with `datasets.load_dataset(folder)` offline and uploads unchanged to the Hub. See DESIGN.md.

Why content in the names: `datasets` caches a local folder by its folder name, its card and the files'
modification times, not their bytes, so two folders `a/ds` and `b/ds` with the same card could load
each other's rows. A card that lists content-named files changes whenever the content does, so
`load_dataset(folder)` is safe; spurbench itself never goes through that cache (`read_split` reads
the Parquet files it has just fingerprinted, with pyarrow, into memory).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spurbench import imagenet
from spurbench.errors import SpurbenchError, first_line, hub_failure_reason
from spurbench.untrusted import printable

#: split holding the generated (or otherwise spurious) images that `eval` scores by default
DEFAULT_SPLIT = "test"
#: split holding the reference images a builder learned from, when it exports them
REFERENCE_SPLIT = "reference"

#: columns every row has, in order (DESIGN.md, "Dataset contract")
REQUIRED_COLUMNS = (
    "image",
    "label",
    "class_name",
    "spurious_feature",
    "component",
    "source",
    "builder",
    "prompt",
    "seed",
)
SOURCES = ("generated", "reference")
#: file name endings taken as images in a folder (case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
PROVENANCE_KEY = "spurbench"
#: what a set promises (DESIGN.md, "Kinds of set"): `spurious` = the class object is absent, predicting
#: `label` is the failure; `shift` = the object is present (context changed, or a group-labelled set such
#: as Waterbirds), predicting `label` is the success. Cards without a kind are `spurious` (the only kind
#: spurbench made before kinds existed).
KINDS = ("spurious", "shift")
DEFAULT_KIND = "spurious"
#: the label set every spurbench set used before label sets were named: ClassLabel over the 1000
#: ImageNet-1k WordNet ids in index order
IMAGENET_LABEL_SET = "imagenet-1k"
#: Hub `size_categories` buckets: (upper bound exclusive, name)
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)
#: the benchmark's tasks (one per headline metric) by kind of set: `eval.yaml` lists them and
#: `spurbench leaderboard --format eval-results` reports one value per task
EVAL_TASKS: dict[str, tuple[str, ...]] = {
    "spurious": ("spurious_rate", "spurious_score_ap"),
    "shift": ("accuracy", "worst_group_accuracy"),
}
EVAL_FILE = "eval.yaml"
_CONTENT_DIGITS = 16
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def features(extra: Mapping[str, Any] | None = None, label_names: Iterable[str] | None = None):
    """`datasets.Features` of the contract; builders may append columns (e.g. `background`, `group`).

    `label_names`: the ClassLabel names of a set whose labels are not ImageNet-1k (e.g. Waterbirds'
    two classes); None means the 1000 ImageNet-1k WordNet ids."""
    from datasets import ClassLabel, Features, Image, Value

    feats = {
        "image": Image(),
        "label": ClassLabel(names=list(imagenet.wnids()) if label_names is None else list(label_names)),
        "class_name": Value("string"),
        "spurious_feature": Value("string"),
        "component": Value("int32"),
        "source": Value("string"),
        "builder": Value("string"),
        "prompt": Value("string"),
        "seed": Value("int64"),
    }
    for name, feat in (extra or {}).items():
        if name in feats:
            raise ValueError(f"extra column '{name}' clashes with a contract column")
        feats[name] = feat
    return Features(feats)


def encode_image(image: Any, what: str | None = None) -> dict[str, Any]:
    """PNG-encode a PIL image / array / file path into the `{bytes, path}` form parquet embeds.

    PNG is lossless and its encoder is deterministic, so the same pixels give the same bytes.
    Files that already are PNG or JPEG are embedded as they are (no re-encoding losses), after their size is
    checked from the header (`untrusted.image_size`) and their pixels decode to the end (a truncated JPEG is
    refused, not embedded). `what` names the file in errors (default: its path).
    """
    from PIL import Image as PILImage

    from spurbench.untrusted import open_image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        what = what or f"image '{path}'"
        data = path.read_bytes()
        try:
            with open_image(data, what) as im:
                fmt = im.format
                im.load()  # every pixel: PIL raises on a truncated file here, never later in a reader
                if fmt not in ("PNG", "JPEG"):
                    image = im.convert("RGB")
        except SpurbenchError:
            raise
        except Exception as err:
            raise SpurbenchError(
                f"cannot read {what}: {err.__class__.__name__} (truncated or damaged); replace or remove the file"
            ) from None
        if fmt in ("PNG", "JPEG"):
            return {"bytes": data, "path": None}
    if not isinstance(image, PILImage.Image):
        image = PILImage.fromarray(image)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return {"bytes": buf.getvalue(), "path": None}


@dataclass
class DatasetCard:
    """What goes into README.md besides the schema: a title, a body, and machine-readable provenance."""

    pretty_name: str
    body: str = ""
    license: str = "other"
    #: recipe name/hash, base models with revisions, input licences, created date, reproduce command, ...
    provenance: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=lambda: ["spurious-correlations", "robustness", "synthetic", "imagenet"])
    #: one of KINDS, recorded in the provenance block as `kind`
    kind: str = DEFAULT_KIND
    #: name of the label set; anything but IMAGENET_LABEL_SET needs `label_names` in write_dataset
    label_set: str = IMAGENET_LABEL_SET
    #: Hub card metadata: who made the labels (crowdsourced, expert-generated, found, machine-generated)
    annotations_creators: list[str] = field(default_factory=lambda: ["machine-generated"])
    #: Hub card metadata: `original`, or `extended|<dataset>` for sets made from another
    source_datasets: list[str] = field(default_factory=lambda: ["original"])
    task_ids: list[str] = field(default_factory=lambda: ["multi-class-image-classification"])
    #: why the set has its licence (derived from the inputs' licences, or why that was not possible)
    license_note: str = ""


def _row_for(row: Mapping[str, Any], column_names: Iterable[str], num_labels: int | None = None) -> dict[str, Any]:
    missing = [c for c in REQUIRED_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"row is missing contract columns {missing}")
    if row["source"] not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {row['source']!r}")
    if num_labels is None:
        imagenet.check_index(int(row["label"]))
    elif not 0 <= int(row["label"]) < num_labels:
        raise ValueError(f"label {row['label']} is outside the label set's {num_labels} classes")
    out = {c: row.get(c) for c in column_names}
    # every image-like column is embedded (`image`, DDB's `mask`, D3S's `init_image`): nothing points outside the folder
    for c in image_columns(column_names):
        if out.get(c) is not None or c == "image":
            out[c] = _embedded(out.get(c) if c != "image" else row["image"])
    return out


def cell_bytes(folder: str | Path, cell: Mapping[str, Any] | None, what: str) -> bytes | None:
    """An image cell's encoded bytes: embedded, or read from the file its path names inside `folder` (a path read
    from a table never leads out of the dataset: `files.inside`); None for a cell with neither."""
    from spurbench.files import inside

    if cell and cell.get("bytes") is not None:
        return cell["bytes"]
    if not cell or not cell.get("path"):
        return None
    return inside(folder, cell["path"], what).read_bytes()


def image_columns(feats: Any) -> list[str]:
    """The columns of `feats` (a `datasets.Features`) holding images; just `image` for a plain list of names."""
    from datasets import Image

    if not isinstance(feats, Mapping):
        return ["image"]
    return [c for c, f in feats.items() if isinstance(f, Image)]


def _embedded(value: Any) -> dict[str, Any]:
    """An image cell with its bytes: a `{bytes, path}` dict keeps its bytes (a path-only one is read) and at most the
    file name of its path (never a local folder), anything else is encoded."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return {"bytes": value["bytes"], "path": Path(value["path"]).name if value.get("path") else None}
        if value.get("path"):
            if not Path(value["path"]).is_file():
                raise SpurbenchError(
                    f"an image cell points to '{value['path']}', which does not exist; the dataset is not "
                    "self-contained (made before images were embedded): rebuild it or restore that file"
                )
            return encode_image(value["path"])
        raise ValueError("image cell has neither bytes nor a path")
    return encode_image(value)


def write_dataset(
    out_dir: str | Path,
    splits: Mapping[str, Iterable[Mapping[str, Any]]],
    card: DatasetCard,
    extra_features: Mapping[str, Any] | None = None,
    rows_per_shard: int = 1000,
    label_names: Iterable[str] | None = None,
) -> Path:
    """Write a Hub-layout dataset folder. Rows stream in; shards are written as they fill.

    Written into a temporary sibling folder and moved into place at the end, so a crash never
    leaves a half-written dataset at `out_dir`, and an existing dataset there is replaced whole.
    """
    from datasets import DatasetInfo

    from spurbench.files import WrittenFolder, remove_stale_temporaries, sha256_of, temporary_name

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() or out_dir.is_symlink():  # never replace what spurbench did not write
        check_out_folder(out_dir, flag="dataset folder", may_be_input=True)
    if card.kind not in KINDS:
        raise ValueError(f"card kind must be one of {KINDS}, got {card.kind!r}")
    if (label_names is None) != (card.label_set == IMAGENET_LABEL_SET):
        raise ValueError(
            f"label set {card.label_set!r} and label_names disagree: name the label set exactly when giving label_names"
        )
    label_names = None if label_names is None else list(label_names)
    feats = features(extra_features, label_names)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent)  # siblings a killed write left behind, and only those
    tmp = temporary_name(out_dir)
    tmp.mkdir()
    try:
        (tmp / "data").mkdir()
        record = WrittenFolder(tmp, f"dataset folder '{out_dir}'")
        num_labels = None if label_names is None else len(label_names)
        counts, files = _write_shards(tmp, out_dir, splits, feats, num_labels, rows_per_shard, record)
        info = DatasetInfo(features=feats)
        for name, text in (
            ("README.md", _card_text(card, info, counts, files)),
            (EVAL_FILE, eval_yaml_text(card, counts)),
        ):
            (tmp / name).write_text(text)
            record.files[name] = sha256_of(tmp / name)
        record.save()  # last: a folder holding the record is complete
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_shards(
    tmp: Path,
    out_dir: Path,
    splits: Mapping[str, Iterable[Mapping[str, Any]]],
    feats: Any,
    num_labels: int | None,
    rows_per_shard: int,
    record: Any,
) -> tuple[dict[str, tuple[int, int]], dict[str, list[str]]]:
    """Every split's rows as content-named shards in `tmp/data`, recorded in `record`: ({split: (rows, bytes on
    disk)}, {split: its shard files relative to the folder})."""
    from datasets import Dataset

    from spurbench.files import sha256_of

    counts: dict[str, tuple[int, int]] = {}
    files: dict[str, list[str]] = {}
    empty: list[str] = []
    for split, rows in splits.items():
        shard_files: list[Path] = []
        n = 0
        for chunk in _chunks(rows, rows_per_shard):
            encoded = [_row_for(r, feats, num_labels) for r in chunk]
            shard = tmp / "data" / f"{split}-{len(shard_files):05d}.parquet.part"
            Dataset.from_list(encoded, features=feats).to_parquet(str(shard))
            shard_files.append(shard)
            n += len(encoded)
        if n == 0:  # listed in the card without a file, a split makes the folder unreadable: leave it out
            empty.append(split)
            continue
        named = []
        for i, shard in enumerate(shard_files):
            digest = sha256_of(shard)
            named.append(shard.rename(tmp / "data" / shard_name(split, i, len(shard_files), digest)))
            record.files[f"data/{named[-1].name}"] = digest
        counts[split] = (n, sum(p.stat().st_size for p in named))
        files[split] = [f"data/{p.name}" for p in named]
    if not counts:
        raise SpurbenchError(
            f"nothing to write to '{out_dir}': "
            + (f"split(s) {', '.join(empty)} have no rows" if empty else "no splits")
            + "; a dataset needs at least one image (nothing was written)"
        )
    return counts, files


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """The finished folder `tmp` moved to `out_dir`, replacing what is there whole."""
    from spurbench.files import temporary_name

    if out_dir.exists() or out_dir.is_symlink():
        # checked again just before the swap: a file may have appeared there while the rows were written
        check_out_folder(out_dir, flag="dataset folder", may_be_input=True)
        old = temporary_name(out_dir)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)


def check_out_folder(
    out: str | Path, inputs: Iterable[str | Path] = (), flag: str = "--out", may_be_input: bool = False
) -> Path:
    """Refuse, with one line, an --out that writing a dataset there (which replaces the folder whole) would lose
    someone's work with: the working directory, the home folder or a folder above them, a folder holding one of
    `inputs` (or being one, unless `may_be_input`: `verify` rewrites a dataset in place), or an existing folder
    without spurbench's record of what it wrote (`spurbench.files`) or holding anything the record does not list
    with its current bytes. A dataset folder from a spurbench older than the record (README.md, eval.yaml and
    data/*.parquet, no record) is refused too, with a hint: its files cannot be told from a user's. Returns the
    folder."""
    from spurbench.files import WrittenFolder, has_record

    out = Path(out)
    if str(out).startswith("~"):
        out = out.expanduser()
    where = out.resolve()
    for special, what in ((Path.cwd().resolve(), "the working directory"), (Path.home().resolve(), "your home folder")):
        if where == special or where in special.parents:
            raise SpurbenchError(
                f"{flag} '{out}' is {what}"
                + ("" if where == special else " or a folder above it")
                + "; writing a dataset replaces its folder whole: give a new folder, e.g. data/<name>"
            )
    for given in inputs:
        inp = Path(given).expanduser().resolve()
        if where in inp.parents or (where == inp and not may_be_input):
            raise SpurbenchError(
                f"{flag} '{out}' holds the input '{given}'; writing a dataset replaces its folder whole: "
                "give a new folder next to it"
            )
    if out.is_dir() and not out.is_symlink() and not has_record(out) and _looks_like_old_dataset(out):
        raise SpurbenchError(
            f"{flag} '{out}' looks like a dataset written by an older spurbench (it has no "
            ".spurbench-written.json record), so its files cannot be told from yours and it is not replaced; "
            "give a new folder, or move that one away first"
        )
    if out.exists() or out.is_symlink():
        WrittenFolder.claim(out, flag, create=False).check_all_replaceable()
    return out


def _looks_like_old_dataset(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return "README.md" in names and "data" in names and names <= {"README.md", EVAL_FILE, "data"}


def shard_name(split: str, i: int, n: int, sha256: str) -> str:
    """`<split>-NNNNN-of-NNNNN-<first 16 hex of the shard's sha256>.parquet`."""
    return f"{split}-{i:05d}-of-{n:05d}-{sha256[:_CONTENT_DIGITS]}.parquet"


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for a dataset of n rows."""
    return next((name for bound, name in SIZE_CATEGORIES if n < bound), "n>1T")


def eval_yaml_text(card: DatasetCard, counts: Mapping[str, Any]) -> str:
    """`eval.yaml` at the dataset root: the benchmark and its tasks (one per headline metric), each
    naming the config and split it is scored on, for the Hub's evaluation results."""
    split = DEFAULT_SPLIT if DEFAULT_SPLIT in counts else next(iter(counts))
    body = card.body.strip().split("\n\n")[0].strip() if card.body.strip() else card.pretty_name
    meta = {
        "name": card.pretty_name,
        "description": body,
        "evaluation_framework": "spurbench",
        "tasks": [{"id": t, "config": "default", "split": split} for t in EVAL_TASKS[card.kind]],
    }
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)


def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _card_text(card: DatasetCard, info, counts: Mapping[str, tuple[int, int]], files: Mapping[str, list[str]]) -> str:
    from huggingface_hub import DatasetCardData

    meta: dict[str, Any] = {
        "license": card.license,
        "pretty_name": card.pretty_name,
        "task_categories": ["image-classification"],
        "task_ids": list(card.task_ids),
        "annotations_creators": list(card.annotations_creators),
        "source_datasets": list(card.source_datasets),
        "size_categories": [size_category(sum(n for n, _ in counts.values()))],
        "tags": card.tags,
        "configs": [
            {
                "config_name": "default",
                # the exact, content-named files (not a glob): the card changes when the content does
                "data_files": [{"split": s, "path": files[s]} for s in counts],
            }
        ],
        "dataset_info": {
            **info._to_yaml_dict(),
            "splits": [{"name": s, "num_bytes": b, "num_examples": n} for s, (n, b) in counts.items()],
        },
    }
    if card.provenance or card.kind != DEFAULT_KIND or card.label_set != IMAGENET_LABEL_SET:
        meta[PROVENANCE_KEY] = {**card.provenance, "kind": card.kind, "label_set": card.label_set}
    # through huggingface_hub's own card model and YAML writer, so the header is what the Hub writes and reads
    # (its known fields checked by DatasetCardData); our key order is kept
    header = DatasetCardData(**meta).to_yaml(original_order=list(meta))
    return (
        f"---\n{header}\n---\n\n# {card.pretty_name}\n\n{smoke_warning(card)}{_own_body(card)}\n\n"
        f"{hub_user_sections(card, info, list(counts))}"
    )


# ---------------------------------------------------------------------------------------------
# The card's prose for a Hub user: how to load it, what the columns mean, its licence, how to cite


#: what each contract column means, as the card's column table says it
COLUMN_MEANINGS: dict[str, str] = {
    "image": "the image",
    "label": "the ImageNet class k this image is about (a `spurious` set: the object it must NOT contain; a "
    "`shift` set: the object it shows)",
    "class_name": "the human-readable name of k",
    "spurious_feature": "what in the image makes classifiers see k (e.g. `red feeder / flower`); in a `shift` set "
    "(D3S) the background phrase of the prompt, its key being in `background`",
    "component": "Spurious ImageNet's neural-PCA component id, -1 if none",
    "source": "`generated`, or `reference` for a real photo",
    "builder": "what made it: `sfsl`, `dreambooth`, `d3s`, `ddb`, an importer's name",
    "prompt": "the exact text prompt (empty for real photos)",
    "seed": "the exact seed (-1 for real photos)",
    "background": "the background the object was placed on (key of the recipe's backgrounds)",
    "group": "the group label (class x context) of a group-labelled set",
    "file": "the image's file in the source release",
    "object_score": "the open-vocabulary detector's highest score for k (`spurbench verify`)",
    "object_present": "object_score >= the threshold in the card",
    "object_boxes": "the detector's best boxes (JSON)",
    "reviewed": "a person's decision: `keep`, `drop` or empty",
}


OTHER_COLUMN = "added by this set's builder"


#: the first line of what `hub_user_sections` adds: a card read back (verify rewrites a set) ends its body there
_HUB_SECTIONS_START = "## Using this dataset"


#: the last words of what `hub_user_sections` adds (its citation paragraph)
_HUB_SECTIONS_END = "whose classes it builds on."


def _own_body(card: DatasetCard) -> str:
    """The body without the prose this module adds, so a card read back and written again holds it once."""
    body = card.body.strip()
    warning = smoke_warning(card).strip()
    if warning and body.startswith(warning):
        body = body[len(warning) :].strip()
    at = 0 if body.startswith(_HUB_SECTIONS_START) else body.find("\n" + _HUB_SECTIONS_START)
    if at < 0:
        return body
    # sections written after ours (verify's record, the audit) are the body's own: keep them
    end = body.find(_HUB_SECTIONS_END, at)
    rest = body[end + len(_HUB_SECTIONS_END) :].strip() if end >= 0 else ""
    return (body[:at].strip() + ("\n\n" + rest if rest else "")).strip()


def smoke_warning(card: DatasetCard) -> str:
    """A plain warning first on a set whose images come from spurbench's random-weight model."""
    if "tiny_sd" not in str(card.provenance.get("base_model", "")):
        return ""
    return (
        "> **Smoke set: not for measuring classifiers.** Its generated images come from a random-weight model "
        "(spurbench's tiny Stable Diffusion, no pretrained weights): they are noise, made to check that the "
        "pipeline runs. Rates of 0 and undefined kappas are expected on it.\n\n"
    )


def hub_user_sections(card: DatasetCard, info: Any, splits: list[str]) -> str:
    """Usage snippet, column table, licence and citation (markdown, deterministic)."""
    split = DEFAULT_SPLIT if DEFAULT_SPLIT in splits else (splits[0] if splits else DEFAULT_SPLIT)
    rows = []
    for name, feature in (info.features or {}).items():
        kind = type(feature).__name__
        dtype = getattr(feature, "dtype", None)
        shown = f"{kind} ({dtype})" if kind == "Value" and dtype else kind
        rows.append(f"| `{name}` | {shown} | {COLUMN_MEANINGS.get(name, OTHER_COLUMN)} |")
    licence = card.license_note or (
        "other: see the licences of the inputs above" if card.license == "other" else card.license
    )
    return "\n".join(
        [
            _HUB_SECTIONS_START,
            "",
            "```python",
            "import datasets",
            "",
            f'ds = datasets.load_dataset("<this folder, or its Hub id>", split="{split}")',
            'ds.features["label"].int2str(ds[0]["label"])  # the class as its WordNet id',
            "```",
            "",
            "Score a classifier on it with `spurbench eval --dataset <folder or Hub id> --model <timm name>`.",
            "",
            "## Columns",
            "",
            "| column | type | meaning |",
            "|---|---|---|",
            *rows,
            "",
            "## Licence",
            "",
            licence,
            "",
            "## Citation",
            "",
            'Cite spurbench as its `CITATION.cff` says (title: "spurbench: generated spurious-image test sets and a '
            'classifier leaderboard"), and Spurious ImageNet (Neuhaus et al., ICCV 2023), ' + _HUB_SECTIONS_END,
            "",
        ]
    )


#: licences spurbench can combine, by how much they ask of a user of the set (more is stricter)
_LICENCE_PATTERNS: tuple[tuple[str, str, int], ...] = (
    (r"\bcc[- ]?0\b|public domain", "cc0-1.0", 0),
    (r"\bapache[- ]?(license[- ])?2\.0\b", "apache-2.0", 1),
    (r"\bcc[- ]by[- ]2\.0\b", "cc-by-2.0", 2),
    (r"\bcc[- ]by[- ]4\.0\b", "cc-by-4.0", 2),
)
#: terms that make a licence one spurbench does not combine on its own
_UNCOMBINED = re.compile(r"\b(nc|sa|nd|non-?commercial|share-?alike|no-?deriv|imagenet|research only|unknown)\b", re.I)


def card_license(stated: str, inputs: Mapping[str, str]) -> dict[str, str]:
    """The card's `license` and the note that explains it. A recipe's explicit licence wins; for `other`, the
    inputs' licences decide when every one is CC0 / public domain, Apache-2.0 or CC BY (one version): the set
    takes the strictest (images made from CC BY photos keep their attribution). Anything else stays `other`,
    naming the input that prevents it."""
    if stated != "other":
        return {"license": stated, "license_note": f"{stated}, as the recipe states."}
    found: list[tuple[int, str, str]] = []
    for key, text in inputs.items():
        text = str(text)
        hits = [(rank, spdx) for pattern, spdx, rank in _LICENCE_PATTERNS if re.search(pattern, text, re.I)]
        if not hits or _UNCOMBINED.search(text):
            return {
                "license": "other",
                "license_note": f"other: the licence of input `{key}` ({text}) is not one spurbench combines on its "
                "own (CC0, public domain, Apache-2.0, CC BY); read the licences of the inputs above before reusing it.",
            }
        found.extend((rank, spdx, key) for rank, spdx in hits)
    if not found:
        return {"license": "other", "license_note": "other: the recipe states no licence for its inputs."}
    top = max(rank for rank, _, _ in found)
    strictest = sorted({spdx for rank, spdx, _ in found if rank == top})
    if len(strictest) > 1:
        return {
            "license": "other",
            "license_note": f"other: its inputs carry {' and '.join(strictest)}, which spurbench does not merge.",
        }
    because = sorted({key for rank, spdx, key in found if spdx == strictest[0]})
    return {
        "license": strictest[0],
        "license_note": f"{strictest[0]}, derived from the licences of the inputs above: the strictest of them, that "
        f"of {', '.join(because)}, applies to the set (attribution as stated there).",
    }


def portable_path(path: str | os.PathLike) -> str:
    """A path as an exported file may record it: relative to the working directory when it lies under it, else
    the last part of it alone (a card, eval.yaml or leaderboard never names a local folder)."""
    text = str(path)
    p = Path(text).expanduser()
    if not p.is_absolute():
        parts = Path(os.path.normpath(text)).parts
        return text if ".." not in parts else (Path(os.path.abspath(p)).name or text)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name or text


def dataset_display_name(source: str | os.PathLike) -> str:
    """How published results (leaderboard JSON, page, CSV, eval-results) name a dataset: a local folder by its path
    relative to the working directory, or by its folder name when it lies elsewhere (`portable_path`); a Hub id as
    given. Never an absolute local path."""
    p = Path(str(source)).expanduser()
    if p.is_dir() or p.is_absolute() or str(source).startswith(("~", ".")):
        return portable_path(source)
    return str(source)


# ---------------------------------------------------------------------------------------------
# Reading


def _refuse_work_folder(path: Path) -> None:
    """A build's work folder (`<out>.work`: its resumable state.json, classes/, references/) given where a dataset
    is wanted: say so and name the dataset folder (reading it said "available splits: none")."""
    if (path / "data").is_dir() or not ((path / "state.json").is_file() and (path / "classes").is_dir()):
        return
    dataset = path.with_name(path.name[: -len(".work")]) if path.name.endswith(".work") else None
    where = f"'{dataset}'" if dataset else "the folder given to `spurbench build --out`"
    raise SpurbenchError(
        f"'{path}' is a build's work folder (its resumable state), not a dataset; give the dataset folder, {where}"
    )


def resolve_dataset(source: str | Path, revision: str | None = None) -> Path:
    """Local folder for a dataset given as a folder or a Hub id (downloaded into the HF cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        _refuse_work_folder(path)
        if not any(path.glob("data/*.parquet")) and not any(path.glob("**/*.parquet")):
            raise SpurbenchError(
                f"dataset folder '{path}' has no Parquet files; expected data/<split>-*.parquet as written by `spurbench build`"
            )
        return path
    if not _HUB_ID.match(str(source)):
        raise SpurbenchError(
            f"dataset folder '{source}' does not exist; give an existing folder or a Hub id like org/name"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(source), repo_type="dataset", revision=revision))
    except Exception as err:  # offline, private, or a typo: all are user-fixable
        raise SpurbenchError(
            f"dataset '{source}' is not a local folder and cannot be fetched from the Hugging Face Hub ({hub_failure_reason(err)}); "
            "check the path, or the Hub id, your login (`hf auth login`) and network"
        ) from None


def data_files(folder: str | Path, split: str) -> list[Path]:
    """The split's Parquet shards, matched exactly (`<split>-NNNNN-of-NNNNN[-<content>].parquet`): the shards of
    `test-hard` are never read as part of `test`."""
    files = sorted(p for p in Path(folder).glob("data/*.parquet") if _shard_split(p.name) == split)
    if not files:
        splits = split_names(folder)
        raise SpurbenchError(
            f"dataset '{folder}' has no split '{split}'; available splits: {', '.join(splits) or 'none'}"
        )
    return files


def load_split(folder: str | Path, split: str = DEFAULT_SPLIT):
    """Load one split from the Parquet files on disk and check it carries the contract's columns."""
    return read_split(folder, split)[0]


def read_split(folder: str | Path, split: str = DEFAULT_SPLIT) -> tuple[Any, str]:
    """(the split's rows as a `datasets.Dataset`, its fingerprint), read from exactly the bytes on disk.

    Read with pyarrow (`_read_table`, the one reader of a split) and wrapped in memory as a `datasets.Dataset`
    with the features its schema records: never through `load_dataset(folder)`'s cache (keyed by folder name,
    card and file times, so it can hand back another folder's rows), and no cache on disk at all. The files must
    not change while they are read (size and modification time before and after, and the fingerprint is taken
    over the same files)."""
    import datasets

    folder = Path(folder)
    files = data_files(folder, split)
    before = [_stat(f) for f in files]
    digest = fingerprint(folder, split)
    table, feats = _read_table(folder, split, files)
    if [_stat(f) for f in files] != before:
        raise SpurbenchError(
            f"dataset '{folder}' split '{split}' changed while it was being read; wait for whatever writes it to "
            "finish and re-run"
        )
    ds = datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=feats), split=split)
    check_columns(ds.column_names, f"{folder} (split {split}, {len(files)} shard(s))")
    return ds, digest


def _read_table(folder: Path, split: str, files: list[Path]):
    """(pyarrow Table, datasets.Features) of the shards `files`: the one place a split's rows are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    try:
        tables = [pq.read_table(f) for f in files]
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        feats = Features.from_arrow_schema(tables[0].schema)
    except Exception as err:
        raise SpurbenchError(
            f"cannot read split '{split}' of '{folder}' ({first_line(err)[:200]}); "
            "the Parquet shards are damaged: rebuild or re-download the dataset"
        ) from None
    return table, feats


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def read_csv_lines(
    path: Path,
    required: Iterable[str],
    lacks: Callable[[list[str]], SpurbenchError],
    unreadable: Callable[[Exception], SpurbenchError],
    encoding: str | None = None,
) -> list[dict[str, str]]:
    """The lines of a CSV file a user gives, as {column: value}; `lacks(missing columns)` and `unreadable(error)` make
    the one-line error of a file without a required column, or of one that is no CSV."""
    try:
        with open(path, newline="", encoding=encoding) as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise lacks(missing)
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise unreadable(err) from None


def label_names_of(features: Mapping[str, Any], where: str, why: str) -> list[str]:
    """The names of a split's `label` ClassLabel; one line saying `why` they are needed when it has none."""
    from datasets import ClassLabel

    feature = features["label"]
    if not isinstance(feature, ClassLabel):
        raise SpurbenchError(f"dataset {where} column `label` is {feature}, not a ClassLabel; {why}")
    return list(feature.names)


def check_columns(columns: Iterable[str], where: str) -> None:
    missing = [c for c in ("image", "label") if c not in set(columns)]
    if missing:
        raise SpurbenchError(
            f"dataset {where} lacks required column(s) {', '.join(missing)}; "
            "a spurbench dataset needs at least `image` and `label` (ImageNet class the image is spurious for)"
        )


def fingerprint(folder: str | Path, split: str = DEFAULT_SPLIT) -> str:
    """sha256 over the split's Parquet shards (names and bytes): equal fingerprints, equal data."""
    h = hashlib.sha256()
    for f in data_files(folder, split):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """The `spurbench:` block of the card's YAML header ({} when absent or unreadable)."""
    return dict(_card_meta(folder).get(PROVENANCE_KEY) or {})


def read_kind(folder: str | Path) -> str:
    """The set's kind from its card (`spurious` for cards written before kinds existed)."""
    return _checked_kind(read_provenance(folder), folder)


def _checked_kind(provenance: Mapping[str, Any], folder: str | Path) -> str:
    kind = provenance.get("kind", DEFAULT_KIND)
    if kind not in KINDS:
        raise SpurbenchError(
            f"dataset '{folder}' declares kind {kind!r} in its card; spurbench knows {', '.join(KINDS)}"
        )
    return kind


# ---------------------------------------------------------------------------------------------
# Reading a folder back whole (for commands that rewrite a dataset: `spurbench verify`)


_SHARD_NAME = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}(-[0-9a-f]+)?\.parquet$")


def _shard_split(name: str) -> str | None:
    """The split a shard's file name belongs to (None for a name that is no shard): the one rule for both."""
    m = _SHARD_NAME.match(name)
    return m["split"] if m else None


def split_names(folder: str | Path) -> list[str]:
    """The splits of a Hub-layout folder (from its `data/<split>-NNNNN-of-NNNNN[-<content>].parquet` file
    names), in the card's order, then any others found on disk."""
    return _split_names(folder, _card_meta(folder))


def _split_names(folder: str | Path, meta: Mapping[str, Any]) -> list[str]:
    on_disk = sorted({s for p in Path(folder).glob("data/*.parquet") if (s := _shard_split(p.name))})
    listed = (meta.get("dataset_info") or {}).get("splits")
    order = [s["name"] for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
    return [s for s in order if s in on_disk] + [s for s in on_disk if s not in order]


def _read_card_text(folder: str | Path) -> str:
    """The folder's README.md as text ("" without one): the one place a card is read from disk. Bounded before it
    is decoded (a card is a few KiB; its header may be at most `untrusted.MAX_YAML_BYTES`)."""
    from spurbench.untrusted import MAX_YAML_BYTES

    card = Path(folder) / "README.md"
    if not card.is_file():
        return ""
    if card.stat().st_size > _MAX_CARD_BYTES:
        raise SpurbenchError(
            f"dataset card '{card}' is {card.stat().st_size} bytes, over the {_MAX_CARD_BYTES >> 20} MiB spurbench "
            f"reads (its YAML header may be at most {MAX_YAML_BYTES >> 10} KiB); fix or remove it"
        )
    try:
        return card.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpurbenchError(f"dataset card '{card}' is not UTF-8 text; fix or remove it") from None


#: the largest README.md spurbench reads (the header within it is bounded by `untrusted.load_yaml`)
_MAX_CARD_BYTES = 16 << 20


def _split_card(text: str) -> tuple[str | None, str]:
    """(the YAML header, or None without one; the body after it), found exactly as `huggingface_hub` finds a
    card's metadata block (`repocard.REGEX_YAML_BLOCK`), so spurbench and the Hub agree on what the header is."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        return None, text
    return match.group(2), text[match.end() :]


def _parse_card_meta(text: str, where: str | Path = "dataset") -> dict[str, Any]:
    """The YAML header of a card's text ({} without a header). A header that does not parse (e.g. a
    `!!python/object` tag), is too large, expands too far through aliases or is not a mapping is one line: never
    taken as no card (a shift set would then be scored as a spurious one)."""
    from spurbench.untrusted import load_yaml

    header, _ = _split_card(text)
    if header is None:
        return {}
    what = f"the YAML header of the card of dataset '{where}'"
    meta = load_yaml(header, what)
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise SpurbenchError(f"{what} is not a mapping of names to values; fix or remove it")
    for key, kind in ((PROVENANCE_KEY, Mapping), ("dataset_info", Mapping), ("configs", list)):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise SpurbenchError(
                f"{what} has `{key}:` that is not a {'mapping' if kind is Mapping else 'list'}; fix or remove it"
            )
    return meta


def _card_meta(folder: str | Path) -> dict[str, Any]:
    return _read_card(folder)[1]


def _read_card(folder: str | Path, where: str | Path | None = None) -> tuple[str, dict[str, Any]]:
    """(README.md's text, its YAML header checked); `where` names the dataset in errors (default: `folder`)."""
    text = _read_card_text(folder)
    return text, _checked_card_paths(folder, _parse_card_meta(text, folder if where is None else where))


def _checked_card_paths(folder: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta`, once every path its `configs` name (`data_files`, as `load_dataset(folder)` would follow them) stays
    inside `folder` (`files.inside`): a card naming `../x` or `/etc/x` is one line, not a read elsewhere."""
    from spurbench.files import inside

    for config in meta.get("configs") or []:
        entries = config.get("data_files") if isinstance(config, Mapping) else None
        for entry in entries if isinstance(entries, list) else [entries] if entries is not None else []:
            paths = entry.get("path") if isinstance(entry, Mapping) else entry
            for path in paths if isinstance(paths, list) else [paths]:
                if not isinstance(path, str):
                    raise SpurbenchError(
                        f"the card of dataset '{folder}' names a data file that is not a path ({printable(path)[:80]}); "
                        "fix or remove its `configs:`"
                    )
                inside(folder, path, f"the card of dataset '{folder}' (configs)")
    return meta


def read_card(folder: str | Path) -> DatasetCard:
    """The card of a dataset folder as a DatasetCard (title, body, licence, tags, provenance, kind, label set),
    so a command that rewrites the data can write the same card back with its own additions."""
    text, meta = _read_card(folder)
    return _card_from(folder, meta, text)


def _card_from(folder: str | Path, meta: Mapping[str, Any], text: str) -> DatasetCard:
    prov = dict(meta.get(PROVENANCE_KEY) or {})
    kind = prov.pop("kind", DEFAULT_KIND)
    label_set = prov.pop("label_set", IMAGENET_LABEL_SET)
    title = str(meta.get("pretty_name") or Path(folder).name)
    body = _split_card(text)[1].lstrip("\n")
    if body.startswith(f"# {title}\n"):
        body = body[len(f"# {title}\n") :]
    card = DatasetCard(
        pretty_name=title,
        body=body.strip(),
        license=str(meta.get("license") or "other"),
        provenance=prov,
        kind=kind,
        label_set=label_set,
    )
    if meta.get("tags"):
        card.tags = [str(t) for t in meta["tags"]] if isinstance(meta["tags"], list) else [str(meta["tags"])]
    return card


def read_split_table(folder: str | Path, split: str):
    """(pyarrow Table, datasets.Features) of one split, read straight from its Parquet shards: exactly the
    bytes on disk, never a `datasets` cache entry (which is keyed by name and card, not content)."""
    return _read_table(Path(folder), split, data_files(folder, split))


def read_split_column(folder: str | Path, split: str, column: str) -> list[Any] | None:
    """One column of a split, read straight from its Parquet shards (only that column's bytes); None when the
    split has no such column."""
    import pyarrow.parquet as pq

    files = data_files(folder, split)
    try:
        if column not in pq.read_schema(files[0]).names:
            return None
        return [v for f in files for v in pq.read_table(f, columns=[column]).column(column).to_pylist()]
    except Exception as err:
        raise SpurbenchError(
            f"cannot read split '{split}' of '{folder}' ({first_line(err)[:200]}); "
            "the Parquet shards are damaged: rebuild or re-download the dataset"
        ) from None


# ---------------------------------------------------------------------------------------------
# A dataset opened once


@dataclass
class OpenDataset:
    """A dataset folder opened once: its card read and parsed at opening, each split's Parquet read on first use
    and kept, so every reader downstream (`eval`'s split and reference split, the group weights, the page,
    `verify`, `finetune`) shares one read of the bytes on disk. Open with `open_dataset_folder`.

    A split's rows (`split`, `read`) come from `read_split`: the very bytes its fingerprint is computed over,
    never `datasets`' folder-name cache. `table` gives the same split as a pyarrow table (the rows already read
    when there are some), `column` one column (read alone when the split is not read whole)."""

    source: str  # what the user gave (a folder or a Hub id)
    folder: Path  # the local folder it resolved to
    revision: str | None
    card_text: str  # README.md as read ("" without one)
    meta: dict[str, Any]  # the card's YAML header ({} when absent or unreadable)
    split_names: list[str]  # the card's order, then any others found on disk
    _read: dict[str, tuple[Any, str]] = field(default_factory=dict, repr=False)  # split -> (Dataset, fingerprint)
    _tables: dict[str, tuple[Any, Any]] = field(default_factory=dict, repr=False)  # split -> (pyarrow Table, Features)
    _columns: dict[tuple[str, str], list[Any] | None] = field(default_factory=dict, repr=False)

    @property
    def provenance(self) -> dict[str, Any]:
        """The card's `spurbench:` block (a copy: {} when absent)."""
        return copy.deepcopy(dict(self.meta.get(PROVENANCE_KEY) or {}))

    @property
    def kind(self) -> str:
        """One of KINDS (`spurious` for cards written before kinds existed); one line on an unknown kind."""
        return _checked_kind(self.meta.get(PROVENANCE_KEY) or {}, self.folder)

    @property
    def label_set(self) -> str:
        """The name of the label set the card declares (IMAGENET_LABEL_SET when it names none)."""
        return (self.meta.get(PROVENANCE_KEY) or {}).get("label_set", IMAGENET_LABEL_SET)

    @property
    def verification(self) -> dict[str, Any] | None:
        """The card's record of `spurbench verify` (None on a set never verified)."""
        from spurbench.verification import CARD_KEY

        record = self.provenance.get(CARD_KEY)
        return dict(record) if record else None

    @property
    def reference_split(self) -> str | None:
        """REFERENCE_SPLIT when the set has one (the un-shifted photos of a shift set), else None."""
        return REFERENCE_SPLIT if REFERENCE_SPLIT in self.split_names else None

    def card(self) -> DatasetCard:
        """The card as a fresh DatasetCard (see `read_card`), for a command that writes the set back."""
        return _card_from(self.folder, copy.deepcopy(self.meta), self.card_text)

    def read(self, split: str) -> tuple[Any, str]:
        """(the split's rows as a `datasets.Dataset`, its fingerprint), read once (`read_split`)."""
        if split not in self._read:
            self._read[split] = read_split(self.folder, split)
        return self._read[split]

    def split(self, split: str) -> Any:
        """The split's rows as a `datasets.Dataset` (read once)."""
        return self.read(split)[0]

    def fingerprint(self, split: str) -> str:
        """sha256 over the split's Parquet shards, computed over the bytes its rows were read from."""
        return self.read(split)[1]

    def table(self, split: str) -> tuple[Any, Any]:
        """(pyarrow Table, datasets.Features) of the split: the rows already read when there are some, else read
        once from the shards (`read_split_table`)."""
        if split not in self._tables:
            if split in self._read:
                ds = self._read[split][0]
                self._tables[split] = (ds.data.table, ds.features)
            else:
                self._tables[split] = read_split_table(self.folder, split)
        return self._tables[split]

    def column(self, split: str, column: str) -> list[Any] | None:
        """One column of the split as a list (None when it has no such column): from the rows already read, or
        that column alone read from the shards (`read_split_column`), once."""
        key = (split, column)
        if key not in self._columns:
            if split in self._tables or split in self._read:
                table = self.table(split)[0]
                self._columns[key] = table.column(column).to_pylist() if column in table.column_names else None
            else:
                self._columns[key] = read_split_column(self.folder, split, column)
        return self._columns[key]


def open_dataset_folder(source: str | Path | OpenDataset, revision: str | None = None) -> OpenDataset:
    """Open a dataset (a local folder or a Hub id, see `resolve_dataset`): its card is read here, once; its
    splits when first asked for. An OpenDataset is returned as it is."""
    if isinstance(source, OpenDataset):
        return source
    folder = resolve_dataset(source, revision)
    text, meta = _read_card(folder, source)
    return OpenDataset(str(source), folder, revision, text, meta, _split_names(folder, meta))
