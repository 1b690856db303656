"""Errors that adapters raise; the engine turns them into conditions, events and retries."""

from __future__ import annotations


class BackendError(Exception):
    """A backend call failed. The message is shown to users: never put a secret in it."""

    retryable = True


class BackendUnavailable(BackendError):
    """The backend could not be reached (connection refused, timeout, 5xx): retry with backoff."""


class BackendRejected(BackendError):
    """The backend refused the request for a reason retries will not fix (invalid name, forbidden)."""

    retryable = False
