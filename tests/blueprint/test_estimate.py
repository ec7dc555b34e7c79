"""The cost estimate's arithmetic, its shapes and its recorded tables (issue 13 §3)."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest

from bench import throughput as bench_throughput
from blueprint import emr_spec
from blueprint import estimate as est
from blueprint.settings import INSTANCE_TYPES, load_settings, spark_memory

ROUND = est.ThroughputTable(
    machine="test",
    measured="today",
    source="test",
    vcpu_note="test",
    engines=types.MappingProxyType({"tf": est.Throughput("tf", 0.02, 20.0, "test")}),
)


def shape(core: int = 2, tasks: int = 2, spot: bool = True) -> est.ClusterShape:
    fleets = [est.Fleet("core", ("m5.xlarge",), core)]
    if tasks:
        fleets.append(est.Fleet("task", ("m5.xlarge",), tasks, spot))
    return est.ClusterShape("m5.xlarge", tuple(fleets), "test", 10)


def test_time_and_cost_are_the_documented_arithmetic() -> None:
    prices = est.PriceTable.load()
    result = est.estimate(700_000, "tf", shape(), ROUND, prices, startup_minutes=0, spot_fraction=0.5)
    # 4 m5.xlarge executor nodes x 2 executors x 2 cores, less the driver's 2: 14 slots.
    assert result.slots == 14
    assert result.job_seconds == pytest.approx(20 + 700_000 * 0.02 / 14)  # 1020 s
    hours = 1020 / 3600
    node = prices.of("m5.xlarge")
    assert result.on_demand_usd == pytest.approx(5 * (node.ec2_per_hour + node.emr_per_hour) * hours)
    spot_task = node.ec2_per_hour * 0.5 + node.emr_per_hour
    assert result.configured_usd == pytest.approx((3 * (node.ec2_per_hour + node.emr_per_hour) + 2 * spot_task) * hours)
    assert result.configured_usd < result.on_demand_usd


def test_startup_is_billed_on_every_node() -> None:
    prices = est.PriceTable.load()
    without = est.estimate(1000, "tf", shape(), ROUND, prices, startup_minutes=0)
    with_startup = est.estimate(1000, "tf", shape(), ROUND, prices, startup_minutes=12)
    assert with_startup.cluster_seconds - without.cluster_seconds == pytest.approx(720)
    node = prices.of("m5.xlarge")
    extra = 5 * (node.ec2_per_hour + node.emr_per_hour) * 720 / 3600
    assert with_startup.on_demand_usd - without.on_demand_usd == pytest.approx(extra)


def test_slots_follow_the_clusters_own_executor_sizing() -> None:
    settings = load_settings()
    memory = spark_memory(settings)
    slots, _ = est.executor_slots(est.ClusterShape.from_settings(settings), settings.bootstrap_profile)
    nodes = settings.core_instance_count + settings.task_instance_count
    assert slots == nodes * 2 * memory.executor_cores - memory.driver_cores


def test_bigger_nodes_give_more_slots_and_more_nodes_less_time() -> None:
    prices = est.PriceTable.load()
    big = est.ClusterShape("m5.xlarge", (est.Fleet("core", ("m5.4xlarge",), 2),), "test")
    assert est.executor_slots(big, "tf")[0] == 2 * 2 * 8 - 8  # 16 vCPUs: two executors of 8 cores
    few = est.estimate(10**6, "tf", shape(tasks=2), ROUND, prices, startup_minutes=10)
    many = est.estimate(10**6, "tf", shape(tasks=8), ROUND, prices, startup_minutes=10)
    assert many.job_seconds < few.job_seconds


def test_fleets_are_priced_at_their_most_expensive_type() -> None:
    prices = est.PriceTable.load()
    mixed = est.ClusterShape(
        "m5.xlarge",
        (est.Fleet("core", ("m5.xlarge",), 1), est.Fleet("task", ("m5a.xlarge", "m6i.xlarge"), 2, True)),
        "test",
    )
    task = next(n for n in est.estimate(1000, "tf", mixed, ROUND, prices, startup_minutes=0).nodes if n.role == "task")
    assert task.instance_type == "m6i.xlarge"  # $0.192 + $0.048 against m5a's $0.172 + $0.043


@pytest.mark.parametrize(
    ("images", "engine", "cluster", "fragment"),
    [
        (0, "tf", shape(), "at least 1"),
        (10, "onnx", shape(), "no measured throughput for engine 'onnx'"),
        (10, "gpu", shape(), "unknown engine"),
        (10, "tf", shape(core=0, tasks=2), "at least one core node"),
        (
            10,
            "tf",
            est.ClusterShape("m5.xlarge", (est.Fleet("core", ("m5.large",), 2),), "test"),
            "no executor sizing figures for m5.large",
        ),
        (
            10,
            "tf",
            est.ClusterShape("m5.xlarge", (est.Fleet("core", ("c5.xlarge",), 2),), "test"),
            "too small for one tf Python worker",
        ),
    ],
)
def test_impossible_estimates_say_why(images: int, engine: str, cluster: est.ClusterShape, fragment: str) -> None:
    with pytest.raises(est.EstimateError, match=fragment):
        est.estimate(images, engine, cluster, ROUND, est.PriceTable.load(), startup_minutes=0)


def test_the_stack_template_declares_the_settings_shape() -> None:
    """The template path reads what infra/cluster.py declares (the same emr_spec functions)."""
    settings = load_settings()
    instances = emr_spec.to_cloudformation_instances(emr_spec.job_flow_instances(settings, (), keep_alive=True))
    template = {
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket"},
            "Cluster": {
                "Type": "AWS::EMR::Cluster",
                "Properties": {
                    "Instances": instances,
                    "ManagedScalingPolicy": emr_spec.managed_scaling_policy(settings),
                },
            },
        }
    }
    from_template = est.ClusterShape.from_template(template, "s")
    from_settings = est.ClusterShape.from_settings(settings)
    assert dataclasses.replace(from_template, source="") == dataclasses.replace(from_settings, source="")
    with pytest.raises(est.EstimateError, match="expected one AWS::EMR::Cluster"):
        est.ClusterShape.from_template({"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}, "s")


def test_overrides_and_scaling() -> None:
    base = shape(core=2, tasks=2)
    scaled = est.override(base, scaled=True)
    assert [(f.role, f.count) for f in scaled.fleets] == [("core", 2), ("task", 8)]  # max 10 units
    assert not est.override(base, spot=False).fleets[1].spot
    assert est.override(base, task_count=0).fleets == (est.Fleet("core", ("m5.xlarge",), 2),)
    added = est.override(shape(tasks=0), task_types=("m5a.xlarge",), task_count=3)
    assert added.fleets[1] == est.Fleet("task", ("m5a.xlarge",), 3, True)
    with pytest.raises(est.EstimateError, match="no task fleet"):
        est.override(shape(tasks=0), task_count=3)
    with pytest.raises(est.EstimateError, match="either --scaled or --task-count"):
        est.override(base, scaled=True, task_count=1)


def test_report_labels_an_estimate_and_shows_the_arithmetic_on_request() -> None:
    result = est.estimate(5000, "tf", shape(), ROUND, est.PriceTable.load(), startup_minutes=10)
    short = est.report(result, shape(), verbose=False)
    assert short[0].startswith("ESTIMATE (not a quote)")
    assert any(line.strip().startswith("with spot:") for line in short)
    assert not any("How it was computed" in line for line in short)
    long = est.report(result, shape(), verbose=True)
    assert "  " + result.arithmetic[0] in long and any("executor slots = 4 nodes" in line for line in long)


def test_duration_text_rounds_up() -> None:
    assert [est.duration_text(s) for s in (0.2, 59.1, 60, 61, 3599, 3600, 3661)] == [
        "1 s",
        "1 min",
        "1 min",
        "2 min",
        "1 h 00 min",
        "1 h 00 min",
        "1 h 02 min",
    ]


def test_recorded_tables_cover_the_clusters_types_and_the_bench() -> None:
    prices = est.PriceTable.load()
    assert set(INSTANCE_TYPES) <= set(prices.prices), "every sizable type needs a list price"
    assert prices.date and prices.source and 0 < prices.spot_fraction <= 1
    table = est.ThroughputTable.load()
    assert set(table.engines) == set(est.ENGINES)
    # The committed table is exactly what bench/throughput.py derives from the committed bench results.
    derived = bench_throughput.record(json.loads(bench_throughput.RESULTS.read_text()))
    assert json.loads(est.THROUGHPUT_JSON.read_text()) == derived
