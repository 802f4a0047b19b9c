"""scripts/package_size.py, the size measure of issue 22, on a hand-counted module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "package_size", Path(__file__).resolve().parent.parent / "scripts" / "package_size.py"
)
package_size = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(package_size)

SOURCE = '''"""Module docstring,
on two lines."""

import os  # a trailing comment keeps the line code

# a comment line


def f(x):
    """One line."""
    y = "not a docstring"
    return os.path.join(x, y)
'''


def test_line_kinds_match_a_hand_count():
    assert package_size.line_kinds(SOURCE) == {"doc": 3, "code": 4, "comment": 1, "blank": 4}


def test_long_functions_lists_only_those_over_the_limit():
    assert package_size.long_functions(SOURCE, 3) == [(4, "f")]
    assert package_size.long_functions(SOURCE, 4) == []


def test_the_report_names_the_revision_and_its_counts():
    text = package_size.report("HEAD", 80)
    first = text.splitlines()[0]
    assert first.startswith("HEAD: ") and " files, " in first and "functions over 80 lines" in first
