"""The synthesized default app: every property issue 3 asks for, read from the real templates."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from blueprint import artifacts, emr_spec
from blueprint.package import build_package
from blueprint.settings import Settings
from infra.cluster import console_run
from job.config import from_argv
from launcher.submit import job_parser_complaint
from tests.infra.cfn import LOGS_BUCKET, PROJECT_BUCKET, cfn_lint, flat
from tests.infra.conftest import Synth, resources

SETTINGS = Settings()
BOOTSTRAP = f"s3://{PROJECT_BUCKET}/" + artifacts.bootstrap_prefix(artifacts.bootstrap_digest())


@pytest.fixture(scope="module")
def storage(default_synth: Synth) -> Template:
    return Template.from_json(default_synth.storage)


@pytest.fixture(scope="module")
def cluster(default_synth: Synth) -> Template:
    return Template.from_json(default_synth.cluster)


@pytest.fixture(scope="module")
def emr_cluster(default_synth: Synth) -> dict[str, Any]:
    (only,) = resources(default_synth.cluster, "AWS::EMR::Cluster")
    return only


# --- storage -------------------------------------------------------------------------------------


def test_buckets_block_public_access_and_are_encrypted(storage: Template) -> None:
    storage.resource_count_is("AWS::S3::Bucket", 2)
    block_all = {k: True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")}
    storage.all_resources_properties(
        "AWS::S3::Bucket", Match.object_like({"PublicAccessBlockConfiguration": block_all})
    )
    storage.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.object_like(
                {"Fn::Join": ["", ["featurizer-project-", Match.any_value(), "-", Match.any_value()]]}
            ),
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": Match.any_value(),
                        },
                    }
                ]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": Match.string_like_regexp("LogsBucket")},
                "LogFilePrefix": "s3-access/project/",
            },
            "LifecycleConfiguration": {
                "Rules": [Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 30}})]
            },
        },
    )
    storage.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "LifecycleConfiguration": {"Rules": [Match.object_like({"ExpirationInDays": 90, "Status": "Enabled"})]},
        },
    )


def test_bucket_policies_deny_plain_http(storage: Template) -> None:
    storage.resource_count_is("AWS::S3::BucketPolicy", 2)
    deny_http = Match.object_like(
        {"Effect": "Deny", "Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    )
    storage.all_resources_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": Match.object_like({"Statement": Match.array_with([deny_http])}),
            "Bucket": Match.any_value(),
        },
    )


def test_data_is_retained_by_default(default_synth: Synth) -> None:
    kept = resources(default_synth.storage, "AWS::S3::Bucket") + resources(default_synth.storage, "AWS::KMS::Key")
    assert len(kept) == 3
    assert all(r["DeletionPolicy"] == "Retain" and r["UpdateReplacePolicy"] == "Retain" for r in kept)
    assert not [r for r in default_synth.storage["Resources"].values() if "AutoDeleteObjects" in r["Type"]]


def test_data_key_rotates(storage: Template) -> None:
    storage.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    storage.has_output("DataKeyArn", {"Export": {"Name": "featurizer:data-key-arn"}})


# --- cluster -------------------------------------------------------------------------------------


def test_cluster_core_properties(cluster: Template) -> None:
    cluster.has_resource_properties(
        "AWS::EMR::Cluster",
        {
            "Name": "featurizer",
            "ReleaseLabel": "emr-7.14.0",
            "VisibleToAllUsers": True,
            "AutoTerminationPolicy": {"IdleTimeout": 3600},
            "ManagedScalingPolicy": {"ComputeLimits": Match.object_like({"UnitType": "InstanceFleetUnits"})},
            "Instances": Match.object_like({"KeepJobFlowAliveWhenNoSteps": True}),
            "SecurityConfiguration": {"Ref": Match.string_like_regexp("SecurityConfiguration")},
            "Tags": Match.array_with([{"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}]),
        },
    )


def test_log_uri_is_on_the_logs_bucket(emr_cluster: dict[str, Any]) -> None:
    assert flat(emr_cluster["Properties"]["LogUri"]) == f"s3://{LOGS_BUCKET}/emr/"


def test_cluster_definition_is_emr_spec(default_synth: Synth, emr_cluster: dict[str, Any]) -> None:
    """One source of truth: what CloudFormation gets is emr_spec's output, translated, nothing else."""
    props = flat(emr_cluster["Properties"])
    subnets = props["Instances"]["Ec2SubnetIds"]
    assert props["Applications"] == emr_spec.applications(SETTINGS)
    assert props["Configurations"] == emr_spec.to_cloudformation_configurations(emr_spec.configurations(SETTINGS))
    groups = emr_spec.SecurityGroups(
        props["Instances"]["EmrManagedMasterSecurityGroup"], props["Instances"]["EmrManagedSlaveSecurityGroup"]
    )
    assert props["Instances"] == emr_spec.to_cloudformation_instances(
        emr_spec.job_flow_instances(SETTINGS, subnets, keep_alive=True, security_groups=groups)
    )
    args = props["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    wheelhouse = args[args.index("--wheelhouse") + 1]
    assert props["BootstrapActions"] == [
        emr_spec.bootstrap_action(
            BOOTSTRAP + "install.sh", emr_spec.bootstrap_args(SETTINGS, BOOTSTRAP + "requirements.txt", wheelhouse)
        )
    ]
    assert props["AutoTerminationPolicy"] == emr_spec.auto_termination_policy(SETTINGS)
    assert props["ManagedScalingPolicy"] == emr_spec.managed_scaling_policy(SETTINGS)
    assert props["Tags"] == emr_spec.tags(SETTINGS)


def test_bootstrap_path_resolves_to_the_uploaded_files(default_synth: Synth, emr_cluster: dict[str, Any]) -> None:
    uploads = [flat(r["Properties"]) for r in resources(default_synth.cluster, "Custom::CDKBucketDeployment")]
    prefixes = {u["DestinationBucketKeyPrefix"]: u for u in uploads}
    bootstrap_prefix = artifacts.bootstrap_prefix(artifacts.bootstrap_digest())
    upload = prefixes[bootstrap_prefix]
    assert upload["DestinationBucketName"] == PROJECT_BUCKET
    assert upload["Prune"] is False and upload["RetainOnDelete"] is True
    path = flat(emr_cluster["Properties"]["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"])
    assert path == f"s3://{PROJECT_BUCKET}/{bootstrap_prefix}install.sh"
    # The asset CDK uploads is the bootstrap directory restricted to the shipped files.
    (asset_key,) = upload["SourceObjectKeys"]
    staged = default_synth.outdir / f"asset.{asset_key.removesuffix('.zip')}"
    assert sorted(p.name for p in staged.iterdir()) == sorted(artifacts.BOOTSTRAP_FILES)
    assert (staged / "install.sh").read_bytes() == (artifacts.BOOTSTRAP_DIR / "install.sh").read_bytes()


def test_nodes_bootstrap_offline_from_the_wheelhouse_shipped_with_the_stack(
    default_synth: Synth, emr_cluster: dict[str, Any]
) -> None:
    from blueprint import wheelhouse

    args = flat(emr_cluster["Properties"]["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"])
    uri = args[args.index("--wheelhouse") + 1]
    head = f"s3://{PROJECT_BUCKET}/{artifacts.WHEELHOUSE_PREFIX}{SETTINGS.bootstrap_profile}/"
    assert uri.startswith(head) and len(uri.removeprefix(head)) == 16
    uploads = [flat(r["Properties"]) for r in resources(default_synth.cluster, "Custom::CDKBucketDeployment")]
    [upload] = [
        u for u in uploads if u["DestinationBucketKeyPrefix"] == uri.removeprefix(f"s3://{PROJECT_BUCKET}/") + "/"
    ]
    (asset_key,) = upload["SourceObjectKeys"]
    staged = default_synth.outdir / f"asset.{asset_key.removesuffix('.zip')}"
    manifest = wheelhouse.read_manifest(staged)  # verifies every wheel's size and SHA-256
    assert manifest["profile"] == SETTINGS.bootstrap_profile
    assert (
        manifest["requirements_sha256"]
        == hashlib.sha256(
            (artifacts.BOOTSTRAP_DIR / artifacts.REQUIREMENTS_BY_PROFILE[SETTINGS.bootstrap_profile]).read_bytes()
        ).hexdigest()
    )
    assert wheelhouse.manifest_digest(staged)[:16] == uri.rsplit("/", 1)[1]


def test_cluster_waits_for_profile_policies_and_uploads(default_synth: Synth, emr_cluster: dict[str, Any]) -> None:
    types = {name: r["Type"] for name, r in default_synth.cluster["Resources"].items()}
    depends = {types[d] for d in emr_cluster["DependsOn"]}
    assert {"AWS::IAM::InstanceProfile", "AWS::IAM::Policy", "Custom::CDKBucketDeployment"} <= depends
    # The profile is named like its role (EMR requirement) and the cluster refers to it by that name.
    (profile,) = resources(default_synth.cluster, "AWS::IAM::InstanceProfile")
    assert flat(profile["Properties"]["InstanceProfileName"]) == "featurizer-emr-instance-${AWS::Region}"
    assert flat(emr_cluster["Properties"]["JobFlowRole"]) == "featurizer-emr-instance-${AWS::Region}"
    role = default_synth.cluster["Resources"][profile["Properties"]["Roles"][0]["Ref"]]
    assert flat(role["Properties"]["RoleName"]) == "featurizer-emr-instance-${AWS::Region}"


def test_service_role_uses_the_v2_policy_and_can_pass_only_the_instance_role(cluster: Template) -> None:
    cluster.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": Match.object_like(
                {"Statement": [Match.object_like({"Principal": {"Service": "elasticmapreduce.amazonaws.com"}})]}
            ),
            "ManagedPolicyArns": [
                {
                    "Fn::Join": [
                        "",
                        ["arn:", {"Ref": "AWS::Partition"}, ":iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"],
                    ]
                }
            ],
        },
    )
    cluster.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": Match.object_like(
                {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Action": "iam:PassRole",
                                    "Resource": {"Fn::GetAtt": [Match.string_like_regexp("InstanceRole"), "Arn"]},
                                    "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
                                }
                            )
                        ]
                    )
                }
            )
        },
    )


