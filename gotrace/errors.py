"""One exception type for everything a user can get wrong or lack; it carries its exit code."""

from __future__ import annotations

EXIT_BAD_INPUT = 2  # the PID, the binary or an argument is wrong
EXIT_ENVIRONMENT = 3  # this machine cannot trace (privileges, BCC, headers, kernel)


class GotraceError(Exception):
    """A failure the user can act on: printed as one line, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class BadInput(GotraceError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_BAD_INPUT)


class CannotTrace(GotraceError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_ENVIRONMENT)
