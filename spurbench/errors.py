"""The one exception type for user mistakes: the CLI prints its message on one line, no traceback."""

import os
import sys

# When set (tests/conftest.py sets it for a test session, and subprocesses inherit it), every SpurbenchError
# constructed appends the `file:line` that constructed it to this file: scripts/error_coverage.py turns that
# log into the list of error call sites no test triggers.
ERROR_LOG_ENV = "SPURBENCH_ERROR_LOG"


class SpurbenchError(Exception):
    """A problem the user can fix (bad path, unknown model, wrong class id, ...).

    The message must say what is wrong and how to fix it, in one line.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        log = os.environ.get(ERROR_LOG_ENV)
        if log:
            _log_construction(self, log)


def _log_construction(err: SpurbenchError, log: str) -> None:
    """Append the `file:line` of the code that constructed `err` (past any subclass `__init__`) to `log`."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is err:
        frame = frame.f_back
    if frame is None:
        return
    try:
        # one short write in append mode: lines from parallel processes do not interleave
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{frame.f_code.co_filename}:{frame.f_lineno}\n")
    except OSError:
        pass  # the coverage log must never turn a user's error into a different one


def first_line(err: BaseException) -> str:
    """`Class: first line of the message` (at most 200 characters of it): how a library's exception is named
    inside a one-line error."""
    msg = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {msg[0][:200]}" if msg else err.__class__.__name__


def hub_failure_reason(err: BaseException, detail: str | None = None) -> str:
    """Why a Hugging Face Hub call failed, in a few words for a one-line error.

    With HF_HUB_OFFLINE set every Hub call fails, and that (not the exception's class) is what the user
    needs to hear; otherwise `detail` (a short description of `err`) or the exception's class name.
    """
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    return detail if detail is not None else err.__class__.__name__
