"""What a run will cost before it is started: cluster time, nodes and dollars, with the arithmetic shown.

An estimate, not a quote. It combines three recorded tables, each with its date and source:

- ``throughput.json``: per-vCPU job throughput per engine, derived by ``bench/throughput.py`` from the
  bench's own end-to-end runs (``bench/results.json``) on the machine named there;
- ``prices.json``: on-demand EC2 and EMR list prices of the instance types the cluster may use, and the
  assumed spot price as a fraction of on-demand;
- the cluster's shape: the deployment settings (``cdk.json``), a deployed stack's template, or options.

The time model is the bench's linear fit, ``wall = fixed + N * vcpu_seconds_per_image / vcpus``: every
executor slot runs one task with one inference thread, exactly the bench's layout per vCPU (2 x 1 on 2
vCPUs), and the fit's slope holds every stage that grows with N (decode, inference, PCA, write).
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blueprint.errors import SettingsError, SpecError
from blueprint.settings import EXECUTORS_PER_NODE, INSTANCE_TYPES, Settings, executor_sizing

HERE = Path(__file__).resolve().parent
THROUGHPUT_JSON = HERE / "throughput.json"
PRICES_JSON = HERE / "prices.json"
ENGINES = ("tf", "onnx", "onnx-int8")


class EstimateError(SpecError):
    """An estimate cannot be made as asked (an unknown instance type or engine, no nodes...)."""


@dataclass(frozen=True)
class Fleet:
    """Core or task nodes: the types the fleet may launch, how many, and whether they are spot."""

    role: str
    instance_types: tuple[str, ...]
    count: int
    spot: bool = False


@dataclass(frozen=True)
class ClusterShape:
    """The nodes a run uses: one primary (no executors) plus core and task fleets that run executors."""

    primary_type: str
    fleets: tuple[Fleet, ...]
    source: str
    # Managed scaling's MaximumCapacityUnits over core + task nodes (every type weighs 1 unit), if any.
    max_units: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterShape:
        """The shape ``cluster up`` and the stack create from these settings (initial capacity)."""
        fleets = [Fleet("core", (settings.core_instance_type,), settings.core_instance_count)]
        if settings.task_instance_count > 0:
            fleets.append(Fleet("task", settings.task_instance_types, settings.task_instance_count, settings.task_spot))
        return cls(settings.primary_instance_type, tuple(fleets), "settings (cdk.json)", settings.scaling_max_units)

    @classmethod
    def from_template(cls, template: Mapping[str, Any], stack: str) -> ClusterShape:
        """The shape declared by a deployed stack's ``AWS::EMR::Cluster`` (CloudFormation fleet properties)."""
        clusters = [
            r.get("Properties", {})
            for r in template.get("Resources", {}).values()
            if isinstance(r, Mapping) and r.get("Type") == "AWS::EMR::Cluster"
        ]
        if len(clusters) != 1:
            raise EstimateError(f"stack {stack}: expected one AWS::EMR::Cluster in its template, found {len(clusters)}")
        instances = clusters[0].get("Instances", {})
        primary = _fleet_types(instances.get("MasterInstanceFleet"))
        if not primary:
            raise EstimateError(
                f"stack {stack}: its cluster has no MasterInstanceFleet (instance groups are not supported)"
            )
        fleets = []
        core = instances.get("CoreInstanceFleet")
        if core:
            fleets.append(Fleet("core", _fleet_types(core), _capacity(core), spot=bool(_spot(core))))
        for task in instances.get("TaskInstanceFleets", []) or []:
            count = _capacity(task)
            if count > 0:
                fleets.append(Fleet("task", _fleet_types(task), count, spot=bool(_spot(task))))
        limits = (clusters[0].get("ManagedScalingPolicy") or {}).get("ComputeLimits") or {}
        maximum = limits.get("MaximumCapacityUnits")
        return cls(primary[0], tuple(fleets), f"stack {stack} (its template)", int(maximum) if maximum else None)


def override(
    shape: ClusterShape,
    *,
    core_type: str | None = None,
    core_count: int | None = None,
    task_types: Sequence[str] = (),
    task_count: int | None = None,
    scaled: bool = False,
    spot: bool | None = None,
) -> ClusterShape:
    """The shape with the user's changes; ``scaled``: task nodes up to managed scaling's maximum."""
    core = next((f for f in shape.fleets if f.role == "core"), None)
    task = next((f for f in shape.fleets if f.role == "task"), None)
    if core is None and not core_type:
        raise EstimateError("the cluster has no core fleet: give --core-type and --core-count")
    core = Fleet(
        "core",
        (core_type,) if core_type else core.instance_types,  # type: ignore[union-attr]
        core_count if core_count is not None else (core.count if core else 1),
    )
    if scaled:
        if task_count is not None:
            raise EstimateError("give either --scaled or --task-count, not both")
        if shape.max_units is None:
            raise EstimateError(f"{shape.source} declares no managed scaling maximum: give --task-count")
        task_count = max(shape.max_units - core.count, 0)
    types = tuple(task_types) or (task.instance_types if task else ())
    count = task_count if task_count is not None else (task.count if task else 0)
    if count and not types:
        raise EstimateError("the cluster has no task fleet: give its instance types with --task-type")
    task_spot = (task.spot if task else True) if spot is None else spot
    fleets = (core,) + ((Fleet("task", types, count, task_spot),) if count else ())
    return ClusterShape(shape.primary_type, fleets, shape.source, shape.max_units)


