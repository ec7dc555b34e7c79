"""cluster up --transient: the CDK stack's cluster definition, one step, auto-termination."""

from __future__ import annotations

from pathlib import Path

from blueprint import artifacts, emr_spec
from blueprint.package import build_package
from blueprint.settings import load_settings
from launcher import cluster as clusters
from launcher import deploy as deploying
from launcher.cli import State

from .conftest import (
    BUCKET,
    DEFAULT_ACCOUNT_ID,
    INPUT,
    LOGS_BUCKET,
    OUTPUT,
    REGION,
    FakeClock,
    Project,
    emr_backends,
    error_line,
    invoke,
    make_stack,
    stack_outputs,
)


def _up(*extra: str, obj: State | None = None):  # type: ignore[no-untyped-def]
    return invoke(
        "cluster", "up", "--transient", "--bucket", BUCKET, "--input", INPUT, "--output", OUTPUT, *extra, obj=obj
    )


def test_transient_cluster_runs_the_step_from_the_shared_definition(project: Project, tmp_path: Path) -> None:
    result = _up("--log-uri", f"s3://{LOGS_BUCKET}/emr/", "--k", "8", "-c", "release_label=emr-7.12.0")
    assert result.exit_code == 0, result.stderr
    cluster_id, step_id = result.stdout.split()
    emr = project.session.client("emr")
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert load_settings().release_label != "emr-7.12.0"
    assert cluster["ReleaseLabel"] == "emr-7.12.0"
    assert cluster["LogUri"] == f"s3://{LOGS_BUCKET}/emr/"
    assert cluster["AutoTerminate"] is True  # KeepJobFlowAliveWhenNoSteps=False: ends with its step
    assert {a["Name"] for a in cluster["Applications"]} >= {"Spark", "Hadoop"}
    digest = artifacts.bootstrap_digest()
    actions = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert [a["ScriptPath"] for a in actions] == [f"s3://{BUCKET}/artifacts/bootstrap/{digest}/install.sh"]
    assert f"s3://{BUCKET}/artifacts/bootstrap/{digest}/requirements.txt" in actions[0]["Args"]
    for name in artifacts.BOOTSTRAP_FILES:  # what the bootstrap action points at was uploaded
        assert f"artifacts/bootstrap/{digest}/{name}" in project.keys("artifacts/bootstrap/")
    package = build_package(tmp_path / "check")
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert [s["Id"] for s in steps] == [step_id]
    args = steps[0]["Config"]["Args"]
    assert args[:8] == [
        "spark-submit", "--deploy-mode", "cluster", "--conf", "spark.yarn.maxAppAttempts=1", "--py-files",
        f"s3://{BUCKET}/artifacts/job/{package.digest}/job.zip",
        f"s3://{BUCKET}/artifacts/job/{package.digest}/entrypoint.py",
    ]  # fmt: skip
    # The project bucket's shared model cache: a transient cluster's runs convert/quantize once, not per cluster.
    assert args[8:] == [
        "--input",
        INPUT,
        "--output",
        OUTPUT,
        "--k",
        "8",
        "--model-cache",
        f"s3://{BUCKET}/cache/models/",
    ]


def test_transient_with_wait_reports_the_step(project: Project) -> None:
    def on_sleep(count: int) -> None:
        for cluster in emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters.values():
            for step in cluster.steps:
                step.state = "COMPLETED"

    result = _up("--wait", obj=State(clock=FakeClock(on_sleep=on_sleep)))
    assert result.exit_code == 0, result.stderr
    assert "COMPLETED after 15s" in result.stderr


def test_every_cluster_up_is_transient_and_settings_are_checked(project: Project) -> None:
    result = invoke("cluster", "up", "--bucket", BUCKET, "--input", INPUT, "--output", OUTPUT, "--k", "8")
    assert result.exit_code == 0, result.stderr  # --transient is not a required flag
    started = project.session.client("emr").describe_cluster(ClusterId=result.stdout.split()[0])["Cluster"]
    assert started["AutoTerminate"] is True
    result = _up("-c", "core_instance_count=0")
    assert result.exit_code == 2
    assert "core_instance_count" in error_line(result)
    result = _up("-c", "nonsense")
    assert result.exit_code == 2
    assert "expected key=value" in result.stderr
    assert len(project.session.client("emr").list_clusters()["Clusters"]) == 2  # the fixture's and the first


