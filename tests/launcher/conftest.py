"""Launcher fixtures: fake credentials, one moto `aws` fixture, a CliRunner helper, fault injection.

Faults are injected at botocore's `before-send` event, registered ahead of moto's own handler, so
botocore's real retry loop sees the throttling / 5xx responses (botocore's Stubber would bypass it).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import botocore.retries.standard
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner, Result
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse
from moto.emr.models import emr_backends

from launcher.cli import State, main

REGION = "eu-west-1"
BUCKET = "proj-bucket"
LOGS_BUCKET = "proj-logs"
STACK = "featurizer-cluster"
INPUT = f"s3://{BUCKET}/raw/fruits"
OUTPUT = f"s3://{BUCKET}/results/run1"


@pytest.fixture
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer profile, config file or instance role can leak in; fake static keys only."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)  # `dist/` and step files land in the test's own folder


@pytest.fixture
def aws(fake_credentials: None) -> Iterator[boto3.Session]:
    """Everything AWS inside one moto mock; yields a session for arranging and checking state."""
    with mock_aws():
        yield boto3.Session(region_name=REGION)


def invoke(*args: str, obj: State | None = None) -> Result:
    """Run `featurizer ARGS` in-process; stdout and stderr kept apart so stdout can be parsed."""
    return CliRunner(mix_stderr=False).invoke(main, list(args), obj=obj, catch_exceptions=False)


def error_line(result: Result) -> str:
    """The one error line of a failed command, last on stderr (progress lines may precede it)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert [line for line in lines if "error:" in line] == lines[-1:], result.stderr
    assert lines[-1].startswith("featurizer: error: "), lines[-1]
    return lines[-1]


# --- arranging AWS state -----------------------------------------------------------------------


def make_bucket(session: boto3.Session, name: str) -> None:
    session.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def put_images(session: boto3.Session, prefix: str = "raw/fruits/", count: int = 3) -> None:
    for i in range(count):
        session.client("s3").put_object(Bucket=BUCKET, Key=f"{prefix}Apple/{i}.jpg", Body=b"\xff\xd8jpeg")


