"""The one exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class SpurbenchError(Exception):
    """A problem the user can fix (bad path, unknown model, wrong class id, ...).

    The message must say what is wrong and how to fix it, in one line.
    """


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
