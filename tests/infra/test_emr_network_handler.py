"""The network custom resources' Lambda (infra/handlers/emr_network.py), against moto's EC2.

moto does not refuse to delete a security group that another group's rule references (AWS answers
DependencyViolation), so these tests check what the cleanup must achieve: no rule left in any group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.handlers import emr_network

TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield boto3.client("ec2")


def network(ec2: Any, *, vpc_tagged: bool = True, subnets_tagged: bool = True) -> tuple[str, list[str]]:
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    if vpc_tagged:
        ec2.create_tags(Resources=[vpc], Tags=[TAG])
    if subnets_tagged:
        ec2.create_tags(Resources=subnets, Tags=[TAG])
    return vpc, subnets


def emr_like_groups(ec2: Any, vpc: str) -> list[str]:
    """Groups with the rules EMR adds at launch: each references the other (and the service-access one)."""
    primary, core, service = (
        ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
        for name in ("primary", "core", "service")
    )
    for group, other in ((primary, core), (core, primary), (primary, primary)):
        ec2.authorize_security_group_ingress(
            GroupId=group, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": other}]}]
        )
    ec2.authorize_security_group_ingress(
        GroupId=primary,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8443, "ToPort": 8443, "UserIdGroupPairs": [{"GroupId": service}]}
        ],
    )
    ec2.authorize_security_group_egress(
        GroupId=service,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8443, "ToPort": 8443, "UserIdGroupPairs": [{"GroupId": primary}]}
        ],
    )
    return [primary, core, service]


def rules(ec2: Any, groups: list[str]) -> list[dict[str, Any]]:
    found = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": groups}])
    return list(found["SecurityGroupRules"])


def event(request: str, props: dict[str, Any], physical_id: str | None = None) -> dict[str, Any]:
    body = {
        "RequestType": request,
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:x", **props},
        "LogicalResourceId": "Resource",
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/s/1",
        "RequestId": "r-1",
        "ResponseURL": "https://cloudformation-custom-resource-response.example/presigned",
    }
    if physical_id:
        body["PhysicalResourceId"] = physical_id
    return body


def call(evt: dict[str, Any]) -> dict[str, Any]:
    """Run the Lambda entry point; returns what it would have sent to CloudFormation."""
    sent: dict[str, Any] = {}

    def send(event: Any, context: Any, status: str, physical_id: str, data: dict[str, str], reason: str) -> None:
        sent.update(Status=status, PhysicalResourceId=physical_id, Data=data, Reason=reason)

    emr_network.handler(evt, None, send=send)
    return sent


def test_delete_revokes_every_rule_of_the_groups(ec2: Any) -> None:
    vpc, _ = network(ec2)
    groups = emr_like_groups(ec2, vpc)
    assert any(r["ReferencedGroupInfo"] for r in rules(ec2, groups) if "ReferencedGroupInfo" in r)
    answer = call(event("Delete", {"Action": "RevokeSecurityGroupRules", "GroupIds": groups}, "rules-1"))
    assert answer["Status"] == "SUCCESS" and answer["PhysicalResourceId"] == "rules-1"
    assert rules(ec2, groups) == []
    for group in groups:
        ec2.delete_security_group(GroupId=group)
    # A second delete (a retried stack deletion) finds nothing and still succeeds.
    answer = call(event("Delete", {"Action": "RevokeSecurityGroupRules", "GroupIds": groups}, "rules-1"))
    assert answer["Status"] == "SUCCESS"


def test_create_and_update_leave_the_rules_alone(ec2: Any) -> None:
    vpc, _ = network(ec2)
    groups = emr_like_groups(ec2, vpc)
    before = len(rules(ec2, groups))
    created = call(event("Create", {"Action": "RevokeSecurityGroupRules", "GroupIds": groups}))
    updated = call(
        event("Update", {"Action": "RevokeSecurityGroupRules", "GroupIds": groups}, created["PhysicalResourceId"])
    )
    assert created["Status"] == updated["Status"] == "SUCCESS"
    assert updated["PhysicalResourceId"] == created["PhysicalResourceId"]  # an update is never a replacement
    assert len(rules(ec2, groups)) == before


def test_subnet_vpc_returns_the_tagged_vpc(ec2: Any) -> None:
    vpc, subnets = network(ec2)
    answer = call(event("Create", {"Action": "SubnetVpc", "SubnetIds": subnets}))
    assert answer == {"Status": "SUCCESS", "PhysicalResourceId": vpc, "Data": {"VpcId": vpc}, "Reason": ""}


@pytest.mark.parametrize(("vpc_tagged", "subnets_tagged"), [(False, True), (True, False)])
def test_subnet_vpc_fails_the_deployment_naming_what_to_tag(ec2: Any, vpc_tagged: bool, subnets_tagged: bool) -> None:
    vpc, subnets = network(ec2, vpc_tagged=vpc_tagged, subnets_tagged=subnets_tagged)
    answer = call(event("Create", {"Action": "SubnetVpc", "SubnetIds": subnets}))
    assert answer["Status"] == "FAILED"
    untagged = [vpc] if not vpc_tagged else subnets
    assert all(resource in answer["Reason"] for resource in untagged)
    assert "for-use-with-amazon-emr-managed-policies=true" in answer["Reason"]
    assert "aws ec2 create-tags --resources" in answer["Reason"]


def test_subnets_of_two_vpcs_are_refused(ec2: Any) -> None:
    _, first = network(ec2)
    other = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    second = ec2.create_subnet(VpcId=other, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    answer = call(event("Create", {"Action": "SubnetVpc", "SubnetIds": [first[0], second]}))
    assert answer["Status"] == "FAILED" and "must be in one VPC" in answer["Reason"]


def test_deleting_the_lookup_calls_nothing(ec2: Any) -> None:
    answer = call(event("Delete", {"Action": "SubnetVpc", "SubnetIds": ["subnet-0123456789abcdef0"]}, "vpc-1"))
    assert answer == {"Status": "SUCCESS", "PhysicalResourceId": "vpc-1", "Data": {}, "Reason": ""}


def test_the_answer_is_put_to_the_presigned_url() -> None:
    """CloudFormation reads a JSON body PUT to ResponseURL (an empty Content-Type, as its docs require)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # http.server's naming
            received["content_type"] = self.headers.get("Content-Type")
            received["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    evt = event("Delete", {"Action": "SubnetVpc"}, "vpc-1")
    evt["ResponseURL"] = f"http://127.0.0.1:{server.server_port}/presigned"
    emr_network._send(evt, None, "SUCCESS", "vpc-1", {}, "")
    thread.join(timeout=10)
    server.server_close()
    assert received["content_type"] == ""
    body = received["body"]
    assert (body["Status"], body["PhysicalResourceId"], body["RequestId"]) == ("SUCCESS", "vpc-1", "r-1")
    assert body["StackId"] == evt["StackId"] and body["LogicalResourceId"] == "Resource"
