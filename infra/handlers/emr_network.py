"""CloudFormation custom resources for the cluster's network (a Lambda handler: boto3 and the stdlib only).

Two resource kinds share this function, chosen by the ``Action`` property:

``SubnetVpc`` (Create/Update)
    The VPC of the configured existing subnets, so the stack can declare EMR's security groups in it.
    Fails the deployment, naming what to tag, when the subnets span several VPCs or the VPC or a subnet
    lacks ``for-use-with-amazon-emr-managed-policies=true``: AmazonEMRServicePolicy_v2 acts only on
    tagged VPCs, subnets and security groups, and EMR would otherwise fail later, at cluster launch.

``RevokeSecurityGroupRules`` (Delete)
    EMR adds rules to its managed security groups at launch that reference each other (primary <->
    core/task <-> service access). CloudFormation cannot delete a group another group's rule still
    names (DependencyViolation), so on delete (after the cluster is gone) every ingress and egress rule
    of the groups is revoked. Groups that no longer exist are skipped.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import boto3

MANAGED_POLICY_TAG = ("for-use-with-amazon-emr-managed-policies", "true")


class ConfigurationError(Exception):
    """Something the deployer must fix; the message is shown as the resource's failure reason."""


def subnet_vpc(ec2: Any, subnet_ids: Iterable[str]) -> str:
    """The one VPC of ``subnet_ids``; raises ConfigurationError unless it and the subnets are tagged."""
    subnets = ec2.describe_subnets(SubnetIds=list(subnet_ids))["Subnets"]
    vpc_ids = sorted({subnet["VpcId"] for subnet in subnets})
    if len(vpc_ids) != 1:
        raise ConfigurationError(f"subnets {sorted(subnet_ids)} must be in one VPC, found {vpc_ids}")
    (vpc,) = ec2.describe_vpcs(VpcIds=vpc_ids)["Vpcs"]
    untagged = [vpc["VpcId"]] if not _tagged(vpc) else []
    untagged += sorted(subnet["SubnetId"] for subnet in subnets if not _tagged(subnet))
    if untagged:
        key, value = MANAGED_POLICY_TAG
        raise ConfigurationError(
            f"{', '.join(untagged)} lack the tag {key}={value} that AmazonEMRServicePolicy_v2 requires; "
            f"add it: aws ec2 create-tags --resources {' '.join(untagged)} --tags Key={key},Value={value}"
        )
    return str(vpc["VpcId"])


def revoke_all_rules(ec2: Any, group_ids: Iterable[str]) -> list[str]:
    """Revoke every ingress and egress rule of the groups (by rule id); returns the groups that had rules.

    Rule ids, not the rules' permissions: a permission naming a group is refused once that group is gone,
    while an id always identifies the rule. Groups that no longer exist have no rules to list.
    """
    pages = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": "group-id", "Values": list(group_ids)}]
    )
    rules: dict[tuple[str, bool], list[str]] = {}
    for page in pages:
        for rule in page["SecurityGroupRules"]:
            rules.setdefault((rule["GroupId"], bool(rule["IsEgress"])), []).append(rule["SecurityGroupRuleId"])
    for (group_id, egress), rule_ids in sorted(rules.items()):
        revoke = ec2.revoke_security_group_egress if egress else ec2.revoke_security_group_ingress
        revoke(GroupId=group_id, SecurityGroupRuleIds=rule_ids)
    return sorted({group_id for group_id, _ in rules})


def handle(event: Mapping[str, Any], ec2: Any) -> tuple[str, dict[str, str]]:
    """(physical resource id, data) for one request; raises on failure."""
    props = event["ResourceProperties"]
    request = event["RequestType"]
    action = props["Action"]
    physical_id = str(event.get("PhysicalResourceId") or f"{action}-{event['LogicalResourceId']}")
    if action == "SubnetVpc":
        if request == "Delete":
            return physical_id, {}
        vpc_id = subnet_vpc(ec2, props["SubnetIds"])
        return vpc_id, {"VpcId": vpc_id}
    if action == "RevokeSecurityGroupRules":
        if request == "Delete":
            revoke_all_rules(ec2, props["GroupIds"])
        return physical_id, {}
    raise ConfigurationError(f"unknown Action {action!r}")


def handler(event: Mapping[str, Any], context: Any, send: Callable[..., None] | None = None) -> None:
    """Lambda entry point: always answers CloudFormation, or the stack would wait an hour for it."""
    respond = send or _send
    try:
        physical_id, data = handle(event, boto3.client("ec2"))
    except Exception as exc:  # every failure must reach CloudFormation as FAILED
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        print(reason)
        fallback = event.get("PhysicalResourceId") or f"failed-{event['LogicalResourceId']}"
        respond(event, context, "FAILED", fallback, {}, reason)
        return
    respond(event, context, "SUCCESS", physical_id, data, "")


def _tagged(resource: Mapping[str, Any]) -> bool:
    key, value = MANAGED_POLICY_TAG
    return any(tag["Key"] == key and tag["Value"] == value for tag in resource.get("Tags", []))


def _send(
    event: Mapping[str, Any], context: Any, status: str, physical_id: str, data: dict[str, str], reason: str
) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or f"see CloudWatch log stream {getattr(context, 'log_stream_name', '?')}",
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # CloudFormation's presigned URL
        response.read()
