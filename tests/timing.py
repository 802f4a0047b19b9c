"""pytest plugin (loaded by pyproject's addopts): after each test file, one line with its test count, its time and
the time since the run began, so a long run on a loaded machine shows where it is and how fast it goes."""

from __future__ import annotations

import time

import pytest

_started = time.monotonic()
_file_started: dict[str, float] = {}
_counts: dict[str, int] = {}
_done = [0]


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    path = str(item.path)
    _file_started.setdefault(path, time.monotonic())
    _counts[path] = _counts.get(path, 0) + 1
    yield
    _done[0] += 1
    if nextitem is None or str(nextitem.path) != path:
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and item.config.option.verbose >= 0:
            took = time.monotonic() - _file_started[path]
            share = 100 * _done[0] // max(item.session.testscollected, 1)
            reporter.write_line(
                f"    {item.path.name}: {_counts[path]} test(s) in {took:.1f} s; {share}% of the run done, "
                f"{_elapsed(time.monotonic() - _started)} since the start"
            )