def make_cluster(session: boto3.Session, log_uri: str | None = f"s3n://{LOGS_BUCKET}/emr/") -> str:
    """A long-lived moto cluster, WAITING for steps."""
    request: dict[str, Any] = {
        "Name": "featurizer",
        "ReleaseLabel": "emr-7.14.0",
        "Instances": {
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 3,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        "JobFlowRole": "EMR_EC2_DefaultRole",
        "ServiceRole": "EMR_DefaultRole",
    }
    if log_uri:
        request["LogUri"] = log_uri
    return str(session.client("emr").run_job_flow(**request)["JobFlowId"])


def make_stack(session: boto3.Session, outputs: dict[str, str], name: str = STACK) -> None:
    """A stack whose only job is to carry the launcher's contract outputs."""
    template = {
        "Resources": {"Marker": {"Type": "AWS::S3::Bucket"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    session.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def stack_outputs(cluster_id: str) -> dict[str, str]:
    return {
        "ProjectBucketName": BUCKET,
        "ClusterId": cluster_id,
        "ArtifactsPrefix": f"s3://{BUCKET}/artifacts/",
        "ConsoleStepJson": "[]",
    }


@dataclass
class Project:
    """Buckets, images, a running cluster and the CDK stack pointing at it."""

    session: boto3.Session
    cluster_id: str

    def step(self, step_id: str) -> Any:
        """moto's step object: tests move it out of PENDING/RUNNING, which moto never does."""
        cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[self.cluster_id]
        return next(s for s in cluster.steps if s.id == step_id)

    def cluster(self) -> Any:
        return emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[self.cluster_id]

    def add_step(self) -> str:
        step = {
            "Name": "x",
            "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]},
        }
        return str(self.session.client("emr").add_job_flow_steps(JobFlowId=self.cluster_id, Steps=[step])["StepIds"][0])

    def put_log(self, step_id: str, stream: str, text: str) -> None:
        key = f"emr/{self.cluster_id}/steps/{step_id}/{stream}.gz"
        self.session.client("s3").put_object(Bucket=LOGS_BUCKET, Key=key, Body=gzip.compress(text.encode()))

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        pages = self.session.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def project(aws: boto3.Session) -> Project:
    make_bucket(aws, BUCKET)
    make_bucket(aws, LOGS_BUCKET)
    put_images(aws)
    cluster_id = make_cluster(aws)
    make_stack(aws, stack_outputs(cluster_id))
    tag_default_vpc(aws)
    return Project(session=aws, cluster_id=cluster_id)


def tag_default_vpc(aws: boto3.Session) -> None:
    """What AmazonEMRServicePolicy_v2 needs of the VPC a cluster starts in (launcher/preflight.py checks it)."""
    ec2 = aws.client("ec2")
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    tag = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
    ec2.create_tags(Resources=[vpc["VpcId"]], Tags=[tag])


# --- time and faults ---------------------------------------------------------------------------


@dataclass
class FakeClock:
    """Monotonic time that only moves when the code under test sleeps; `on_sleep(n)` after the n-th."""

    t: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[int], None] | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


@dataclass
class Faults:
    """Queue failing HTTP responses for an operation; records every attempt that reached it."""

    attempts: dict[str, int] = field(default_factory=dict)
    _plans: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)

    def fail(self, service: str, operation: str, status: int, code: str, times: int = 1000) -> None:
        """The next `times` attempts of `operation` get HTTP `status` with error `code`."""
        body = _error_body(service, code)
        self._plans[f"{service}.{operation}"] = [(status, body)] * times

    def handler(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        name = f"{service}.{operation}"
        self.attempts[name] = self.attempts.get(name, 0) + 1
        plan = self._plans.get(name)
        if plan:
            status, body = plan.pop(0)
            return AWSResponse(request.url, status, {}, MockRawResponse(body))
        return None


def _error_body(service: str, code: str) -> bytes:
    if service == "emr":
        return json.dumps({"__type": code, "message": f"injected {code}"}).encode()
    if service == "s3":
        return f"<Error><Code>{code}</Code><Message>injected {code}</Message></Error>".encode()
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>injected {code}</Message></Error></ErrorResponse>"
    ).encode()


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Fault injection for sessions created after this fixture; retry back-off made instant.

    The plan wraps moto's own `before-send` handler, so a failed attempt never reaches moto
    (botocore calls every `before-send` handler, so a separate handler would not stop it).
    """
    plan = Faults()

    def wrap(moto_handler: Callable[..., Any]) -> Callable[..., Any]:
        def handler(request: Any, event_name: str, **kwargs: Any) -> Any:
            injected = plan.handler(request, event_name, **kwargs)
            return injected if injected is not None else moto_handler(request=request, event_name=event_name, **kwargs)

        return handler

    handlers = [
        (spec[0], wrap(spec[1]), *spec[2:]) if isinstance(spec[1], BotocoreStubber) else spec
        for spec in botocore.handlers.BUILTIN_HANDLERS
    ]
    assert any(isinstance(spec[1], BotocoreStubber) for spec in botocore.handlers.BUILTIN_HANDLERS)
    monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS", handlers)
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    return plan


@pytest.fixture(autouse=True)
def small_wheelhouse(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """A two-file stand-in for the nodes' wheelhouse, so launcher tests do not download 180-480 MB.

    The real builder is tested in tests/bootstrap (with a real offline install) and runs for real in
    tests/emr; here only its wiring matters: which keys are uploaded and what the bootstrap is told.
    """
    from blueprint import wheelhouse

    built: list[str] = []

    def build(profile: str, out_dir: Path | str, **_: object) -> Path:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"numpy-1.26.4-cp311-{profile}.whl").write_bytes(b"wheel for " + profile.encode())
        (folder / wheelhouse.MANIFEST_NAME).write_text(json.dumps({"profile": profile}) + "\n")
        built.append(profile)
        return folder

    def manifest_digest(directory: Path | str) -> str:
        import hashlib

        return hashlib.sha256((Path(directory) / wheelhouse.MANIFEST_NAME).read_bytes()).hexdigest()

    monkeypatch.setattr(wheelhouse, "build", build)
    monkeypatch.setattr(wheelhouse, "manifest_digest", manifest_digest)
    return lambda profile: profile if profile in built else ""
