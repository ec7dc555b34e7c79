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
from blueprint.settings import Settings, SettingsError, load_settings
from launcher.aws import Aws
from launcher.deploy import find_requirements_key, find_script_key
from launcher.errors import ConfigError


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
