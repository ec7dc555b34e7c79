"""Cluster stack: the EMR cluster, its roles, security configuration, bootstrap upload and outputs.

The cluster's definition (applications, configurations, fleets, policies, bootstrap arguments) comes from
``blueprint.emr_spec``, the same module the launcher uses for transient clusters; this file only wires it to
the resources CloudFormation creates. The stack outputs are the launcher's contract.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aws_cdk import Aws, CfnOutput, CfnTag, CustomResource, DefaultStackSynthesizer, Duration, Fn, Size, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_emr as emr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from blueprint import artifacts, emr_spec, run_spec
from blueprint.settings import REPO_ROOT, Settings
from infra.nag import acknowledge, finding
from infra.storage import FLOW_LOGS_PREFIX, StorageNames

EMR_LOG_PREFIX = "emr/"
JOB_BUILD_DIR = REPO_ROOT / "build" / "infra" / "job"
WHEELHOUSE_BUILD_DIR = REPO_ROOT / "build" / "infra" / "wheelhouse"
# The network custom resources' Lambda code (infra/handlers/emr_network.py, shipped as an asset).
HANDLERS_DIR = Path(__file__).resolve().parent / "handlers"
CONSOLE_INPUT = artifacts.RAW_PREFIX
CONSOLE_OUTPUT = f"{artifacts.RESULTS_PREFIX}console-run/"


def console_run(settings: Settings, bucket_name: str) -> run_spec.RunSpec:
    """The run the console step performs: raw/ to results/console-run/ with this deployment's defaults."""
    return run_spec.RunSpec(
        input=artifacts.s3_uri(bucket_name, CONSOLE_INPUT), output=artifacts.s3_uri(bucket_name, CONSOLE_OUTPUT)
    ).with_defaults(run_spec.RunDefaults.from_settings(settings, bucket=bucket_name))


# Data-key actions: explicit, so nothing is granted by wildcard.
KMS_USE = [
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:DescribeKey",
]
OBJECT_READ = ["s3:GetObject"]
OBJECT_WRITE = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
BUCKET_LIST = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]