def test_transient_cluster_checks_input_first(project: Project) -> None:
    result = invoke(
        "cluster", "up", "--transient", "--bucket", BUCKET, "--input", f"s3://{BUCKET}/empty", "--output", OUTPUT
    )
    assert result.exit_code == 2
    assert "is empty or does not exist" in error_line(result)


def test_transient_request_is_the_shared_definition_without_keep_alive() -> None:
    settings = load_settings()
    bootstrap = deploying.bootstrap_artifacts()
    step = {"Name": "s", "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": []}}
    request = clusters.transient_request(
        settings, bucket=BUCKET, bootstrap=bootstrap, step=step, log_uri="s3://l/", roles=clusters.Roles(),
        wheelhouse_uri="s3://b/artifacts/wheelhouse/tf/0123456789abcdef",
    )  # fmt: skip
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert request["Instances"]["InstanceFleets"] == emr_spec.instance_fleets(settings)
    assert request["Configurations"] == emr_spec.configurations(settings)
    assert request["ManagedScalingPolicy"] == emr_spec.managed_scaling_policy(settings)
    assert request["Steps"] == [step]
    assert (request["ServiceRole"], request["JobFlowRole"]) == ("EMR_DefaultRole", "EMR_EC2_DefaultRole")
    assert "SecurityConfiguration" not in request
    with_security = clusters.transient_request(
        settings, bucket=BUCKET, bootstrap=bootstrap, step=step, log_uri="s3://l/",
        roles=clusters.Roles(security_configuration="featurizer-sec"), wheelhouse_uri="s3://b/w",
    )  # fmt: skip
    assert with_security["SecurityConfiguration"] == "featurizer-sec"


def test_transient_cluster_of_the_onnx_profile_runs_the_onnx_engine_on_the_staged_model(project: Project) -> None:
    sha = "0" * 64
    context = ["-c", "bootstrap_profile=onnx", "-c", "weights_s3_uri=s3://proj-bucket/artifacts/weights/m.onnx"]
    result = _up(*context, "-c", f"weights_sha256={sha}")
    assert result.exit_code == 0, result.stderr
    cluster_id = result.stdout.split()[0]
    args = project.session.client("emr").list_steps(ClusterId=cluster_id)["Steps"][0]["Config"]["Args"]
    job = args[args.index("--input") :]
    assert job == [
        "--input", INPUT, "--output", OUTPUT,
        "--weights", "file:///opt/featurizer/weights/m.onnx", "--engine", "onnx",
        "--model-cache", f"s3://{BUCKET}/cache/models/",
    ]  # fmt: skip


