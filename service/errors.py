"""The service's client error: an HTTP status and a one-line message, answered as JSON."""

from __future__ import annotations


class ClientError(Exception):
    """A request the service refuses: answered ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
