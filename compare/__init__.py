"""Train the twin implementations on the same data and prove, in numbers, that they agree."""


class CompareError(Exception):
    """Bad input or a failed run: the message is one line meant for the user."""
