"""How much of a set's spurious rate is real: the eval-side checks of a set's validity (issue 24).

- `used_in_build`: a classifier that chose, shaped or checked a set's images (SFSL's feature model, DDB's
  selection and pruning classifier, a `mine:` stage's surrogates: the card's `models_used`, written by
  spurbench.generate.stages.models_used) is not independent of the set. An entry of the same model AND the same
  weights (sha256) records the roles, and the renderers mark it and rank it apart from the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: what the renderers say of a group of entries whose models built the set
APART_NOTE = "models used to build the set (not independent of it: ranked apart)"


def used_in_build(entry: Mapping[str, Any], provenance: Mapping[str, Any] | None) -> list[str]:
    """The roles the entry's model played in building the set (card `models_used`), [] when none: it matches on the
    architecture name and the weights' sha256 both, so another checkpoint of the same architecture is independent."""
    sha = str((entry.get("weights") or {}).get("sha256") or "").lower()
    if not sha:
        return []
    roles: list[str] = []
    for used in (provenance or {}).get("models_used") or []:
        if not isinstance(used, Mapping):
            continue
        if used.get("model") == entry.get("architecture") and str(used.get("weights_sha256") or "").lower() == sha:
            roles += [str(r) for r in used.get("roles") or [] if str(r) not in roles]
    return roles


def apart(entry: Mapping[str, Any]) -> bool:
    """Whether the entry is ranked apart from the independent models (its model was used to build the set)."""
    return bool(entry.get("used_in_build"))


def mark(entry: Mapping[str, Any]) -> str:
    """The suffix a renderer adds to the model's name: " (used in build: feature model)", or ""."""
    roles = entry.get("used_in_build") or []
    return f" (used in build: {', '.join(map(str, roles))})" if roles else ""


# ---------------------------------------------------------------------------------------------
# The control split: what the pipeline alone does (issue 24 §2)

#: the split a build's control images are exported to (spurbench.generate.methods.sfsl)
CONTROL_SPLIT = "control"
#: what a class whose lift interval reaches zero is called, on the page and in the entry
ARTEFACT = "an artefact of generation, not a learned spurious feature"


def has_control(data: Any) -> bool:
    """Whether `data` (an evaluate.inputs.SpuriousSet of split `test`) has a control split to score beside it."""
    return data.dataset is not None and CONTROL_SPLIT in data.dataset.split_names


def _seeds(data: Any, index: np.ndarray) -> np.ndarray:
    """The `seed` of each scored row (index: split rows), the pairing of a control image with its test image."""
    column = data.dataset.column(data.split, "seed") if data.dataset is not None else None
    return np.asarray(column, dtype=np.int64)[index] if column is not None else np.arange(len(index))


def control_block(data: Any, test_hits: Any, test_index: Any, control: Any, control_hits: Any, control_index: Any):
    """The entry's `control` block: per class and overall (macro over classes), the test and control top-1
    spurious rates and the lift (test minus control) with its 95 % interval. Overall: classes resampled, each bringing
    its test and its control images (paired by class); one class: its seeds resampled, a control image and the test
    image of the same seed drawn together. A lift whose interval reaches 0 is flagged `artefact`."""
    from spurbench.evaluate.uncertainty import Method, drop_interval, unit_mean_interval

    t_hits, c_hits = np.asarray(test_hits, bool), np.asarray(control_hits, bool)
    t_idx, c_idx = np.asarray(test_index, np.int64), np.asarray(control_index, np.int64)
    t_lab = _labels(data, t_idx)
    c_lab = _labels(control, c_idx)
    t_seed, c_seed = _seeds(data, t_idx), _seeds(control, c_idx)
    per_class: dict[str, dict[str, Any]] = {}
    by_image = Method(unit="seed")
    for k in sorted(set(t_lab.tolist()) & set(c_lab.tolist())):
        t, c = t_lab == k, c_lab == k
        t_rate, c_rate = float(t_hits[t].mean()), float(c_hits[c].mean())
        low, high = drop_interval(c_hits[c], c_seed[c], t_hits[t], t_seed[t], by_image)
        per_class[str(k)] = _lift_record(t_rate, c_rate, t_rate - c_rate, low, high, int(c.sum()))
    lifts = [v["lift"] for v in per_class.values()]
    low, high = unit_mean_interval(lifts, Method(unit="class")) if lifts else (None, None)
    overall = _lift_record(
        float(np.mean([v["test_rate"] for v in per_class.values()])) if lifts else None,
        float(np.mean([v["control_rate"] for v in per_class.values()])) if lifts else None,
        float(np.mean(lifts)) if lifts else None,
        low,
        high,
        int(len(c_hits)),
    )
    return {
        "split": CONTROL_SPLIT,
        **overall,
        "per_class": per_class,
        "uncertainty": {"overall": "class", "per_class": "seed (paired)", "level": 0.95},
    }


