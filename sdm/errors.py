"""User-facing errors: one line that names the problem and the fix."""


class SDMError(Exception):
    """A bad input (path, flag, model, data) that the user can fix.

    Commands print these as a single line and exit with status 2; anything else is a bug
    and keeps its traceback.
    """
