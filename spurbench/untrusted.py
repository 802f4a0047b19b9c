"""Reading what someone else made: every input is bounded before it is decoded or copied.

A board or a dataset card may come from anyone (downloaded beside a published set, written by hand), so:
- an image's size is read from its header and refused over MAX_IMAGE_PIXELS before any decoder runs
  (`image_size`, `open_image`): the one limit, used on every path (eval, verify, import, pages, finetune,
  build inputs);
- YAML and JSON read from such files are size-limited and their expanded size is counted (`load_yaml`,
  `check_expansion`): a few hundred bytes of YAML aliases can otherwise expand to gigabytes when copied;
- text that reaches a terminal, a Markdown table or a file name is made printable first (`printable`).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

from spurbench.errors import SpurbenchError

#: the largest image spurbench decodes, in pixels (width x height): 8192 x 8192. Generated sets are 512-1024 px and
#: photo sets a few megapixels; a 30000 x 30000 PNG is 200 KB on disk and 2.7 GB decoded.
MAX_IMAGE_PIXELS = 8192 * 8192
#: the largest YAML document (a card header, a recipe, a panel) spurbench parses
MAX_YAML_BYTES = 1 << 20
#: the most values (mappings, lists and scalars, each alias counted again) a parsed card or entry may expand to
MAX_EXPANDED_NODES = 200_000
#: the most characters of strings a parsed card or entry may expand to (aliases counted again)
MAX_EXPANDED_CHARS = 16 << 20


def image_size(data: bytes | str | os.PathLike, what: str) -> tuple[int, int]:
    """(width, height) of an encoded image, from its header alone (PIL opens lazily: nothing is decoded). One line
    when the bytes are no image PIL knows, or when the image is larger than MAX_IMAGE_PIXELS."""
    from PIL import Image

    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():
            # PIL warns (and past twice its own limit raises) on large images; the limit here is ours, and lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                size = im.size
    except Image.DecompressionBombError:
        size = (-1, -1)  # over PIL's own bound (twice its MAX_IMAGE_PIXELS), so far over ours
    except (OSError, ValueError, SyntaxError) as err:
        raise SpurbenchError(
            f"cannot read {what}: not an image spurbench can open ({err.__class__.__name__}); replace or remove it"
        ) from None
    check_image_size(size, what)
    return size


def check_image_size(size: tuple[int, int], what: str) -> None:
    """One line when an image of `size` (width, height) is over MAX_IMAGE_PIXELS."""
    w, h = size
    if w * h > MAX_IMAGE_PIXELS or w <= 0 or h <= 0:
        shown = f"{w} x {h} pixels" if w > 0 and h > 0 else "far larger"
        raise SpurbenchError(
            f"{what} is {shown}, over spurbench's limit of {MAX_IMAGE_PIXELS} pixels (8192 x 8192); "
            "downscale or remove it (it was not decoded)"
        )


def open_image(data: bytes | str | os.PathLike, what: str):
    """A PIL image opened from bytes or a path after `image_size` accepted its header (still lazy: `.load()`,
    `.convert()` or `np.asarray` decode it). The caller closes it (`with open_image(...) as im:`)."""
    from PIL import Image

    image_size(data, what)
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def check_expansion(
    value: Any, what: str, max_nodes: int = MAX_EXPANDED_NODES, max_chars: int = MAX_EXPANDED_CHARS
) -> None:
    """One line when `value` (parsed YAML or JSON) expands to more than `max_nodes` values or `max_chars`
    characters of strings, counting every reference to a shared object again (as writing it out would)."""
    nodes = chars = 0
    stack = [value]
    while stack:
        item = stack.pop()
        nodes += 1
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        if nodes > max_nodes or chars > max_chars:
            raise SpurbenchError(
                f"{what} expands to more than {max_nodes} values or {max_chars >> 20} MiB of text (YAML aliases or a "
                "huge header); it is not read: fix or remove it"
            )


def load_yaml(text: str | bytes, what: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse YAML someone else may have written: at most `max_bytes`, plain data only (no `!!python/...` tags:
    `yaml.safe_load`), its expanded size bounded (`check_expansion`). Every failure is one line naming `what`."""
    import yaml

    if len(text) > max_bytes:
        raise SpurbenchError(
            f"{what} is {len(text)} bytes, over the {max_bytes >> 10} KiB spurbench reads; fix or remove it"
        )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or err.__class__.__name__
        raise SpurbenchError(
            f"{what} is not valid YAML{where}: {printable(str(problem))[:200]}; fix or remove it"
        ) from None
    check_expansion(value, what)
    return value


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x00, 0x20), 0x7F)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_CONTROL.update({i: f"\\x{i:02x}" for i in range(0x80, 0xA0)})


def printable(text: Any) -> str:
    """`text` with control characters (newlines, terminal escape codes, C1 controls) written as visible escapes,
    so a name read from a file cannot break a table line or drive the terminal."""
    return str(text).translate(_CONTROL)
