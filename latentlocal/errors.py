"""The one exception type users see: a message that names the problem and the fix."""


class LatentLocalError(Exception):
    """A problem caused by input or environment, reported to the user as one clear line.

    The CLI and TUI catch this and print ``str(err)`` without a traceback; anything else that
    escapes is a bug in latentlocal.
    """
