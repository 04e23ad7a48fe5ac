"""User-facing errors: one line that names the problem and the fix."""


class SDMError(Exception):
    """A bad input (path, flag, model, data) that the user can fix.

    Commands print these as a single line and exit with status 2; anything else is a bug
    and keeps its traceback.
    """


class ConfigError(SDMError):
    """A setting of a configuration dataclass that is out of range or inconsistent with another.

    The message speaks of the field (`T must be at least 1`); commands name the flag that sets it
    instead (`--T must be at least 1`), so library users and CLI users each read their own words.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def reason(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (cut to `limit` characters), or its type's name when it
    has none: what a one-line error quotes of the error beneath it."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
