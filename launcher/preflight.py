"""Checks a transient cluster needs before `run_job_flow`, each failing with one ConfigError line.

Pure functions over an `Aws` (read-only calls). EMR would otherwise accept the request and fail
minutes later, deep in the cluster's state-change reason or a step's log:

- `check_vpc_tagged`: AmazonEMRServicePolicy_v2 (the EMR service role's policy) only acts in a VPC and
  subnets tagged ``for-use-with-amazon-emr-managed-policies=true``; tagging the subnets alone is not enough.
- `check_key_grants`: a security configuration with SSE-KMS / local-disk encryption makes the nodes
  (instance profile) and EMR (service role) use its KMS key; `aws emr create-default-roles`' roles have no
  grant on it. The cluster stack's roles do (outputs ServiceRoleName, InstanceProfileName).

`check_key_grants` reads the roles' identity policies and the key policy; it cannot see grants made
through KMS grants or permission boundaries, and it ignores conditions. A role it refuses may therefore
still work; the message says how to proceed.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from blueprint.emr_spec import MANAGED_POLICY_TAG
from launcher.aws import Aws
from launcher.errors import AccessDenied, AwsServiceError, ConfigError

TAG = f"{MANAGED_POLICY_TAG['Key']}={MANAGED_POLICY_TAG['Value']}"
# What each role does with the key: the nodes read and write SSE-KMS objects through EMRFS and encrypt
# their local disks; EMR's service role attaches EBS volumes encrypted with it (a grant to EBS).
INSTANCE_ROLE_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
SERVICE_ROLE_ACTIONS = ("kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt")


def check_vpc_tagged(aws: Aws, subnet_ids: Sequence[str]) -> None:
    """The subnets and their VPC carry the managed-policy tag; without subnets, the default VPC does."""
    try:
        if subnet_ids:
            subnets = aws.call("ec2", "describe_subnets", SubnetIds=list(subnet_ids))["Subnets"]
            vpc_ids = sorted({subnet["VpcId"] for subnet in subnets})
            vpcs = aws.call("ec2", "describe_vpcs", VpcIds=vpc_ids)["Vpcs"]
        else:
            subnets = []
            vpcs = aws.call("ec2", "describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
            if not vpcs:
                raise ConfigError(
                    f"no subnet given and {aws.region} has no default VPC: pass --subnet (or --stack) "
                    f"with subnets whose VPC is tagged {TAG}"
                )
    except AwsServiceError as err:
        if "InvalidSubnetID" in str(err):
            raise ConfigError(f"subnet(s) {', '.join(subnet_ids)} not found in {aws.region}: {err}") from None
        raise
    untagged_vpcs = [vpc["VpcId"] for vpc in vpcs if not _tagged(vpc)]
    untagged_subnets = sorted(subnet["SubnetId"] for subnet in subnets if not _tagged(subnet))
    if untagged_vpcs or untagged_subnets:
        what = [f"VPC {', '.join(untagged_vpcs)}"] if untagged_vpcs else []
        what += [f"subnet(s) {', '.join(untagged_subnets)}"] if untagged_subnets else []
        resources = " ".join(untagged_vpcs + untagged_subnets)
        raise ConfigError(
            f"{' and '.join(what)} lack the tag {TAG}, which the EMR service role's AmazonEMRServicePolicy_v2 "
            f"requires on the VPC as well as the subnets; add it: aws ec2 create-tags --resources {resources} "
            f"--tags Key={MANAGED_POLICY_TAG['Key']},Value={MANAGED_POLICY_TAG['Value']}"
        )


def check_key_grants(aws: Aws, *, service_role: str, instance_profile: str, security_configuration: str | None) -> None:
    """The roles may use the KMS key(s) of the security configuration; nothing to check without one."""
    if not security_configuration:
        return
    described = aws.call("emr", "describe_security_configuration", Name=security_configuration)
    config = json.loads(described["SecurityConfiguration"])
    instance_keys, ebs_keys = _keys(config)
    if not instance_keys and not ebs_keys:
        return
    profile = aws.call("iam", "get_instance_profile", InstanceProfileName=instance_profile)["InstanceProfile"]
    instance_roles = [role["RoleName"] for role in profile.get("Roles", [])]
    if not instance_roles:
        raise ConfigError(f"instance profile {instance_profile} has no role")
    needs = [
        (f"instance profile {instance_profile} (role {r})", r, INSTANCE_ROLE_ACTIONS, instance_keys)
        for r in instance_roles
    ]
    service_name = service_role.rsplit("/", 1)[-1]  # EMR takes a name or an ARN
    needs.append((f"service role {service_name}", service_name, SERVICE_ROLE_ACTIONS, ebs_keys))
    for label, role_name, actions, keys in needs:
        if not keys:
            continue
        role = aws.call("iam", "get_role", RoleName=role_name)["Role"]
        statements = _identity_statements(aws, role_name)
        for key in keys:
            key_arn = _key_arn(aws, key)
            granted = statements + _key_policy_statements(aws, key_arn, role["Arn"])
            missing = [action for action in actions if not _allowed(granted, action, key_arn)]
            if missing:
                raise ConfigError(
                    f"{label} has no {', '.join(missing)} on KMS key {key_arn}, which security configuration "
                    f"{security_configuration} encrypts with: start the cluster with the stack's roles (--stack: "
                    "outputs ServiceRoleName, InstanceProfileName) or grant the key to this role"
                )


def _tagged(resource: dict[str, Any]) -> bool:
    return any(tag == MANAGED_POLICY_TAG for tag in resource.get("Tags", []))


def _keys(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(keys the nodes use, keys EBS volumes use) in an EMR security configuration document."""
    at_rest = config.get("EncryptionConfiguration", {}).get("AtRestEncryptionConfiguration", {})
    instance: list[str] = []
    ebs: list[str] = []
    s3 = at_rest.get("S3EncryptionConfiguration", {})
    if s3.get("EncryptionMode") in ("SSE-KMS", "CSE-KMS") and s3.get("AwsKmsKey"):
        instance.append(s3["AwsKmsKey"])
    disk = at_rest.get("LocalDiskEncryptionConfiguration", {})
    if disk.get("EncryptionKeyProviderType") == "AwsKms" and disk.get("AwsKmsKey"):
        instance.append(disk["AwsKmsKey"])
        if disk.get("EnableEbsEncryption"):
            ebs.append(disk["AwsKmsKey"])
    return list(dict.fromkeys(instance)), ebs


