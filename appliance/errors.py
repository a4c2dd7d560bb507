"""Expected failures: each carries a message for the person at the keyboard, never a traceback."""


class UserError(Exception):
    """An expected failure (bad argument, missing file, daemon not running) with a plain
    message; the CLI prints it and exits 1."""
