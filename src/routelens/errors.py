"""Errors a user can fix.

Everything raised as `RoutelensError` is a problem with the user's input (a path, a model, a
flag): the CLI prints its message on one line and exits with code 2, with no traceback.
Internal invariants use `assert` instead.
"""


class RoutelensError(Exception):
    """A problem with the user's input; the message names the value and the fix."""


class UnsupportedModelError(RoutelensError):
    """The model has no MoE layer that routelens knows how to record."""
