"""submit: validation before anything is sent, auto-deploy, the step that arrives, its printed JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result

from blueprint.package import build_package

from .conftest import BUCKET, INPUT, OUTPUT, STACK, Faults, Project, error_line, invoke, make_stack, stack_outputs


def _printed(result: Result) -> tuple[str, list[dict[str, object]]]:
    """stdout = step id, then the AWS CLI steps JSON."""
    first, _, rest = result.stdout.partition("\n")
    return first, json.loads(rest)


def _submit(*extra: str, target: tuple[str, ...] = ()) -> Result:
    return invoke("submit", *target, "--input", INPUT, "--output", OUTPUT, *extra)


def test_submit_deploys_the_package_and_adds_the_exact_step(project: Project, tmp_path: Path) -> None:
    result = _submit(
        "--bucket", BUCKET, "--k", "20", "--weights", "random", target=("--cluster-id", project.cluster_id)
    )
    assert result.exit_code == 0, result.stderr
    step_id, steps = _printed(result)
    digest = build_package(tmp_path / "check").digest
    zip_uri = f"s3://{BUCKET}/artifacts/job/{digest}/job.zip"
    entry_uri = f"s3://{BUCKET}/artifacts/job/{digest}/entrypoint.py"
    expected_args = [
        "spark-submit", "--deploy-mode", "cluster", "--conf", "spark.yarn.maxAppAttempts=1",
        "--py-files", zip_uri, entry_uri,
        "--input", INPUT, "--output", OUTPUT, "--weights", "random", "--k", "20",
    ]  # fmt: skip
    sent = project.session.client("emr").describe_step(ClusterId=project.cluster_id, StepId=step_id)["Step"]
    assert sent["Config"]["Jar"] == "command-runner.jar"
    assert sent["Config"]["Args"] == expected_args
    assert sent["ActionOnFailure"] == "CONTINUE"
    cli_form = {"Type": "CUSTOM_JAR", "Name": sent["Name"], "ActionOnFailure": "CONTINUE"}
    assert steps == [{**cli_form, "Jar": "command-runner.jar", "Args": expected_args}]
    assert project.keys(f"artifacts/job/{digest}/") == [
        f"artifacts/job/{digest}/entrypoint.py",
        f"artifacts/job/{digest}/job.zip",
    ]
    assert "uploaded" in result.stderr


def test_submit_with_stack_reads_cluster_and_bucket_and_skips_deployed_package(
    project: Project, faults: Faults
) -> None:
    assert invoke("deploy", "--stack", STACK, "--no-bootstrap").exit_code == 0
    puts = faults.attempts.get("s3.PutObject", 0)
    result = _submit("--step-file", "step.json", target=("--stack", STACK))
    assert result.exit_code == 0, result.stderr
    step_id, steps = _printed(result)
    assert faults.attempts.get("s3.PutObject", 0) == puts  # already deployed: nothing uploaded
    listed = project.session.client("emr").list_steps(ClusterId=project.cluster_id)["Steps"]
    assert [s["Id"] for s in listed] == [step_id]
    assert json.loads(Path("step.json").read_text()) == steps
    assert "aws emr add-steps" in result.stderr


def test_extra_job_args_after_double_dash_reach_the_step(project: Project) -> None:
    result = _submit("--", "--threads", "2", target=("--stack", STACK))
    assert result.exit_code == 0, result.stderr
    _, steps = _printed(result)
    assert steps[0]["Args"][-2:] == ["--threads", "2"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("given", "extra", "message"),
    [
        ({"--input": "/local/folder"}, [], "--input must look like s3://bucket/prefix"),
        ({"--output": "s3a://b/out"}, [], "use s3://"),
        ({"--input": "s3://Bad_Bucket/x"}, [], "not a valid S3 bucket name"),
        ({}, ["--k", "0"], "--k must be between 1 and 1280"),
        ({}, ["--variance", "1.5"], "--variance must be in (0, 1]"),
        ({"--output": INPUT + "/sub"}, [], "must not be inside --input"),
        ({}, ["--", "--master", "local[2]"], "--master is chosen by the cluster"),
        ({"--input": f"s3://{BUCKET}/raw/nothing-here"}, [], "is empty or does not exist"),
        ({"--input": f"s3://{BUCKET}/raw/fruit"}, [], "is empty or does not exist"),  # a prefix of raw/fruits/
        # With --stack, the instance role reads raw/ and writes results/ of the project bucket only.
        ({"--input": "s3://missing-bucket/raw"}, [], "outside what the cluster's instance role may use"),
        ({"--output": f"s3://{BUCKET}/out"}, [], f"(s3://{BUCKET}/results/)"),
        ({"--input": f"s3://{BUCKET}/artifacts/x"}, [], f"(s3://{BUCKET}/raw/)"),
        ({}, ["--weights", "s3://other-bucket/w.h5"], "--weights s3://other-bucket/w.h5 is outside"),
        ({}, ["--model-cache", "s3://other-bucket/c/"], "--model-cache s3://other-bucket/c/ is outside"),
        (
            {},
            ["--", "--model-cache", f"s3://{BUCKET}/raw/c/"],
            f"(s3://{BUCKET}/cache/models/ or s3://{BUCKET}/results/)",
        ),
    ],
)
def test_bad_runs_fail_before_any_step_exists(
    project: Project, given: dict[str, str], extra: list[str], message: str
) -> None:
    options = {"--input": INPUT, "--output": OUTPUT, **given}
    result = invoke("submit", "--stack", STACK, *[x for pair in options.items() for x in pair], *extra)
    assert result.exit_code == 2
    assert message in error_line(result)
    assert project.session.client("emr").list_steps(ClusterId=project.cluster_id)["Steps"] == []


@pytest.mark.parametrize("option", ["--input", "--output"])
def test_a_missing_bucket_fails_before_any_step_exists(project: Project, option: str) -> None:
    options = {"--input": INPUT, "--output": OUTPUT, option: "s3://missing-bucket/x"}
    args = [x for pair in options.items() for x in pair]
    result = invoke("submit", "--cluster-id", project.cluster_id, "--bucket", BUCKET, *args)
    assert result.exit_code == 2
    assert "bucket 'missing-bucket' does not exist" in error_line(result)
    assert project.session.client("emr").list_steps(ClusterId=project.cluster_id)["Steps"] == []


def test_unknown_and_terminated_clusters(project: Project) -> None:
    result = _submit("--bucket", BUCKET, target=("--cluster-id", "j-NOSUCHCLUSTER"))
    assert result.exit_code == 2
    assert "cluster j-NOSUCHCLUSTER not found" in error_line(result)
    project.session.client("emr").terminate_job_flows(JobFlowIds=[project.cluster_id])
    result = _submit("--bucket", BUCKET, target=("--cluster-id", project.cluster_id))
    assert result.exit_code == 2
    assert f"cluster {project.cluster_id} is TERMINATED" in error_line(result)


def test_stack_missing_or_without_outputs(project: Project) -> None:
    result = _submit(target=("--stack", "nope"))
    assert result.exit_code == 2
    assert "stack 'nope' does not exist" in error_line(result)
    make_stack(project.session, {"ProjectBucketName": BUCKET}, name="half")
    result = _submit(target=("--stack", "half"))
    assert result.exit_code == 2
    assert "stack half (CREATE_COMPLETE) has no output ClusterId" in error_line(result)


def test_exactly_one_cluster_source(fake_credentials: None) -> None:
    for target in ((), ("--cluster-id", "j-1", "--stack", "s")):
        result = _submit("--bucket", BUCKET, target=target)
        assert result.exit_code == 2
        assert "exactly one of --cluster-id or --stack" in result.stderr


def test_cluster_id_needs_a_bucket(project: Project) -> None:
    result = _submit(target=("--cluster-id", project.cluster_id))
    assert result.exit_code == 2
    assert "--bucket is required" in result.stderr


def test_submit_with_stack_uses_the_stacks_published_run_defaults(project: Project) -> None:
    # An onnx-profile stack: the nodes have onnxruntime and the staged model, no TensorFlow, maybe no internet.
    staged = "file:///opt/featurizer/weights/m.onnx"
    outputs = {**stack_outputs(project.cluster_id), "DefaultWeights": staged, "DefaultEngine": "onnx"}
    make_stack(project.session, outputs, name="onnx-stack")
    result = _submit("--k", "8", target=("--stack", "onnx-stack"))
    assert result.exit_code == 0, result.stderr
    step_id, _ = _printed(result)
    sent = project.session.client("emr").describe_step(ClusterId=project.cluster_id, StepId=step_id)["Step"]
    job_args = sent["Config"]["Args"][sent["Config"]["Args"].index("--input") :]
    assert job_args == ["--input", INPUT, "--output", OUTPUT, "--weights", staged, "--engine", "onnx", "--k", "8"]
    assert f"--weights {staged} (default of stack onnx-stack)" in result.stderr
    explicit = _submit("--weights", "random", "--engine", "tf", target=("--stack", "onnx-stack"))
    assert explicit.exit_code == 0, explicit.stderr
    step_id, _ = _printed(explicit)
    sent = project.session.client("emr").describe_step(ClusterId=project.cluster_id, StepId=step_id)["Step"]
    assert sent["Config"]["Args"][-4:] == ["--weights", "random", "--engine", "tf"]


def test_every_job_option_of_the_cli_shows_where_its_default_comes_from() -> None:
    result = invoke("submit", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "with --stack, the stack's DefaultWeights/DefaultEngine outputs" in text
    for option in ("--weights", "--engine", "--variance", "--batch-size", "--glob", "--threads"):
        assert f"{option} " in text
    assert text.count("[default:") >= 6
