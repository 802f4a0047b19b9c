"""Every file spurbench writes goes through here: one atomic write, a record of what it wrote in each folder, and
file names and paths that cannot leave their folder.

Why a record: spurbench is run on folders other people made (a board downloaded beside a published set, a
dataset folder with a hand-written card), and on folders a user names by mistake. It may therefore replace or
delete a file only when it knows it wrote that file, and knows it by more than the file's name. Each folder
spurbench writes into carries `.spurbench-written.json`, listing the files it wrote (relative paths) with their
sha256, rewritten after every change. A file is replaced or deleted only when that record lists it with the
bytes it has now; a non-empty folder without the record is refused.

Temporary files and folders are named `.<name>.spurbench-tmp-<pid>-<random>` (no user picks such a name);
`remove_stale_temporaries` deletes the ones whose process has died, and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from spurbench.errors import SpurbenchError

#: the record of what spurbench wrote in a folder (see the module docstring)
RECORD_NAME = ".spurbench-written.json"
#: a record larger than this is not spurbench's (it lists file names and hashes, about 100 bytes a file)
MAX_RECORD_BYTES = 64 << 20
_RECORD_FORMAT = 1
_TEMP = re.compile(r"^\..*\.spurbench-tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")
#: longest file name `safe_filename` returns (most file systems allow 255 bytes)
MAX_NAME = 120


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def temporary_name(target: str | os.PathLike) -> Path:
    """A sibling of `target` named so that no user would choose it and the next run can tell it is a leftover
    of a dead process (`remove_stale_temporaries`)."""
    target = Path(target)
    return target.with_name(f".{target.name}.spurbench-tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path of `target` to write into; on success it replaces `target` in one
    `os.replace` (readers see the old file or the new one, never a part); on any failure it is removed."""
    target = Path(target)
    tmp = temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def atomic_write(target: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (str as UTF-8) to `target` atomically (see `atomic_path`). Checks nothing about who owns
    `target`: use `WrittenFolder.write` for a file in a folder a user may have named."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files and folders in `folder` that a spurbench process now dead left behind (named by
    `temporary_name`); returns their names. Anything else, and the temporaries of live processes, stay."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if not m or _pid_alive(int(m["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p.name)
    return removed


def is_temporary(name: str) -> bool:
    """Whether `name` is one that `temporary_name` makes."""
    return bool(_TEMP.match(name))


def inside(base: str | os.PathLike, relative: str, what: str) -> Path:
    """`base / relative` for a path read from a file (an index, an entry, a card, a metadata table), refused with
    one line unless it stays inside `base` once `..` and symbolic links are resolved. `what` names where the path
    was read, for the error."""
    text = str(relative)
    base = Path(base)
    pure = Path(text)
    if not text or "\x00" in text or pure.is_absolute() or ".." in pure.parts or text.startswith("~"):
        raise SpurbenchError(
            f"{what} names the path {text!r}, which leads out of '{base}'; only paths inside it are followed "
            "(the file was edited or made by someone else: restore or remove it)"
        )
    path = base / pure
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        raise SpurbenchError(
            f"{what} names the path {text!r}, which leads out of '{base}' through a symbolic link; only paths "
            "inside it are followed (restore or remove the link)"
        ) from None
    return path


def safe_filename(name: str) -> str:
    """`name` (a model name, a dataset id, a class name) as one file name: letters, digits, '.', '_' and '-'
    kept, every other run of characters replaced by '_', no leading dot, at most MAX_NAME characters. A name that
    had to change gets the first 8 hex digits of its sha256 appended, so two names never meet in one file."""
    cleaned = _NAME_OK.sub("_", name).lstrip(".") or "_"
    if cleaned == name and len(name) <= MAX_NAME:
        return name
    tag = sha256_bytes(name.encode("utf-8", "surrogatepass"))[:8]
    return f"{cleaned[: MAX_NAME - 9]}-{tag}"


