"""`--class-subset`: score with the logits restricted to some ImageNet classes (timm's `validate.py
--valid-labels`, CLIP_benchmark's subsets): the softmax and the top 5 run over those classes only.

A subset is `spurious-imagenet` (Spurious ImageNet's 100 classes) or a text file with one class per line,
an ImageNet index (0..999) or a WordNet id (n01440764); `#` comments and blank lines are ignored. The
entry records {"name", "sha256", "num_classes"} (sha256 of the sorted indices, one per line), and entries
with different subsets (or none) are never ranked together nor taken for one another by a resumed sweep.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spurbench import imagenet
from spurbench.errors import SpurbenchError

BUILT_IN = ("spurious-imagenet",)


@dataclass(frozen=True)
class ClassSubset:
    name: str
    indices: tuple[int, ...]  # sorted ImageNet indices

    @property
    def sha256(self) -> str:
        return hashlib.sha256("".join(f"{i}\n" for i in self.indices).encode()).hexdigest()

    def record(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "num_classes": len(self.indices)}

    def mask(self, num_classes: int = imagenet.NUM_CLASSES) -> torch.Tensor:
        m = torch.zeros(num_classes, dtype=torch.bool)
        m[list(self.indices)] = True
        return m

    def check_labels(self, labels: np.ndarray, what: str) -> None:
        outside = np.setdiff1d(np.unique(labels), np.asarray(self.indices))
        if outside.size:
            k = int(outside[0])
            raise SpurbenchError(
                f"{what} has images of class {k} ({imagenet.class_name(k)}), outside --class-subset "
                f"'{self.name}' ({len(self.indices)} classes); use a subset that holds every class of the set"
            )


def load_class_subset(value: str) -> ClassSubset:
    if value == "spurious-imagenet":
        return ClassSubset(value, tuple(sorted(c.index for c in imagenet.spurious_imagenet_classes())))
    path = Path(value).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpurbenchError(
            f"--class-subset '{value}' is neither {' nor '.join(BUILT_IN)} nor an existing file "
            "(one ImageNet index or WordNet id per line)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpurbenchError(
            f"cannot read --class-subset '{value}' ({err.__class__.__name__}); give a UTF-8 text file"
        ) from None
    found: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            k = imagenet.check_index(int(item)) if item.isdigit() else imagenet.wnid_to_index(item)
        except SpurbenchError as err:
            raise SpurbenchError(f"--class-subset '{value}' line {number}: {err}") from None
        found.append(k)
    if not found:
        raise SpurbenchError(
            f"--class-subset '{value}' names no class; write one ImageNet index or WordNet id per line"
        )
    if len(set(found)) != len(found):
        dup = next(k for k in found if found.count(k) > 1)
        raise SpurbenchError(f"--class-subset '{value}' names class {dup} more than once")
    return ClassSubset(path.name, tuple(sorted(found)))
