"""Storage stack: the project bucket, the logs bucket and the key that encrypts the data at rest.

Kept apart from the cluster so the cluster can be destroyed and recreated without touching data, and
so data survives ``cdk destroy`` unless ``retain_data`` is explicitly false. The cluster stack reads
the buckets by their fixed names and the key through one explicitly named export (:class:`StorageNames`)
rather than CDK's generated exports: readable names in both templates and in cdk-nag acknowledgements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from blueprint.settings import Settings
from infra.nag import acknowledge

ACCESS_LOGS_PREFIX = "s3-access/project/"
FLOW_LOGS_PREFIX = "vpc-flow-logs/"


DATA_KEY_EXPORT = "{prefix}:data-key-arn"


@dataclass(frozen=True)
class StorageNames:
    """Names both stacks derive from the settings: the buckets' own and the data key's export.

    Bucket names are fixed (prefix, account, region) so the cluster stack and the docs know them
    without cross-stack imports. Consequence: a bucket retained by ``cdk destroy`` must be emptied and
    deleted (or kept and the stack deployed under another ``name_prefix``) before deploying again.
    """

    project_bucket: str
    logs_bucket: str
    data_key_export: str

    @classmethod
    def for_settings(cls, settings: Settings) -> StorageNames:
        """``<prefix>-project-<account>-<region>`` and ``<prefix>-logs-<account>-<region>``."""
        suffix = f"{Aws.ACCOUNT_ID}-{Aws.REGION}"
        return cls(
            project_bucket=f"{settings.name_prefix}-project-{suffix}",
            logs_bucket=f"{settings.name_prefix}-logs-{suffix}",
            data_key_export=DATA_KEY_EXPORT.format(prefix=settings.name_prefix),
        )


class StorageStack(Stack):
    """Buckets and data key; the cluster stack receives them as attributes."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        names = StorageNames.for_settings(settings)
        removal = RemovalPolicy.RETAIN if settings.retain_data else RemovalPolicy.DESTROY
        delete_objects = not settings.retain_data

        self.data_key = kms.Key(
            self,
            "DataKey",
            description=f"{settings.name_prefix}: project bucket, EMRFS objects and cluster local disks",
            enable_key_rotation=True,
            removal_policy=removal,
            pending_window=Duration.days(7),
        )

        self.logs_bucket = s3.Bucket(
            self,
            "LogsBucket",
            bucket_name=names.logs_bucket,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # S3 server access logs can only be delivered to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(settings.log_retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=removal,
            auto_delete_objects=delete_objects,
        )
        self._allow_flow_log_delivery()
        acknowledge(
            self.logs_bucket,
            "AwsSolutions-S1",
            "This is the access-log target of the project bucket; logging it into itself would loop.",
        )

        self.project_bucket = s3.Bucket(
            self,
            "ProjectBucket",
            bucket_name=names.project_bucket,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.data_key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=ACCESS_LOGS_PREFIX,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(settings.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=removal,
            auto_delete_objects=delete_objects,
        )
        self._export(settings)

    def _allow_flow_log_delivery(self) -> None:
        """VPC flow logs (cluster stack) are delivered by the log service under vpc-flow-logs/ only."""
        source_account = {"aws:SourceAccount": Aws.ACCOUNT_ID}
        delivery = iam.ServicePrincipal("delivery.logs.amazonaws.com")
        self.logs_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="FlowLogDeliveryWrite",
                principals=[delivery],
                actions=["s3:PutObject"],
                resources=[self.logs_bucket.arn_for_objects(f"{FLOW_LOGS_PREFIX}AWSLogs/{Aws.ACCOUNT_ID}/*")],
                conditions={"StringEquals": {**source_account, "s3:x-amz-acl": "bucket-owner-full-control"}},
            )
        )
        self.logs_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="FlowLogDeliveryCheck",
                principals=[delivery],
                actions=["s3:GetBucketAcl", "s3:ListBucket"],
                resources=[self.logs_bucket.bucket_arn],
                conditions={"StringEquals": source_account},
            )
        )

    def _export(self, settings: Settings) -> None:
        """Only the key needs an export: its ARN holds a generated id."""
        export_name = StorageNames.for_settings(settings).data_key_export
        CfnOutput(self, "DataKeyArn", value=self.data_key.key_arn, export_name=export_name)