class ClusterStack(Stack):
    """A long-lived, auto-terminating EMR cluster ready to run the featurization job."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        job_package_dir: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        names = StorageNames.for_settings(settings)
        data_key = kms.Key.from_key_arn(self, "DataKey", Fn.import_value(names.data_key_export))
        project_bucket = s3.Bucket.from_bucket_attributes(
            self, "ProjectBucket", bucket_name=names.project_bucket, encryption_key=data_key
        )
        logs_bucket = s3.Bucket.from_bucket_name(self, "LogsBucket", names.logs_bucket)
        bucket_name = project_bucket.bucket_name
        log_uri = f"s3://{logs_bucket.bucket_name}/{EMR_LOG_PREFIX}"

        if settings.subnet_ids:
            subnet_ids = list(settings.subnet_ids)
            vpc_id = self._subnet_vpc(subnet_ids)
        else:
            vpc_id, subnet_ids = self._network(logs_bucket)
        security_groups, security_group_cleanup = self._security_groups(settings, vpc_id)
        service_role, instance_profile, policies = self._roles(settings, project_bucket, logs_bucket, data_key)
        security = emr.CfnSecurityConfiguration(
            self,
            "SecurityConfiguration",
            security_configuration=emr_spec.security_configuration(settings, data_key.key_arn),
        )

        digest = artifacts.bootstrap_digest()
        bootstrap_files = s3deploy.BucketDeployment(
            self,
            "BootstrapFiles",
            sources=[
                s3deploy.Source.asset(
                    str(artifacts.BOOTSTRAP_DIR),
                    exclude=["*", *(f"!{name}" for name in artifacts.BOOTSTRAP_FILES)],
                )
            ],
            destination_bucket=project_bucket,
            destination_key_prefix=artifacts.bootstrap_prefix(digest),
            # Content-addressed keys: older versions stay for clusters that still reference them.
            prune=False,
            retain_on_delete=True,
        )
        script_uri = artifacts.s3_uri(bucket_name, artifacts.bootstrap_script_key(digest))
        requirements_uri = artifacts.s3_uri(bucket_name, artifacts.requirements_key(digest, settings.bootstrap_profile))
        wheelhouse_uri, wheelhouse = (
            self._wheelhouse(settings, project_bucket) if settings.offline_bootstrap else (None, None)
        )

        self.cluster = emr.CfnCluster(
            self,
            # A new generation is a new logical id (and name): CloudFormation replaces the cluster, which is
            # how an auto-terminated one comes back (an unchanged deploy does nothing, updates fail on it).
            "Cluster" if settings.cluster_generation == 1 else f"ClusterGen{settings.cluster_generation}",
            name=settings.cluster_name,
            release_label=settings.release_label,
            # Filled from emr_spec below; the key name is also typed here because cdk-nag (EMR6) reads it here.
            instances=emr.CfnCluster.JobFlowInstancesConfigProperty(ec2_key_name=settings.ec2_key_name),
            security_configuration=security.ref,
            service_role=service_role.role_name,
            # The name, not a Ref: hence the explicit dependency below (the known CfnCluster race).
            job_flow_role=instance_profile.instance_profile_name,
            log_uri=log_uri,
            visible_to_all_users=True,
            ebs_root_volume_size=settings.ebs_root_volume_size_gb,
            tags=[CfnTag(key=tag["Key"], value=tag["Value"]) for tag in emr_spec.tags(settings)],
        )
        # The cluster definition shared with the launcher, inserted verbatim: emr_spec speaks the EMR API's
        # PascalCase, which CDK's typed Python props (snake_case structs) would not accept as is.
        shared = {
            "Applications": emr_spec.applications(settings),
            "Configurations": emr_spec.to_cloudformation_configurations(emr_spec.configurations(settings)),
            "Instances": emr_spec.to_cloudformation_instances(
                emr_spec.job_flow_instances(settings, subnet_ids, keep_alive=True, security_groups=security_groups)
            ),
            "BootstrapActions": [
                emr_spec.bootstrap_action(
                    script_uri, emr_spec.bootstrap_args(settings, requirements_uri, wheelhouse_uri)
                )
            ],
            "AutoTerminationPolicy": emr_spec.auto_termination_policy(settings),
            "ManagedScalingPolicy": emr_spec.managed_scaling_policy(settings),
        }
        for name, value in shared.items():
            self.cluster.add_property_override(name, value)
        # CloudFormation cannot infer these: EMR would start before the instance profile, the roles'
        # policies or the bootstrap script exist, and the nodes would fail to bootstrap.
        self.cluster.add_resource_dependency(instance_profile)
        for policy in policies:
            self.cluster.node.add_dependency(policy)
        self.cluster.node.add_dependency(bootstrap_files)
        if wheelhouse is not None:
            self.cluster.node.add_dependency(wheelhouse)
        # Deleted before the rule cleanup runs, which runs before the groups are deleted.
        self.cluster.node.add_dependency(security_group_cleanup)
        self._acknowledge_cluster(settings)

        step = self._console_step(settings, project_bucket, job_package_dir)
        self._acknowledge_deployment_handler(project_bucket)
        self._outputs(
            settings=settings,
            project_bucket=project_bucket,
            logs_bucket=logs_bucket,
            script_uri=script_uri,
            step=step,
            log_uri=log_uri,
            service_role=service_role,
            instance_profile=instance_profile,
            security=security,
            subnet_ids=subnet_ids,
            security_groups=security_groups,
        )

    def _network(self, logs_bucket: s3.IBucket) -> tuple[str, list[str]]:
        """A small VPC when no subnet is configured: public subnets, no NAT cost. Returns (VPC id, subnet ids)."""
        vpc = ec2.Vpc(
            self,
            "Network",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_s3(logs_bucket, FLOW_LOGS_PREFIX),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        # AmazonEMRServicePolicy_v2 acts only on a VPC, subnets and security groups carrying the managed-policy
        # tag (the VPC's tag is what lets it create and use security groups there): Tags.of tags the VPC
        # itself and everything in it.
        Tags.of(vpc).add(emr_spec.MANAGED_POLICY_TAG["Key"], emr_spec.MANAGED_POLICY_TAG["Value"])
        return vpc.vpc_id, [subnet.subnet_id for subnet in vpc.public_subnets]

    def _network_function(self) -> lambda_.Function:
        """The Lambda behind the network custom resources (infra/handlers/emr_network.py), created once."""
        existing = self.node.try_find_child("NetworkHandler")
        if isinstance(existing, lambda_.Function):
            return existing
        function = lambda_.Function(
            self,
            "NetworkHandler",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="emr_network.handler",
            code=lambda_.Code.from_asset(str(HANDLERS_DIR), exclude=["__pycache__", "*.pyc"]),
            timeout=Duration.minutes(2),
            description=f"{self.settings.name_prefix}: VPC of the subnets; EMR security group rules on delete",
        )
        # Describe calls have no resource-level permissions; the revoke permissions are per group (below).
        function.add_to_role_policy(
            iam.PolicyStatement(
                sid="DescribeNetwork",
                actions=["ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:DescribeSecurityGroupRules"],
                resources=["*"],
            )
        )
        acknowledge(
            function,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "The network custom resource's Lambda writes only its own CloudWatch logs, through the AWS basic "
            "execution policy, like CDK's own deployment handlers in this stack.",
        )
        acknowledge(
            function,
            "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeSubnets, DescribeVpcs and DescribeSecurityGroupRules support no resource-level "
            "permissions; the function's only write actions (revoking rules) are granted per security group.",
        )
        return function

    def _subnet_vpc(self, subnet_ids: list[str]) -> str:
        """The VPC of the configured subnets, looked up at deploy time (fails if it or they lack the tag)."""
        lookup = CustomResource(
            self,
            "SubnetVpc",
            service_token=self._network_function().function_arn,
            resource_type="Custom::SubnetVpc",
            properties={"Action": "SubnetVpc", "SubnetIds": subnet_ids},
        )
        return lookup.get_att_string("VpcId")

    def _security_groups(self, settings: Settings, vpc_id: str) -> tuple[emr_spec.SecurityGroups, Construct]:
        """EMR-managed security groups declared in the stack, and the construct that cleans them up on delete.

        Without them EMR creates ElasticMapReduce-master/-slave groups in the VPC, outside CloudFormation;
        their rules reference each other, so `cdk destroy` cannot delete the VPC (DependencyViolation).
        EMR still adds its cross-referencing rules to these groups at launch: the returned custom resource
        revokes every rule on delete, after the cluster (which depends on it) is gone and before the
        groups are deleted. The groups carry the managed-policy tag, without which
        AmazonEMRServicePolicy_v2 cannot add those rules.
        """
        tag = emr_spec.MANAGED_POLICY_TAG

        def group(construct_id: str, name: str, role: str) -> ec2.CfnSecurityGroup:
            return ec2.CfnSecurityGroup(
                self,
                construct_id,
                group_description=f"{settings.name_prefix}: EMR-managed {role}; EMR adds its rules at launch",
                vpc_id=vpc_id,
                tags=[
                    CfnTag(key=tag["Key"], value=tag["Value"]),
                    CfnTag(key="Name", value=f"{settings.name_prefix}-emr-{name}"),
                ],
            )

        groups = [
            group("EmrPrimaryGroup", "primary", "primary node"),
            group("EmrCoreTaskGroup", "core-task", "core and task nodes"),
        ]
        if settings.private_subnets:  # EMR requires it in private subnets and refuses it in public ones
            groups.append(group("EmrServiceAccessGroup", "service-access", "service access (private subnets)"))
        function = self._network_function()
        revoke = iam.Policy(
            self,
            "RevokeSecurityGroupRulesPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="RevokeEmrGroupRules",
                    actions=["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"],
                    resources=[
                        f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:security-group/{g.attr_group_id}"
                        for g in groups
                    ],
                )
            ],
            roles=[function.role] if function.role else [],
        )
        cleanup = CustomResource(
            self,
            "SecurityGroupRules",
            service_token=function.function_arn,
            resource_type="Custom::EmrSecurityGroupRules",
            properties={"Action": "RevokeSecurityGroupRules", "GroupIds": [g.attr_group_id for g in groups]},
        )
        # A separate policy the function itself does not wait for: the groups may depend on the function
        # (their VPC id comes from SubnetVpc with existing subnets), so their ARNs cannot be in its role's
        # default policy. The cleanup must still hold the grant when it runs, on delete.
        cleanup.node.add_dependency(revoke)
        service = groups[2].attr_group_id if len(groups) > 2 else None
        return emr_spec.SecurityGroups(groups[0].attr_group_id, groups[1].attr_group_id, service), cleanup

    def _roles(
        self, settings: Settings, project_bucket: s3.IBucket, logs_bucket: s3.IBucket, data_key: kms.IKey
    ) -> tuple[iam.Role, iam.CfnInstanceProfile, list[Construct]]:
        """Service role (AWS managed v2 policy + PassRole), a least-privilege instance profile, their policies."""
        service_role = iam.Role(
            self,
            "ServiceRole",
            assumed_by=iam.ServicePrincipal(
                "elasticmapreduce.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:elasticmapreduce:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"
                    },
                },
            ),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonEMRServicePolicy_v2")],
            description=f"{settings.name_prefix}: EMR service role",
        )
        acknowledge(
            service_role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2]",
            "AmazonEMRServicePolicy_v2 is the AWS-maintained EMR service policy; it only acts on resources "
            "tagged for-use-with-amazon-emr-managed-policies and tracks EMR's needs better than a copy would.",
        )

        # EMR requires the instance profile to have the same name as its role.
        role_name = f"{settings.name_prefix}-emr-instance-{Aws.REGION}"
        instance_role = iam.Role(
            self,
            "InstanceRole",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"{settings.name_prefix}: EMR cluster nodes (project bucket prefixes, logs, data key)",
        )
        bucket_arn = project_bucket.bucket_arn
        raw, artifact_objects = f"{bucket_arn}/{artifacts.RAW_PREFIX}*", f"{bucket_arn}/{artifacts.ARTIFACTS_PREFIX}*"
        results, emr_logs = f"{bucket_arn}/{artifacts.RESULTS_PREFIX}*", f"{logs_bucket.bucket_arn}/{EMR_LOG_PREFIX}*"
        model_cache = f"{bucket_arn}/{artifacts.MODEL_CACHE_PREFIX}*"
        statements = [
            iam.PolicyStatement(sid="ListProjectAndLogBuckets", actions=BUCKET_LIST,
                                resources=[bucket_arn, logs_bucket.bucket_arn]),
            iam.PolicyStatement(sid="ReadInputsAndArtifacts", actions=OBJECT_READ, resources=[raw, artifact_objects]),
            iam.PolicyStatement(sid="WriteResults", actions=OBJECT_WRITE, resources=[results]),
            iam.PolicyStatement(sid="ShareConvertedModels", actions=OBJECT_WRITE, resources=[model_cache]),
            iam.PolicyStatement(sid="PushClusterLogs", actions=["s3:PutObject"], resources=[emr_logs]),
            iam.PolicyStatement(sid="UseDataKey", actions=KMS_USE, resources=[data_key.key_arn]),
        ]  # fmt: skip
        external = [uri for uri in (settings.weights_s3_uri, settings.tls_certificate_s3_uri) if uri]
        if external:
            statements.append(
                iam.PolicyStatement(
                    sid="ReadStagedObjects",
                    actions=OBJECT_READ,
                    resources=[f"arn:{Aws.PARTITION}:s3:::{uri.removeprefix('s3://')}" for uri in external],
                )
            )
        policy = iam.Policy(self, "InstancePolicy", statements=statements, roles=[instance_role])
        prefix_reasons = {
            raw: "Nodes read input images under raw/; image keys are user-chosen, so the prefix is the scope.",
            artifact_objects: "Nodes read the job zip, entry point, bootstrap files and weights under artifacts/, "
            "whose keys carry content digests unknown until deploy time.",
            results: "The job writes, renames (copy + delete) and reads back its outputs under results/<run>/; "
            "run names are chosen per submission.",
            model_cache: "Runs keep converted and quantized ONNX models under cache/models/<digest>.onnx (job "
            "--model-cache); the digests depend on the weights and calibration images of each run.",
            emr_logs: "EMR's log pusher uploads step, container and node logs under emr/<cluster-id>/ of the "
            "logs bucket; cluster ids are generated at launch.",
        }
        for resource, reason in prefix_reasons.items():
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{finding(policy, resource)}]", reason)
        instance_profile = iam.CfnInstanceProfile(
            self, "InstanceProfile", roles=[instance_role.role_name], instance_profile_name=role_name
        )

        service_role.add_to_policy(
            iam.PolicyStatement(
                sid="PassInstanceRole",
                actions=["iam:PassRole"],
                resources=[instance_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            )
        )
        # Local-disk (EBS) encryption: EMR attaches volumes encrypted with the data key for the nodes.
        service_role.add_to_policy(
            iam.PolicyStatement(sid="UseDataKeyForVolumes", actions=KMS_USE, resources=[data_key.key_arn])
        )
        service_role.add_to_policy(
            iam.PolicyStatement(
                sid="GrantDataKeyToEbs",
                actions=["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
                resources=[data_key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
        return service_role, instance_profile, [policy, service_role.node.find_child("DefaultPolicy")]

    def _acknowledge_cluster(self, settings: Settings) -> None:
        """cdk-nag EMR findings that are either a checker limitation or a deliberate choice."""
        checker_gap = (
            "cdk-nag reads EnableAtRestEncryption/EnableInTransitEncryption at the top level of the security "
            "configuration, but EMR nests them under EncryptionConfiguration, where this stack sets them "
            "(asserted in tests/infra)."
        )
        acknowledge(
            self.cluster,
            "AwsSolutions-EMR4",
            f"Local disk encryption is on (AwsKms, data key, EBS too). {checker_gap}",
        )
        transit = (
            f"In-transit TLS is on with the PEM certificates at {settings.tls_certificate_s3_uri}. {checker_gap}"
            if settings.tls_certificate_s3_uri
            else "In-transit TLS needs certificates the deployer owns; set the tls_certificate_s3_uri setting "
            "to enable it. Traffic stays inside the cluster's VPC and S3 access is TLS-only (bucket policy)."
        )
        acknowledge(self.cluster, "AwsSolutions-EMR5", transit)
        if not settings.ec2_key_name:
            acknowledge(
                self.cluster,
                "AwsSolutions-EMR6",
                "No SSH by default: jobs are submitted as EMR steps and notebooks attach through EMR "
                "Studio. Set ec2_key_name to allow key-pair SSH.",
            )

    def _acknowledge_deployment_handler(self, project_bucket: s3.IBucket) -> None:
        """Findings on the Lambda that CDK's BucketDeployment generates (one per stack, not our code)."""
        handlers = [c for c in self.node.children if c.node.id.startswith("Custom::CDKBucketDeployment")]
        generated = "CDK's BucketDeployment handler (generated, not configurable)"
        reasons = {
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]":
                f"{generated} only writes its own CloudWatch logs through the AWS basic execution policy.",
            "AwsSolutions-L1": f"{generated}: aws-cdk-lib pins its Python runtime; it runs only during deploys.",
        }  # fmt: skip
        copy_actions = ["s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*"]
        for action in copy_actions:
            reasons[f"AwsSolutions-IAM5[Action::{action}]"] = (
                f"{generated}: CDK's grantRead/grantReadWrite action set, limited to the CDK asset bucket "
                "and the project bucket."
            )
        for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
            reasons[f"AwsSolutions-IAM5[Action::{action}]"] = (
                f"{generated}: writes into the project bucket, which is encrypted with the data key only."
            )
        qualifier = DefaultStackSynthesizer.DEFAULT_QUALIFIER
        assets = f"arn:{Aws.PARTITION}:s3:::cdk-{qualifier}-assets-{self.account}-{self.region}/*"
        reasons[f"AwsSolutions-IAM5[Resource::{finding(self, assets)}]"] = (
            f"{generated}: reads the uploaded asset zips from the CDK bootstrap bucket."
        )
        for handler in handlers:
            project_objects = finding(handler, f"{project_bucket.bucket_arn}/*")
            reasons[f"AwsSolutions-IAM5[Resource::{project_objects}]"] = (
                f"{generated}: copies bootstrap and job files to content-addressed keys under artifacts/."
            )
            for rule, reason in reasons.items():
                acknowledge(handler, rule, reason)

    def _wheelhouse(self, settings: Settings, project_bucket: s3.IBucket) -> tuple[str, Construct]:
        """Build the nodes' wheels at synth time (cached per lock) and ship them beside the bootstrap.

        Needs PyPI where `cdk synth` runs, never on the nodes: the bootstrap installs with --no-index.
        Content-addressed by the manifest digest, like every other artifact.
        """
        from blueprint import wheelhouse

        folder = wheelhouse.build(settings.bootstrap_profile, WHEELHOUSE_BUILD_DIR / settings.bootstrap_profile)
        prefix = artifacts.wheelhouse_prefix(settings.bootstrap_profile, wheelhouse.manifest_digest(folder)[:16])
        deployment = s3deploy.BucketDeployment(
            self,
            "Wheelhouse",
            sources=[s3deploy.Source.asset(str(folder))],
            destination_bucket=project_bucket,
            destination_key_prefix=prefix,
            prune=False,
            retain_on_delete=True,
            # The tf wheelhouse is ~480 MB: the handler unpacks it in /tmp before the upload.
            memory_limit=2048,
            ephemeral_storage_size=Size.gibibytes(4),
        )
        return artifacts.s3_uri(project_bucket.bucket_name, prefix.rstrip("/")), deployment

    def _console_step(
        self, settings: Settings, project_bucket: s3.IBucket, job_package_dir: Path | None
    ) -> dict[str, Any]:
        """Upload the job package to its content-addressed keys and build the step a user pastes."""
        from blueprint.package import build_package  # the launcher's packager: one zip format for both paths

        out_dir = job_package_dir or JOB_BUILD_DIR
        package = build_package(out_dir / "build")
        staging = out_dir / package.digest
        staging.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package.zip_path, staging / "job.zip")
        shutil.copyfile(package.entry_path, staging / "entrypoint.py")
        zip_key, entry_key = artifacts.job_keys(package.digest)
        s3deploy.BucketDeployment(
            self,
            "JobPackage",
            sources=[s3deploy.Source.asset(str(staging))],
            destination_bucket=project_bucket,
            destination_key_prefix=zip_key.rsplit("/", 1)[0] + "/",
            prune=False,
            retain_on_delete=True,
        )
        bucket_name = project_bucket.bucket_name
        return emr_spec.spark_step(
            name="featurize",
            zip_uri=artifacts.s3_uri(bucket_name, zip_key),
            entry_uri=artifacts.s3_uri(bucket_name, entry_key),
            job_args=console_run(settings, bucket_name).argv(),
        )

    def _outputs(
        self,
        *,
        settings: Settings,
        project_bucket: s3.IBucket,
        logs_bucket: s3.IBucket,
        script_uri: str,
        step: dict[str, Any],
        log_uri: str,
        service_role: iam.Role,
        instance_profile: iam.CfnInstanceProfile,
        security: emr.CfnSecurityConfiguration,
        subnet_ids: list[str],
        security_groups: emr_spec.SecurityGroups,
    ) -> None:
        """The launcher's contract (first six keys) plus what a transient cluster needs."""
        bucket_name = project_bucket.bucket_name
        outputs = {
            "ProjectBucketName": (bucket_name, "Project bucket (raw/, results/, artifacts/)"),
            "ClusterId": (self.cluster.ref, "EMR cluster id (j-...)"),
            "ArtifactsPrefix": (artifacts.s3_uri(bucket_name, artifacts.ARTIFACTS_PREFIX), "Artifacts prefix"),
            "ConsoleStepJson": (
                self.to_json_string([emr_spec.cli_step(step)]),
                "Steps file for aws emr add-steps --steps",
            ),
            "ConsoleStepArgs": (
                Fn.join(" ", step["HadoopJarStep"]["Args"]),
                "Console 'Add step' > Custom JAR: JAR command-runner.jar, these arguments",
            ),
            "LogUri": (log_uri, "EMR log location"),
            **{
                key: (value, f"{key.removeprefix('Default')} a run uses unless it names one (empty: the job's)")
                for key, value in run_spec.RunDefaults.from_settings(settings, bucket=bucket_name).outputs().items()
            },
            "ServiceRoleName": (service_role.role_name, "EMR service role"),
            "InstanceProfileName": (instance_profile.ref, "EMR EC2 instance profile"),
            "SecurityConfigurationName": (security.ref, "EMR security configuration"),
            "Ec2SubnetIds": (Fn.join(",", subnet_ids), "Subnets the cluster may use"),
            "EmrManagedMasterSecurityGroup": (security_groups.primary, "EMR-managed security group, primary node"),
            "EmrManagedSlaveSecurityGroup": (security_groups.core_task, "EMR-managed security group, core/task"),
        }
        if security_groups.service_access is not None:
            outputs["ServiceAccessSecurityGroup"] = (
                security_groups.service_access,
                "EMR-managed service-access security group (private subnets)",
            )
        for key, (value, description) in outputs.items():
            CfnOutput(self, key, value=value, description=description)
