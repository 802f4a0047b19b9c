"""Find recipes (`builders/*.yaml`) and classifier panels (`classifiers/*.yaml`) by path or by name.

A name (`smoke`, `offline`) is looked up among the YAML files shipped inside the installed package,
so it works after `pip install spurbench` outside this repository.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from spurbench.errors import SpurbenchError


def cache_dir(part: str) -> Path:
    """spurbench's cache folder for `part` (`tiny` models, `zero_shot` heads): `$SPURBENCH_CACHE/<part>`, else
    `~/.cache/spurbench/<part>`. The one place the cache root is resolved."""
    return Path(os.environ.get("SPURBENCH_CACHE") or Path.home() / ".cache" / "spurbench").expanduser() / part


_KINDS = {"recipe": ("recipes", "builders"), "panel": ("panels", "classifiers")}


def shipped_names(kind: str) -> list[str]:
    package, _ = _KINDS[kind]
    return sorted(
        p.name[:-5] for p in resources.files("spurbench").joinpath(package).iterdir() if p.name.endswith(".yaml")
    )


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """Return the YAML file for a recipe/panel given as a path or as the name of a shipped one."""
    package, folder = _KINDS[kind]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        raise SpurbenchError(
            f"{kind} file '{name_or_path}' does not exist; give a path to a YAML file or one of the shipped names: "
            + ", ".join(shipped_names(kind))
        )
    shipped = resources.files("spurbench").joinpath(package, f"{path.name}.yaml")
    if not shipped.is_file():
        raise SpurbenchError(
            f"unknown {kind} '{name_or_path}'; shipped {kind}s are: {', '.join(shipped_names(kind))} "
            f"(or give a path to a YAML file like {folder}/<name>.yaml)"
        )
    return Path(str(shipped))


def load_yaml(kind: str, name_or_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Resolve and parse a recipe/panel; errors name the file."""
    path = resolve(kind, name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpurbenchError(f"{kind} file '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpurbenchError(f"{kind} file '{path}' must contain a YAML mapping at the top level")
    return path, data
