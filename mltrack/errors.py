"""Errors that mean "the user asked for something we cannot do", reported in one line."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2, nothing written."""


def bad_value(argument: str, value: object, expected: str) -> UsageError:
    """The one shape every input error has: the argument as typed, the value, what we expected."""
    return UsageError(f"{argument}: got {value!r}, expected {expected}")


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` in user code does
    not swallow it and the run can be ended as KILLED on the way out.
    """
