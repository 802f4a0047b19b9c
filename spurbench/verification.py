"""The verification contract: the columns `spurbench verify` adds to a dataset, the card key of its record,
and the rule `spurbench eval` applies to them (which rows a failed check or a person's decision leaves out).

Pure data, no detector: the evaluating side and the review page read these without importing verify.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: columns `verify` adds (or replaces on a verified set), in order
SCORE, PRESENT, BOXES, REVIEWED = "object_score", "object_present", "object_boxes", "reviewed"
VERIFY_COLUMNS = (SCORE, PRESENT, BOXES, REVIEWED)
#: values of `reviewed` (empty: nobody looked)
DECISIONS = ("keep", "drop")
#: a decisions.csv line that forgets an earlier decision (an empty decision is an error, never a silent clear)
CLEAR = "clear"
#: card provenance key of the verification record
CARD_KEY = "verification"
#: images whose score lies within this distance of the threshold are shown for review as borderline
DEFAULT_MARGIN = 0.05
#: boxes kept per image in object_boxes (for the review page), best first
BOXES_KEPT = 5
#: boxes scoring below this fraction of the threshold are not worth drawing
BOX_FLOOR = 0.5
DECISION_COLUMNS = ("index", "split", "decision")


# The rule `spurbench eval` applies (no detector needed: pure data)


def failed_check(kind: str, present: bool | None) -> bool:
    """Did the image fail its set's promise? spurious: the object is there; shift: it is not.
    Unchecked images (None) never fail."""
    if present is None:
        return False
    return bool(present) if kind == "spurious" else not bool(present)


def excluded_rows(
    kind: str, present: Sequence[bool | None], reviewed: Sequence[str | None] | None = None
) -> np.ndarray:
    """Boolean mask of the rows `spurbench eval` leaves out: a person's `drop` always, a person's `keep`
    never, otherwise the rows whose check failed."""
    reviewed = reviewed if reviewed is not None else [None] * len(present)
    out = np.zeros(len(present), dtype=bool)
    for i, (p, r) in enumerate(zip(present, reviewed)):
        out[i] = r == "drop" or (r != "keep" and failed_check(kind, p))
    return out


def is_verified(columns: Iterable[str]) -> bool:
    return PRESENT in set(columns)
