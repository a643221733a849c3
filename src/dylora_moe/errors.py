"""User-facing errors: one clear line, a non-zero exit, no traceback.

Raise `UserError` for anything the user can fix (bad flag, missing file, mismatched checkpoint).
The CLI prints `error: <message>` and exits with `exit_code`; library callers catch it as usual.
"""


class UserError(Exception):
    """A problem in the user's input; the message says what was wrong, what was expected and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
