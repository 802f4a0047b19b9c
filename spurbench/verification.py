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
#: columns the build's copy check adds to generated rows (spurbench/generate/copies.py): the nearest reference image of
#: the row's class (its file name), the similarity to it, and whether that is above the recipe's threshold
NEAREST, SIMILARITY, NEAR_DUPLICATE = "nearest_reference", "reference_similarity", "near_duplicate"
COPY_COLUMNS = (NEAREST, SIMILARITY, NEAR_DUPLICATE)
#: key of the audit sample inside the verification record (`spurbench verify --audit N`)
AUDIT_KEY = "audit"
#: the two verdicts an audit is stratified by
VERDICTS = ("passed", "failed")


# The rule `spurbench eval` applies (no detector needed: pure data)


def failed_check(kind: str, present: bool | None) -> bool:
    """Did the image fail its set's promise? spurious: the object is there; shift: it is not.
    Unchecked images (None) never fail."""
    if present is None:
        return False
    return bool(present) if kind == "spurious" else not bool(present)


def excluded_rows(
    kind: str,
    present: Sequence[bool | None],
    reviewed: Sequence[str | None] | None = None,
    near_duplicate: Sequence[bool | None] | None = None,
) -> np.ndarray:
    """Boolean mask of the rows `spurbench eval` leaves out: a person's `drop` always, a person's `keep`
    never, otherwise the rows whose check failed or that copy a reference image (`near_duplicate`)."""
    reviewed = reviewed if reviewed is not None else [None] * len(present)
    near_duplicate = near_duplicate if near_duplicate is not None else [None] * len(present)
    out = np.zeros(len(present), dtype=bool)
    for i, (p, r, c) in enumerate(zip(present, reviewed, near_duplicate)):
        out[i] = r == "drop" or (r != "keep" and (failed_check(kind, p) or bool(c)))
    return out


def excluded_in(kind: str, columns: dict[str, Sequence]) -> np.ndarray | None:
    """`excluded_rows` from a split's columns by name ({name: values}); None when the split has neither the
    verification columns nor the copy check's, so nothing is left out."""
    if PRESENT not in columns and NEAR_DUPLICATE not in columns:
        return None
    n = len(next(iter(columns.values())))
    present = columns[PRESENT] if PRESENT in columns else [None] * n
    return excluded_rows(kind, present, columns.get(REVIEWED), columns.get(NEAR_DUPLICATE))


# The audit: how often the detector is wrong, from a person's decisions on a random sample


def audit_stats(kind: str, verdicts: Sequence[str], decisions: Sequence[str], set_sizes: dict[str, int]) -> dict:
    """Per verdict (passed / failed): images audited, decided by a person, disagreements with the detector, their rate
    with its Wilson 95 % interval, and that rate as images of the whole set (`set_sizes`: images per verdict).

    A person's `keep` says the image is a valid test (spurious set: object absent), `drop` that it is not; so on a passed
    image `drop` disagrees with the detector (a leak: the object is there after all), on a failed image `keep` does."""
    from spurbench.evaluate.uncertainty import wilson_interval

    out = {}
    for verdict in VERDICTS:
        mine = [d for v, d in zip(verdicts, decisions) if v == verdict]
        decided = [d for d in mine if d in DECISIONS]
        disagree = sum(d == ("drop" if verdict == "passed" else "keep") for d in decided)
        low, high = wilson_interval(disagree, len(decided))
        rate = disagree / len(decided) if decided else None
        size = int(set_sizes.get(verdict, 0))
        out[verdict] = {
            "audited": len(mine),
            "decided": len(decided),
            "disagree": disagree,
            "rate": rate,
            "low": low,
            "high": high,
            "images_in_set": size,
            "set_estimate": None
            if rate is None
            else [round(rate * size, 1), round(low * size, 1), round(high * size, 1)],
        }
    return out


def audit_line(record: dict | None) -> str:
    """The audit's headline as plain text ("object in passed images: 3 % [1 %, 8 %], 120 audited"), or "" when
    the verification record has no audit decisions yet."""
    audit = (record or {}).get(AUDIT_KEY) or {}
    stats = (audit.get("verdicts") or {}).get("passed") or {}
    if not stats.get("decided"):
        return ""
    what = (
        "object in passed images" if audit.get("kind", "spurious") == "spurious" else "object missing in passed images"
    )
    pct = lambda x: f"{100 * x:.0f} %"  # noqa: E731
    return f"{what}: {pct(stats['rate'])} [{pct(stats['low'])}, {pct(stats['high'])}], {stats['decided']} audited"


def is_verified(columns: Iterable[str]) -> bool:
    return PRESENT in set(columns)
