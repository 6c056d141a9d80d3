"""Errors a user can cause and fix; the command line prints their message without a traceback."""


class ConfigError(ValueError):
    """A config value that cannot work (unknown name, incompatible combination, missing file)."""


class RunDirError(RuntimeError):
    """The run directory already holds work that this command would overwrite."""
