"""The one exception type for data problems a user can fix."""

from __future__ import annotations


class DataError(ValueError):
    """A user-facing data problem; the message says what is wrong and where."""
