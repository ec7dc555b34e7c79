"""One S3 URI parser: strict for what users type, lenient for what AWS reports."""

from __future__ import annotations

import pytest

from blueprint import s3uri
from blueprint.errors import InvalidS3Uri


def test_user_uris_are_checked_and_name_the_option() -> None:
    uri = s3uri.parse("s3://my-bucket/raw/fruits", option="--input")
    assert (uri.bucket, uri.key, uri.folder, str(uri)) == (
        "my-bucket",
        "raw/fruits",
        "raw/fruits/",
        "s3://my-bucket/raw/fruits",
    )
    assert s3uri.parse("s3://my-bucket", option="--input").folder == ""
    with pytest.raises(InvalidS3Uri, match=r"--output must look like s3://bucket/prefix.*use s3://"):
        s3uri.parse("s3a://my-bucket/x", option="--output")
    with pytest.raises(InvalidS3Uri, match="not a valid S3 bucket name"):
        s3uri.parse("s3://My_Bucket/x", option="--input")
    with pytest.raises(InvalidS3Uri, match="control characters"):
        s3uri.parse("s3://my-bucket/a\nb", option="--input")


def test_within_compares_folders_not_string_prefixes() -> None:
    uri = s3uri.parse("s3://bkt1/raw-old/x", option="--input")
    assert not uri.within("bkt1", "raw/")
    assert s3uri.parse("s3://bkt1/raw/x", option="--input").within("bkt1", "raw/")
    assert not s3uri.parse("s3://bkt2/raw/x", option="--input").within("bkt1", "raw/")


def test_reported_uris_accept_emrfs_and_hadoop_schemes() -> None:
    assert s3uri.split("s3n://logs/emr/j-1/") == s3uri.S3Uri("logs", "emr/j-1/")
    assert s3uri.split(" s3a://logs/x ") == s3uri.S3Uri("logs", "x")
    assert s3uri.split("hdfs://x/y") is None
