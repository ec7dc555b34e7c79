"""The AWS layer: region/credential checks, standard retries, and one-line typed errors."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from launcher import errors
from launcher.aws import Aws, translate

from .conftest import BUCKET, REGION, Faults, Project, error_line, invoke, make_bucket


def test_session_uses_region_endpoint_and_standard_retries(fake_credentials: None) -> None:
    aws = Aws.connect(region="us-west-2", endpoint_url="http://127.0.0.1:9", max_attempts=7)
    client = aws.client("emr")
    assert client.meta.region_name == "us-west-2"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert aws.client("emr") is client


def test_no_region_is_a_configuration_error(fake_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(errors.NoRegion):
        Aws.connect()
    result = invoke("deploy", "--bucket", BUCKET)
    assert result.exit_code == 2
    assert "no AWS region" in error_line(result)


def test_unknown_region_is_refused_before_any_request(fake_credentials: None) -> None:
    result = invoke("--region", "eu-middle-9", "wait", "s-1", "--cluster-id", "j-1")
    assert result.exit_code == 2
    assert "unknown AWS region 'eu-middle-9'" in error_line(result)


def test_unknown_profile_is_a_configuration_error(fake_credentials: None) -> None:
    result = invoke("--profile", "nobody", "wait", "s-1", "--cluster-id", "j-1")
    assert result.exit_code == 2
    assert "profile 'nobody'" in error_line(result)


def test_missing_credentials_one_line_exit_2(aws: boto3.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = invoke("wait", "s-1", "--cluster-id", "j-1")
    assert result.exit_code == 2
    assert "no usable AWS credentials" in error_line(result)


@pytest.mark.parametrize("code", ["ExpiredTokenException", "UnrecognizedClientException"])
def test_expired_or_rejected_credentials_via_stubber(fake_credentials: None, code: str) -> None:
    aws = Aws.connect(region=REGION)
    with Stubber(aws.client("emr")) as stub:
        stub.add_client_error("describe_cluster", service_error_code=code, http_status_code=400)
        with pytest.raises(errors.CredentialsRejected, match=code):
            aws.call("emr", "describe_cluster", ClusterId="j-1")


def test_throttling_is_retried_then_succeeds(project: Project, faults: Faults) -> None:
    faults.fail("emr", "DescribeCluster", 400, "ThrottlingException", times=2)
    aws = Aws.connect(max_attempts=3)
    cluster = aws.call("emr", "describe_cluster", ClusterId=project.cluster_id)["Cluster"]
    assert cluster["Id"] == project.cluster_id
    assert faults.attempts["emr.DescribeCluster"] == 3


@pytest.mark.parametrize(
    ("service", "operation", "status", "code", "args"),
    [
        ("emr", "DescribeCluster", 400, "ThrottlingException", ["wait", "s-1", "--cluster-id", "j-1"]),
        ("emr", "DescribeCluster", 500, "InternalServerError", ["wait", "s-1", "--cluster-id", "j-1"]),
        ("s3", "HeadBucket", 503, "SlowDown", ["deploy", "--bucket", BUCKET]),
        ("cloudformation", "DescribeStacks", 400, "Throttling", ["wait", "s-1", "--stack", "x"]),
    ],
)
def test_throttling_and_5xx_exhaust_retries_then_one_clear_line(
    project: Project, faults: Faults, service: str, operation: str, status: int, code: str, args: list[str]
) -> None:
    faults.fail(service, operation, status, code)
    result = invoke("--max-attempts", "4", *args)
    assert result.exit_code == 1
    line = error_line(result)
    assert f"kept failing after 4 attempt(s): {code}" in line
    assert faults.attempts[f"{service}.{operation}"] == 4


def test_missing_bucket_and_foreign_bucket(project: Project, faults: Faults) -> None:
    result = invoke("deploy", "--bucket", "no-such-bucket")
    assert result.exit_code == 2
    assert "bucket 'no-such-bucket' does not exist" in error_line(result)
    make_bucket(project.session, "someone-elses")
    faults.fail("s3", "HeadBucket", 403, "403")
    result = invoke("deploy", "--bucket", "someone-elses")
    assert result.exit_code == 2
    assert "not accessible with these credentials (403)" in error_line(result)


def _client_error(code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


CNF = _client_error("InvalidRequestException", "Cluster id 'j-1' is not valid.")
SNF = _client_error("InvalidRequestException", "Step id 's-1' is not valid.")
STACK_GONE = _client_error("ValidationError", "Stack with id x does not exist")


@pytest.mark.parametrize(
    ("service", "operation", "params", "error", "kind"),
    [
        ("emr", "describe_cluster", {"ClusterId": "j-1"}, CNF, errors.ClusterNotFound),
        ("emr", "describe_step", {"ClusterId": "j-1", "StepId": "s-1"}, SNF, errors.StepNotFound),
        ("cloudformation", "describe_stacks", {"StackName": "x"}, STACK_GONE, errors.StackNotFound),
        ("s3", "get_object", {"Bucket": "b"}, _client_error("NoSuchBucket", "gone", 404), errors.BucketNotFound),
        ("emr", "run_job_flow", {}, _client_error("AccessDeniedException", "no"), errors.AccessDenied),
        ("emr", "run_job_flow", {}, _client_error("ValidationException", "bad fleet"), errors.AwsServiceError),
    ],
)
def test_translate_maps_service_errors_to_typed_errors(
    service: str, operation: str, params: dict[str, str], error: ClientError, kind: type[Exception]
) -> None:
    translated = translate(error, service=service, operation=operation, params=params, region=REGION)
    assert type(translated) is kind
    assert "\n" not in str(translated)


def test_upload_failure_is_translated(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    aws = Aws.connect()
    with pytest.raises(errors.BucketNotFound):
        aws.upload_file(path, "no-such-bucket", "k")
