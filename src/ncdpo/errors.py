"""User-facing errors.

Every mistake a user can make (a wrong env id, an unknown config key, a corrupt checkpoint, ...) is raised
as :class:`NcdpoError`. The CLI prints such errors as one line, ``ncdpo: error: <message>``, and exits with
status 2; ``--debug`` shows the traceback instead.
"""


class NcdpoError(Exception):
    """An error caused by the user's input, reported as a single line by the CLI."""


class NonFiniteError(NcdpoError):
    """A NaN or infinity in a loss, a gradient or an observation; training stops rather than learn from it."""


class EnvWorkerError(NcdpoError):
    """An environment raised while stepping or resetting; the message names the env id, worker and seed."""
