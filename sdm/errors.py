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
