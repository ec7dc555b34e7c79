"""The shared EMR definition: exact step shape, PySpark wiring, fleets, and API-valid requests."""

from __future__ import annotations

import dataclasses

import botocore.session
import pytest
from botocore.validate import ParamValidator

from blueprint import emr_spec
from blueprint.settings import Settings, SettingsError, load_settings

RESOURCES = emr_spec.ClusterResources(
    service_role="featurizer-service",
    instance_profile="featurizer-emr-instance",
    security_configuration="featurizer-security",
    log_uri="s3://logs-bucket/emr/",
    subnet_ids=("subnet-0123456789abcdef0",),
)


def run_job_flow_errors(request: dict) -> str:
    """botocore's own validation of the request against the EMR RunJobFlow input shape."""
    model = botocore.session.get_session().get_service_model("emr")
    report = ParamValidator().validate(request, model.operation_model("RunJobFlow").input_shape)
    return report.generate_report()


def test_spark_step_is_exactly_the_command_runner_argv() -> None:
    step = emr_spec.spark_step(
        name="featurize",
        zip_uri="s3://b/artifacts/job/0123456789abcdef/job.zip",
        entry_uri="s3://b/artifacts/job/0123456789abcdef/entrypoint.py",
        job_args=["--input", "s3://b/raw/it's here/", "--output", "s3://b/results/r1/"],
    )
    assert step == {
        "Name": "featurize",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit", "--deploy-mode", "cluster", "--conf", "spark.yarn.maxAppAttempts=1",
                "--py-files", "s3://b/artifacts/job/0123456789abcdef/job.zip",
                "s3://b/artifacts/job/0123456789abcdef/entrypoint.py",
                "--input", "s3://b/raw/it's here/", "--output", "s3://b/results/r1/",
            ],
        },
    }  # fmt: skip
    terminate = emr_spec.spark_step(
        name="n", zip_uri="z", entry_uri="e", job_args=(), action_on_failure="CANCEL_AND_WAIT"
    )
    assert terminate["ActionOnFailure"] == "CANCEL_AND_WAIT"


def test_pyspark_uses_the_bootstrap_venv_and_the_udf_settings() -> None:
    configs = {c["Classification"]: c for c in emr_spec.configurations(Settings(venv_path="/opt/x/venv"))}
    exports = configs["spark-env"]["Configurations"][0]
    assert exports["Classification"] == "export"
    assert exports["Properties"]["PYSPARK_PYTHON"] == "/opt/x/venv/bin/python"
    defaults = configs["spark-defaults"]["Properties"]
    assert defaults["spark.pyspark.python"] == "/opt/x/venv/bin/python"
    assert "spark.python.worker.reuse" not in defaults  # the job sets it where the cluster does not (one place)
    assert defaults["spark.sql.execution.arrow.maxRecordsPerBatch"] == "64"
    assert all(isinstance(v, str) for v in defaults.values())


def test_drivers_stay_on_core_nodes() -> None:
    """YARN node labels: application masters (the driver, in cluster mode) only on CORE nodes, never spot tasks."""
    configs = {c["Classification"]: c for c in emr_spec.configurations(Settings())}
    assert configs["yarn-site"]["Properties"] == {
        "yarn.node-labels.enabled": "true",
        "yarn.node-labels.am.default-node-label-expression": "CORE",
    }


def test_spark_defaults_size_memory_for_the_model_and_set_fault_handling() -> None:
    defaults = {c["Classification"]: c for c in emr_spec.configurations(Settings())}["spark-defaults"]["Properties"]
    # m5.xlarge (YARN 12288 MiB) with the tf profile: see blueprint.settings.spark_memory's docstring.
    assert {k: v for k, v in defaults.items() if k.startswith(("spark.executor.", "spark.driver."))} == {
        "spark.executor.cores": "2",
        "spark.executor.memory": "1664m",
        "spark.executor.memoryOverhead": "4480m",
        "spark.driver.cores": "2",
        "spark.driver.memory": "3200m",
        "spark.driver.memoryOverhead": "2944m",
    }
    assert "spark.executor.pyspark.memory" not in defaults  # RLIMIT_AS would break TensorFlow (see docstring)
    assert defaults["spark.task.maxFailures"] == "4"
    assert defaults["spark.excludeOnFailure.enabled"] == "true"
    assert defaults["spark.excludeOnFailure.timeout"] == "15min"
    assert defaults["spark.stage.maxConsecutiveAttempts"] == "4"
    # Spark on YARN decommissions executors only without the external shuffle service (SPARK-39018),
    # which EMR runs for dynamic allocation: the setting would be a no-op there, so it is left out.
    assert not [k for k in defaults if k.startswith(("spark.decommission.", "spark.storage.decommission."))]


