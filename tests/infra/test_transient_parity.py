"""A transient cluster (`featurizer cluster up --transient --stack`) is the stack's cluster, run once.

Both requests come from `blueprint.emr_spec`; this compares what actually reaches each API: the synthesized
`AWS::EMR::Cluster` and the launcher's `run_job_flow` arguments, key by key, so a policy or setting
dropped on either side (auto-termination, security configuration, ...) fails here.
"""

from __future__ import annotations

from typing import Any

from blueprint import emr_spec
from blueprint.settings import load_settings
from launcher import cluster as clusters
from launcher import deploy as deploying

from .conftest import Synth, resources

SAME_VALUES = (
    "ReleaseLabel",
    "Applications",
    "AutoTerminationPolicy",
    "ManagedScalingPolicy",
    "EbsRootVolumeSize",
    "VisibleToAllUsers",
    "Tags",
)
FLEETS = ("MasterInstanceFleet", "CoreInstanceFleet", "TaskInstanceFleets")


def _transient() -> dict[str, Any]:
    step = emr_spec.spark_step(name="s", zip_uri="s3://b/z.zip", entry_uri="s3://b/e.py", job_args=["--input", "x"])
    roles = clusters.Roles("stack-service-role", "stack-instance-profile", "stack-security-configuration")
    return clusters.transient_request(
        load_settings(), bucket="b", bootstrap=deploying.bootstrap_artifacts(), step=step,
        log_uri="s3://logs/emr/", roles=roles, wheelhouse_uri="s3://b/artifacts/wheelhouse/tf/0123456789abcdef",
        security_groups=emr_spec.SecurityGroups("sg-primary", "sg-core-task"),
    )  # fmt: skip


def test_transient_request_carries_every_policy_of_the_stacks_cluster(default_synth: Synth) -> None:
    [cluster] = resources(default_synth.cluster, "AWS::EMR::Cluster")
    stack: dict[str, Any] = cluster["Properties"]
    request = _transient()
    for key in SAME_VALUES:
        assert key in stack and key in request, key
        assert request[key] == stack[key], key
    assert emr_spec.to_cloudformation_configurations(request["Configurations"]) == stack["Configurations"]
    fleets = emr_spec.to_cloudformation_instances(request["Instances"])
    assert {k: fleets.get(k) for k in FLEETS} == {k: stack["Instances"].get(k) for k in FLEETS}
    # Names differ (tokens in the template, the stack's outputs for the launcher); presence may not.
    for key in ("SecurityConfiguration", "ServiceRole", "JobFlowRole", "LogUri"):
        assert stack.get(key) and request.get(key), key
    for key in ("EmrManagedMasterSecurityGroup", "EmrManagedSlaveSecurityGroup"):
        assert stack["Instances"].get(key) and request["Instances"].get(key), key
    assert request["SecurityConfiguration"] == "stack-security-configuration"
    [stack_action] = stack["BootstrapActions"]
    [request_action] = request["BootstrapActions"]
    assert request_action["Name"] == stack_action["Name"]
    assert len(request_action["ScriptBootstrapAction"]["Args"]) == len(stack_action["ScriptBootstrapAction"]["Args"])
    # The one intended difference: the transient cluster ends with its step.
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert stack["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
