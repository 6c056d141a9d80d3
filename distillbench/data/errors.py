"""Dataset errors that tell the user how to fix the problem, not just that there is one."""

from distillbench.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset files are not where the config says they are."""


class DatasetCorruptError(UserError, RuntimeError):
    """The dataset files exist but are not the expected ones, or cannot be read."""
