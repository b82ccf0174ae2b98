"""Errors meant for the user: printed as one clear line, without a traceback."""


class GensynError(Exception):
    """A problem the user can fix (bad input, missing data, wrong setting); the message says how."""
