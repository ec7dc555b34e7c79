"""Read the CDK stack's outputs, the contract that spares users from copying ids by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from blueprint.emr_spec import SecurityGroups
from blueprint.run_spec import RunDefaults
from launcher.aws import Aws
from launcher.errors import InvalidUri, StackOutputsMissing

REQUIRED = ("ClusterId", "ProjectBucketName")


@dataclass(frozen=True)
class StackOutputs:
    """The outputs the launcher uses; optional ones are None when the stack does not publish them."""

    name: str
    cluster_id: str
    bucket: str
    artifacts_prefix: str | None = None
    run_defaults: RunDefaults = field(default_factory=RunDefaults)
    # What a transient cluster needs to run like the stack's: its roles (with the data-key grants),
    # security configuration (at-rest encryption with that key), log location and subnets.
    service_role: str | None = None
    instance_profile: str | None = None
    security_configuration: str | None = None
    log_uri: str | None = None
    subnet_ids: tuple[str, ...] = ()
    # The EMR-managed security groups the stack declares (and cleans up on destroy): a cluster in the
    # stack's VPC without them makes EMR create its own, which then block deleting the VPC.
    security_groups: SecurityGroups | None = None

    def artifacts_key_prefix(self, default: str) -> str:
        """The key prefix under the project bucket from `ArtifactsPrefix` (an s3:// URI), else `default`."""
        if not self.artifacts_prefix:
            return default
        head = f"s3://{self.bucket}/"
        if not self.artifacts_prefix.startswith(head):
            raise InvalidUri(
                f"stack {self.name}: ArtifactsPrefix {self.artifacts_prefix} is not under s3://{self.bucket}/"
            )
        return self.artifacts_prefix[len(head) :]


def resolve(aws: Aws, name: str) -> StackOutputs:
    """Describe the stack and pick out the outputs; missing required ones is a clear error."""
    stacks = aws.call("cloudformation", "describe_stacks", StackName=name).get("Stacks", [])
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in (stacks[0].get("Outputs", []) if stacks else [])}
    missing = [key for key in REQUIRED if not outputs.get(key)]
    if missing:
        status = stacks[0].get("StackStatus", "?") if stacks else "?"
        raise StackOutputsMissing(
            f"stack {name} ({status}) has no output {', '.join(missing)}: "
            "is it the featurizer cluster stack, fully deployed?"
        )
    return StackOutputs(
        name=name,
        cluster_id=outputs["ClusterId"],
        bucket=outputs["ProjectBucketName"],
        artifacts_prefix=outputs.get("ArtifactsPrefix") or None,
        run_defaults=RunDefaults.from_outputs(outputs, stack=name),
        service_role=outputs.get("ServiceRoleName") or None,
        instance_profile=outputs.get("InstanceProfileName") or None,
        security_configuration=outputs.get("SecurityConfigurationName") or None,
        log_uri=outputs.get("LogUri") or None,
        subnet_ids=tuple(s for s in outputs.get("Ec2SubnetIds", "").split(",") if s),
        security_groups=_security_groups(outputs),
    )


def _security_groups(outputs: dict[str, str]) -> SecurityGroups | None:
    primary, core_task = outputs.get("EmrManagedMasterSecurityGroup"), outputs.get("EmrManagedSlaveSecurityGroup")
    if not primary or not core_task:
        return None
    return SecurityGroups(primary, core_task, outputs.get("ServiceAccessSecurityGroup") or None)


def template(aws: Aws, name: str) -> dict[str, Any]:
    """The deployed stack's template as a dict (CDK deploys JSON; boto3 parses it): what the stack declares."""
    body = aws.call("cloudformation", "get_template", StackName=name, TemplateStage="Original").get("TemplateBody")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            raise StackOutputsMissing(f"stack {name}: its template is not JSON (a CDK stack's is)") from None
    if not isinstance(body, dict):
        raise StackOutputsMissing(f"stack {name}: it has no readable template")
    return body
