"""The dataset contract shared by `build` (writer) and `eval` (reader).

A Hub-layout folder: `data/<split>-NNNNN-of-NNNNN.parquet` shards with embedded image bytes and a
`README.md` card whose YAML carries `configs`, `dataset_info` and spurbench's provenance. It loads
with `datasets.load_dataset(folder)` offline and uploads unchanged to the Hub. See DESIGN.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from spurbench import imagenet
from spurbench.errors import SpurbenchError, hub_failure_reason

#: split holding the generated (or otherwise spurious) images that `eval` scores by default
DEFAULT_SPLIT = "test"
#: split holding the reference images a builder learned from, when it exports them
REFERENCE_SPLIT = "reference"

#: columns every row has, in order (DESIGN.md, "Dataset contract")
REQUIRED_COLUMNS = (
    "image", "label", "class_name", "spurious_feature", "component", "source", "builder", "prompt", "seed",
)
SOURCES = ("generated", "reference")
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


def encode_image(image: Any) -> dict[str, Any]:
    """PNG-encode a PIL image / array / file path into the `{bytes, path}` form parquet embeds.

    PNG is lossless and its encoder is deterministic, so the same pixels give the same bytes.
    Files that already are PNG or JPEG are embedded as they are (no re-encoding losses).
    """
    from PIL import Image as PILImage

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data = path.read_bytes()
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                im.verify()
                fmt = im.format
        except Exception as err:
            raise SpurbenchError(f"cannot read image '{path}': {err.__class__.__name__}; replace or remove the file") from None
        if fmt in ("PNG", "JPEG"):
            return {"bytes": data, "path": None}
        with PILImage.open(io.BytesIO(data)) as im:
            image = im.convert("RGB")
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
    out["image"] = encode_image(row["image"]) if not (isinstance(row["image"], dict) and "bytes" in row["image"]) else row["image"]
    return out


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
    from datasets import Dataset, DatasetInfo

    out_dir = Path(out_dir)
    if card.kind not in KINDS:
        raise ValueError(f"card kind must be one of {KINDS}, got {card.kind!r}")
    if (label_names is None) != (card.label_set == IMAGENET_LABEL_SET):
        raise ValueError(f"label set {card.label_set!r} and label_names disagree: name the label set exactly when giving label_names")
    label_names = None if label_names is None else list(label_names)
    feats = features(extra_features, label_names)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "data").mkdir()
        counts: dict[str, tuple[int, int]] = {}  # split -> (rows, bytes on disk)
        for split, rows in splits.items():
            shard_files: list[Path] = []
            n = 0
            for chunk in _chunks(rows, rows_per_shard):
                encoded = [_row_for(r, feats, None if label_names is None else len(label_names)) for r in chunk]
                ds = Dataset.from_list(encoded, features=feats)
                shard = tmp / "data" / f"{split}-{len(shard_files):05d}.parquet.part"
                ds.to_parquet(str(shard))
                shard_files.append(shard)
                n += len(encoded)
            for i, shard in enumerate(shard_files):
                shard.rename(tmp / "data" / f"{split}-{i:05d}-of-{len(shard_files):05d}.parquet")
            counts[split] = (n, sum(p.stat().st_size for p in (tmp / "data").glob(f"{split}-*.parquet")))
        info = DatasetInfo(features=feats)
        (tmp / "README.md").write_text(_card_text(card, info, counts))
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _card_text(card: DatasetCard, info, counts: Mapping[str, tuple[int, int]]) -> str:
    meta: dict[str, Any] = {
        "license": card.license,
        "pretty_name": card.pretty_name,
        "task_categories": ["image-classification"],
        "tags": card.tags,
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in counts],
            }
        ],
        "dataset_info": {
            **info._to_yaml_dict(),
            "splits": [{"name": s, "num_bytes": b, "num_examples": n} for s, (n, b) in counts.items()],
        },
    }
    if card.provenance or card.kind != DEFAULT_KIND or card.label_set != IMAGENET_LABEL_SET:
        meta[PROVENANCE_KEY] = {**card.provenance, "kind": card.kind, "label_set": card.label_set}
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n# {card.pretty_name}\n\n{card.body.strip()}\n"


# ---------------------------------------------------------------------------------------------
# Reading


def resolve_dataset(source: str | Path, revision: str | None = None) -> Path:
    """Local folder for a dataset given as a folder or a Hub id (downloaded into the HF cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not any(path.glob("data/*.parquet")) and not any(path.glob("**/*.parquet")):
            raise SpurbenchError(
                f"dataset folder '{path}' has no Parquet files; expected data/<split>-*.parquet as written by `spurbench build`"
            )
        return path
    if not _HUB_ID.match(str(source)):
        raise SpurbenchError(f"dataset folder '{source}' does not exist; give an existing folder or a Hub id like org/name")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(source), repo_type="dataset", revision=revision))
    except Exception as err:  # offline, private, or a typo: all are user-fixable
        raise SpurbenchError(
            f"dataset '{source}' is not a local folder and cannot be fetched from the Hugging Face Hub ({hub_failure_reason(err)}); "
            "check the path, or the Hub id, your login (`hf auth login`) and network"
        ) from None


