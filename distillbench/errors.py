"""Errors a user can cause and fix.

Everything a user can get wrong (a config value, a missing file, a run directory in use, a run
that diverged) raises a subclass of ``UserError``. The command line prints its message as one
paragraph, exits with code 2 and shows no traceback; a traceback is left for bugs only.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Base of every error the user can fix: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (unknown name, out of range, incompatible combination, missing file)."""


class RunDirError(UserError, RuntimeError):
    """The run directory holds other work, is in use, or cannot be written."""


class ResumeMismatchError(RunDirError):
    """``resume=true`` with a config whose identity differs from the stored run's."""


class DivergenceError(UserError, RuntimeError):
    """A loss term, or a tensor about to be checkpointed, became NaN or Inf; the message names it and
    the last good checkpoint."""
