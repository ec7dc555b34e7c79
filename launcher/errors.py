"""Typed launcher errors: raised where the problem is found, turned into exit codes only in `cli`.

Each message is one line a user can act on; no class here knows about exit codes.
"""

from __future__ import annotations


class LauncherError(Exception):
    """Base class: `str(err)` is the one line printed to the user."""


class ConfigError(LauncherError):
    """Something the user must fix before anything can run (arguments, credentials, names)."""


class NoCredentials(ConfigError):
    """No AWS credentials were found in the environment, profile or instance metadata."""


class CredentialsRejected(ConfigError):
    """AWS refused the credentials (expired session token, unknown key, bad signature)."""


class AccessDenied(ConfigError):
    """The credentials are valid but not allowed to do this."""


class NoRegion(ConfigError):
    """No region was given and none is configured."""


class UnknownRegion(ConfigError):
    """The region name is not one botocore knows for this service."""


class BucketNotFound(ConfigError):
    """The bucket does not exist."""


class BucketAccessDenied(ConfigError):
    """The bucket exists but these credentials cannot use it (not ours, or missing grants)."""


class InvalidUri(ConfigError):
    """A path that should be `s3://bucket/prefix` is not."""


class InputEmpty(ConfigError):
    """The input prefix has no objects: the job would have nothing to featurize."""


class ClusterNotFound(ConfigError):
    """No EMR cluster with this id in this account and region."""


class ClusterNotUsable(ConfigError):
    """The cluster is terminating or terminated, so it cannot run a new step."""


class StackNotFound(ConfigError):
    """No CloudFormation stack with this name in this account and region."""


class StackOutputsMissing(ConfigError):
    """The stack exists but lacks the outputs the launcher reads (not our stack, or not deployed)."""


class StepNotFound(ConfigError):
    """No step with this id on the cluster."""


class AwsServiceError(LauncherError):
    """AWS kept failing (throttling, 5xx, network) after botocore's retries, or refused a request."""


class LogsNotAvailable(LauncherError):
    """The step's logs are not in S3 (no LogUri, or EMR has not copied them yet)."""


class WaitTimeout(LauncherError):
    """The step did not finish within `--timeout`; it keeps running on the cluster."""


class ClusterTerminated(LauncherError):
    """The cluster went away while we waited, before the step reached a final state."""