def test_spark_memory_follows_the_profile_and_the_fleets() -> None:
    onnx = load_settings({"bootstrap_profile": "onnx", "weights_s3_uri": "s3://bkt/m.onnx", "weights_sha256": "0" * 64})
    props = {c["Classification"]: c for c in emr_spec.configurations(onnx)}["spark-defaults"]["Properties"]
    assert (props["spark.executor.memory"], props["spark.executor.memoryOverhead"]) == ("2944m", "3200m")
    big = load_settings({"core_instance_type": "m5.2xlarge", "task_instance_types": "m5.2xlarge,r5.2xlarge"})
    props = {c["Classification"]: c for c in emr_spec.configurations(big)}["spark-defaults"]["Properties"]
    assert props["spark.executor.cores"] == "4"  # 8 vCPU / 2 executors per node


def test_applications_include_notebook_endpoints() -> None:
    assert [a["Name"] for a in emr_spec.applications(Settings())] == [
        "Hadoop",
        "Spark",
        "Livy",
        "JupyterEnterpriseGateway",
    ]


def test_task_fleet_is_spot_and_its_timeout_never_exceeds_the_on_demand_cap() -> None:
    fleets = {f["InstanceFleetType"]: f for f in emr_spec.instance_fleets(Settings())}
    assert fleets["MASTER"]["TargetOnDemandCapacity"] == 1 and fleets["MASTER"]["TargetSpotCapacity"] == 0
    assert fleets["CORE"]["TargetOnDemandCapacity"] == 2 and fleets["CORE"]["TargetSpotCapacity"] == 0
    task = fleets["TASK"]
    assert (task["TargetOnDemandCapacity"], task["TargetSpotCapacity"]) == (0, 2)
    assert [t["InstanceType"] for t in task["InstanceTypeConfigs"]] == ["m5.xlarge", "m5a.xlarge", "m6i.xlarge"]
    spot = task["LaunchSpecifications"]["SpotSpecification"]
    # Defaults: 2 core on demand = the on-demand cap, so a switch of the 2 spot task nodes would make 4.
    assert spot["TimeoutAction"] == "TERMINATE_CLUSTER" and spot["TimeoutDurationMinutes"] == 10
    with pytest.raises(SettingsError, match=r"spot_timeout_action.*above scaling_max_on_demand_units=2"):
        load_settings({"spot_timeout_action": "SWITCH_TO_ON_DEMAND"})
    # With room under the cap for every initial spot unit, the fallback is allowed.
    fits = load_settings({"spot_timeout_action": "SWITCH_TO_ON_DEMAND", "scaling_max_on_demand_units": 4})
    task = emr_spec.instance_fleets(fits)[-1]
    assert task["LaunchSpecifications"]["SpotSpecification"]["TimeoutAction"] == "SWITCH_TO_ON_DEMAND"
    core_plus_task = sum(
        f["TargetOnDemandCapacity"] + f["TargetSpotCapacity"] for f in emr_spec.instance_fleets(fits)[1:]
    )
    assert core_plus_task <= emr_spec.managed_scaling_policy(fits)["ComputeLimits"]["MaximumOnDemandCapacityUnits"]


def test_on_demand_tasks_and_no_tasks() -> None:
    on_demand = Settings(task_spot=False, scaling_max_on_demand_units=10)
    task = emr_spec.instance_fleets(on_demand)[-1]
    assert (task["TargetOnDemandCapacity"], task["TargetSpotCapacity"]) == (2, 0)
    assert "LaunchSpecifications" not in task
    assert [f["InstanceFleetType"] for f in emr_spec.instance_fleets(Settings(task_instance_count=0))] == [
        "MASTER",
        "CORE",
    ]


