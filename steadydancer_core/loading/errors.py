"""Errors of weight files: every message names the file, the problem and the fix.
"""
from __future__ import annotations


class WeightFileError(ValueError):
    """A weight file that cannot be used; the message names the file, the problem and the fix."""


class StateDictMismatchError(WeightFileError):
    """Keys or shapes of a state dict do not fit the model; lists every offending name."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
