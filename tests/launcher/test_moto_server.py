"""Over real HTTP: the CLI against moto_server, and the printed step accepted by the real AWS CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from .conftest import (
    BUCKET,
    DEFAULT_ACCOUNT_ID,
    INPUT,
    LOGS_BUCKET,
    OUTPUT,
    REGION,
    STACK,
    emr_backends,
    invoke,
    make_bucket,
    make_cluster,
    make_stack,
    put_images,
    stack_outputs,
)

AWS_CLI = Path(sys.executable).with_name("aws")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def endpoint(fake_credentials: None) -> Iterator[str]:
    """A moto_server on 127.0.0.1 and a free port, fresh state, stopped afterwards."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    try:
        yield url
    finally:
        server.stop()


def test_cli_over_http_and_the_aws_cli_accepts_the_printed_step(endpoint: str, tmp_path: Path) -> None:
    session = boto3.Session(region_name=REGION)
    arrange = _EndpointSession(session, endpoint)
    make_bucket(arrange, BUCKET)
    make_bucket(arrange, LOGS_BUCKET)
    put_images(arrange)
    cluster_id = make_cluster(arrange)
    make_stack(arrange, stack_outputs(cluster_id))

    deployed = invoke("--endpoint-url", endpoint, "deploy", "--stack", STACK)
    assert deployed.exit_code == 0, deployed.stderr
    step_file = tmp_path / "step.json"
    submitted = invoke(
        "--endpoint-url", endpoint, "submit", "--stack", STACK, "--input", INPUT, "--output", OUTPUT,
        "--weights", "random", "--step-file", str(step_file),
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.stderr
    ours = submitted.stdout.splitlines()[0]

    cli = subprocess.run(
        [str(AWS_CLI), "emr", "add-steps", "--cluster-id", cluster_id, "--steps", f"file://{step_file}",
         "--endpoint-url", endpoint, "--region", REGION, "--output", "json"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    theirs = json.loads(cli.stdout)["StepIds"][0]

    emr = arrange.client("emr")
    a = emr.describe_step(ClusterId=cluster_id, StepId=ours)["Step"]
    b = emr.describe_step(ClusterId=cluster_id, StepId=theirs)["Step"]
    assert ours != theirs
    assert b["Config"]["Args"] == a["Config"]["Args"]
    assert a["Config"]["Args"][0:4] == ["spark-submit", "--deploy-mode", "cluster", "--conf"]
    assert (b["Name"], b["ActionOnFailure"], b["Config"]["Jar"]) == (a["Name"], "CONTINUE", "command-runner.jar")


def test_aws_endpoint_url_environment_variable_is_respected(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    arrange = _EndpointSession(boto3.Session(region_name=REGION), endpoint)
    make_bucket(arrange, LOGS_BUCKET)
    cluster_id = make_cluster(arrange)
    step = {"Name": "x", "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["x"]}}
    step_id = arrange.client("emr").add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
    # the server runs in this process, so its moto backend is ours to move the step along
    (backend,) = [b for _, b in emr_backends[DEFAULT_ACCOUNT_ID].items() if cluster_id in b.clusters]
    backend.clusters[cluster_id].steps[0].state = "COMPLETED"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    result = invoke("wait", step_id, "--cluster-id", cluster_id)
    assert result.exit_code == 0, result.stderr
    assert f"step {step_id} COMPLETED" in result.stderr


class _EndpointSession:
    """A boto3 session whose clients all talk to the moto_server (for arranging and checking)."""

    def __init__(self, session: boto3.Session, endpoint: str) -> None:
        self._session, self._endpoint = session, endpoint

    def client(self, service: str):  # type: ignore[no-untyped-def]
        return self._session.client(service, endpoint_url=self._endpoint)
