"""Dataset errors that tell the user how to fix the problem, not just that there is one."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not where the config says they are."""


class DatasetCorruptError(RuntimeError):
    """The dataset files exist but are not the expected ones, or cannot be read."""
