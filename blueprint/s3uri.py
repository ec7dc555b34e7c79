"""S3 URIs, parsed in one place: strictly for what a user types, leniently for what AWS reports."""

from __future__ import annotations

import re
from dataclasses import dataclass

from blueprint.errors import InvalidS3Uri

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ANY_SCHEME = re.compile(r"s3[an]?://([^/]+)/?(.*)")


@dataclass(frozen=True)
class S3Uri:
    """A parsed ``s3://bucket/key`` (the key may be empty: the whole bucket)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def folder(self) -> str:
        """The key as a folder prefix, so ``s3://b/raw`` does not also match ``raw-old/``."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"

    def within(self, bucket: str, prefix: str) -> bool:
        """True if this URI lies under ``s3://bucket/prefix`` (``prefix`` a folder, ending in ``/``)."""
        return self.bucket == bucket and self.folder.startswith(prefix)


def parse(value: str, *, option: str) -> S3Uri:
    """Parse and check the ``s3://bucket/prefix`` a user gave; ``option`` names the flag in the message.

    Only ``s3://``: EMR reads S3 through EMRFS, which serves that scheme (``s3a://``/``s3n://`` are refused
    with a hint rather than silently accepted).
    """
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", value, re.DOTALL)
    if not match:
        hint = " (EMR reads S3 through EMRFS: use s3://)" if re.match(r"s3[an]://", value) else ""
        raise InvalidS3Uri(f"{option} must look like s3://bucket/prefix, got {value!r}{hint}")
    bucket, key = match.groups()
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidS3Uri(f"{option}: {bucket!r} is not a valid S3 bucket name")
    if _CONTROL.search(key):
        raise InvalidS3Uri(f"{option}: the key contains control characters")
    return S3Uri(bucket, key)


def split(uri: str) -> S3Uri | None:
    """An ``s3://``, ``s3n://`` or ``s3a://`` URI as AWS reports it (log URIs, failure logs); None otherwise."""
    match = _ANY_SCHEME.fullmatch(uri.strip())
    return S3Uri(match.group(1), match.group(2)) if match else None
