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


def network_error(exc: BaseException) -> BaseException | None:
    """The connection / credential failure behind `exc` (itself or a cause in its chain), if there is one: a
    remote store that cannot be reached is a user-fixable condition, reported in one line by the CLI."""
    kinds: list[type] = [ConnectionError, TimeoutError]
    for module, names in (("aiohttp", ("ClientError",)), ("google.auth.exceptions", ("GoogleAuthError",)),
                          ("google.api_core.exceptions", ("GoogleAPIError",)),
                          ("botocore.exceptions", ("EndpointConnectionError", "NoCredentialsError", "ClientError"))):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        kinds += [getattr(imported, name) for name in names if hasattr(imported, name)]
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, tuple(kinds)):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