@dataclass
class WrittenFolder:
    """A folder spurbench writes into, with its record of what it wrote there (see the module docstring).

    Open with `claim`; then `write` / `adopt` / `remove` files by their path relative to the folder. Each change
    rewrites the record, so a crash leaves a record naming files that exist (a file may exist that the record
    does not yet name: it is then refused, never lost)."""

    folder: Path
    flag: str  # how the user named the folder (e.g. `--out 'x'`), for errors
    files: dict[str, str] = field(default_factory=dict)  # relative posix path -> sha256 of the bytes written

    @classmethod
    def claim(cls, folder: str | os.PathLike, flag: str = "--out", create: bool = True) -> WrittenFolder:
        """The folder for writing: a new or empty folder, or one holding spurbench's record. A file, a dangling
        link or a non-empty folder without the record is refused with one line. Leftover temporaries of dead
        spurbench processes inside it are removed."""
        folder = Path(folder)
        if str(folder).startswith("~"):
            raise SpurbenchError(
                f"{flag} '{folder}' starts with '~', which the shell did not expand (it was quoted); "
                "give the folder without quotes or as a full path"
            )
        if folder.is_symlink() and not folder.exists():
            raise SpurbenchError(f"{flag} '{folder}' is a symbolic link to nothing; remove it or give another folder")
        if folder.exists() and not folder.is_dir():
            raise SpurbenchError(f"{flag} '{folder}' is a file, not a folder; give a folder")
        record = folder / RECORD_NAME
        if folder.is_dir():
            if record.is_file() and not record.is_symlink():
                written = cls(folder, flag, _read_record(record, flag))
                remove_stale_temporaries(folder)
                return written
            stale = set(remove_stale_temporaries(folder))
            foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in stale)
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise SpurbenchError(
                    f"{flag} '{folder}' already holds {shown}, which spurbench did not write (it has no "
                    f"{RECORD_NAME}); give a new or empty folder, so nothing of yours is replaced"
                )
        elif create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SpurbenchError(
                    f"cannot create {flag} '{folder}': {err.strerror}; give a writable folder"
                ) from None
        return cls(folder, flag, {})

    def path(self, relative: str) -> Path:
        return inside(self.folder, relative, f"{self.flag} '{self.folder}'")

    def owns(self, relative: str) -> bool:
        """Whether `relative` is a file this folder's record lists with the bytes it has now (or is absent)."""
        path = self.path(relative)
        if not path.exists() and not path.is_symlink():
            return True
        if path.is_symlink() or not path.is_file() or relative not in self.files:
            return False
        return sha256_of(path) == self.files[relative]

    def check_replaceable(self, *relatives: str) -> None:
        """Refuse, before anything is written, to replace any of `relatives` that spurbench did not write or
        that changed since it did."""
        for relative in relatives:
            if not self.owns(relative):
                why = (
                    "was changed since spurbench wrote it" if relative in self.files else "was not written by spurbench"
                )
                raise SpurbenchError(
                    f"'{self.path(relative)}' {why}; move it away or give another {self.flag.split()[0]} "
                    "(nothing was written)"
                )

    def write(self, relative: str, data: bytes | str) -> Path:
        """Write one file atomically (refused when it would replace a file spurbench did not write) and record it."""
        self.check_replaceable(relative)
        path = self.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = data.encode() if isinstance(data, str) else data
        atomic_write(path, payload)
        self.files[relative] = sha256_bytes(payload)
        self.save()
        return path

    def adopt(self, relative: str, source: str | os.PathLike | None = None) -> Path:
        """Record a file written by other means: `source` (a finished temporary file) is moved into place over
        `relative` (which must be replaceable), or, without `source`, the file already at `relative` is taken as
        written by this command (only for a file it just made, e.g. through a library's own `save`)."""
        path = self.path(relative)
        if source is not None:
            self.check_replaceable(relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, path)
        self.files[relative] = sha256_of(path)
        self.save()
        return path

    def foreign(self) -> list[str]:
        """Everything in the folder (relative posix paths, folders with a trailing '/') that the record does not
        list with its current bytes: what replacing or deleting the folder whole would lose. [] when all is
        spurbench's."""
        out = []
        for path in sorted(self.folder.rglob("*")):
            rel = path.relative_to(self.folder).as_posix()
            if rel == RECORD_NAME or is_temporary(path.name):
                continue
            if path.is_dir() and not path.is_symlink():
                if not any(f == rel or f.startswith(rel + "/") for f in self.files):
                    out.append(rel + "/")
            elif not self.owns(rel):
                out.append(rel)
        return out

    def check_all_replaceable(self) -> None:
        """Refuse, with one line, to replace or delete the folder whole while it holds anything spurbench did
        not write (or that changed since)."""
        foreign = self.foreign()
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise SpurbenchError(
                f"{self.flag} '{self.folder}' holds {shown}, which spurbench did not write (or which changed since); "
                "replacing the folder would lose it: move it out or give a new folder (nothing was written)"
            )

    def remove(self, relative: str) -> None:
        """Delete a file the record lists with its current bytes; anything else is left alone, and forgotten."""
        path = self.path(relative)
        if path.is_file() and not path.is_symlink() and self.owns(relative):
            path.unlink()
        self.files.pop(relative, None)
        self.save()

    def save(self) -> None:
        atomic_write(
            self.folder / RECORD_NAME,
            json.dumps(
                {"format": _RECORD_FORMAT, "writer": "spurbench", "files": dict(sorted(self.files.items()))}, indent=1
            ),
        )


