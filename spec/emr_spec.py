"""The EMR cluster definition, in one place, for both the CDK stack and the launcher's transient clusters.

Everything returns plain dicts in the EMR API's PascalCase shape, exactly what boto3 ``run_job_flow``
takes. CloudFormation's ``AWS::EMR::Cluster`` uses the same shape except in two places, translated here
so the difference is tested rather than remembered: a configuration's properties are called
``ConfigurationProperties``, and instance fleets are split into ``MasterInstanceFleet``,
``CoreInstanceFleet`` and ``TaskInstanceFleets`` instead of one list with an ``InstanceFleetType``.

Instance *fleets*, not groups: only fleets can fall back from spot to on-demand
(``SpotSpecification.TimeoutAction = SWITCH_TO_ON_DEMAND``), mix several instance types in one spot pool
(fewer interruptions), and spread over several subnets. Managed scaling works on both.

Pure Python (no aws_cdk import): the launcher imports it without CDK installed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spec.settings import Settings

Spec = dict[str, Any]

# AmazonEMRServicePolicy_v2 only acts on resources carrying this tag.
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
APPLICATIONS = ("Hadoop", "Spark", "Livy", "JupyterEnterpriseGateway")
BOOTSTRAP_ACTION_NAME = "featurizer-python-venv"
# Settings of every step. YARN relaunches a failed application master (= the driver in cluster mode)
# once by default, which would rerun a whole featurization after any failure, even exit 2 for a bad
# argument: one attempt, and the step reports the failure.
STEP_CONF = {"spark.yarn.maxAppAttempts": "1"}


@dataclass(frozen=True)
class ClusterResources:
    """Names of what the cluster stack created, as its outputs publish them for transient clusters."""

    service_role: str
    instance_profile: str
    security_configuration: str
    log_uri: str
    subnet_ids: Sequence[str]


def applications(settings: Settings) -> list[Spec]:
    """Spark and Hadoop for the job; Livy and Jupyter Enterprise Gateway so EMR Studio notebooks attach."""
    del settings  # the same set for every deployment; the parameter keeps all builders uniform
    return [{"Name": name} for name in APPLICATIONS]


def configurations(settings: Settings) -> list[Spec]:
    """Point PySpark at the bootstrap's virtual environment and set what the featurization UDF relies on.

    Python workers are reused (the model is loaded once per worker, not per task), and Arrow batches are
    small because every row carries a whole image.
    """
    python = settings.venv_python
    return [
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [
                {
                    "Classification": "export",
                    "Properties": {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python},
                }
            ],
        },
        {
            "Classification": "spark-defaults",
            "Properties": {
                "spark.pyspark.python": python,
                "spark.pyspark.driver.python": python,
                "spark.python.worker.reuse": "true",
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.arrow_max_records_per_batch),
            },
        },
    ]


def instance_fleets(settings: Settings) -> list[Spec]:
    """Primary and core fleets on demand; the task fleet on spot with on-demand fallback (or on demand)."""
    fleets: list[Spec] = [
        _fleet("Primary", "MASTER", [settings.primary_instance_type], on_demand=1),
        _fleet("Core", "CORE", [settings.core_instance_type], on_demand=settings.core_instance_count),
    ]
    if settings.task_instance_count > 0:
        if settings.task_spot:
            task = _fleet("Task", "TASK", settings.task_instance_types, spot=settings.task_instance_count)
            task["LaunchSpecifications"] = {
                "SpotSpecification": {
                    "TimeoutDurationMinutes": settings.spot_timeout_minutes,
                    "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                    "AllocationStrategy": "price-capacity-optimized",
                }
            }
        else:
            count = settings.task_instance_count
            task = _fleet("Task", "TASK", settings.task_instance_types, on_demand=count)
        fleets.append(task)
    return fleets


def job_flow_instances(settings: Settings, subnet_ids: Sequence[str], *, keep_alive: bool) -> Spec:
    """The ``Instances`` argument of ``run_job_flow``.

    ``keep_alive`` is always explicit: with an auto-termination policy EMR needs
    ``KeepJobFlowAliveWhenNoSteps`` set, True for a long-lived cluster, False for a transient one.
    """
    instances: Spec = {
        "InstanceFleets": instance_fleets(settings),
        "KeepJobFlowAliveWhenNoSteps": keep_alive,
        "TerminationProtected": False,
    }
    if subnet_ids:
        instances["Ec2SubnetIds"] = list(subnet_ids)
    if settings.ec2_key_name:
        instances["Ec2KeyName"] = settings.ec2_key_name
    return instances


def bootstrap_action(script_uri: str, args: Sequence[str]) -> Spec:
    """A script bootstrap action; ``args`` are passed as argv, never through a shell."""
    return {"Name": BOOTSTRAP_ACTION_NAME, "ScriptBootstrapAction": {"Path": script_uri, "Args": list(args)}}


def bootstrap_args(settings: Settings, requirements_uri: str, wheelhouse_uri: str | None = None) -> list[str]:
    """Arguments of ``bootstrap/install.sh`` for these settings.

    With ``offline_bootstrap`` (the default) the nodes install from the wheelhouse under the artifacts
    prefix and never contact a package index; without it they pip-install from PyPI and need internet.
    """
    if settings.offline_bootstrap and not wheelhouse_uri:
        raise ValueError("offline_bootstrap is on but no wheelhouse URI was given (deploy the wheelhouse first)")
    args = [
        "--venv", settings.venv_path,
        "--python", settings.node_python,
        "--profile", settings.bootstrap_profile,
        "--requirements", requirements_uri,
    ]  # fmt: skip
    if settings.offline_bootstrap:
        args += ["--wheelhouse", str(wheelhouse_uri)]
    if settings.weights_s3_uri and settings.weights_sha256:
        args += [
            "--weights-uri", settings.weights_s3_uri,
            "--weights-sha256", settings.weights_sha256,
            "--weights-dir", settings.weights_dir,
        ]  # fmt: skip
    return args


def auto_termination_policy(settings: Settings) -> Spec:
    """Terminate after ``idle_timeout_seconds`` without running steps or notebooks."""
    return {"IdleTimeout": settings.idle_timeout_seconds}


def managed_scaling_policy(settings: Settings) -> Spec:
    """Scale core + task between the configured limits; on-demand is capped so growth comes from spot."""
    return {
        "ComputeLimits": {
            "UnitType": "InstanceFleetUnits",
            "MinimumCapacityUnits": settings.scaling_min_units,
            "MaximumCapacityUnits": settings.scaling_max_units,
            "MaximumOnDemandCapacityUnits": settings.scaling_max_on_demand_units,
            "MaximumCoreCapacityUnits": settings.scaling_max_core_units,
        }
    }


def tags(settings: Settings) -> list[Spec]:
    """Cluster tags: the managed-policy tag first, then the project's own tags."""
    own = sorted((k, v) for k, v in settings.tags.items() if k != MANAGED_POLICY_TAG["Key"])
    extra = [{"Key": k, "Value": v} for k, v in own]
    return [dict(MANAGED_POLICY_TAG), {"Key": "project", "Value": settings.name_prefix}, *extra]


