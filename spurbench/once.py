"""Folders the build makes whole or not at all: a model or a learned token saved into a temporary sibling and
renamed into place, and built once when several processes may need it. (Helpers on top of spurbench.files; a
candidate to move there.)"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from spurbench.files import atomic_path, remove_stale_temporaries, temporary_name


@contextlib.contextmanager
def replace_folder(target: Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; on success it takes the place of `target` (a folder there before is
    moved aside and deleted), so a killed run never leaves a finished-looking folder; on failure it is removed.
    Temporaries of dead processes in `target`'s parent (a killed run's) are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    old = None
    with atomic_path(target) as tmp:
        tmp.mkdir()
        yield tmp
        if target.exists():  # os.replace cannot replace a folder that holds files: move it aside
            old = temporary_name(target)
            os.replace(target, old)
    if old is not None:
        shutil.rmtree(old)


def build_once(folder: Path, done_file: str, build: Callable[[Path], object]) -> Path:
    """`folder`, made by `build(tmp)` into a temporary sibling and renamed into place unless `folder / done_file`
    is there already; under a lock, as several processes may need the same folder."""
    from filelock import FileLock

    if (folder / done_file).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / done_file).is_file():
            with replace_folder(folder) as tmp:
                build(tmp)
    return folder
