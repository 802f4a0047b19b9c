"""The build's last stage before export, when a recipe has a `verify:` section: every exported image is
checked by an open-vocabulary detector (`spurbench verify`, see spurbench/verify.py) and the dataset is
exported with the verification columns and the card's verification record.

    verify:
      detector: owlv2        # owlv2 | grounding-dino | tiny (random weights, plumbing only)
      model: null            # other weights of that family: a Hub id or a local save_pretrained folder
      revision: null         # Hub revision of `model` (the default models are pinned)
      threshold: null        # object_present = object_score >= threshold; null: the detector's default
      batch_size: 8

The section is not part of the recipe's hash: changing it re-checks the images, never regenerates them.
Resumable like the other stages: detections are cached in <work>/verify/detections.jsonl by image content
and queries, so a killed build re-detects only what it had not done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spurbench.errors import SpurbenchError

SECTION = "verify"


@dataclass
class VerifySection:
    detector: str = "owlv2"
    model: str | None = None
    revision: str | None = None
    threshold: float | None = None
    batch_size: int = 8


def parse_verify_section(value: Any) -> VerifySection | None:
    """The recipe's `verify:` section, checked (errors name the key); None when absent."""
    from spurbench import detection
    from spurbench.generate.schema import convert

    if value is None:
        return None
    section = convert(VerifySection, value, SECTION)
    if section.detector not in detection.DETECTORS:
        raise SpurbenchError(
            f"key '{SECTION}.detector': unknown detector {section.detector!r}; use one of {', '.join(detection.DETECTORS)}"
        )
    if section.threshold is not None and not 0 <= section.threshold <= 1:
        raise SpurbenchError(f"key '{SECTION}.threshold' must be a score between 0 and 1, got {section.threshold}")
    if section.batch_size < 1:
        raise SpurbenchError(f"key '{SECTION}.batch_size' must be at least 1, got {section.batch_size}")
    return section


def load_verify_section(recipe_path: str | Path) -> VerifySection | None:
    from spurbench import resources

    _, data = resources.load_yaml("recipe", recipe_path)
    return parse_verify_section(data.get(SECTION)) if isinstance(data, dict) else None


def stage_verify(ctx, section: VerifySection, unverified: Path, carry: dict[str, str] | None = None) -> Path:
    """Check the export in `unverified` and write the verified dataset to ctx.out; `carry`: people's decisions in the
    export being replaced, by image sha256, carried over to the rows with the same image bytes."""
    from spurbench.verify import verify_dataset

    audit = earlier_audit(ctx.out)
    ctx.log(f"stage verify: {section.detector} checks every image for its class's object -> {ctx.out}")
    record = verify_dataset(
        unverified,
        ctx.out,
        detector=section.detector,
        detector_model=section.model,
        detector_revision=section.revision,
        threshold=section.threshold,
        batch_size=section.batch_size,
        device=str(ctx.device),
        command=ctx.command,
        progress=ctx.progress,
        cache=ctx.work / "verify" / "detections.jsonl",
        carry=carry or None,
        audit_carry=audit,
        threshold_source=None if section.threshold is None else "the recipe's `verify:` section (verify.threshold)",
    )
    if carry:
        c = record["decisions_carried"]
        ctx.log(
            f"stage verify: carried {c['carried']} decision(s) over to rows with the same image bytes; "
            f"{c['not_carried']} could not be carried (their images changed)"
        )
    if audit is not None:
        a = record.get("audit") or {}
        ctx.log(
            f"stage verify: the audit sample of the export this build replaces: {len(a.get('images') or [])} image(s) "
            f"found again, {a.get('not_found', 0)} gone (their images changed)"
        )
    for split, c in record["splits"].items():
        ctx.log(
            f"stage verify: {split}: {c['checked']} checked, {c['failed']} failed the check (threshold {record['threshold']})"
        )
    return ctx.out


def earlier_audit(folder: Path) -> dict[str, Any] | None:
    """The audit record (`spurbench verify --audit`) of the verified export in `folder`, which a rebuild carries over
    like people's decisions; None when there is none (or the folder is no dataset)."""
    from spurbench import dataset as ds_contract
    from spurbench.verification import AUDIT_KEY, CARD_KEY

    if not Path(folder).is_dir():
        return None
    try:
        record = ds_contract.read_provenance(folder).get(CARD_KEY) or {}
    except (SpurbenchError, OSError, ValueError):
        return None
    audit = record.get(AUDIT_KEY)
    return dict(audit) if isinstance(audit, dict) and audit.get("images") else None