def security_configuration(settings: Settings, kms_key_arn: str) -> Spec:
    """EMR security configuration: at-rest encryption with the rotating KMS key, IMDSv2, optional TLS."""
    encryption: Spec = {
        "EnableAtRestEncryption": True,
        "EnableInTransitEncryption": settings.tls_certificate_s3_uri is not None,
        "AtRestEncryptionConfiguration": {
            "S3EncryptionConfiguration": {"EncryptionMode": "SSE-KMS", "AwsKmsKey": kms_key_arn},
            "LocalDiskEncryptionConfiguration": {
                "EncryptionKeyProviderType": "AwsKms",
                "AwsKmsKey": kms_key_arn,
                "EnableEbsEncryption": True,
            },
        },
    }
    if settings.tls_certificate_s3_uri is not None:
        encryption["InTransitEncryptionConfiguration"] = {
            "TLSCertificateConfiguration": {
                "CertificateProviderType": "PEM",
                "S3Object": settings.tls_certificate_s3_uri,
            }
        }
    return {
        "EncryptionConfiguration": encryption,
        # Applies to the cluster's EC2 instances: user code cannot use IMDSv1 session-less credentials.
        "InstanceMetadataServiceConfiguration": {
            "MinimumInstanceMetadataServiceVersion": 2,
            "HttpPutResponseHopLimit": 1,
        },
    }