def _labels(data: Any, index: np.ndarray) -> np.ndarray:
    """Labels of split rows `index` (data.labels are those of data.rows, in the order of data.row_index)."""
    if data.row_index is None:
        return np.asarray(data.labels)[index]
    position = {int(r): i for i, r in enumerate(data.row_index)}
    return np.asarray(data.labels)[[position[int(r)] for r in index]]


def _lift_record(test_rate, control_rate, lift, low, high, n_control: int) -> dict[str, Any]:
    return {
        "test_rate": test_rate,
        "control_rate": control_rate,
        "lift": lift,
        "lift_interval": [low, high],
        "num_control": n_control,
        # the interval reaches zero (or below): the control fools the model about as often as the test images
        "artefact": low is not None and low <= 0.0,
    }


def control_lines(entry: Mapping[str, Any]) -> list[str]:
    """The lift in words, one line per class then overall, for md and the page ("" when the entry has none)."""
    c = entry.get("control")
    if not c:
        return []

    def text(what: str, r: Mapping[str, Any]) -> str:
        low, high = r.get("lift_interval") or [None, None]
        pct = _pct
        line = (
            f"{what}: test {pct(r.get('test_rate'))}, control {pct(r.get('control_rate'))}, "
            f"lift {pct(r.get('lift'))} [{pct(low)}, {pct(high)}]"
        )
        return line + (f": {ARTEFACT}" if r.get("artefact") else "")

    return [text(f"class {k}", r) for k, r in (c.get("per_class") or {}).items()] + [text("overall", c)]


CONTROL_NOTE = (
    "Control split: images from the base model (not fine-tuned) with the same prompts minus the identifier and "
    "the same seeds. Lift = test spurious rate minus control spurious rate, 95 % interval (overall: classes "
    "resampled; one class: its seeds resampled, paired)."
)


def control_markdown(entries: Any) -> list[str]:
    """The md board's lift section ([] when no entry scored a control split)."""
    scored = [e for e in entries if e.get("control")]
    if not scored:
        return []
    lines = ["", "## Lift over the control split", "", CONTROL_NOTE, ""]
    for e in scored:
        lines += [f"- {e['model']}{mark(e)}:", *[f"  - {line}" for line in control_lines(e)]]
    return lines


def page_html(entries: Any) -> str:
    """The page's validity sections: the lift over the control split, the transfer from the mining surrogates."""
    from html import escape

    transfer = transfer_markdown(entries)  # ["", "## title", "", note, "", "- item", ...]
    if not transfer:
        return _control_html(entries)
    items = "".join(f"<li>{escape(line[2:])}</li>" for line in transfer[5:])
    title, note = escape(transfer[1][3:]), escape(transfer[3])
    return (
        _control_html(entries) + f'<div id="transfer"><h3>{title}</h3><p class="note">{note}</p><ul>{items}</ul></div>'
    )


def _control_html(entries: Any) -> str:
    from html import escape

    scored = [e for e in entries if e.get("control")]
    if not scored:
        return ""
    items = "".join(
        f"<li>{escape(e['model'] + mark(e))}<ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in control_lines(e))
        + "</ul></li>"
        for e in scored
    )
    return f'<div id="control-lift"><h3>Lift over the control split</h3><p class="note">{escape(CONTROL_NOTE)}</p><ul>{items}</ul></div>'


# ---------------------------------------------------------------------------------------------
# Transfer (issue 24 §4): a mined set kept the images that fooled the surrogates; another model's rate is transfer


def transfer_block(entry: Mapping[str, Any], provenance: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """For a held-out model (not a surrogate) on a set made by a `mine:` stage: the transfer rate (its macro top-1
    spurious rate on the mined images) with its 95 % interval, classes resampled. None otherwise."""
    from spurbench.evaluate.uncertainty import Method, unit_mean_interval

    mine = (provenance or {}).get("mine")
    if not mine or entry.get("used_in_build"):
        return None
    rates = [c.get("spurious_rate") for c in (entry.get("per_class") or {}).values()]
    low, high = unit_mean_interval(rates, Method(unit="class")) if rates else (None, None)
    return {
        "rate": (entry.get("metrics") or {}).get("spurious_rate"),
        "interval": [low, high],
        "surrogates": [s.get("model") for s in mine.get("surrogates") or []],
        "min_fooled": mine.get("min_fooled"),
    }


def transfer_markdown(entries: Any) -> list[str]:
    """The md board's transfer section ([] when no entry has one)."""
    held = [e for e in entries if e.get("transfer")]
    if not held:
        return []
    t0 = held[0]["transfer"]
    lines = [
        "",
        "## Transfer from the mining surrogates",
        "",
        f"The set keeps only images that fooled at least {t0['min_fooled']} of {', '.join(t0['surrogates'])}; "
        "for every other model the spurious rate is a transfer rate (95 % interval, classes resampled).",
        "",
    ]
    for e in held:
        t = e["transfer"]
        low, high = t["interval"]
        lines.append(f"- {e['model']}: transfer rate {_pct(t['rate'])} [{_pct(low)}, {_pct(high)}]")
    return lines


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"