def _fleet_types(fleet: Mapping[str, Any] | None) -> tuple[str, ...]:
    return tuple(c["InstanceType"] for c in (fleet or {}).get("InstanceTypeConfigs", []))


def _spot(fleet: Mapping[str, Any]) -> int:
    return int(fleet.get("TargetSpotCapacity", 0) or 0)


def _capacity(fleet: Mapping[str, Any]) -> int:
    return int(fleet.get("TargetOnDemandCapacity", 0) or 0) + _spot(fleet)


@dataclass(frozen=True)
class Throughput:
    """One engine's measured cost per image and fixed time per run, from the bench's linear fit."""

    engine: str
    vcpu_seconds_per_image: float
    fixed_seconds: float
    derivation: str


@dataclass(frozen=True)
class ThroughputTable:
    """blueprint/throughput.json: per-engine figures, the machine and run they were measured on."""

    machine: str
    measured: str
    source: str
    vcpu_note: str
    engines: Mapping[str, Throughput]

    @classmethod
    def load(cls, path: Path = THROUGHPUT_JSON) -> ThroughputTable:
        data = json.loads(path.read_text())
        engines = {
            name: Throughput(name, float(e["vcpu_seconds_per_image"]), float(e["fixed_seconds"]), e["derivation"])
            for name, e in data["engines"].items()
        }
        return cls(
            data["machine"], data["measured"], data["source"], data["vcpu_note"], types.MappingProxyType(engines)
        )

    def of(self, engine: str) -> Throughput:
        if engine not in self.engines:
            raise EstimateError(f"no measured throughput for engine {engine!r}; measured: {', '.join(self.engines)}")
        return self.engines[engine]


@dataclass(frozen=True)
class Price:
    ec2_per_hour: float
    emr_per_hour: float


@dataclass(frozen=True)
class PriceTable:
    """blueprint/prices.json: list prices per instance type, with their region, date and source."""

    region: str
    date: str
    source: str
    spot_fraction: float
    spot_note: str
    prices: Mapping[str, Price]

    @classmethod
    def load(cls, path: Path = PRICES_JSON) -> PriceTable:
        data = json.loads(path.read_text())
        prices = {name: Price(float(p["ec2"]), float(p["emr"])) for name, p in data["instance_types"].items()}
        return cls(
            data["region"],
            data["date"],
            data["source"],
            float(data["spot_fraction"]),
            data["spot_note"],
            types.MappingProxyType(prices),
        )

    def of(self, instance_type: str) -> Price:
        if instance_type not in self.prices:
            raise EstimateError(
                f"no list price for {instance_type} in blueprint/prices.json; known: {', '.join(self.prices)}"
            )
        return self.prices[instance_type]


@dataclass(frozen=True)
class NodeCost:
    """One fleet's nodes, priced at the fleet's most expensive type (the estimate errs high)."""

    role: str
    instance_type: str
    count: int
    spot: bool
    vcpus: int
    price: Price


@dataclass(frozen=True)
class Estimate:
    images: int
    engine: str
    nodes: tuple[NodeCost, ...]
    slots: int
    startup_seconds: float
    job_seconds: float
    on_demand_usd: float
    configured_usd: float
    spot_fraction: float
    arithmetic: tuple[str, ...]

    @property
    def cluster_seconds(self) -> float:
        return self.startup_seconds + self.job_seconds


def executor_slots(shape: ClusterShape, engine: str) -> tuple[int, str]:
    """Concurrent tasks the cluster runs: executor cores on every core and task node, less the driver's.

    Executors are sized as the cluster's spark-defaults size them (``blueprint.settings.spark_memory``):
    EXECUTORS_PER_NODE executors of c cores per node, the driver (a YARN application master in cluster
    mode) in the place of one executor on a core node.
    """
    if not any(f.count for f in shape.fleets):
        raise EstimateError("the cluster has no core or task nodes to run executors")
    core = next((f for f in shape.fleets if f.role == "core"), None)
    if core is None or core.count < 1:
        raise EstimateError("the cluster needs at least one core node (the driver runs there)")
    fleets = {f"{f.role} fleet": f.instance_types for f in shape.fleets if f.count}
    try:
        _, _, cores = executor_sizing(fleets, "tf" if engine == "tf" else "onnx")
    except SettingsError as err:
        raise EstimateError(str(err).replace("setting ", "", 1)) from None
    nodes = sum(f.count for f in shape.fleets)
    slots = nodes * EXECUTORS_PER_NODE * cores - cores
    return slots, (
        f"executor slots = {nodes} nodes x {EXECUTORS_PER_NODE} executors x {cores} cores - {cores} (the driver's "
        f"place) = {slots}"
    )