def _stack_network(project: Project, *, tagged: bool) -> tuple[list[str], str, str]:
    """A VPC with two subnets and the two EMR-managed groups, as the cluster stack declares them."""
    ec2 = project.session.client("ec2")
    tags = [{"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}] if tagged else []
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    if tags:
        ec2.create_tags(Resources=[vpc, *subnets], Tags=tags)
    groups = [ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"] for n in ("m", "s")]
    return subnets, groups[0], groups[1]


def _stack_with_roles(project: Project, name: str, *, tagged: bool = True) -> tuple[str, str]:
    subnets, primary, core_task = _stack_network(project, tagged=tagged)
    outputs = {
        **stack_outputs(project.cluster_id),
        "ServiceRoleName": "featurizer-emr-service",
        "InstanceProfileName": "featurizer-emr-instance-profile",
        "LogUri": f"s3://{LOGS_BUCKET}/emr/",
        "Ec2SubnetIds": ",".join(subnets),
        "EmrManagedMasterSecurityGroup": primary,
        "EmrManagedSlaveSecurityGroup": core_task,
    }
    make_stack(project.session, outputs, name=name)
    return primary, core_task


def test_transient_cluster_with_stack_uses_the_stacks_roles_network_and_logs(project: Project) -> None:
    primary, core_task = _stack_with_roles(project, "with-roles")
    result = invoke(
        "cluster", "up", "--transient", "--stack", "with-roles", "--input", INPUT, "--output", OUTPUT, "--k", "8"
    )
    assert result.exit_code == 0, result.stderr
    cluster = project.session.client("emr").describe_cluster(ClusterId=result.stdout.split()[0])["Cluster"]
    assert cluster["ServiceRole"] == "featurizer-emr-service"
    attributes = cluster["Ec2InstanceAttributes"]
    assert attributes["IamInstanceProfile"] == "featurizer-emr-instance-profile"
    # The stack's groups, so EMR creates none of its own in the stack's VPC (they would block cdk destroy).
    assert (attributes["EmrManagedMasterSecurityGroup"], attributes["EmrManagedSlaveSecurityGroup"]) == (
        primary,
        core_task,
    )
    assert cluster["LogUri"] == f"s3://{LOGS_BUCKET}/emr/"
    outside = invoke(
        "cluster", "up", "--transient", "--stack", "with-roles", "--input", INPUT, "--output", f"s3://{BUCKET}/x"
    )
    assert outside.exit_code == 2
    assert "outside what the cluster's instance role may use" in error_line(outside)


def test_transient_cluster_refuses_a_vpc_without_the_managed_policy_tag(project: Project) -> None:
    _stack_with_roles(project, "untagged", tagged=False)
    result = invoke("cluster", "up", "--transient", "--stack", "untagged", "--input", INPUT, "--output", OUTPUT)
    assert result.exit_code == 2
    line = error_line(result)
    assert "lack the tag for-use-with-amazon-emr-managed-policies=true" in line and "aws ec2 create-tags" in line
    assert len(project.session.client("emr").list_clusters()["Clusters"]) == 1  # only the fixture's


def test_transient_cluster_bootstraps_offline_from_the_deployed_wheelhouse(project: Project) -> None:
    result = _up("-c", "bootstrap_profile=onnx", "-c", "weights_s3_uri=s3://proj-bucket/artifacts/weights/m.onnx",
                 "-c", f"weights_sha256={'0' * 64}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cluster_id = result.stdout.split()[0]
    [action] = project.session.client("emr").list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    args = action["Args"]
    wheelhouse = args[args.index("--wheelhouse") + 1]
    assert wheelhouse.startswith(f"s3://{BUCKET}/artifacts/wheelhouse/onnx/")
    prefix = wheelhouse.removeprefix(f"s3://{BUCKET}/") + "/"
    assert f"{prefix}manifest.json" in project.keys(prefix)
    online = _up("-c", "offline_bootstrap=false")
    assert online.exit_code == 0, online.stderr
    [action] = project.session.client("emr").list_bootstrap_actions(ClusterId=online.stdout.split()[0])[
        "BootstrapActions"
    ]
    assert "--wheelhouse" not in action["Args"]


def test_target_takes_each_field_from_the_user_then_the_stack_then_the_defaults() -> None:
    from launcher.stack import StackOutputs

    settings = load_settings()
    groups = emr_spec.SecurityGroups(primary="sg-p", core_task="sg-c")
    stack = StackOutputs(
        name="S", cluster_id="j-1", bucket=BUCKET, service_role="stack-service", instance_profile="stack-profile",
        security_configuration="stack-sc", log_uri=f"s3://{LOGS_BUCKET}/stack/", subnet_ids=("subnet-stack",),
        security_groups=groups,
    )  # fmt: skip
    bare = clusters.target_for(BUCKET, "artifacts/", clusters.Placement(), settings)
    assert bare.log_uri == f"s3://{BUCKET}/logs/"
    assert (bare.roles.service_role, bare.roles.instance_profile) == ("EMR_DefaultRole", "EMR_EC2_DefaultRole")
    assert bare.roles.security_configuration is None and bare.security_groups is None
    assert bare.subnet_ids == tuple(settings.subnet_ids)

    from_stack = clusters.target_for(BUCKET, "artifacts/", clusters.Placement(name="n"), settings, stack)
    assert from_stack.log_uri == f"s3://{LOGS_BUCKET}/stack/" and from_stack.name == "n"
    assert from_stack.roles == clusters.Roles("stack-service", "stack-profile", "stack-sc")
    assert from_stack.subnet_ids == ("subnet-stack",) and from_stack.security_groups == groups

    given = clusters.Placement(log_uri=f"s3://{LOGS_BUCKET}/mine/", service_role="mine", subnets=("subnet-other",))
    mine = clusters.target_for(BUCKET, "artifacts/", given, settings, stack)
    assert mine.log_uri == f"s3://{LOGS_BUCKET}/mine/" and mine.roles.service_role == "mine"
    assert mine.roles.instance_profile == "stack-profile"
    # Given subnets may be another VPC's: the stack's security groups do not follow them there.
    assert mine.subnet_ids == ("subnet-other",) and mine.security_groups is None
