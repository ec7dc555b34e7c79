"""Non-default settings change the templates as documented (one synth with all of them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from blueprint import emr_spec
from blueprint.settings import load_settings
from tests.infra.cfn import PROJECT_BUCKET, cfn_lint, flat
from tests.infra.conftest import Synth, resources, synth

SHA = "0123456789abcdef" * 4
OVERRIDES: dict[str, object] = {
    "name_prefix": "featurizer",
    "retain_data": "false",
    "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    "tls_certificate_s3_uri": "s3://certs-bucket/emr/certs.zip",
    "weights_s3_uri": "s3://weights-bucket/models/mobilenet_v2.onnx",
    "weights_sha256": SHA,
    "ec2_key_name": "ops-key",
    "bootstrap_profile": "onnx",
    "private_subnets": "true",
    "cluster_generation": "2",
}


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synth(tmp_path_factory.mktemp("cdk-variant"), OVERRIDES)


@pytest.fixture(scope="module")
def cluster_props(variant: Synth) -> dict[str, Any]:
    (cluster,) = resources(variant.cluster, "AWS::EMR::Cluster")
    return flat(cluster["Properties"])


def test_destroy_flag_deletes_data(variant: Synth) -> None:
    buckets = resources(variant.storage, "AWS::S3::Bucket")
    assert {b["DeletionPolicy"] for b in buckets} == {"Delete"}
    assert len(resources(variant.storage, "Custom::S3AutoDeleteObjects")) == 2


def test_existing_subnets_replace_the_vpc(variant: Synth, cluster_props: dict[str, Any]) -> None:
    assert resources(variant.cluster, "AWS::EC2::VPC") == []
    assert cluster_props["Instances"]["Ec2SubnetIds"] == ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
    assert cluster_props["Instances"]["Ec2KeyName"] == "ops-key"


def test_tls_enables_in_transit_encryption(variant: Synth) -> None:
    (security,) = resources(variant.cluster, "AWS::EMR::SecurityConfiguration")
    encryption = flat(security["Properties"]["SecurityConfiguration"])["EncryptionConfiguration"]
    assert encryption["EnableInTransitEncryption"] is True
    assert encryption["InTransitEncryptionConfiguration"]["TLSCertificateConfiguration"]["S3Object"] == (
        "s3://certs-bucket/emr/certs.zip"
    )


def test_weights_are_staged_readable_and_passed_to_the_step(variant: Synth, cluster_props: dict[str, Any]) -> None:
    args = cluster_props["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    assert args[args.index("--weights-uri") + 1] == "s3://weights-bucket/models/mobilenet_v2.onnx"
    assert args[args.index("--weights-sha256") + 1] == SHA
    assert args[args.index("--profile") + 1] == "onnx"
    assert args[args.index("--requirements") + 1].endswith("/requirements-onnx.txt")
    statements = [
        s
        for r in resources(variant.cluster, "AWS::IAM::Policy")
        for s in flat(r["Properties"])["PolicyDocument"]["Statement"]
        if s.get("Sid") == "ReadStagedObjects"
    ]
    assert statements == [
        {
            "Sid": "ReadStagedObjects",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [
                "arn:${AWS::Partition}:s3:::weights-bucket/models/mobilenet_v2.onnx",
                "arn:${AWS::Partition}:s3:::certs-bucket/emr/certs.zip",
            ],
        }
    ]
    [step] = json.loads(flat(variant.cluster["Outputs"]["ConsoleStepJson"]["Value"]))
    # A node-local file as a file:// URI: a bare path would resolve against fs.defaultFS (HDFS on EMR).
    staged = "file:///opt/featurizer/weights/mobilenet_v2.onnx"
    model_cache = f"s3://{flat(variant.cluster['Outputs']['ProjectBucketName']['Value'])}/cache/models/"
    assert step["Args"][-6:] == ["--weights", staged, "--engine", "onnx", "--model-cache", model_cache]
    outputs = variant.cluster["Outputs"]
    assert (outputs["DefaultWeights"]["Value"], outputs["DefaultEngine"]["Value"]) == (staged, "onnx")
    assert flat(outputs["DefaultModelCache"]["Value"]) == model_cache


def test_variant_matches_emr_spec(cluster_props: dict[str, Any]) -> None:
    settings = load_settings(OVERRIDES)
    groups = emr_spec.SecurityGroups(
        "${EmrPrimaryGroup.GroupId}", "${EmrCoreTaskGroup.GroupId}", "${EmrServiceAccessGroup.GroupId}"
    )
    instances = emr_spec.job_flow_instances(settings, settings.subnet_ids, keep_alive=True, security_groups=groups)
    assert cluster_props["Instances"] == emr_spec.to_cloudformation_instances(instances)
    assert cluster_props["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"].startswith(f"s3://{PROJECT_BUCKET}/")


def test_variant_is_nag_and_lint_clean(variant: Synth) -> None:
    if variant.report is not None:
        assert [v for r in variant.report["pluginReports"] for v in r.get("violations", [])] == []
    assert cfn_lint(sorted(variant.outdir.glob("*.template.json"))) == []


def test_lint_check_can_fail(variant: Synth, tmp_path: Path) -> None:
    """Guards the lint tests: the API's `Properties` key is an error in a CloudFormation template."""
    template = json.loads((variant.outdir / "featurizer-cluster.template.json").read_text())
    (name,) = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::EMR::Cluster"]
    template["Resources"][name]["Properties"]["Configurations"] = emr_spec.configurations(load_settings())
    broken = tmp_path / "broken.template.json"
    broken.write_text(json.dumps(template))
    assert any(f["Level"] == "Error" for f in cfn_lint([broken]))


def test_a_new_generation_replaces_the_cluster(variant: Synth, cluster_props: dict[str, Any]) -> None:
    """-c cluster_generation=2: another logical id (and name), so CloudFormation creates a new cluster
    instead of updating the auto-terminated one (test_stacks checks generation 1 is "Cluster")."""
    (name,) = [k for k, r in variant.cluster["Resources"].items() if r["Type"] == "AWS::EMR::Cluster"]
    assert name == "ClusterGen2"
    assert cluster_props["Name"] == "featurizer-g2"
    assert flat(variant.cluster["Outputs"]["ClusterId"]["Value"]) == "${ClusterGen2}"


def test_existing_private_subnets_get_all_three_groups_in_their_vpc(variant: Synth) -> None:
    """The VPC id comes from the subnets at deploy time (the lookup also fails if it lacks the EMR tag)."""
    template = Template.from_json(variant.cluster)
    template.has_resource_properties(
        "Custom::SubnetVpc",
        {"Action": "SubnetVpc", "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]},
    )
    template.resource_count_is("AWS::EC2::SecurityGroup", 3)
    template.all_resources_properties(
        "AWS::EC2::SecurityGroup", Match.object_like({"VpcId": {"Fn::GetAtt": ["SubnetVpc", "VpcId"]}})
    )
    template.has_resource_properties(
        "AWS::EMR::Cluster",
        {
            "Instances": Match.object_like(
                {"ServiceAccessSecurityGroup": {"Fn::GetAtt": ["EmrServiceAccessGroup", "GroupId"]}}
            )
        },
    )
    template.has_resource_properties(
        "Custom::EmrSecurityGroupRules",
        {"GroupIds": Match.array_with([{"Fn::GetAtt": ["EmrServiceAccessGroup", "GroupId"]}])},
    )
    assert "ServiceAccessSecurityGroup" in variant.cluster["Outputs"]
