"""The exceptions users see: a one-line message, a non-zero exit."""


class FewstepError(Exception):
    """A problem with the user's input (config, data file, checkpoint) or a stopped run.

    The CLI prints ``error: <message>`` on one line and exits with status 2; the message
    must name the problem and, where it helps, what was expected.
    """


class Diverged(FewstepError):
    """Training stopped because a loss, a sample or a held-out score went bad; the last good
    checkpoint is kept and named in the message."""
