"""Fetch one file over HTTP(S) (or file://) with a progress bar, resumable, and its SHA-256.

An interrupted download leaves `<target>.part`; the next call asks the server for the rest
(`Range: bytes=<size>-`) and appends it when the server answers 206 Partial Content, or starts over
when it sends the whole file (200). Only a finished download is renamed to `<target>`, so a file at
`target` is always complete.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from spurbench.errors import SpurbenchError

CHUNK = 1 << 20
TIMEOUT_S = 60


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, target: str | Path, expected_sha256: str | None = None, desc: str | None = None) -> str:
    """Download `url` to `target` (resuming `<target>.part`), return the file's SHA-256.

    An existing complete `target` is not fetched again. A SHA-256 other than `expected_sha256`
    is a SpurbenchError and the file is moved aside to `<target>.bad` (so a retry fetches afresh).
    """
    from tqdm.auto import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file():
        part = target.with_name(target.name + ".part")
        offset = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "spurbench"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # nothing left to send: the partial file is the whole file
                os.replace(part, target)
                return _checked(target, expected_sha256)
            raise SpurbenchError(
                f"cannot download {url}: HTTP {err.code} {err.reason}; check the URL or try again later"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise SpurbenchError(
                f"cannot download {url}: {reason}; check the URL and your network, then re-run to resume"
            ) from None
        with response:
            status = getattr(response, "status", None) or response.getcode() or 200
            resumed = offset > 0 and status == 206
            if not resumed:
                offset = 0  # the server sent the whole file: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            try:
                with (
                    open(part, "ab" if resumed else "wb") as fh,
                    tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=desc or target.name,
                        disable=None,
                    ) as bar,
                ):
                    for block in iter(lambda: response.read(CHUNK), b""):
                        fh.write(block)
                        bar.update(len(block))
            except (OSError, urllib.error.URLError) as err:
                raise SpurbenchError(
                    f"download of {url} was interrupted ({err.__class__.__name__}); re-run the same command to resume"
                ) from None
        if total is not None and part.stat().st_size != total:
            raise SpurbenchError(
                f"download of {url} stopped at {part.stat().st_size} of {total} bytes; re-run the same command to resume"
            )
        os.replace(part, target)
    return _checked(target, expected_sha256)


def _checked(path: Path, expected: str | None) -> str:
    digest = sha256_file(path)
    if expected is not None and digest != expected.lower():
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise SpurbenchError(
            f"'{path.name}' has SHA-256 {digest}, not the expected {expected}; moved it to '{bad}': re-run to download again, "
            "or drop --sha256 if the release changed"
        )
    return digest
