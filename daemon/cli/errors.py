"""Errors the command line reports as a message and an exit code, not a traceback."""

from __future__ import annotations


class UserError(RuntimeError):
    """Something the operator can fix (a missing file, an unreachable broker, a bad flag)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
