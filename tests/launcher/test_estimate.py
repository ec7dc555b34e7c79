"""`featurizer estimate`: offline from the settings, or from a deployed stack's template (moto)."""

from __future__ import annotations

import json

import boto3

from blueprint import emr_spec
from blueprint.settings import load_settings
from tests.launcher.conftest import error_line, invoke


def test_estimate_from_the_settings_prints_time_nodes_and_both_costs() -> None:
    result = invoke("estimate", "--images", "1000000")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("ESTIMATE (not a quote) for 1,000,000 images, engine tf, cluster from settings (cdk.json)")
    assert "1 primary m5.xlarge, 2 core m5.xlarge, 2 task m5.xlarge (spot)" in out  # cdk.json's initial capacity
    for label in ("cluster time:", "on demand:", "with spot:"):
        assert label in out
    assert "How it was computed" not in out


def test_verbose_shows_the_arithmetic_and_json_carries_the_same_figures() -> None:
    verbose = invoke("estimate", "--images", "50000", "--engine", "onnx", "-v", "--startup-minutes", "0")
    assert verbose.exit_code == 0, verbose.stderr
    assert "executor slots = 4 nodes x 2 executors x 2 cores - 2" in verbose.stdout
    assert "prices: us-east-1" in verbose.stdout
    as_json = json.loads(
        invoke("estimate", "--images", "50000", "--engine", "onnx", "--json", "--startup-minutes", "0").stdout
    )
    assert as_json["slots"] == 14 and as_json["startup_seconds"] == 0
    assert f"${as_json['on_demand_usd']:,.2f}" in verbose.stdout


def test_more_nodes_finish_sooner_and_on_demand_tasks_cost_more() -> None:
    def figures(*extra: str) -> dict:
        result = invoke("estimate", "--images", "2000000", "--json", *extra)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    base, scaled = figures(), figures("--scaled")
    assert scaled["slots"] > base["slots"] and scaled["job_seconds"] < base["job_seconds"]
    assert [n["count"] for n in scaled["nodes"]] == [1, 2, 8]  # scaling_max_units 10 less 2 core nodes
    on_demand = figures("--on-demand-tasks")
    assert on_demand["configured_usd"] == on_demand["on_demand_usd"] > base["configured_usd"]


def test_bad_requests_are_one_line_usage_errors() -> None:
    zero = invoke("estimate", "--images", "0")
    assert zero.exit_code == 2 and "--images" in zero.stderr
    unknown = invoke("estimate", "--images", "10", "--core-type", "m5.large")
    assert unknown.exit_code == 2
    assert "no executor sizing figures for m5.large" in error_line(unknown)
    both = invoke("estimate", "--images", "10", "--scaled", "--task-count", "3")
    assert both.exit_code == 2 and "either --scaled or --task-count" in error_line(both)


def test_estimate_from_a_deployed_stack_reads_its_template(aws: boto3.Session) -> None:
    settings = load_settings(
        {
            "core_instance_count": 3,
            "task_instance_count": 4,
            "scaling_max_units": 12,
            "scaling_max_core_units": 3,
            "scaling_max_on_demand_units": 3,
        }
    )
    template = {
        "Resources": {
            "Cluster": {
                "Type": "AWS::EMR::Cluster",
                "Properties": {
                    "Name": "featurizer",
                    "ReleaseLabel": settings.release_label,
                    "JobFlowRole": "role",
                    "ServiceRole": "role",
                    "Instances": emr_spec.to_cloudformation_instances(
                        emr_spec.job_flow_instances(settings, (), keep_alive=True)
                    ),
                    "ManagedScalingPolicy": emr_spec.managed_scaling_policy(settings),
                },
            }
        }
    }
    aws.client("cloudformation").create_stack(StackName="deployed", TemplateBody=json.dumps(template))
    result = invoke("estimate", "--images", "100000", "--stack", "deployed")
    assert result.exit_code == 0, result.stderr
    assert "cluster from stack deployed (its template)" in result.stdout
    assert "3 core m5.xlarge, 4 task m5.xlarge (spot)" in result.stdout  # m5 and m6i tie as the priciest
    scaled = json.loads(invoke("estimate", "--images", "100000", "--stack", "deployed", "--scaled", "--json").stdout)
    assert [n["count"] for n in scaled["nodes"]] == [1, 3, 9]

    missing = invoke("estimate", "--images", "10", "--stack", "nope")
    assert missing.exit_code == 2 and "stack 'nope' does not exist" in error_line(missing)