def test_instance_policy_is_scoped_to_project_prefixes(default_synth: Synth) -> None:
    policies = [
        flat(r["Properties"])
        for r in resources(default_synth.cluster, "AWS::IAM::Policy")
        if "InstancePolicy" in json.dumps(r)
    ]
    (policy,) = [p for p in policies if p["PolicyName"].startswith("InstancePolicy")]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    bucket = f"arn:${{AWS::Partition}}:s3:::{PROJECT_BUCKET}"
    logs = f"arn:${{AWS::Partition}}:s3:::{LOGS_BUCKET}"
    assert statements["ReadInputsAndArtifacts"]["Resource"] == [f"{bucket}/raw/*", f"{bucket}/artifacts/*"]
    assert statements["ReadInputsAndArtifacts"]["Action"] == "s3:GetObject"
    assert statements["WriteResults"]["Resource"] == f"{bucket}/results/*"
    # The shared model cache (job --model-cache): read, written and replaced by the nodes, nothing else.
    assert statements["ShareConvertedModels"]["Resource"] == f"{bucket}/cache/models/*"
    assert statements["ShareConvertedModels"]["Action"] == statements["WriteResults"]["Action"]
    assert statements["PushClusterLogs"] == {
        "Sid": "PushClusterLogs",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": f"{logs}/emr/*",
    }
    assert statements["ListProjectAndLogBuckets"]["Resource"] == [bucket, logs]
    assert statements["UseDataKey"]["Resource"] == "${Import:featurizer:data-key-arn}"
    for statement in statements.values():
        resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources_
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if "*" in a], statement
    assert set(statements) == {
        "ListProjectAndLogBuckets",
        "ReadInputsAndArtifacts",
        "WriteResults",
        "ShareConvertedModels",
        "PushClusterLogs",
        "UseDataKey",
    }


def test_security_configuration_contents(default_synth: Synth) -> None:
    (security,) = resources(default_synth.cluster, "AWS::EMR::SecurityConfiguration")
    config = flat(security["Properties"]["SecurityConfiguration"])
    assert config == emr_spec.security_configuration(SETTINGS, "${Import:featurizer:data-key-arn}")
    assert config["InstanceMetadataServiceConfiguration"]["MinimumInstanceMetadataServiceVersion"] == 2
    assert config["EncryptionConfiguration"]["EnableInTransitEncryption"] is False


def test_default_network_is_tagged_for_the_managed_policy(cluster: Template) -> None:
    cluster.resource_count_is("AWS::EC2::NatGateway", 0)
    cluster.resource_count_is("AWS::EC2::Subnet", 2)
    cluster.all_resources_properties(
        "AWS::EC2::Subnet",
        {
            "Tags": Match.array_with([{"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}]),
            "VpcId": Match.any_value(),
        },
    )
    cluster.has_resource_properties("AWS::EC2::FlowLog", {"LogDestinationType": "s3", "TrafficType": "REJECT"})
    cluster.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


MANAGED_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}


def test_the_vpc_itself_carries_the_managed_policy_tag(cluster: Template) -> None:
    """AmazonEMRServicePolicy_v2 creates and uses security groups only in a tagged VPC, subnets are not enough."""
    cluster.resource_count_is("AWS::EC2::VPC", 1)
    cluster.has_resource_properties("AWS::EC2::VPC", {"Tags": Match.array_with([MANAGED_TAG])})


def test_emr_managed_security_groups_are_declared_tagged_and_used(cluster: Template) -> None:
    """Declared in the stack, so EMR creates no ElasticMapReduce-* groups that would block deleting the VPC."""
    cluster.resource_count_is("AWS::EC2::SecurityGroup", 2)
    cluster.all_resources_properties(
        "AWS::EC2::SecurityGroup",
        Match.object_like(
            {"VpcId": {"Ref": Match.string_like_regexp("^Network")}, "Tags": Match.array_with([MANAGED_TAG])}
        ),
    )
    cluster.has_resource_properties(
        "AWS::EMR::Cluster",
        {
            "Instances": Match.object_like(
                {
                    "EmrManagedMasterSecurityGroup": {"Fn::GetAtt": [Match.string_like_regexp("Primary"), "GroupId"]},
                    "EmrManagedSlaveSecurityGroup": {"Fn::GetAtt": [Match.string_like_regexp("CoreTask"), "GroupId"]},
                    # Public subnets: EMR refuses a service-access group there.
                    "ServiceAccessSecurityGroup": Match.absent(),
                }
            )
        },
    )


def test_rules_emr_adds_to_the_groups_are_revoked_on_delete(default_synth: Synth, cluster: Template) -> None:
    """Delete order: the cluster, then the rule cleanup (revokes every rule), then the groups."""
    group_ids = [
        {"Fn::GetAtt": [Match.string_like_regexp("Primary"), "GroupId"]},
        {"Fn::GetAtt": [Match.string_like_regexp("CoreTask"), "GroupId"]},
    ]
    cluster.has_resource_properties(
        "Custom::EmrSecurityGroupRules",
        {
            "ServiceToken": {"Fn::GetAtt": [Match.string_like_regexp("NetworkHandler"), "Arn"]},
            "Action": "RevokeSecurityGroupRules",
            "GroupIds": group_ids,
        },
    )
    cluster.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": "emr_network.handler", "Runtime": "python3.14", "Role": Match.any_value()},
    )
    revoke = Match.object_like(
        {
            "Action": ["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"],
            "Resource": [
                {"Fn::Join": ["", Match.array_with([":security-group/", group_ids[0]])]},
                {"Fn::Join": ["", Match.array_with([":security-group/", group_ids[1]])]},
            ],
        }
    )
    cluster.has_resource_properties(
        "AWS::IAM::Policy", {"PolicyDocument": Match.object_like({"Statement": [revoke]}), "Roles": Match.any_value()}
    )
    names = {r["Type"]: name for name, r in default_synth.cluster["Resources"].items()}
    (emr_cluster,) = resources(default_synth.cluster, "AWS::EMR::Cluster")
    assert names["Custom::EmrSecurityGroupRules"] in emr_cluster["DependsOn"]


def test_outputs_publish_the_roles_and_groups_for_transient_clusters(default_synth: Synth) -> None:
    """`cluster up --transient --stack` runs with the stack's roles (they hold the data-key grants) and groups."""
    outputs = {k: v["Value"] for k, v in default_synth.cluster["Outputs"].items()}
    types = {name: r["Type"] for name, r in default_synth.cluster["Resources"].items()}
    assert types[outputs["ServiceRoleName"]["Ref"]] == "AWS::IAM::Role"
    assert types[outputs["InstanceProfileName"]["Ref"]] == "AWS::IAM::InstanceProfile"
    assert types[outputs["SecurityConfigurationName"]["Ref"]] == "AWS::EMR::SecurityConfiguration"
    assert outputs["EmrManagedMasterSecurityGroup"] == {"Fn::GetAtt": ["EmrPrimaryGroup", "GroupId"]}
    assert outputs["EmrManagedSlaveSecurityGroup"] == {"Fn::GetAtt": ["EmrCoreTaskGroup", "GroupId"]}
    assert "ServiceAccessSecurityGroup" not in outputs
    # Those roles are the ones with the data-key grants the security configuration's SSE-KMS needs.
    key_users = [
        r["Properties"]["Roles"]
        for r in resources(default_synth.cluster, "AWS::IAM::Policy")
        if any(
            "kms:GenerateDataKey" in json.dumps(st.get("Action"))
            for st in r["Properties"]["PolicyDocument"]["Statement"]
        )
    ]
    roles = {ref["Ref"] for refs in key_users for ref in refs}
    profile = next(r for r in resources(default_synth.cluster, "AWS::IAM::InstanceProfile"))
    assert outputs["ServiceRoleName"]["Ref"] in roles
    assert profile["Properties"]["Roles"][0]["Ref"] in roles


def test_first_generation_keeps_the_plain_logical_id(default_synth: Synth) -> None:
    (name,) = [k for k, r in default_synth.cluster["Resources"].items() if r["Type"] == "AWS::EMR::Cluster"]
    assert name == "Cluster"


def test_contract_outputs(default_synth: Synth, tmp_path_factory: pytest.TempPathFactory) -> None:
    outputs = {k: flat(v["Value"]) for k, v in default_synth.cluster["Outputs"].items()}
    # Every output is read by the launcher (launcher/stack.py) or by a person (the console step).
    assert set(outputs) == {
        "ProjectBucketName", "ClusterId", "ArtifactsPrefix", "ConsoleStepJson", "ConsoleStepArgs",
        "DefaultWeights", "DefaultEngine", "DefaultModelCache", "LogUri", "ServiceRoleName", "InstanceProfileName",
        "SecurityConfigurationName", "Ec2SubnetIds", "EmrManagedMasterSecurityGroup", "EmrManagedSlaveSecurityGroup",
    }  # fmt: skip
    assert outputs["ProjectBucketName"] == PROJECT_BUCKET
    assert outputs["DefaultModelCache"] == f"s3://{PROJECT_BUCKET}/cache/models/"
    assert outputs["LogUri"] == f"s3://{LOGS_BUCKET}/emr/"
    assert outputs["ClusterId"].startswith("${Cluster")
    assert outputs["ArtifactsPrefix"] == f"s3://{PROJECT_BUCKET}/artifacts/"
    package = build_package(tmp_path_factory.mktemp("package"))
    zip_key, entry_key = artifacts.job_keys(package.digest)
    step = emr_spec.spark_step(
        name="featurize",
        zip_uri=f"s3://{PROJECT_BUCKET}/{zip_key}",
        entry_uri=f"s3://{PROJECT_BUCKET}/{entry_key}",
        job_args=[
            "--input", f"s3://{PROJECT_BUCKET}/raw/", "--output", f"s3://{PROJECT_BUCKET}/results/console-run/",
            "--model-cache", f"s3://{PROJECT_BUCKET}/cache/models/",
        ],
    )  # fmt: skip
    # The shape `aws emr add-steps --steps file://...` reads: a list of CUSTOM_JAR steps.
    assert json.loads(outputs["ConsoleStepJson"]) == [emr_spec.cli_step(step)]
    assert json.loads(outputs["ConsoleStepJson"])[0]["Type"] == "CUSTOM_JAR"
    assert outputs["ConsoleStepArgs"].split(" ")[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert outputs["LogUri"] == f"s3://{LOGS_BUCKET}/emr/"
    uploads = [flat(r["Properties"]) for r in resources(default_synth.cluster, "Custom::CDKBucketDeployment")]
    assert f"artifacts/job/{package.digest}/" in {u["DestinationBucketKeyPrefix"] for u in uploads}


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(bootstrap_profile="onnx", weights_s3_uri="s3://bkt/w/m.onnx", weights_sha256="0" * 64),
        Settings(weights_s3_uri="s3://bkt/w/m.h5", weights_sha256="0" * 64),
    ],
    ids=["defaults", "onnx-staged", "tf-staged"],
)
def test_the_console_steps_arguments_pass_the_jobs_own_parser(settings: Settings) -> None:
    """The synth renders the console step without importing the job (blueprint is neutral); the job's
    parser must still accept what it rendered, for every bootstrap profile."""
    args = console_run(settings, PROJECT_BUCKET).argv()
    assert job_parser_complaint(args) is None
    cfg = from_argv(args)
    assert cfg.input == f"s3://{PROJECT_BUCKET}/raw/" and cfg.output.startswith(f"s3://{PROJECT_BUCKET}/results/")
    assert job_parser_complaint([*args, "--variance", "2"]) is not None  # the check can say no


def test_cdk_nag_reports_no_findings(default_synth: Synth) -> None:
    """Synthesis would have raised on an unacknowledged finding; the report, if any, must be clean."""
    if default_synth.report is not None:
        violations = [v for r in default_synth.report["pluginReports"] for v in r.get("violations", [])]
        assert violations == []


def test_cfn_lint_is_clean(default_synth: Synth) -> None:
    templates = sorted(default_synth.outdir.glob("*.template.json"))
    assert len(templates) == 2
    assert cfn_lint(templates) == []


def test_the_cdk_app_imports_neither_the_job_nor_the_launcher() -> None:
    """architecture: Infra never depends on Job ("synth must not import Spark or TensorFlow") nor on Launcher."""
    probe = (
        "import sys, infra.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('job', 'launcher', 'pyspark', 'tensorflow')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout
