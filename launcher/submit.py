"""Validate a run, make sure its package is in S3, and add it to a cluster as one EMR step.

Everything that can fail without a cluster (URI form, job arguments, an empty input prefix, a
terminated cluster) fails here, before a step exists, so a typo costs seconds rather than a
cluster start-up. The job's argv comes from `blueprint.run_spec.RunSpec` and the step from
`blueprint.emr_spec.spark_step`, the same functions the CDK stack uses for the console step, so the two
can never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blueprint import artifacts, emr_spec, s3uri
from blueprint.artifacts import Artifact
from blueprint.run_spec import RunSpec, extra_value
from blueprint.s3uri import S3Uri
from job.config import from_argv
from job.errors import UsageError
from launcher.aws import Aws
from launcher.deploy import Deployed, ProgressFactory, deploy, is_deployed
from launcher.errors import ClusterNotUsable, ConfigError, InputEmpty

GONE = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")


def parse_s3_uri(value: str, *, option: str) -> S3Uri:
    """The user's ``s3://bucket/prefix`` for ``option``, checked (blueprint.s3uri, one parser for the project)."""
    return s3uri.parse(value, option=option)


def job_parser_complaint(args: Sequence[str]) -> str | None:
    """The job's own parser on a run's argv (argparse only: no Spark, no TensorFlow): its error, or None."""
    try:
        from_argv(list(args))
    except UsageError as err:
        return str(err)
    return None


def step_args(run: RunSpec) -> list[str]:
    """The job's argv for a cluster run: both locations must be S3, and the job's parser accepts it."""
    parse_s3_uri(run.input, option="--input")
    parse_s3_uri(run.output, option="--output")
    return run.argv(check=job_parser_complaint)


def check_role_scope(run: RunSpec, bucket: str) -> None:
    """With the stack's cluster, the nodes' instance role reads raw/ and artifacts/ and writes results/ of
    the project bucket, nothing else (infra/cluster.py): refuse a run that would die on AccessDenied."""
    readable = (artifacts.RAW_PREFIX, artifacts.ARTIFACTS_PREFIX)
    where = {
        "--input": (run.input, readable[:1]),
        "--output": (run.output, (artifacts.RESULTS_PREFIX,)),
    }
    if run.weights and run.weights.startswith("s3://"):
        where["--weights"] = (run.weights, readable)
    model_cache = run.model_cache or extra_value(run.extra, "--model-cache")
    if model_cache and model_cache.startswith("s3://"):  # read and written by the nodes (none/hdfs://: no S3)
        where["--model-cache"] = (model_cache, (artifacts.MODEL_CACHE_PREFIX, artifacts.RESULTS_PREFIX))
    for option, (uri, prefixes) in where.items():
        parsed = parse_s3_uri(uri, option=option)
        if not any(parsed.within(bucket, p) for p in prefixes):
            allowed = " or ".join(f"s3://{bucket}/{p}" for p in prefixes)
            raise ConfigError(
                f"{option} {uri} is outside what the cluster's instance role may use ({allowed}); "
                "copy the data there, or extend the role in infra/cluster.py"
            )


def spark_step(*, name: str, zip_uri: str, entry_uri: str, args: Sequence[str]) -> dict[str, Any]:
    """The EMR step (API shape) that runs the job; continue the cluster on failure."""
    return emr_spec.spark_step(
        name=name[:256], zip_uri=zip_uri, entry_uri=entry_uri, job_args=args, action_on_failure="CONTINUE"
    )


def check_cluster(aws: Aws, cluster_id: str) -> dict[str, Any]:
    """The cluster description, or ClusterNotUsable when it can no longer run steps."""
    cluster: dict[str, Any] = aws.call("emr", "describe_cluster", ClusterId=cluster_id)["Cluster"]
    status = cluster.get("Status", {})
    if status.get("State") in GONE:
        reason = status.get("StateChangeReason", {}).get("Message") or status.get("StateChangeReason", {}).get(
            "Code", "no reason given"
        )
        raise ClusterNotUsable(
            f"cluster {cluster_id} is {status['State']} ({reason}); start a new one "
            "(cdk deploy, or featurizer cluster up --transient)"
        )
    return cluster


def check_input(aws: Aws, uri: S3Uri) -> None:
    """The input prefix must exist and hold at least one object."""
    aws.check_bucket(uri.bucket)
    listing = aws.call("s3", "list_objects_v2", Bucket=uri.bucket, Prefix=uri.folder, MaxKeys=1)
    if not listing.get("KeyCount") and not listing.get("Contents"):
        raise InputEmpty(f"--input {uri} is empty or does not exist (no objects under s3://{uri.bucket}/{uri.folder})")


def check_output(aws: Aws, uri: S3Uri) -> None:
    """The output bucket must exist and be ours; the job itself handles the prefix."""
    aws.check_bucket(uri.bucket)


@dataclass(frozen=True)
class Submission:
    """A step that was added: its id and exactly what was sent."""

    cluster_id: str
    step_id: str
    step: dict[str, Any]
    deployed: list[Deployed]


def submit(
    aws: Aws,
    *,
    cluster_id: str,
    bucket: str,
    package_items: Sequence[Artifact],
    digest: str,
    run: RunSpec,
    progress: ProgressFactory | None = None,
) -> Submission:
    """Check everything, deploy the package when S3 lacks it, then add the step.

    ``run`` already carries the deployment's defaults (``RunSpec.with_defaults``).
    """
    args = step_args(run)
    input_uri = parse_s3_uri(run.input, option="--input")
    output_uri = parse_s3_uri(run.output, option="--output")
    check_cluster(aws, cluster_id)
    check_input(aws, input_uri)
    check_output(aws, output_uri)
    deployed: list[Deployed] = []
    if not is_deployed(aws, bucket, package_items):
        deployed = deploy(aws, bucket, package_items, progress=progress)
    zip_item, entry_item = package_items
    step = spark_step(
        name=f"featurizer {digest} {input_uri}",
        zip_uri=artifacts.s3_uri(bucket, zip_item.key),
        entry_uri=artifacts.s3_uri(bucket, entry_item.key),
        args=args,
    )
    step_ids = aws.call("emr", "add_job_flow_steps", JobFlowId=cluster_id, Steps=[step])["StepIds"]
    return Submission(cluster_id=cluster_id, step_id=step_ids[0], step=step, deployed=deployed)