def write_claimed(out: str | Path, files: Mapping[str, str], flag: str = "--out") -> list[Path]:
    """Write `files` ({relative path: text}) into the folder `out`, claimed through `WrittenFolder` (a new or
    empty folder, or one spurbench wrote). Every file is checked replaceable before the first is written, so a
    user's file in the way refuses the whole report and nothing is written; an unwritable folder is one line."""
    written = WrittenFolder.claim(out, flag)
    written.check_replaceable(*files)
    try:
        return [written.write(rel, text) for rel, text in files.items()]
    except OSError as err:
        raise cannot_write(flag, out, err) from None


def cannot_write(flag: str, folder: str | os.PathLike, err: OSError) -> SpurbenchError:
    """The one line for a claimed folder that refused a write (read-only, full disk): raise it `from None`."""
    return SpurbenchError(f"cannot write into {flag} '{folder}': {err.strerror or err}; give a folder you can write to")


def has_record(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds spurbench's record of what it wrote there."""
    record = Path(folder) / RECORD_NAME
    return record.is_file() and not record.is_symlink()


def _read_record(record: Path, flag: str) -> dict[str, str]:
    def bad(why: str) -> SpurbenchError:
        return SpurbenchError(
            f"{flag}: '{record}' is not a record spurbench wrote ({why}); nothing there is replaced: move the folder "
            "away or give another one"
        )

    if record.stat().st_size > MAX_RECORD_BYTES:
        raise bad(f"over {MAX_RECORD_BYTES >> 20} MiB")
    try:
        data = json.loads(record.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad("not JSON") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("writer") != "spurbench" or not isinstance(files, dict):
        raise bad("no `files` table")
    # names are checked lexically and their distinct parent folders against symbolic links, once each: a board's
    # record lists thousands of files, and resolving each one made every claim cost grow with the folder
    # (`path()` still confines each name when it is used)
    parents = set()
    for name, digest in files.items():
        if (
            not (isinstance(name, str) and isinstance(digest, str) and _HEX64.fullmatch(digest))
            or not name
            or "\x00" in name
        ):
            raise bad(f"entry {str(name)[:80]!r}")
        if name.startswith(("/", "~")) or ".." in PurePosixPath(name).parts:
            raise bad(f"entry {name[:80]!r} leads out of the folder")
        parents.add(PurePosixPath(name).parent.as_posix())
    for parent in parents - {"."}:
        inside(record.parent, parent, f"'{record}'")  # a listed folder linked elsewhere would let a removal leave
    return dict(files)


_HEX64 = re.compile(r"[0-9a-f]{64}")
