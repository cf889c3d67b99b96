"""The one exception type for user mistakes.

The CLI turns a ``UserError`` into a one-line message and exit code 2; anything else is a
bug and keeps its traceback. Messages say what was wrong and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user (flags, files, names): never a traceback."""
