"""The one exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class SpurbenchError(Exception):
    """A problem the user can fix (bad path, unknown model, wrong class id, ...).

    The message must say what is wrong and how to fix it, in one line.
    """
