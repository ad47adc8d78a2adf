"""The one exception type the command line turns into a one-line error message."""


class UserError(ValueError):
    """A problem with the user's input (data, config, arguments) that they can fix.

    The CLI prints `error: <message>` and exits with status 2 instead of a traceback, so the
    message must say what is wrong and how to fix it.
    """