def _key_arn(aws: Aws, key: str) -> str:
    """The key's ARN (security configurations may name an alias or a key id); the name as given if unreadable."""
    if key.startswith("arn:") and ":key/" in key:
        return key
    try:
        return str(aws.call("kms", "describe_key", KeyId=key)["KeyMetadata"]["Arn"])
    except (AccessDenied, AwsServiceError):
        return key


def _identity_statements(aws: Aws, role_name: str) -> list[dict[str, Any]]:
    """Statements of the role's inline and attached managed policies."""
    statements: list[dict[str, Any]] = []
    for page in aws.paginate("iam", "list_role_policies", RoleName=role_name):
        for name in page.get("PolicyNames", []):
            document = aws.call("iam", "get_role_policy", RoleName=role_name, PolicyName=name)["PolicyDocument"]
            statements += _statements(document)
    for page in aws.paginate("iam", "list_attached_role_policies", RoleName=role_name):
        for attached in page.get("AttachedPolicies", []):
            policy = aws.call("iam", "get_policy", PolicyArn=attached["PolicyArn"])["Policy"]
            version = aws.call(
                "iam", "get_policy_version", PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
            )
            statements += _statements(version["PolicyVersion"]["Document"])
    return statements


def _key_policy_statements(aws: Aws, key_arn: str, role_arn: str) -> list[dict[str, Any]]:
    """Key-policy statements that name the role as principal (unreadable key policy: none)."""
    try:
        document = aws.call("kms", "get_key_policy", KeyId=key_arn, PolicyName="default")["Policy"]
    except (AccessDenied, AwsServiceError, ConfigError):
        return []
    # In a key policy the resource is the key itself ("*"); only statements naming the role count.
    return [
        {**statement, "Resource": statement.get("Resource", "*")}
        for statement in _statements(document)
        if role_arn in _principals(statement)
    ]


def _principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    return [str(p) for p in _as_list(principal.get("AWS"))] if isinstance(principal, dict) else []


def _statements(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, str):
        document = json.loads(unquote(document))
    return [dict(statement) for statement in _as_list(document.get("Statement"))]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _matches(patterns: Iterable[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), pattern.lower()) for pattern in patterns)


def _allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """An Allow matching action and resource and no Deny matching them (NotAction/NotResource: ignored)."""

    def applies(statement: dict[str, Any]) -> bool:
        return _matches(_as_list(statement.get("Action")), action) and _matches(
            _as_list(statement.get("Resource")), resource
        )

    if any(statement.get("Effect") == "Deny" and applies(statement) for statement in statements):
        return False
    return any(statement.get("Effect") == "Allow" and applies(statement) for statement in statements)
