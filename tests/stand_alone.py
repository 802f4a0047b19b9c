"""Checks that an exported dataset folder stands alone: nothing in it names a local folder, and every row of
every split, every image column decoded, loads with `datasets.load_dataset` once the build's work folder is gone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def assert_names_no_local_folder(out: Path, *roots: Path) -> int:
    """No file of `out` holds any of `roots` (as given and resolved): raw bytes, and every decoded Parquet string
    (a compressed page could hide a path from a byte search). Returns the number of files checked."""
    import pyarrow.parquet as pq

    needles = {str(p) for r in roots for p in (Path(r), Path(r).resolve())}
    files = [f for f in sorted(Path(out).rglob("*")) if f.is_file()]
    assert files, f"{out} holds no files"
    for f in files:
        data = f.read_bytes()
        for n in needles:
            assert n.encode() not in data, f"{f} names the local folder {n}"
        if f.suffix == ".parquet":
            for row in pq.read_table(f).to_pylist():
                for s in _strings(row):
                    assert not any(n in s for n in needles), f"{f} holds the local path {s!r}"
    return len(files)


def assert_loads_without(out: Path, work: Path, cache: Path) -> int:
    """Move `work` away, load `out` with `datasets.load_dataset` into the fresh cache `cache`, decode every image
    column of every row of every split, then put `work` back. Returns the number of rows read."""
    import datasets
    from datasets import Image

    away = work.with_name(work.name + ".away")
    os.rename(work, away)
    try:
        ds = datasets.load_dataset(str(out), cache_dir=str(cache))
        n = 0
        for split in ds:
            columns = [c for c, f in ds[split].features.items() if isinstance(f, Image)]
            for row in ds[split]:
                for c in columns:
                    if row[c] is not None:
                        row[c].load()
                n += 1
        return n
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(away, work)