def data_files(folder: str | Path, split: str) -> list[Path]:
    files = sorted(Path(folder).glob(f"data/{split}-*.parquet"))
    if not files:
        splits = sorted({p.name.split("-")[0] for p in Path(folder).glob("data/*.parquet")})
        raise SpurbenchError(f"dataset '{folder}' has no split '{split}'; available splits: {', '.join(splits) or 'none'}")
    return files


def load_split(folder: str | Path, split: str = DEFAULT_SPLIT):
    """Load one split with `datasets` and check it carries the contract's columns."""
    from datasets import load_dataset

    files = data_files(folder, split)
    try:
        ds = load_dataset(str(folder), split=split)
    except Exception as err:
        raise SpurbenchError(f"cannot load dataset '{folder}' split '{split}': {err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    check_columns(ds.column_names, f"{folder} (split {split}, {len(files)} shard(s))")
    return ds


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
    card = Path(folder) / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text()
    if not text.startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}
    return dict(meta.get(PROVENANCE_KEY) or {})


def read_kind(folder: str | Path) -> str:
    """The set's kind from its card (`spurious` for cards written before kinds existed)."""
    kind = read_provenance(folder).get("kind", DEFAULT_KIND)
    if kind not in KINDS:
        raise SpurbenchError(f"dataset '{folder}' declares kind {kind!r} in its card; spurbench knows {', '.join(KINDS)}")
    return kind


# ---------------------------------------------------------------------------------------------
# Reading a folder back whole (for commands that rewrite a dataset: `spurbench verify`)


def split_names(folder: str | Path) -> list[str]:
    """The splits of a dataset folder, in the card's order (then any others found on disk)."""
    on_disk = sorted({p.name.rsplit("-", 4)[0] for p in Path(folder).glob("data/*-*-of-*.parquet")})
    order = [s["name"] for s in (_card_meta(folder).get("dataset_info") or {}).get("splits") or [] if isinstance(s, dict)]
    return [s for s in order if s in on_disk] + [s for s in on_disk if s not in order]


def _card_meta(folder: str | Path) -> dict[str, Any]:
    card = Path(folder) / "README.md"
    text = card.read_text() if card.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        return yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}


def read_card(folder: str | Path) -> DatasetCard:
    """The card of a dataset folder as a DatasetCard (title, body, licence, tags, provenance, kind, label set),
    so a command that rewrites the data can write the same card back with its own additions."""
    meta = _card_meta(folder)
    prov = dict(meta.get(PROVENANCE_KEY) or {})
    kind = prov.pop("kind", DEFAULT_KIND)
    label_set = prov.pop("label_set", IMAGENET_LABEL_SET)
    title = str(meta.get("pretty_name") or Path(folder).name)
    text = (Path(folder) / "README.md").read_text() if (Path(folder) / "README.md").is_file() else ""
    body = text.split("---", 2)[2] if text.startswith("---") and text.count("---") >= 2 else text
    body = body.lstrip("\n")
    if body.startswith(f"# {title}\n"):
        body = body[len(f"# {title}\n"):]
    card = DatasetCard(pretty_name=title, body=body.strip(), license=str(meta.get("license") or "other"),
                       provenance=prov, kind=kind, label_set=label_set)
    if meta.get("tags"):
        card.tags = list(meta["tags"])
    return card


def read_split_table(folder: str | Path, split: str):
    """(pyarrow Table, datasets.Features) of one split, read straight from its Parquet shards: exactly the
    bytes on disk, never a `datasets` cache entry (which is keyed by name and card, not content)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    files = data_files(folder, split)
    try:
        tables = [pq.read_table(f) for f in files]
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        feats = Features.from_arrow_schema(tables[0].schema)
    except Exception as err:
        raise SpurbenchError(f"cannot read split '{split}' of '{folder}' ({err.__class__.__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
                             "the Parquet shards are damaged: rebuild or re-download the dataset") from None
    return table, feats
