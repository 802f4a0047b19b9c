"""Sweeps over many classifiers: which models (timm wildcard patterns, a models file), which of them this
process scores (under `accelerate launch` / `torchrun`), and what a failure looks like.

A sweep is resumable: models already on the leaderboard for the same data, preprocessing and precision
are skipped (`--force` redoes them). A model that cannot be scored (unknown name, no weights, out of
memory, a forward that raises) is reported, recorded in the leaderboard's `failures`, and the sweep goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

from spurbench.errors import SpurbenchError
from spurbench.imagenet import NUM_CLASSES

_WILDCARDS = set("*?[")


def is_pattern(name: str) -> bool:
    """A timm wildcard pattern (fnmatch: `*`, `?`, `[...]`) rather than one model name."""
    return any(c in _WILDCARDS for c in name)


def expand_pattern(pattern: str) -> tuple[list[str], list[str]]:
    """(ImageNet-1k classifiers matching `pattern` as `timm.list_models(pattern, pretrained=True)` lists them,
    the matches left out because their pretrained head is not ImageNet-1k's: in21k/in22k heads, headless towers)."""
    import timm

    if pattern.startswith("open_clip:"):  # over open_clip.list_pretrained(), ARCH/TAG (zero-shot: every one qualifies)
        from spurbench.zoo.open_clip import list_models

        found = list_models(pattern[len("open_clip:") :])
        if not found:
            raise SpurbenchError(
                f"model pattern '{pattern}' matches no open_clip ARCH/TAG; list them with "
                '`python -c "import open_clip; print(open_clip.list_pretrained())"`'
            )
        return found, []
    if pattern.startswith("transformers:"):
        raise SpurbenchError(
            f"model pattern '{pattern}': transformers: models cannot be listed offline; name each one "
            "(transformers:org/repo), or list them in a --models-file or a panel"
        )
    matches = timm.list_models(pattern, pretrained=True)
    keep, other = [], []
    for name in matches:
        cfg = timm.models.get_pretrained_cfg(name)
        (keep if getattr(cfg, "num_classes", NUM_CLASSES) == NUM_CLASSES else other).append(name)
    if not matches:
        raise SpurbenchError(
            f"model pattern '{pattern}' matches no timm model with pretrained weights; "
            "check it with `python -c \"import timm; print(timm.list_models('" + pattern + "', pretrained=True))\"`"
        )
    return keep, other


def read_models_file(path: str | Path) -> list[str]:
    """Model names or patterns, one per line; blank lines and `#` comments are ignored."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpurbenchError(
            f"--models-file '{path}' does not exist; give a text file with one timm model name or pattern per line"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpurbenchError(
            f"cannot read --models-file '{path}' ({err.__class__.__name__}); give a UTF-8 text file, one name per line"
        ) from None
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) != 1:
            raise SpurbenchError(
                f"--models-file '{path}' line {number} holds '{line}'; write one model name or pattern per line"
            )
        names.append(line)
    if not names:
        raise SpurbenchError(f"--models-file '{path}' names no model; write one timm model name or pattern per line")
    return names


def expand_models(names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Names in order with patterns expanded and repeats dropped; and, per pattern, the non-1k matches left out."""
    out: list[str] = []
    left_out: dict[str, list[str]] = {}
    for name in names:
        if is_pattern(name):
            keep, other = expand_pattern(name)
            if other:
                left_out[name] = other
            out.extend(keep)
        else:
            out.append(name)
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))], left_out


def process_share() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process as `torchrun` / `accelerate launch` set them; (0, 1, 0) alone."""

    def env_int(name: str, default: int) -> int:
        value = os.environ.get(name)
        try:
            return int(value) if value not in (None, "") else default
        except ValueError:
            raise SpurbenchError(
                f"environment variable {name}={value!r} is not an integer (set by torchrun / accelerate launch)"
            ) from None

    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise SpurbenchError(
            f"RANK={rank} and WORLD_SIZE={world} are inconsistent; launch with torchrun or accelerate launch"
        )
    return rank, world, env_int("LOCAL_RANK", rank)


def my_share(items: list, rank: int, world: int) -> list:
    """Process `rank` of `world` takes items rank, rank + world, rank + 2 world, ...: disjoint, together all."""
    return items[rank::world]


def failure_reason(err: BaseException) -> str:
    """One line saying why a model could not be scored."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower():
        return "out of memory; lower --batch-size or use a larger device"
    if isinstance(err, SpurbenchError):
        return str(err).splitlines()[0]
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0][:300]}" if text else err.__class__.__name__