def spark_step(
    *,
    name: str,
    zip_uri: str,
    entry_uri: str,
    job_args: Sequence[str],
    action_on_failure: str = "CONTINUE",
) -> Spec:
    """An EMR step running the job with spark-submit through command-runner.jar (argv, no shell quoting).

    ``job_args`` come from ``spec.run_spec.RunSpec.argv``. The step sets what only a step can:
    cluster deploy mode (the driver in a YARN container on a core node, see the node labels in
    ``configurations``) and :data:`STEP_CONF`.
    """
    conf = [item for key, value in STEP_CONF.items() for item in ("--conf", f"{key}={value}")]
    return {
        "Name": name,
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit", "--deploy-mode", "cluster", *conf, "--py-files", zip_uri, entry_uri, *job_args,
            ],
        },
    }  # fmt: skip


def cli_step(step: Spec) -> Spec:
    """The same step in the shape `aws emr add-steps --steps file://...` reads (a CUSTOM_JAR step).

    The EMR API nests Jar/Args under HadoopJarStep; the AWS CLI's shorthand/JSON form does not.
    """
    jar = step["HadoopJarStep"]
    return {
        "Type": "CUSTOM_JAR",
        "Name": step["Name"],
        "ActionOnFailure": step["ActionOnFailure"],
        "Jar": jar["Jar"],
        "Args": list(jar["Args"]),
    }


def run_job_flow_request(
    settings: Settings,
    *,
    resources: ClusterResources,
    bootstrap_script_uri: str,
    requirements_uri: str,
    wheelhouse_uri: str | None = None,
    name: str | None = None,
    steps: Sequence[Spec] = (),
    keep_alive: bool = True,
) -> Spec:
    """Keyword arguments for boto3 ``emr.run_job_flow``: the same cluster the CDK stack declares."""
    request: Spec = {
        "Name": name or settings.name_prefix,
        "ReleaseLabel": settings.release_label,
        "LogUri": resources.log_uri,
        "Applications": applications(settings),
        "Configurations": configurations(settings),
        "Instances": job_flow_instances(settings, resources.subnet_ids, keep_alive=keep_alive),
        "BootstrapActions": [
            bootstrap_action(bootstrap_script_uri, bootstrap_args(settings, requirements_uri, wheelhouse_uri)),
        ],
        "AutoTerminationPolicy": auto_termination_policy(settings),
        "ManagedScalingPolicy": managed_scaling_policy(settings),
        "SecurityConfiguration": resources.security_configuration,
        "ServiceRole": resources.service_role,
        "JobFlowRole": resources.instance_profile,
        "VisibleToAllUsers": True,
        "EbsRootVolumeSize": settings.ebs_root_volume_size_gb,
        "Tags": tags(settings),
    }
    if steps:
        request["Steps"] = list(steps)
    return request


def to_cloudformation_configurations(configs: Sequence[Mapping[str, Any]]) -> list[Spec]:
    """API configurations -> ``AWS::EMR::Cluster`` ones (``Properties`` is ``ConfigurationProperties``)."""
    out: list[Spec] = []
    for config in configs:
        converted: Spec = {"Classification": config["Classification"]}
        if config.get("Properties"):
            converted["ConfigurationProperties"] = dict(config["Properties"])
        if config.get("Configurations"):
            converted["Configurations"] = to_cloudformation_configurations(config["Configurations"])
        out.append(converted)
    return out


def to_cloudformation_instances(instances: Mapping[str, Any]) -> Spec:
    """API ``Instances`` -> ``AWS::EMR::Cluster`` ``Instances`` (fleets keyed by role, not typed)."""
    converted = copy.deepcopy({k: v for k, v in instances.items() if k != "InstanceFleets"})
    slots = {"MASTER": "MasterInstanceFleet", "CORE": "CoreInstanceFleet"}
    for fleet in instances.get("InstanceFleets", []):
        body = copy.deepcopy({k: v for k, v in fleet.items() if k != "InstanceFleetType"})
        kind = fleet["InstanceFleetType"]
        if kind == "TASK":
            converted.setdefault("TaskInstanceFleets", []).append(body)
        else:
            converted[slots[kind]] = body
    return converted


def _fleet(name: str, kind: str, instance_types: Sequence[str], *, on_demand: int = 0, spot: int = 0) -> Spec:
    return {
        "Name": name,
        "InstanceFleetType": kind,
        "TargetOnDemandCapacity": on_demand,
        "TargetSpotCapacity": spot,
        "InstanceTypeConfigs": [{"InstanceType": t, "WeightedCapacity": 1} for t in instance_types],
    }