def estimate(
    images: int,
    engine: str,
    shape: ClusterShape,
    throughput: ThroughputTable,
    prices: PriceTable,
    *,
    startup_minutes: float,
    spot_fraction: float | None = None,
) -> Estimate:
    """Time and cost of featurizing ``images`` on ``shape``: the arithmetic is kept, line by line."""
    if images < 1:
        raise EstimateError(f"--images must be at least 1, got {images}")
    if engine not in ENGINES:
        raise EstimateError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    fraction = prices.spot_fraction if spot_fraction is None else spot_fraction
    if not 0 < fraction <= 1:
        raise EstimateError(f"the spot price fraction must be in (0, 1], got {fraction}")
    rate = throughput.of(engine)
    slots, slot_line = executor_slots(shape, engine)
    job = rate.fixed_seconds + images * rate.vcpu_seconds_per_image / slots
    startup = startup_minutes * 60.0
    hours = (startup + job) / 3600.0
    nodes = [_node_cost("primary", (shape.primary_type,), 1, False, prices)]
    nodes += [_node_cost(f.role, f.instance_types, f.count, f.spot, prices) for f in shape.fleets if f.count]
    on_demand = sum(n.count * (n.price.ec2_per_hour + n.price.emr_per_hour) for n in nodes) * hours
    configured = (
        sum(n.count * (n.price.ec2_per_hour * (fraction if n.spot else 1.0) + n.price.emr_per_hour) for n in nodes)
        * hours
    )
    lines = [
        f"throughput ({engine}): {rate.vcpu_seconds_per_image:.4f} vCPU-s per image, {rate.fixed_seconds:.1f} s "
        f"fixed per run; {rate.derivation}; measured {throughput.measured} on {throughput.machine}",
        throughput.vcpu_note,
        slot_line,
        f"job = {rate.fixed_seconds:.1f} s + {images:,} images x {rate.vcpu_seconds_per_image:.4f} vCPU-s / "
        f"{slots} slots = {job:,.0f} s",
        f"cluster time = {startup:,.0f} s start-up (assumed: provisioning + bootstrap) + {job:,.0f} s = "
        f"{startup + job:,.0f} s = {hours:.3f} h (EMR and EC2 bill per second, 1 min minimum)",
    ]
    for n in nodes:
        ec2 = n.price.ec2_per_hour * (fraction if n.spot else 1.0)
        kind = f"spot at {fraction:.0%} of ${n.price.ec2_per_hour:.3f}" if n.spot else "on demand"
        lines.append(
            f"{n.role}: {n.count} x {n.instance_type} x (EC2 ${ec2:.4f} {kind} + EMR ${n.price.emr_per_hour:.3f})"
            f"/h x {hours:.3f} h = ${n.count * (ec2 + n.price.emr_per_hour) * hours:,.2f}"
        )
    lines.append(f"prices: {prices.region}, {prices.date}, {prices.source}")
    if any(n.spot for n in nodes):
        lines.append(f"spot: {prices.spot_note}")
    return Estimate(images, engine, tuple(nodes), slots, startup, job, on_demand, configured, fraction, tuple(lines))


def _node_cost(role: str, instance_types: Sequence[str], count: int, spot: bool, prices: PriceTable) -> NodeCost:
    priciest = max(instance_types, key=lambda t: prices.of(t).ec2_per_hour + prices.of(t).emr_per_hour)
    vcpus = INSTANCE_TYPES[priciest].vcpus if priciest in INSTANCE_TYPES else 0
    return NodeCost(role, priciest, count, spot, vcpus, prices.of(priciest))


def duration_text(seconds: float) -> str:
    """'1 h 05 min', '12 min', '45 s': rounded up, an estimate never looks shorter than computed."""
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = math.ceil(whole / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def report(result: Estimate, shape: ClusterShape, *, verbose: bool) -> list[str]:
    """The lines ``featurizer estimate`` prints: the figures first, labelled as an estimate."""
    spot = any(n.spot for n in result.nodes)
    out = [
        f"ESTIMATE (not a quote) for {result.images:,} images, engine {result.engine}, cluster from {shape.source}:",
        "  nodes:        "
        + ", ".join(f"{n.count} {n.role} {n.instance_type}{' (spot)' if n.spot else ''}" for n in result.nodes)
        + f"  ({sum(n.count for n in result.nodes)} nodes, {result.slots} executor slots)",
        f"  cluster time: {duration_text(result.cluster_seconds)}  (start-up {duration_text(result.startup_seconds)}"
        f" + job {duration_text(result.job_seconds)})",
        f"  on demand:    ${result.on_demand_usd:,.2f}",
    ]
    if spot:
        fraction = f"{result.spot_fraction:.0%}"
        out.append(f"  with spot:    ${result.configured_usd:,.2f}  (spot assumed at {fraction} of on-demand)")
    if verbose:
        out += ["", "How it was computed:"] + [f"  {line}" for line in result.arithmetic]
    return out