def test_policies_follow_settings() -> None:
    s = load_settings({"idle_timeout_seconds": 900, "scaling_max_units": 20})
    assert emr_spec.auto_termination_policy(s) == {"IdleTimeout": 900}
    limits = emr_spec.managed_scaling_policy(s)["ComputeLimits"]
    assert limits["UnitType"] == "InstanceFleetUnits"
    assert (limits["MinimumCapacityUnits"], limits["MaximumCapacityUnits"]) == (2, 20)
    assert limits["MaximumOnDemandCapacityUnits"] == 2 and limits["MaximumCoreCapacityUnits"] == 2


def test_bootstrap_args_stage_weights_only_when_configured() -> None:
    plain = emr_spec.bootstrap_args(Settings(), "s3://b/req.txt", "s3://b/artifacts/wheelhouse/tf/0123456789abcdef")
    assert plain == [
        "--venv", "/opt/featurizer/venv",
        "--python", "python3.11",
        "--profile", "tf",
        "--requirements", "s3://b/req.txt",
        "--wheelhouse", "s3://b/artifacts/wheelhouse/tf/0123456789abcdef",
    ]  # fmt: skip
    online = emr_spec.bootstrap_args(Settings(offline_bootstrap=False), "s3://b/req.txt")
    assert online == plain[:-2]  # pip from the public index: the nodes need internet
    with pytest.raises(ValueError, match="no wheelhouse URI"):
        emr_spec.bootstrap_args(Settings(), "s3://b/req.txt")
    sha = "ab" * 32
    staged = emr_spec.bootstrap_args(Settings(weights_s3_uri="s3://bkt/w/m.h5", weights_sha256=sha), "r", "w")
    assert staged[-6:] == [
        "--weights-uri",
        "s3://bkt/w/m.h5",
        "--weights-sha256",
        sha,
        "--weights-dir",
        "/opt/featurizer/weights",
    ]


