"""The one error type users see: the CLI prints its message and exits 2, without a traceback."""


class SqltuneError(Exception):
    """Bad input or an unmet precondition, described so the user can fix it (names the file/record/param)."""
