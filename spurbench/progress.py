"""Progress bars that read well in a log file.

tqdm redraws its bar in place (carriage returns, and cursor-up escapes `ESC[A` for nested bars), which a file
or a CI log records as a heap of fragments. When stderr is not a terminal the entry point (`spurbench.cli.main`)
installs `PlainProgress` as `tqdm.auto.tqdm`, which every spurbench bar is made from: one plain line per bar every
`INTERVAL_S` seconds and one when it ends, for bars that run that long (a bar over in seconds prints nothing, so a
command that fails at once still prints its one-line error alone). Bars passed `disable=None` ("only on a terminal") print those lines too;
bars switched off on purpose (`disable=True`, e.g. --no-progress) stay off. `$SPURBENCH_PROGRESS_INTERVAL` sets the
seconds between lines (0: a line at every update, as a test or a short job on a cluster may want).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.std import tqdm as _std_tqdm

from spurbench.errors import SpurbenchError

#: seconds between two lines of one bar (`$SPURBENCH_PROGRESS_INTERVAL` overrides it while a command runs)
INTERVAL_S = 30.0
INTERVAL_ENV = "SPURBENCH_PROGRESS_INTERVAL"


def interval_from_env() -> float:
    """`$SPURBENCH_PROGRESS_INTERVAL` as seconds (a finite number >= 0), or `INTERVAL_S` when unset."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return INTERVAL_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not (0.0 <= seconds < float("inf")):
        raise SpurbenchError(f"${INTERVAL_ENV}={raw!r} is not a number of seconds >= 0; set it to e.g. 30, or unset it")
    return seconds


class PlainProgress(_std_tqdm):
    """A tqdm whose output is whole lines (no carriage returns, no cursor movement)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("disable") is None:
            kwargs["disable"] = False
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("mininterval", 1.0)
        self._last_line: float | None = None
        self._opened = time.monotonic()
        super().__init__(*args, **kwargs)

    def _line(self) -> None:
        text = self.format_meter(**{**self.format_dict, "ncols": 0}).strip()
        self.fp.write(text + "\n")
        self.fp.flush()
        self._last_line = time.monotonic()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        since = self._opened if self._last_line is None else self._last_line
        if time.monotonic() - since >= INTERVAL_S:
            self._line()
        return True

    def moveto(self, n: int) -> None:  # nested bars: nothing to move on a line-by-line log
        pass

    def clear(self, nolock: bool = False) -> None:
        pass

    def close(self) -> None:
        if self.disable:
            return
        if self._last_line is not None or time.monotonic() - self._opened >= INTERVAL_S:
            self._line()  # the final count, once, for a bar that ran long enough to print
        # tqdm's own close would write a carriage return or clear the line: only its bookkeeping is done here
        self.disable = True
        self._decr_instances(self)


@contextmanager
def plain_progress_in_logs(stream: Any = None) -> Iterator[bool]:
    """While the block runs, `tqdm.auto.tqdm` is the plain-line bar when `stream` (default stderr) is not a
    terminal; yields whether it is. Restored afterwards (a library user's tqdm is theirs)."""
    global INTERVAL_S
    stream = sys.stderr if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        yield False
        return
    import tqdm.auto

    before, interval_before = tqdm.auto.tqdm, INTERVAL_S
    INTERVAL_S = interval_from_env()
    tqdm.auto.tqdm = PlainProgress
    try:
        yield True
    finally:
        tqdm.auto.tqdm, INTERVAL_S = before, interval_before
