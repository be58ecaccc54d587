"""The one kind of error a user sees, and its narrower kinds: each message is one line.

Everything the user can get wrong (an unknown task, a weights file that does not fit, a loss
that turns NaN, a model whose code raises) ends as a ``CompareError``; the command line prints
its message after ``error:`` and exits 2. Nothing else is caught: a bug stays a traceback.
"""


class CompareError(Exception):
    """Bad input or a failed run: the message is one line meant for the user."""


class PortError(CompareError):
    """A weights file or state dict that does not fit the model (``compare.port``)."""


class SideError(CompareError):
    """A model, loss or step of one side raised: the side, what it was doing, the error
    (``compare.toolkit.engine.guarded``)."""
