"""Which one-line `SpurbenchError(...)` call sites in spurbench/ the test suite triggers.

How it works:
- the sites: every `SpurbenchError(...)` call in spurbench/**.py, found with `ast` (each call site once); a site's
  key is `file::enclosing function::message prefix` (the literal text the message starts with), plus `#n` for
  the n-th site with the same key, so moving code up or down a file does not change any key;
- the log: tests/conftest.py sets $SPURBENCH_ERROR_LOG for the test session (subprocesses inherit it) and
  `SpurbenchError.__init__` appends the `file:line` that constructed it; lines starting with `# test ` name the
  test that runs from there on;
- the match: a logged `file:line` belongs to the innermost site whose call spans that line, with the source as it
  is when the log is read (the log is read right after the run: the check at the end of a full run, or this script);
- the check (tests/conftest.py, at the end of a full run only): fails the session when the uncovered share is
  above ALLOWED_UNCOVERED.

`python scripts/error_coverage.py [LOG ...]` prints the sites the last run (or none of the LOGs: runs of parts of
the suite add up) did not trigger; exit status 1 when their share is above ALLOWED_UNCOVERED.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spurbench"

# The share of SpurbenchError call sites the full suite may leave untriggered. Measured when this was set
# (2026-12-05, the first full run of the merged suite: 347 of 423 sites triggered, 82.0 %; the branch's union of
# partial logs had said 340 of 407), so at most 18 % untriggered. Lower it whenever tests cover
# more (it only ratchets down); never raise it to make a run pass. The target is <= 0.10.
ALLOWED_UNCOVERED = 0.01  # the full run of 2026-12-06 triggered all 444 sites; room for ~4 while a change is made

TEST_MARK = "# test "
FULL_RUN_MARK = "# full run"


@dataclass(frozen=True)
class Site:
    key: str  # file::function::message prefix[#n]: stable when lines move
    file: str  # relative to the repository root
    line: int
    end_line: int


def log_path(root: Path = ROOT) -> Path:
    """Where a test session's log goes: one per checkout (worktrees do not share it), outside the tree."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"spurbench-error-log-{tag}.txt"


def _is_spurbench_error(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "SpurbenchError") or (
        isinstance(func, ast.Attribute) and func.attr == "SpurbenchError"
    )


def _prefix(call: ast.Call) -> str:
    """The literal text the message starts with (up to its first placeholder), for the key."""
    if not call.args:
        return ""
    arg = call.args[0]
    while isinstance(arg, ast.BinOp):  # "a" + x, "a %s" % x
        arg = arg.left
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        text = arg.value
    elif isinstance(arg, ast.JoinedStr):
        text = ""
        for part in arg.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            text += part.value
        if not text and arg.values:  # starts with a placeholder: name it
            text = "{" + ast.unparse(arg.values[0].value)[:30] + "}"
    else:
        text = "{" + ast.unparse(arg)[:30] + "}"
    return " ".join(text.split())[:50]


def sites_in(source: str, file: str) -> list[Site]:
    """The SpurbenchError call sites in one module's source."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call) and _is_spurbench_error(child.func):
                where = ".".join(scope) or "<module>"
                found.append((f"{file}::{where}::{_prefix(child)}", child.lineno, child.end_lineno or child.lineno))
            visit(child, scope)

    visit(ast.parse(source), [])
    seen: Counter[str] = Counter()
    sites = []
    for key, line, end in sorted(found, key=lambda f: (f[1], f[2])):
        seen[key] += 1
        sites.append(Site(key if seen[key] == 1 else f"{key}#{seen[key]}", file, line, end))
    return sites


def all_sites(root: Path = ROOT) -> list[Site]:
    """Every SpurbenchError call site in the package, in file and line order."""
    sites = []
    for path in sorted((root / "spurbench").rglob("*.py")):
        sites.extend(sites_in(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix()))
    return sites


def read_log(log: Path, root: Path = ROOT) -> list[tuple[str, int, str]]:
    """(file relative to root, line, test) of each logged construction inside the package."""
    entries = []
    test = ""
    if not log.exists():
        return entries
    package = (root / "spurbench").resolve()
    for raw in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.startswith(TEST_MARK):
            test = raw[len(TEST_MARK) :]
            continue
        if raw.startswith("#"):
            continue
        file, _, line = raw.rpartition(":")
        if not line.isdigit():
            continue
        path = Path(file).resolve()
        if not path.is_relative_to(package):
            continue
        entries.append((path.relative_to(root.resolve()).as_posix(), int(line), test))
    return entries


def triggered(sites: list[Site], entries: list[tuple[str, int, str]]) -> dict[str, set[str]]:
    """Site key -> the tests that constructed it: each logged line goes to the innermost call spanning it."""
    by_file: dict[str, list[Site]] = {}
    for site in sites:
        by_file.setdefault(site.file, []).append(site)
    hits: dict[str, set[str]] = {}
    for file, line, test in entries:
        spanning = [s for s in by_file.get(file, []) if s.line <= line <= s.end_line]
        if spanning:
            site = min(spanning, key=lambda s: s.end_line - s.line)
            hits.setdefault(site.key, set()).add(test)
    return hits


def uncovered(*logs: Path, root: Path = ROOT) -> tuple[list[Site], list[Site]]:
    """(all sites, the ones none of the logs shows a construction of)."""
    sites = all_sites(root)
    hits = triggered(sites, [entry for log in logs for entry in read_log(log, root)])
    return sites, [s for s in sites if s.key not in hits]


def report(sites: list[Site], missing: list[Site]) -> str:
    share = len(missing) / len(sites) if sites else 0.0
    lines = [f"{s.file}:{s.line}  {s.key.split('::', 1)[1]}" for s in missing]
    lines.append(
        f"error coverage: {len(sites) - len(missing)}/{len(sites)} SpurbenchError call sites triggered "
        f"({1 - share:.1%}); {len(missing)} untriggered ({share:.1%}, allowed {ALLOWED_UNCOVERED:.0%})"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    logs = [Path(a) for a in argv] or [log_path()]
    for log in logs:
        if not log.exists():
            print(f"error: no error log at {log}: run the test suite first (python -m pytest)", file=sys.stderr)
            return 2
    if not any(FULL_RUN_MARK in log.read_text(encoding="utf-8", errors="replace") for log in logs):
        print("note: no full run (all of tests/) among the logs: the list below overstates", file=sys.stderr)
    sites, missing = uncovered(*logs)
    print(report(sites, missing))
    return 1 if sites and len(missing) / len(sites) > ALLOWED_UNCOVERED else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
