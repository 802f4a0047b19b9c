"""The first hour: help that lists what ships, the sample-photos set the quickstart scores, cards a Hub user reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spurbench import cli

PACKAGE = Path(cli.__file__).parent


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare on words


def _listed(text: str, flag: str) -> list[str]:
    """The names a flag's help lists as `a shipped name (a, b, c)`."""
    after = text[text.index(f"{flag} NAME|") :]
    return re.search(r"a shipped name \(([^)]*)\)", after).group(1).replace(" ", "").split(",")


def test_build_help_lists_every_shipped_recipe_and_shows_out_as_required(capsys):
    text = _help(capsys, ["build"])
    assert sorted(_listed(text, "--recipe")) == sorted(p.stem for p in (PACKAGE / "recipes").glob("*.yaml"))
    assert "usage: spurbench build --recipe NAME|PATH --out DIR [flags]" in text
    assert "Required, except with --plan" in text


@pytest.mark.slow  # imports torch with the eval command (~10 s)
def test_eval_help_lists_every_shipped_panel(capsys):
    text = _help(capsys, ["eval"])
    assert sorted(_listed(text, "--panel")) == sorted(p.stem for p in (PACKAGE / "panels").glob("*.yaml"))


@pytest.mark.parametrize("argv", [["build"], ["import"], ["import", "waterbirds"], ["leaderboard"]])
def test_help_descriptions_are_written_for_users_not_module_docstrings(argv, capsys):
    text = _help(capsys, argv)
    for leak in ("add_arguments", "IMPORTERS", "Imports flow one way", "this module", "(default: None)"):
        assert leak not in text, (argv, leak)
