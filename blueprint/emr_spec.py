"""The EMR cluster definition, in one place, for both the CDK stack and the launcher's transient clusters.

Everything returns plain dicts in the EMR API's PascalCase shape, exactly what boto3 ``run_job_flow``
takes. CloudFormation's ``AWS::EMR::Cluster`` uses the same shape except in two places, translated here
so the difference is tested rather than remembered: a configuration's properties are called
``ConfigurationProperties``, and instance fleets are split into ``MasterInstanceFleet``,
``CoreInstanceFleet`` and ``TaskInstanceFleets`` instead of one list with an ``InstanceFleetType``.

Instance *fleets*, not groups: only fleets can fall back from spot to on-demand
(``SpotSpecification.TimeoutAction = SWITCH_TO_ON_DEMAND``, allowed by the settings only when it stays
under the on-demand cap), mix several instance types in one spot pool (fewer interruptions), and spread
over several subnets. Managed scaling works on both.

Pure Python (no aws_cdk import): the launcher imports it without CDK installed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blueprint.settings import EXECUTORS_PER_NODE, Settings

Spec = dict[str, Any]

# AmazonEMRServicePolicy_v2 only acts on resources carrying this tag.
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
APPLICATIONS = ("Hadoop", "Spark", "Livy", "JupyterEnterpriseGateway")
BOOTSTRAP_ACTION_NAME = "featurizer-python-venv"
# Settings of every step. YARN relaunches a failed application master (= the driver in cluster mode)
# once by default, which would rerun a whole featurization after any failure, even exit 2 for a bad
# argument: one attempt, and the step reports the failure.
STEP_CONF = {"spark.yarn.maxAppAttempts": "1"}
# Fault handling, set on purpose (infra/README.md, "Faults and spot"). Spark's defaults for the two counts,
# pinned so a change of Spark or EMR default cannot change how often a failing image batch is retried.
# Executors lost with their node (spot reclaim, scale-in) do not count as task failures; EMR's own
# decommissioning handling (on by default: no new tasks on decommissioning nodes, their shuffle state
# dropped early, fetch failures from them not counted) covers spot nodes.
FAULT_CONF = {
    # A task fails the job after 4 attempts (a corrupt image is caught per row by the job, so repeated
    # task failures mean a broken node or an out-of-memory worker).
    "spark.task.maxFailures": "4",
    # Stop scheduling on an executor (1 failed attempt of a task) or node (2) that keeps failing, e.g. a
    # node whose bootstrap left a broken venv; forgiven after 15 minutes, since an elastic cluster is small
    # and a transient fault (one worker killed for memory) should not cost an executor for the whole job.
    "spark.excludeOnFailure.enabled": "true",
    "spark.excludeOnFailure.timeout": "15min",
    # A stage whose attempts keep failing (fetch failures of lost shuffle output) aborts after 4 tries.
    "spark.stage.maxConsecutiveAttempts": "4",
}


@dataclass(frozen=True)
class SecurityGroups:
    """EMR-managed security groups declared by the cluster stack (their ids, or tokens in the stack)."""

    primary: str
    core_task: str
    # Only for private subnets, where EMR requires it (and refuses it in public ones).
    service_access: str | None = None


@dataclass(frozen=True)
class ClusterResources:
    """Names of what the cluster stack created, as its outputs publish them for transient clusters."""

    service_role: str
    instance_profile: str
    security_configuration: str
    log_uri: str
    subnet_ids: Sequence[str]
    # The stack's EMR-managed security groups (outputs EmrManagedMasterSecurityGroup, ...): a cluster in the
    # stack's VPC that lacks them makes EMR create ElasticMapReduce-* groups there, which block deleting it.
    security_groups: SecurityGroups | None = None


def applications(settings: Settings) -> list[Spec]:
    """Spark and Hadoop for the job; Livy and Jupyter Enterprise Gateway so EMR Studio notebooks attach."""
    del settings  # the same set for every deployment; the parameter keeps all builders uniform
    return [{"Name": name} for name in APPLICATIONS]


def configurations(settings: Settings) -> list[Spec]:
    """Point PySpark at the bootstrap's virtual environment and set what the featurization UDF relies on.

    - Python workers are reused (the model is loaded once per worker, not per task).
    - Executor and driver memory come from ``settings.spark_memory`` (blueprint.settings.spark_memory: the
      Python workers' model copies live in memoryOverhead).
    - The session's Arrow batch (``arrow_max_records_per_batch``) is small because every row carries a
      whole image; it does not cap the featurize stage, where the job's --batch-size is the Arrow batch.
    - :data:`FAULT_CONF`: retries and exclusion of failing executors.
    - ``spark.dynamicAllocation.maxExecutors``: the executors of the largest cluster managed scaling may
      grow to (``scaling_max_units`` nodes x ``EXECUTORS_PER_NODE``). With dynamic allocation few executors
      exist when the job plans its featurize partitions; this is the size it plans for (job.session.task_slots),
      so managed scaling has tasks to scale for.
    - yarn-site: YARN node labels on, application masters (= drivers, in cluster mode) only on CORE
      nodes. EMR 6+ has labels off, so a driver could land on a spot task node and be lost with it.
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
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.arrow_max_records_per_batch),
                **settings.spark_memory.properties(),
                "spark.dynamicAllocation.maxExecutors": str(settings.scaling_max_units * EXECUTORS_PER_NODE),
                **FAULT_CONF,
            },
        },
        {
            "Classification": "yarn-site",
            "Properties": {
                "yarn.node-labels.enabled": "true",
                "yarn.node-labels.am.default-node-label-expression": "CORE",
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
                    # Applies to the initial provisioning only; Settings refuses SWITCH_TO_ON_DEMAND when
                    # it would exceed scaling_max_on_demand_units (managed scaling's resizes respect it).
                    "TimeoutAction": settings.spot_timeout_action,
                    "AllocationStrategy": "price-capacity-optimized",
                }
            }
        else:
            count = settings.task_instance_count
            task = _fleet("Task", "TASK", settings.task_instance_types, on_demand=count)
        fleets.append(task)
    return fleets


