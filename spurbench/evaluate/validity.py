"""How much of a set's spurious rate is real: the eval-side checks of a set's validity (issue 24).

- `used_in_build`: a classifier that chose, shaped or checked a set's images (SFSL's feature model, DDB's
  selection and pruning classifier, a `mine:` stage's surrogates: the card's `models_used`, written by
  spurbench.generate.stages.models_used) is not independent of the set. An entry of the same model AND the same
  weights (sha256) records the roles, and the renderers mark it and rank it apart from the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
