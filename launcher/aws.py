"""The one place that talks to AWS: a boto3 session, retrying clients, and typed errors.

Commands receive an `Aws` and call `aws.call(service, operation, **params)`. Every botocore
failure leaves this module as a `launcher.errors` exception with one readable line, so the
rest of the launcher never sees botocore's exception zoo and never prints a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from s3transfer.subscribers import BaseSubscriber

from launcher import errors

DEFAULT_MAX_ATTEMPTS = 5
"""Total attempts per request (first try included), as AWS_MAX_ATTEMPTS counts them."""

_CREDENTIAL_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "InvalidToken",
}
_THROTTLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
    "BandwidthLimitExceeded",
}
_MISSING_KEY = {"404", "NoSuchKey", "NotFound"}
_NETWORK_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


@dataclass
class Aws:
    """A boto3 session plus the client settings every call shares (retries, endpoint)."""

    session: boto3.Session
    endpoint_url: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def connect(
        cls,
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Aws:
        """Build the session and check the region early, before any request is signed."""
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
        except ProfileNotFound as err:
            raise errors.ConfigError(f"AWS profile '{profile}' is not configured ({err})") from None
        name = session.region_name
        if not name:
            raise errors.NoRegion("no AWS region: pass --region or set AWS_REGION (or a profile region)")
        if endpoint_url is None and not _known_region(session, name):
            raise errors.UnknownRegion(f"unknown AWS region '{name}' (check --region / AWS_REGION)")
        return cls(session=session, endpoint_url=endpoint_url, max_attempts=max_attempts)

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def client(self, service: str) -> Any:
        """One client per service, with standard-mode retries and the endpoint override."""
        if service not in self._clients:
            config = Config(
                retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                connect_timeout=10,
                read_timeout=60,
            )
            self._clients[service] = self.session.client(service, endpoint_url=self.endpoint_url, config=config)
        return self._clients[service]

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Run one API operation (snake_case name) and translate any failure."""
        try:
            return getattr(self.client(service), operation)(**params)  # type: ignore[no-any-return]
        except (ClientError, BotoCoreError) as err:
            raise translate(err, service=service, operation=operation, params=params, region=self.region) from None

    def paginate(self, service: str, operation: str, **params: Any) -> list[dict[str, Any]]:
        """All pages of a paginated operation, translated like `call`."""
        try:
            return list(self.client(service).get_paginator(operation).paginate(**params))
        except (ClientError, BotoCoreError) as err:
            raise translate(err, service=service, operation=operation, params=params, region=self.region) from None

    def check_bucket(self, bucket: str) -> None:
        """Fail with BucketNotFound / BucketAccessDenied before any key-level call is made.

        Key-level HEADs cannot tell a missing bucket from a missing key (both are a bare 404).
        """
        self.call("s3", "head_bucket", Bucket=bucket)

    def head_object(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when there is no such key (check the bucket first)."""
        return self._key_or_none("head_object", bucket, key)

    def read_object(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key (check the bucket first)."""
        found = self._key_or_none("get_object", bucket, key)
        if found is None:
            return None
        try:
            return found["Body"].read()  # type: ignore[no-any-return]
        except BotoCoreError as err:
            raise translate(
                err, service="s3", operation="get_object", params={"Bucket": bucket}, region=self.region
            ) from None

    def _key_or_none(self, operation: str, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return getattr(self.client("s3"), operation)(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except (ClientError, BotoCoreError) as err:
            if isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") in _MISSING_KEY:
                return None
            raise translate(
                err, service="s3", operation=operation, params={"Bucket": bucket}, region=self.region
            ) from None

    def upload_file(
        self,
        path: Path,
        bucket: str,
        key: str,
        *,
        extra_args: dict[str, Any] | None = None,
        on_bytes: Callable[[int], None] | None = None,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        """Upload through s3transfer: one PutObject, or a multipart upload aborted on failure.

        Either way S3 shows the object only once it is complete, so an upload that fails or is
        killed midway never leaves a partial object under `key`.
        """
        subscribers = [_Progress(on_bytes)] if on_bytes else None
        config = transfer_config or TransferConfig()
        try:
            with create_transfer_manager(self.client("s3"), config) as manager:
                future = manager.upload(str(path), bucket, key, extra_args=extra_args or {}, subscribers=subscribers)
                future.result()
        except (ClientError, BotoCoreError) as err:
            raise translate(
                err, service="s3", operation="upload", params={"Bucket": bucket}, region=self.region
            ) from None


class _Progress(BaseSubscriber):  # type: ignore[misc]
    """Forwards s3transfer's byte counts to a plain callback."""

    def __init__(self, on_bytes: Callable[[int], None]) -> None:
        self._on_bytes = on_bytes

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._on_bytes(bytes_transferred)


def _known_region(session: boto3.Session, name: str) -> bool:
    """True if any AWS partition lists `name` for EMR (where this launcher must run)."""
    return any(
        name in session.get_available_regions("emr", partition_name=partition)
        for partition in session.get_available_partitions()
    )


def translate(
    err: ClientError | BotoCoreError,
    *,
    service: str,
    operation: str,
    params: dict[str, Any],
    region: str | None = None,
) -> errors.LauncherError:
    """Map a botocore exception to a typed launcher error with a one-line message."""
    if isinstance(err, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return errors.NoCredentials(
            "no usable AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run `aws sso login`"
        )
    if isinstance(err, NoRegionError):
        return errors.NoRegion("no AWS region: pass --region or set AWS_REGION")
    if isinstance(err, _NETWORK_ERRORS):
        return errors.AwsServiceError(f"cannot reach AWS {service} ({err}); check the network and --region")
    if isinstance(err, ParamValidationError):
        return errors.ConfigError(f"invalid request to {service} {operation}: {err}".replace("\n", " "))
    if isinstance(err, BotoCoreError):
        return errors.AwsServiceError(f"{service} {operation} failed: {err}")

    error = err.response.get("Error", {})
    meta = err.response.get("ResponseMetadata", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")).strip() or code
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    bucket = params.get("Bucket")
    what = f"{service} {_camel(operation)}"

    if code in _CREDENTIAL_CODES:
        return errors.CredentialsRejected(
            f"AWS rejected the credentials ({code}: {message}); refresh them (e.g. `aws sso login`)"
        )
    if code in _THROTTLE_CODES or status >= 500:
        attempts = int(meta.get("RetryAttempts", 0)) + 1
        return errors.AwsServiceError(
            f"{what} kept failing after {attempts} attempt(s): {code or status} ({message}); try again later"
        )
    missing = code == "NoSuchBucket" or (code == "404" and operation == "head_bucket")
    if service == "s3" and bucket and missing:
        return errors.BucketNotFound(f"bucket '{bucket}' does not exist")
    if service == "s3" and bucket and (code in {"AccessDenied", "403", "AllAccessDisabled"} or status == 403):
        return errors.BucketAccessDenied(
            f"bucket '{bucket}' is not accessible with these credentials (403): not ours, or no grant"
        )
    if service == "emr" and code == "InvalidRequestException":
        if "StepId" in params and "step" in message.lower():
            step, cluster = params["StepId"], params.get("ClusterId")
            return errors.StepNotFound(f"step {step} not found on cluster {cluster}")
        if "ClusterId" in params or "JobFlowId" in params:
            cluster = params.get("ClusterId") or params.get("JobFlowId")
            where = f" in {region}" if region else ""
            return errors.ClusterNotFound(f"cluster {cluster} not found{where} ({message})")
    if service == "cloudformation" and code == "ValidationError" and "does not exist" in message:
        return errors.StackNotFound(f"stack '{params.get('StackName')}' does not exist ({message})")
    if code.startswith("AccessDenied") or code == "UnauthorizedOperation" or status == 403:
        return errors.AccessDenied(f"{what} denied: {message}")
    return errors.AwsServiceError(f"{what} failed: {code} ({message})")


def _camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))
