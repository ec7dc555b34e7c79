"""Preflight checks for transient clusters, against moto: VPC tag and the roles' grants on the data key."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from blueprint import emr_spec
from blueprint.settings import Settings
from launcher.aws import Aws
from launcher.errors import ConfigError
from launcher.preflight import check_key_grants, check_vpc_tagged

from .conftest import REGION

TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
EMR_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "elasticmapreduce.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


@pytest.fixture
def client(aws: boto3.Session) -> Aws:
    return Aws.connect(region=REGION)


def network(session: boto3.Session, *, vpc_tag: bool, subnet_tag: bool = True) -> tuple[str, list[str]]:
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    if vpc_tag:
        ec2.create_tags(Resources=[vpc], Tags=[TAG])
    if subnet_tag:
        ec2.create_tags(Resources=subnets, Tags=[TAG])
    return vpc, subnets


# --- VPC tag ---------------------------------------------------------------------------------------


def test_tagged_vpc_and_subnets_pass(aws: boto3.Session, client: Aws) -> None:
    _, subnets = network(aws, vpc_tag=True)
    check_vpc_tagged(client, subnets)


def test_tagged_subnets_in_an_untagged_vpc_fail_naming_the_vpc_and_the_tag(aws: boto3.Session, client: Aws) -> None:
    vpc, subnets = network(aws, vpc_tag=False)
    with pytest.raises(ConfigError) as err:
        check_vpc_tagged(client, subnets)
    message = str(err.value)
    assert "\n" not in message
    assert f"VPC {vpc} lack" in message
    assert "for-use-with-amazon-emr-managed-policies=true" in message
    assert f"aws ec2 create-tags --resources {vpc} --tags Key=for-use-with-amazon-emr-managed-policies,Value=true" in (
        message
    )
    assert not any(subnet in message for subnet in subnets)


def test_untagged_subnets_are_named_too(aws: boto3.Session, client: Aws) -> None:
    _, subnets = network(aws, vpc_tag=True, subnet_tag=False)
    with pytest.raises(ConfigError, match="subnet"):
        check_vpc_tagged(client, subnets[:1])


def test_without_subnets_the_default_vpc_is_checked(aws: boto3.Session, client: Aws) -> None:
    (default,) = aws.client("ec2").describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    with pytest.raises(ConfigError, match=default["VpcId"]):
        check_vpc_tagged(client, [])


def test_an_unknown_subnet_is_a_config_error(aws: boto3.Session, client: Aws) -> None:
    with pytest.raises(ConfigError, match="subnet-0123456789abcdef0"):
        check_vpc_tagged(client, ["subnet-0123456789abcdef0"])


# --- data-key grants -------------------------------------------------------------------------------


def security_configuration(session: boto3.Session) -> tuple[str, str]:
    """The stack's security configuration (emr_spec's own document) with a moto KMS key; (name, key ARN)."""
    key_arn = session.client("kms").create_key(Description="data key")["KeyMetadata"]["Arn"]
    document = emr_spec.security_configuration(Settings(), key_arn)
    session.client("emr").create_security_configuration(
        Name="featurizer-sc", SecurityConfiguration=json.dumps(document)
    )
    return "featurizer-sc", key_arn


def role(session: boto3.Session, name: str, trust: dict[str, Any], policy: dict[str, Any] | None = None) -> str:
    iam = session.client("iam")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if policy is not None:
        iam.put_role_policy(RoleName=name, PolicyName="key", PolicyDocument=json.dumps(policy))
    return str(arn)


def profile(session: boto3.Session, name: str, role_name: str) -> None:
    iam = session.client("iam")
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role_name)


def key_policy(actions: list[str], resource: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]}


STACK_INSTANCE_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
STACK_SERVICE_ACTIONS = [*STACK_INSTANCE_ACTIONS, "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant"]


def test_the_stacks_roles_pass(aws: boto3.Session, client: Aws) -> None:
    name, key = security_configuration(aws)
    role(aws, "featurizer-service", EMR_TRUST, key_policy(STACK_SERVICE_ACTIONS, key))
    role(aws, "featurizer-emr-instance", EC2_TRUST, key_policy(STACK_INSTANCE_ACTIONS, key))
    profile(aws, "featurizer-emr-instance", "featurizer-emr-instance")
    check_key_grants(
        client,
        service_role="featurizer-service",
        instance_profile="featurizer-emr-instance",
        security_configuration=name,
    )


def test_default_roles_without_the_key_fail_naming_role_and_key(aws: boto3.Session, client: Aws) -> None:
    name, key = security_configuration(aws)
    role(aws, "EMR_DefaultRole", EMR_TRUST, key_policy(STACK_SERVICE_ACTIONS, key))
    role(aws, "EMR_EC2_DefaultRole", EC2_TRUST, key_policy(["s3:GetObject"], "*"))
    profile(aws, "EMR_EC2_DefaultRole", "EMR_EC2_DefaultRole")
    with pytest.raises(ConfigError) as err:
        check_key_grants(
            client, service_role="EMR_DefaultRole", instance_profile="EMR_EC2_DefaultRole", security_configuration=name
        )
    message = str(err.value)
    assert "instance profile EMR_EC2_DefaultRole (role EMR_EC2_DefaultRole)" in message
    assert "kms:Decrypt, kms:GenerateDataKey" in message and key in message
    assert "--stack" in message and "\n" not in message


def test_the_service_role_needs_the_ebs_grant(aws: boto3.Session, client: Aws) -> None:
    name, key = security_configuration(aws)
    role(aws, "svc", EMR_TRUST, key_policy(["kms:Decrypt"], key))
    role(aws, "inst", EC2_TRUST, key_policy(["kms:*"], "*"))
    profile(aws, "inst", "inst")
    with pytest.raises(ConfigError, match=r"service role svc has no kms:CreateGrant, kms:GenerateDataKeyWithout"):
        check_key_grants(client, service_role="svc", instance_profile="inst", security_configuration=name)


def test_grants_from_managed_policies_and_the_key_policy_count(aws: boto3.Session, client: Aws) -> None:
    name, key = security_configuration(aws)
    iam = aws.client("iam")
    managed = iam.create_policy(PolicyName="all-keys", PolicyDocument=json.dumps(key_policy(["kms:*"], "*")))
    svc_arn = role(aws, "svc", EMR_TRUST)
    iam.attach_role_policy(RoleName="svc", PolicyArn=managed["Policy"]["Arn"])
    inst_arn = role(aws, "inst", EC2_TRUST)
    profile(aws, "inst", "inst")
    by_key_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": [inst_arn]}, "Action": ["kms:Decrypt", "kms:GenerateDataKey*"]},
            {"Effect": "Allow", "Principal": {"AWS": svc_arn}, "Action": "kms:DescribeKey", "Resource": "*"},
        ],
    }
    aws.client("kms").put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(by_key_policy))
    check_key_grants(client, service_role=svc_arn, instance_profile="inst", security_configuration=name)


def test_an_explicit_deny_wins(aws: boto3.Session, client: Aws) -> None:
    name, key = security_configuration(aws)
    role(aws, "svc", EMR_TRUST, key_policy(["kms:*"], "*"))
    deny = key_policy(["kms:*"], "*")
    deny["Statement"].append({"Effect": "Deny", "Action": "kms:Decrypt", "Resource": key})
    role(aws, "inst", EC2_TRUST, deny)
    profile(aws, "inst", "inst")
    with pytest.raises(ConfigError, match="no kms:Decrypt on"):
        check_key_grants(client, service_role="svc", instance_profile="inst", security_configuration=name)


def test_no_security_configuration_needs_no_key(aws: boto3.Session, client: Aws) -> None:
    check_key_grants(client, service_role="x", instance_profile="y", security_configuration=None)
