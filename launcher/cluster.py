"""A transient cluster for users without CDK: the stack's cluster, one step, then terminate.

The request comes from `blueprint.emr_spec.run_job_flow_request` with the settings of `cdk.json`,
so instance types, release label, configurations and bootstrap are those of the CDK stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blueprint import artifacts, emr_spec
from blueprint.artifacts import Artifact
from blueprint.package import build_package
from blueprint.run_spec import RunSpec
from blueprint.settings import Settings, SettingsError, load_settings
from launcher import deploy as deploying
from launcher import preflight
from launcher import submit as submitting
from launcher.aws import Aws
from launcher.deploy import ProgressFactory, find_requirements_key, find_script_key
from launcher.errors import ConfigError
from launcher.stack import StackOutputs


def settings_from(overrides: Mapping[str, object], cdk_json: Path | None = None) -> Settings:
    """`cdk.json` context plus `--context key=value` overrides, as the CDK app would read them."""
    try:
        return load_settings(overrides=dict(overrides), cdk_json=cdk_json)
    except SettingsError as err:
        raise ConfigError(str(err)) from None


@dataclass(frozen=True)
class Roles:
    """IAM names the cluster runs with (the defaults are those `aws emr create-default-roles` makes)."""

    service_role: str = "EMR_DefaultRole"
    instance_profile: str = "EMR_EC2_DefaultRole"
    security_configuration: str | None = None


def transient_request(
    settings: Settings,
    *,
    bucket: str,
    bootstrap: Sequence[Artifact],
    step: dict[str, Any],
    log_uri: str,
    roles: Roles,
    subnet_ids: Sequence[str] = (),
    name: str | None = None,
    wheelhouse_uri: str | None = None,
    security_groups: emr_spec.SecurityGroups | None = None,
) -> dict[str, Any]:
    """`run_job_flow` arguments: the shared cluster definition, one step, no keep-alive."""
    resources = emr_spec.ClusterResources(
        service_role=roles.service_role,
        instance_profile=roles.instance_profile,
        security_configuration=roles.security_configuration or "",
        log_uri=log_uri,
        subnet_ids=tuple(subnet_ids) or settings.subnet_ids,
        security_groups=security_groups,
    )
    request = emr_spec.run_job_flow_request(
        settings,
        resources=resources,
        bootstrap_script_uri=artifacts.s3_uri(bucket, find_script_key(bootstrap)),
        requirements_uri=artifacts.s3_uri(bucket, find_requirements_key(bootstrap, settings.bootstrap_profile)),
        wheelhouse_uri=wheelhouse_uri,
        name=name or f"{settings.name_prefix}-transient",
        steps=[step],
        keep_alive=False,
    )
    if not roles.security_configuration:
        request.pop("SecurityConfiguration", None)
    return request


def start(aws: Aws, request: dict[str, Any]) -> str:
    """Start the cluster; returns its id (j-...)."""
    return str(aws.call("emr", "run_job_flow", **request)["JobFlowId"])


@dataclass(frozen=True)
class Target:
    """Where a transient cluster runs and with what identity: the stack's (with --stack), else given."""

    bucket: str
    prefix: str
    log_uri: str
    roles: Roles
    subnet_ids: tuple[str, ...] = ()
    security_groups: emr_spec.SecurityGroups | None = None
    name: str | None = None


@dataclass(frozen=True)
class Placement:
    """What the user gave for where the cluster runs; None / empty means: the stack's, else the default."""

    log_uri: str | None = None
    service_role: str | None = None
    instance_profile: str | None = None
    security_configuration: str | None = None
    subnets: tuple[str, ...] = ()
    name: str | None = None


def target_for(
    bucket: str, prefix: str, given: Placement, settings: Settings, outputs: StackOutputs | None = None
) -> Target:
    """The Target: each field from `given`, else the stack's outputs, else EMR's defaults or cdk.json.

    The stack's security groups only apply in the stack's own subnets (given subnets may be another VPC's).
    """
    log_uri = given.log_uri or (outputs and outputs.log_uri) or f"s3://{bucket}/logs/"
    submitting.parse_s3_uri(log_uri, option="--log-uri")
    default = Roles()
    roles = Roles(
        service_role=given.service_role or (outputs and outputs.service_role) or default.service_role,
        instance_profile=given.instance_profile or (outputs and outputs.instance_profile) or default.instance_profile,
        security_configuration=given.security_configuration or (outputs and outputs.security_configuration),
    )
    stack_subnets = outputs.subnet_ids if outputs is not None else ()
    return Target(
        bucket=bucket,
        prefix=prefix,
        log_uri=log_uri,
        roles=roles,
        subnet_ids=tuple(given.subnets or stack_subnets or settings.subnet_ids),
        security_groups=outputs.security_groups if outputs is not None and not given.subnets else None,
        name=given.name,
    )


@dataclass(frozen=True)
class Started:
    cluster_id: str
    step_id: str
    uploaded: tuple[str, ...]


def up(
    aws: Aws,
    settings: Settings,
    run: RunSpec,
    target: Target,
    *,
    out_dir: Path,
    progress: ProgressFactory | None = None,
) -> Started:
    """Check everything EMR would only reject minutes later, ship the code, start the cluster with one step.

    Order: the run's own arguments and locations, the VPC's managed-policy tag and the roles' key grants
    (launcher.preflight), then uploads (job package, bootstrap files, the nodes' wheelhouse), then
    ``run_job_flow`` with the shared cluster definition and ``KeepJobFlowAliveWhenNoSteps=False``.
    """
    args = submitting.step_args(run)
    input_uri = submitting.parse_s3_uri(run.input, option="--input")
    submitting.check_input(aws, input_uri)
    submitting.check_output(aws, submitting.parse_s3_uri(run.output, option="--output"))
    preflight.check_vpc_tagged(aws, target.subnet_ids)
    preflight.check_key_grants(
        aws,
        service_role=target.roles.service_role,
        instance_profile=target.roles.instance_profile,
        security_configuration=target.roles.security_configuration,
    )
    built = build_package(out_dir)
    package_items = deploying.package_artifacts(built, target.prefix)
    bootstrap_items = deploying.bootstrap_artifacts(target.prefix)
    wheel_items = (
        deploying.wheelhouse_artifacts(settings.bootstrap_profile, out_dir, target.prefix)
        if settings.offline_bootstrap
        else []
    )
    deployed = deploying.deploy(aws, target.bucket, [*package_items, *bootstrap_items, *wheel_items], progress=progress)
    step = submitting.spark_step(
        name=f"featurizer {built.digest} {input_uri}",
        zip_uri=artifacts.s3_uri(target.bucket, package_items[0].key),
        entry_uri=artifacts.s3_uri(target.bucket, package_items[1].key),
        args=args,
    )
    request = transient_request(
        settings,
        bucket=target.bucket,
        bootstrap=bootstrap_items,
        step=step,
        log_uri=target.log_uri,
        roles=target.roles,
        subnet_ids=target.subnet_ids,
        wheelhouse_uri=deploying.wheelhouse_uri(target.bucket, wheel_items) if wheel_items else None,
        security_groups=target.security_groups,
        name=target.name,
    )
    cluster_id = start(aws, request)
    steps = aws.call("emr", "list_steps", ClusterId=cluster_id).get("Steps", [])
    return Started(
        cluster_id=cluster_id,
        step_id=steps[0]["Id"] if steps else "",
        uploaded=tuple(item.uri for item in deployed if item.uploaded),
    )
