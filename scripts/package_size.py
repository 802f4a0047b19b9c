"""How big the package is, at a git revision: files, lines by kind (code, docstrings, comments, blank) and the
functions longer than a limit. The measure issue 22 ("one way to do each thing") tracks.

    python scripts/package_size.py [REV ...] [--longer-than N]     (default: HEAD, 80)

A docstring is a string that stands as a statement of its own; a comment line starts with `#`.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import tokenize
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_STATEMENT_START = (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE, None)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def line_kinds(source: str) -> Counter:
    """Counts of code / doc / comment / blank lines of one module."""
    lines = source.splitlines()
    kinds = ["blank" if not s.strip() else "comment" if s.strip().startswith("#") else "code" for s in lines]
    previous = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and previous in _STATEMENT_START:
            for row in range(tok.start[0] - 1, tok.end[0]):
                if kinds[row] == "code":
                    kinds[row] = "doc"
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type
    return Counter(kinds)


def long_functions(source: str, limit: int) -> list[tuple[int, str]]:
    """(lines, name) of every function longer than `limit` lines."""
    return [
        (node.end_lineno - node.lineno + 1, node.name)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def report(rev: str, limit: int) -> str:
    files = [f for f in _git("ls-tree", "-r", "--name-only", rev, "spurbench").split() if f.endswith(".py")]
    kinds: Counter = Counter()
    longest: list[tuple[int, str]] = []
    for path in files:
        source = _git("show", f"{rev}:{path}")
        kinds += line_kinds(source)
        longest += [(n, f"{path}::{name}") for n, name in long_functions(source, limit)]
    head = (
        f"{rev}: {len(files)} files, {sum(kinds.values())} lines (code {kinds['code']}, docstrings {kinds['doc']}, "
        f"comments {kinds['comment']}, blank {kinds['blank']}); {len(longest)} functions over {limit} lines"
    )
    return "\n".join([head] + [f"  {n:4d} {name}" for n, name in sorted(longest, reverse=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", default=["HEAD"], help="git revisions to measure (default: HEAD)")
    parser.add_argument("--longer-than", type=int, default=80, help="list functions longer than this (default 80)")
    args = parser.parse_args()
    for rev in args.revs:
        print(report(rev, args.longer_than))


if __name__ == "__main__":
    main()
