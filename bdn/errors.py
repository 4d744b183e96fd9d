"""The one error type bdn raises for bad input.

Front ends catch it, print its message on one line and exit non-zero; anything else is a bug.
"""


class BdnError(Exception):
    """A problem with what the user gave bdn (a file, a folder, a parameter), with a message fit to print."""


class BdnWarning(UserWarning):
    """Something a user should know about a result that is still returned (a fit cut short by its time budget,
    an image denoised in tiles): library code warns, front ends print it as one line beside the file's name."""
