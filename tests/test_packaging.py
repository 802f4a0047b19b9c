"""Packaging promises: the CLI explains itself, evaluation runs without the builder stack, shipped
recipes and panels are found by name after a plain install, and CITATION.cff is valid."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spurbench import cli, resources
from spurbench.errors import SpurbenchError

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300, **kw)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_has_help(command):
    parser = cli.build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    # commands with sub-commands of their own (`spurbench import <source>`) are checked all the way down
    todo = [(f"spurbench {command}", sub)]
    while todo:
        name, p = todo.pop()
        undocumented = [
            a.option_strings or a.dest for a in p._actions if not isinstance(a, argparse._HelpAction) and not a.help
        ]
        assert not undocumented, f"`{name}` flags without help: {undocumented}"
        assert p.description and len(p.description) > 40, name
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {child}", q) for child, q in action.choices.items()]


def test_top_level_help_lists_commands(tmp_path):
    res = _run("-m", "spurbench", "--help", cwd=tmp_path)
    assert res.returncode == 0
    for name in cli.COMMANDS:
        assert name in res.stdout


def test_evaluation_side_imports_without_the_builder_stack(tmp_path):
    # Make diffusers/transformers/accelerate unimportable, as after `pip install spurbench` without [build].
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('diffusers', 'transformers', 'accelerate'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import spurbench.evaluate.cli, spurbench.evaluate.leaderboard, spurbench.evaluate.metrics, spurbench.classifiers, spurbench.dataset\n"
        "from spurbench.cli import main\n"
        "sys.argv = ['spurbench', 'eval', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('EVAL-OK')\n"
    )
    res = _run("-c", code, cwd=tmp_path)
    assert "EVAL-OK" in res.stdout, res.stderr[-2000:]


def test_shipped_recipes_and_panels_resolve_by_name(tmp_path):
    assert "offline" in resources.shipped_names("panel")
    assert resources.resolve("panel", "offline").name == "offline.yaml"
    with pytest.raises(SpurbenchError, match="unknown panel 'nope'.*offline"):
        resources.resolve("panel", "nope")
    with pytest.raises(SpurbenchError, match="does not exist"):
        resources.resolve("recipe", tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(SpurbenchError, match="not valid YAML"):
        resources.load_yaml("panel", bad)


@pytest.mark.slow
def test_wheel_carries_recipes_panels_and_class_table(tmp_path):
    res = _run("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT))
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("spurbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package_folder in (("builders", "recipes"), ("classifiers", "panels")):
        for yaml_file in (ROOT / folder).glob("*.yaml"):
            assert f"spurbench/{package_folder}/{yaml_file.name}" in names
    assert "spurbench/data/spurious_imagenet_classes.tsv" in names


def test_citation_cff_is_valid():
    res = subprocess.run(
        [str(Path(sys.executable).with_name("cffconvert")), "--validate", "-i", str(ROOT / "CITATION.cff")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # "Citation metadata are valid according to schema version 1.2.0." ("valid" alone would match "invalid")
    out = res.stdout + res.stderr
    assert re.search(r"\bare valid according to schema version \d", out), out
    assert "invalid" not in out.lower(), out


def test_spurious_imagenet_class_table_matches_imagenet():
    from spurbench import imagenet

    classes = imagenet.spurious_imagenet_classes()
    assert len(classes) == 100 and len({c.index for c in classes}) == 100
    for c in classes:
        assert imagenet.wnids()[c.index] == c.wnid, c
        assert c.spurious_feature
    with pytest.raises(SpurbenchError, match="0..999"):
        imagenet.check_index(1000)