def job_flow_instances(
    settings: Settings,
    subnet_ids: Sequence[str],
    *,
    keep_alive: bool,
    security_groups: SecurityGroups | None = None,
) -> Spec:
    """The ``Instances`` argument of ``run_job_flow``.

    ``keep_alive`` is always explicit: with an auto-termination policy EMR needs
    ``KeepJobFlowAliveWhenNoSteps`` set, True for a long-lived cluster, False for a transient one.
    ``security_groups``: the stack's EMR-managed groups; without them EMR creates its own
    ElasticMapReduce-master/-slave groups in the VPC, outside CloudFormation.
    """
    instances: Spec = {
        "InstanceFleets": instance_fleets(settings),
        "KeepJobFlowAliveWhenNoSteps": keep_alive,
        "TerminationProtected": False,
    }
    if subnet_ids:
        instances["Ec2SubnetIds"] = list(subnet_ids)
    if security_groups is not None:
        instances["EmrManagedMasterSecurityGroup"] = security_groups.primary
        instances["EmrManagedSlaveSecurityGroup"] = security_groups.core_task
        if security_groups.service_access is not None:
            instances["ServiceAccessSecurityGroup"] = security_groups.service_access
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

    ``job_args`` come from ``blueprint.run_spec.RunSpec.argv``. The step sets what only a step can:
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
        "Name": name or settings.cluster_name,
        "ReleaseLabel": settings.release_label,
        "LogUri": resources.log_uri,
        "Applications": applications(settings),
        "Configurations": configurations(settings),
        "Instances": job_flow_instances(
            settings, resources.subnet_ids, keep_alive=keep_alive, security_groups=resources.security_groups
        ),
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
