"""The error-coverage measurement itself (scripts/error_coverage.py, the hooks at the end of tests/conftest.py):
it finds every SpurbenchError call site, records constructions in this process and in subprocesses, and maps
them to sites in a way line moves do not break."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import error_coverage

from spurbench.errors import SpurbenchError

SOURCE = """
from spurbench.errors import SpurbenchError


def check(x):
    if x < 0:
        raise SpurbenchError(f"x must be >= 0, not {x}")
    if x > 9:
        raise SpurbenchError(
            "x must be < 10; "
            f"got {x}"
        )
    raise SpurbenchError(f"x must be >= 0, not {x}")  # same message again: a second site with the same prefix


class Spec:
    def load(self, why):
        return SpurbenchError(why)
"""


def test_finds_every_call_site_with_a_key_that_survives_moving_lines():
    sites = error_coverage.sites_in(SOURCE, "m.py")
    keys = [s.key for s in sites]
    assert keys == [
        "m.py::check::x must be >= 0, not",
        "m.py::check::x must be < 10; got",
        "m.py::check::x must be >= 0, not#2",
        "m.py::Spec.load::{why}",
    ]
    assert (sites[1].line, sites[1].end_line) == (9, 12)  # a call over several lines spans them all
    moved = error_coverage.sites_in("\n\n\nimport os\n" + SOURCE, "m.py")
    assert [s.key for s in moved] == keys and moved[0].line == sites[0].line + 4


def test_the_package_sites_are_found_and_keys_are_unique():
    sites = error_coverage.all_sites()
    assert len(sites) > 300
    assert len({s.key for s in sites}) == len(sites)
    recipe = (Path(error_coverage.ROOT) / "spurbench" / "generate" / "recipe.py").read_text(encoding="utf-8")
    assert sum(1 for s in sites if s.file == "spurbench/generate/recipe.py") == recipe.count("SpurbenchError(")


def test_a_logged_line_goes_to_the_innermost_spanning_site(tmp_path):
    package = tmp_path / "spurbench"
    package.mkdir()
    (package / "m.py").write_text(SOURCE, encoding="utf-8")
    log = tmp_path / "log.txt"
    log.write_text(
        f"# test t1\n{package / 'm.py'}:10\n# test t2\n{package / 'm.py'}:18\n/elsewhere/x.py:3\n", encoding="utf-8"
    )
    sites, missing = error_coverage.uncovered(log, root=tmp_path)
    hits = error_coverage.triggered(sites, error_coverage.read_log(log, root=tmp_path))
    assert hits == {"spurbench/m.py::check::x must be < 10; got": {"t1"}, "spurbench/m.py::Spec.load::{why}": {"t2"}}
    assert [s.key.split("::", 1)[1] for s in missing] == ["check::x must be >= 0, not", "check::x must be >= 0, not#2"]


def test_this_session_logs_constructions_here_and_in_subprocesses(tmp_path):
    log = Path(os.environ["SPURBENCH_ERROR_LOG"])
    assert log.is_file()
    before = log.read_text(encoding="utf-8").count("\n")
    SpurbenchError("constructed in the test process")
    # a user mistake in a subprocess: a dataset folder that does not exist
    proc = subprocess.run(
        [sys.executable, "-m", "spurbench", "eval", "--dataset", str(tmp_path / "missing"), "--model", "resnet18"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    new = log.read_text(encoding="utf-8").splitlines()[before:]
    assert any(line.startswith(f"{__file__}:") for line in new)
    assert any("/spurbench/" in line and not line.startswith("#") for line in new), new


def test_the_script_lists_the_untriggered_sites(tmp_path):
    log = tmp_path / "empty.txt"
    log.write_text("", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(Path(error_coverage.ROOT) / "scripts" / "error_coverage.py"), str(log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1  # nothing triggered: above the allowed remainder
    assert "no full run" in proc.stderr
    total = len(error_coverage.all_sites())
    assert f"error coverage: 0/{total} SpurbenchError call sites triggered" in proc.stdout
    assert "spurbench/classifiers.py:" in proc.stdout
