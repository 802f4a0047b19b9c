"""spurbench.evaluate.validity on recorded entries (fast): the transfer block and the lift wording.
The end-to-end checks (a smoke build, its control split, a mined variant) are in tests/test_build.py."""

from __future__ import annotations

import pytest

from spurbench.evaluate import validity
from spurbench.evaluate.uncertainty import Method, unit_mean_interval

MINED = {"mine": {"panel": "offline", "min_fooled": 1, "surrogates": [{"model": "a"}, {"model": "b"}]}}


def _entry(rates: list[float], **extra) -> dict:
    per_class = {str(k): {"spurious_rate": r} for k, r in enumerate(rates)}
    return {"model": "m", "per_class": per_class, "metrics": {"spurious_rate": sum(rates) / len(rates)}, **extra}


def test_transfer_is_the_held_out_rate_with_a_class_interval():
    e = _entry([0.1, 0.5, 0.3, 0.9])
    t = validity.transfer_block(e, MINED)
    assert t["rate"] == pytest.approx(0.45) and t["surrogates"] == ["a", "b"] and t["min_fooled"] == 1
    assert t["interval"] == list(unit_mean_interval([0.1, 0.5, 0.3, 0.9], Method(unit="class")))
    assert t["interval"][0] < 0.45 < t["interval"][1]


def test_no_transfer_for_a_surrogate_or_an_unmined_set():
    assert validity.transfer_block(_entry([0.5], used_in_build=["mining surrogate"]), MINED) is None
    assert validity.transfer_block(_entry([0.5]), {"models_used": []}) is None


def test_a_lift_reaching_zero_is_called_an_artefact_of_generation():
    rec = validity._lift_record(0.4, 0.35, 0.05, -0.02, 0.12, 10)
    assert rec["artefact"] is True and validity._lift_record(0.4, 0.1, 0.3, 0.2, 0.4, 10)["artefact"] is False
    entry = {"model": "m", "control": {**rec, "per_class": {"309": rec}}}
    lines = validity.control_lines(entry)
    assert lines[0] == (
        "class 309: test 40 %, control 35 %, lift 5 % [-2 %, 12 %]: an artefact of generation, not a learned spurious feature"
    )
    assert lines[-1].startswith("overall: ") and "## Lift over the control split" in validity.control_markdown([entry])
    assert "an artefact of generation" in validity.page_html([entry])


def test_marks_and_apart():
    assert validity.mark({"used_in_build": ["selection", "pruning"]}) == " (used in build: selection, pruning)"
    assert validity.mark({}) == "" and not validity.apart({}) and validity.apart({"used_in_build": ["x"]})
