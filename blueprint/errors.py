"""Errors of the shared layer: each message is one line a user can act on (a usage problem, exit 2)."""

from __future__ import annotations


class SpecError(ValueError):
    """A setting, run option or package that cannot be used as given."""


class SettingsError(SpecError):
    """A context value is missing, of the wrong type or out of range; the message names the key."""


class PackageError(SpecError):
    """The job sources cannot be packaged (not found, or not a runnable package)."""


class RunSpecError(SpecError):
    """A run option is invalid for the target (an unknown engine, a path that cannot be read there...)."""


class InvalidS3Uri(SpecError):
    """A location that should be ``s3://bucket/prefix`` is not."""
