"""Failures of fetching teachers that the user can fix; each message says how."""

from distillbench.errors import UserError


class TeachersError(UserError, RuntimeError):
    """A download, archive or teacher file that cannot be used, with what to do in the message."""


class DownloadFailed(TeachersError):
    """The archive could not be downloaded (no network, server gone, interrupted transfer)."""
