"""Errors the library raises for the shells (CLI, daemon) to turn into one clear line."""


class AdschedError(Exception):
    """Something the user can fix or needs to know; never a bug."""

    exit_code = 1


class InvalidRequest(AdschedError):
    """Bad input (a job request, a config, an argument): nothing was written."""

    exit_code = 2


class NotFound(AdschedError):
    exit_code = 1


class PermissionDenied(AdschedError):
    """The caller may not do this (not the job's owner, not an admin); recorded as an event."""

    exit_code = 1


class NodeFailure(AdschedError):
    """An executor could not reach or use a node: the daemon drains it and requeues the job."""

    def __init__(self, node: str, message: str):
        super().__init__(message)
        self.node = node


class StorageError(AdschedError):
    """The state store cannot be read or written (disk full, read-only, I/O error): the
    transaction in progress was rolled back, so nothing half-written remains."""