def test_security_configuration_nests_encryption_and_requires_imdsv2() -> None:
    config = emr_spec.security_configuration(Settings(), "arn:aws:kms:eu-west-1:111122223333:key/k")
    encryption = config["EncryptionConfiguration"]
    assert encryption["EnableAtRestEncryption"] is True and encryption["EnableInTransitEncryption"] is False
    at_rest = encryption["AtRestEncryptionConfiguration"]
    assert at_rest["S3EncryptionConfiguration"] == {
        "EncryptionMode": "SSE-KMS",
        "AwsKmsKey": "arn:aws:kms:eu-west-1:111122223333:key/k",
    }
    assert at_rest["LocalDiskEncryptionConfiguration"]["EncryptionKeyProviderType"] == "AwsKms"
    assert config["InstanceMetadataServiceConfiguration"]["MinimumInstanceMetadataServiceVersion"] == 2
    tls = emr_spec.security_configuration(Settings(tls_certificate_s3_uri="s3://certs-bkt/emr/certs.zip"), "k")
    assert tls["EncryptionConfiguration"]["EnableInTransitEncryption"] is True
    assert tls["EncryptionConfiguration"]["InTransitEncryptionConfiguration"]["TLSCertificateConfiguration"] == {
        "CertificateProviderType": "PEM",
        "S3Object": "s3://certs-bkt/emr/certs.zip",
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"task_instance_count": 0},
        {"task_spot": False, "scaling_max_on_demand_units": 10, "ec2_key_name": "ops"},
        {"weights_s3_uri": "s3://bkt/w/m.h5", "weights_sha256": "0" * 64},
    ],
)
def test_run_job_flow_request_is_valid_for_the_emr_api(overrides: dict[str, object]) -> None:
    settings = load_settings(overrides)
    step = emr_spec.spark_step(name="s", zip_uri="s3://b/z.zip", entry_uri="s3://b/e.py", job_args=["--input", "x"])
    request = emr_spec.run_job_flow_request(
        settings,
        resources=RESOURCES,
        bootstrap_script_uri="s3://b/artifacts/bootstrap/0123456789abcdef/install.sh",
        requirements_uri="s3://b/artifacts/bootstrap/0123456789abcdef/requirements.txt",
        wheelhouse_uri="s3://b/artifacts/wheelhouse/tf/0123456789abcdef",
        steps=[step],
        keep_alive=False,
    )
    assert run_job_flow_errors(request) == ""
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert request["Tags"][0] == {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
    assert request["VisibleToAllUsers"] is True


def test_validator_catches_a_wrong_shape() -> None:
    """Guards the test above: a CloudFormation-shaped configuration is not valid for the API."""
    request = emr_spec.run_job_flow_request(
        Settings(), resources=RESOURCES, bootstrap_script_uri="s3://b/i.sh", requirements_uri="s3://b/r.txt",
        wheelhouse_uri="s3://b/w",
    )  # fmt: skip
    request["Configurations"] = emr_spec.to_cloudformation_configurations(request["Configurations"])
    assert "ConfigurationProperties" in run_job_flow_errors(request)


def test_cloudformation_translation() -> None:
    configs = emr_spec.to_cloudformation_configurations(emr_spec.configurations(Settings()))
    assert configs[0] == {
        "Classification": "spark-env",
        "Configurations": [
            {
                "Classification": "export",
                "ConfigurationProperties": {
                    "PYSPARK_PYTHON": "/opt/featurizer/venv/bin/python",
                    "PYSPARK_DRIVER_PYTHON": "/opt/featurizer/venv/bin/python",
                },
            }
        ],
    }
    instances = emr_spec.to_cloudformation_instances(
        emr_spec.job_flow_instances(Settings(), ["subnet-1"], keep_alive=True)
    )
    assert set(instances) == {
        "MasterInstanceFleet", "CoreInstanceFleet", "TaskInstanceFleets",
        "KeepJobFlowAliveWhenNoSteps", "TerminationProtected", "Ec2SubnetIds",
    }  # fmt: skip
    assert "InstanceFleetType" not in instances["MasterInstanceFleet"]
    assert instances["TaskInstanceFleets"][0]["Name"] == "Task"


def test_security_groups_go_into_the_instances() -> None:
    groups = emr_spec.SecurityGroups(primary="sg-0aaa", core_task="sg-0bbb")
    instances = emr_spec.job_flow_instances(Settings(), ["subnet-1"], keep_alive=True, security_groups=groups)
    assert instances["EmrManagedMasterSecurityGroup"] == "sg-0aaa"
    assert instances["EmrManagedSlaveSecurityGroup"] == "sg-0bbb"
    assert "ServiceAccessSecurityGroup" not in instances  # refused by EMR in public subnets
    private = emr_spec.SecurityGroups(primary="sg-0aaa", core_task="sg-0bbb", service_access="sg-0ccc")
    instances = emr_spec.job_flow_instances(Settings(), ["subnet-1"], keep_alive=True, security_groups=private)
    assert instances["ServiceAccessSecurityGroup"] == "sg-0ccc"
    assert "EmrManagedMasterSecurityGroup" not in emr_spec.job_flow_instances(Settings(), [], keep_alive=True)
    resources = dataclasses.replace(RESOURCES, security_groups=private)
    request = emr_spec.run_job_flow_request(
        Settings(), resources=resources, bootstrap_script_uri="s3://b/i.sh", requirements_uri="s3://b/r.txt",
        wheelhouse_uri="s3://b/w",
    )  # fmt: skip
    assert run_job_flow_errors(request) == ""
    assert request["Instances"]["ServiceAccessSecurityGroup"] == "sg-0ccc"


def test_cluster_generation_names_the_cluster() -> None:
    request = emr_spec.run_job_flow_request(
        load_settings({"cluster_generation": 3}), resources=RESOURCES, bootstrap_script_uri="s3://b/i.sh",
        requirements_uri="s3://b/r.txt", wheelhouse_uri="s3://b/w",
    )  # fmt: skip
    assert request["Name"] == "featurizer-g3"
    assert Settings().cluster_name == "featurizer"


def test_the_job_plans_featurize_partitions_for_the_largest_cluster_managed_scaling_allows() -> None:
    """With dynamic allocation, few executors exist at planning time: the cluster's maximum must reach the job."""
    from job.session import task_slots

    settings = load_settings({"scaling_max_units": 10})
    defaults = next(c for c in emr_spec.configurations(settings) if c["Classification"] == "spark-defaults")
    conf = {**defaults["Properties"], "spark.dynamicAllocation.enabled": "true"}  # EMR's own default
    slots = task_slots(conf, default_parallelism=2)
    executor_cores = int(conf["spark.executor.cores"])
    assert conf["spark.dynamicAllocation.maxExecutors"] == "20"  # 10 nodes x 2 executors
    assert slots.slots == 20 * executor_cores and slots.source.startswith("spark.dynamicAllocation.maxExecutors")
