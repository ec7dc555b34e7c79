"""Typed deployment settings, read from the ``context`` of the repository's ``cdk.json``.

This is the one place where the infrastructure is configured: the CDK app, the launcher (which builds a
transient cluster from the same values) and the tests all read a :class:`Settings`. The module is pure
Python on purpose: the launcher imports it on machines without aws-cdk-lib installed.

Values given with ``cdk synth -c key=value`` arrive as strings, so integers, booleans and lists are also
accepted in their string forms ("3", "true", "m5.xlarge,m5a.xlarge"); anything else fails loudly with
the name of the offending key.

It also holds the one table the executors are sized from (:data:`INSTANCE_TYPES`, :data:`PYTHON_WORKER_MB`)
and the arithmetic (:func:`spark_memory`), so a fleet that cannot hold the model fails here, at synth or
`cluster up` time, instead of as YARN-killed containers on a running cluster.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blueprint.artifacts import PROFILES
from blueprint.errors import SettingsError

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"

_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$")
_RELEASE_LABEL = re.compile(r"^emr-7\.\d+\.\d+$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/\S+$")
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/\-]+$")
_FILE_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9._-]+$")
# Graviton (arm64) families: m6g, c7gn, r6gd, x2gd, im4gn, is4gen, t4g, a1... The node lock files pin
# x86_64 wheels only (bootstrap/requirements*.txt), so these would fail to bootstrap.
_GRAVITON = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)\.")
_SPOT_TIMEOUT_ACTIONS = ("TERMINATE_CLUSTER", "SWITCH_TO_ON_DEMAND")


@dataclass(frozen=True)
class InstanceType:
    """What the executor sizing needs to know about one EC2 instance type as an EMR node."""

    vcpus: int
    memory_gib: int
    # yarn.nodemanager.resource.memory-mb that EMR sets for this type (without HBase): the memory YARN
    # hands out to containers on the node; the rest is left to the OS and the Hadoop daemons.
    yarn_memory_mb: int


# The one table of instance types the cluster's executors are sized from (core and task fleets).
# vCPU and memory: the EC2 instance type pages. yarn_memory_mb: AWS's published EMR defaults, "Task
# configuration" in the EMR Release Guide (emr-hadoop-task-config), read for m5, m5a, c5 and r5 from
# awsdocs/amazon-emr-release-guide doc_source/emr-hadoop-task-config.md (commit e107543f). m6i is not in
# that version of the page: its values are assumed equal to m5's (same vCPU and memory), not confirmed.
# A type missing here is refused for the core and task fleets: add it with AWS's figure first.
INSTANCE_TYPES: Mapping[str, InstanceType] = types.MappingProxyType(
    {
        "m5.xlarge": InstanceType(4, 16, 12288),
        "m5.2xlarge": InstanceType(8, 32, 24576),
        "m5.4xlarge": InstanceType(16, 64, 57344),
        "m5a.xlarge": InstanceType(4, 16, 12288),
        "m5a.2xlarge": InstanceType(8, 32, 24576),
        "m5a.4xlarge": InstanceType(16, 64, 57344),
        "m6i.xlarge": InstanceType(4, 16, 12288),
        "m6i.2xlarge": InstanceType(8, 32, 24576),
        "m6i.4xlarge": InstanceType(16, 64, 57344),
        "r5.xlarge": InstanceType(4, 32, 24576),
        "r5.2xlarge": InstanceType(8, 64, 57344),
        "r5.4xlarge": InstanceType(16, 128, 122880),
        "c5.xlarge": InstanceType(4, 8, 6144),
        "c5.2xlarge": InstanceType(8, 16, 12288),
        "c5.4xlarge": InstanceType(16, 32, 24576),
    }
)
# Resident memory of one Python worker with the model loaded, per bootstrap profile's engine, in MiB:
# TensorFlow ~1.7 GB, ONNX Runtime ~1.1 GB (measured on this project's machines, docs FACTS.md), rounded
# up to 128 MiB. It lives outside the JVM heap, so it must fit in spark.executor.memoryOverhead.
PYTHON_WORKER_MB: Mapping[str, int] = types.MappingProxyType({"tf": 1792, "onnx": 1152})
# Per worker on top of the model: the Arrow batch in flight, decoded pixels and the model's activations.
WORKER_HEADROOM_MB = 256
# Spark's own off-heap allowance for the JVM (netty buffers, metaspace): max(384 MiB, 10 % of the heap).
JVM_OVERHEAD_MIN_MB = 384
JVM_OVERHEAD_FACTOR = 0.10
# Two executors per node of the smallest type, so the driver (the YARN application master, on a core
# node) takes the place of one executor instead of leaving a whole node's worth of memory idle.
EXECUTORS_PER_NODE = 2
MIN_HEAP_MB = 1024
# The driver's Python process: possibly one model (weights validated or converted there) plus numpy's
# PCA decomposition of a 1280 x 1280 covariance.
DRIVER_PYTHON_EXTRA_MB = 512
# The driver lists, plans and collects small results: more heap than this is never used.
DRIVER_MAX_HEAP_MB = 4096


@dataclass(frozen=True)
class Settings:
    """Everything that differs between deployments; defaults are the values in ``cdk.json``."""

    # Naming: stacks are "<prefix>-storage" and "<prefix>-cluster"; the cluster is named "<prefix>".
    name_prefix: str = "featurizer"
    # Latest EMR 7.x: Spark 3.5.x, Amazon Linux 2023 nodes with python3.9 and python3.11.
    release_label: str = "emr-7.14.0"
    # Primary and core run on demand (HDFS and the YARN application masters live there).
    primary_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    # Task fleet: several types diversify the spot pools; 0 task instances means no task fleet.
    task_instance_types: tuple[str, ...] = ("m5.xlarge", "m5a.xlarge", "m6i.xlarge")
    task_instance_count: int = 2
    task_spot: bool = True
    # Minutes EMR waits for the initial spot task capacity; then spot_timeout_action applies.
    spot_timeout_minutes: int = 10
    # TERMINATE_CLUSTER, or SWITCH_TO_ON_DEMAND (the task nodes start on demand instead): only allowed when
    # core + task instances fit scaling_max_on_demand_units, so a fallback never exceeds the on-demand cap.
    spot_timeout_action: str = "TERMINATE_CLUSTER"
    # Managed scaling limits over core + task nodes (fleet units = instances: every type has weight 1).
    # On-demand capped at the core count, so everything managed scaling adds is spot task capacity.
    scaling_min_units: int = 2
    scaling_max_units: int = 10
    scaling_max_on_demand_units: int = 2
    scaling_max_core_units: int = 2
    # Auto-termination after this many idle seconds (EMR accepts 60 s .. 7 days).
    idle_timeout_seconds: int = 3600
    ebs_root_volume_size_gb: int = 32
    # Existing subnets (their VPC is implied); empty: the cluster stack creates a small public VPC.
    # The VPC and the subnets must carry for-use-with-amazon-emr-managed-policies=true.
    subnet_ids: tuple[str, ...] = ()
    # The existing subnets are private (no internet gateway route): the stack then also declares EMR's
    # service-access security group, which EMR requires there (and refuses in public subnets).
    private_subnets: bool = False
    # Part of the cluster's CloudFormation logical id and name: increment it (-c cluster_generation=2) to
    # get a new cluster after the previous one auto-terminated (CloudFormation still thinks it exists).
    cluster_generation: int = 1
    ec2_key_name: str | None = None
    # S3 URI of a zip of PEM files; when set, in-transit TLS is enabled in the security configuration.
    tls_certificate_s3_uri: str | None = None
    # Model weights staged on every node by the bootstrap action, verified against the SHA-256.
    weights_s3_uri: str | None = None
    weights_sha256: str | None = None
    weights_dir: str = "/opt/featurizer/weights"
    # Bootstrap: isolated virtual environment built with this interpreter; profile tf or onnx.
    venv_path: str = "/opt/featurizer/venv"
    node_python: str = "python3.11"
    bootstrap_profile: str = "tf"
    # Nodes install from a hash-checked wheelhouse under artifacts/wheelhouse/ (built by the CDK app and
    # `featurizer deploy`), so they need no internet; false: pip from PyPI (the nodes need a NAT route).
    offline_bootstrap: bool = True
    # The session's spark.sql.execution.arrow.maxRecordsPerBatch (Spark's default is 10000, and rows carry
    # whole images). It does not cap the featurize stage: there the job's --batch-size is the Arrow batch.
    arrow_max_records_per_batch: int = 64
    # Buckets survive `cdk destroy` unless this is explicitly false.
    retain_data: bool = True
    # Lifecycle: logs expire after this many days; overwritten or deleted data versions too.
    log_retention_days: int = 90
    noncurrent_version_days: int = 30
    # Extra tags on every resource (the EMR managed-policy tag is always added).
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._validate()

    @property
    def storage_stack_name(self) -> str:
        """The stack holding the buckets and the data key."""
        return f"{self.name_prefix}-storage"

    @property
    def cluster_stack_name(self) -> str:
        """The stack the launcher's ``--stack`` names: it carries the contract outputs."""
        return f"{self.name_prefix}-cluster"

    @property
    def cluster_name(self) -> str:
        """The EMR cluster's name: the prefix, with the generation from the second one on."""
        if self.cluster_generation == 1:
            return self.name_prefix
        return f"{self.name_prefix}-g{self.cluster_generation}"

    @property
    def spark_memory(self) -> SparkMemory:
        """Executor and driver sizes for these fleets and this profile (see :func:`spark_memory`)."""
        return spark_memory(self)

    @property
    def venv_python(self) -> str:
        """The interpreter PySpark must use on every node."""
        return f"{self.venv_path}/bin/python"

    @property
    def weights_local_path(self) -> str | None:
        """Where the bootstrap stages the weights file on every node, or None when none is staged."""
        if self.weights_s3_uri is None:
            return None
        return f"{self.weights_dir}/{self.weights_s3_uri.rsplit('/', 1)[-1]}"

    @classmethod
    def from_context(cls, ctx: Mapping[str, object]) -> Settings:
        """Build settings from a CDK context mapping; unknown keys starting with "@" or "aws:" are CDK's."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values: dict[str, object] = {}
        unknown = sorted(k for k in ctx if k not in known and not k.startswith(("@", "aws:", "aws-cdk:")))
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        for name in known:
            if name in ctx:
                values[name] = _coerce(name, ctx[name], hints[name])
        return cls(**values)  # type: ignore[arg-type]

    def _validate(self) -> None:
        def fail(key: str, why: str) -> typing.NoReturn:
            raise SettingsError(f"setting {key!r}={getattr(self, key)!r}: {why}")

        if not _NAME_PREFIX.match(self.name_prefix):
            fail("name_prefix", "use 2-24 lowercase letters, digits or '-', starting with a letter")
        if not _RELEASE_LABEL.match(self.release_label):
            fail("release_label", "expected emr-7.x.y (Spark 3.5 with python3.11 on the nodes)")
        for key in ("primary_instance_type", "core_instance_type"):
            if not _INSTANCE_TYPE.match(getattr(self, key)):
                fail(key, "not an EC2 instance type such as m5.xlarge")
        if not self.task_instance_types or not all(_INSTANCE_TYPE.match(t) for t in self.task_instance_types):
            fail("task_instance_types", "give one to 5 EC2 instance types such as m5.xlarge")
        if len(self.task_instance_types) > 5:
            fail("task_instance_types", "EMR allows at most 5 instance types per fleet through this API")
        for key in ("primary_instance_type", "core_instance_type", "task_instance_types"):
            value = getattr(self, key)
            graviton = [t for t in (value if isinstance(value, tuple) else (value,)) if _GRAVITON.match(t)]
            if graviton:
                fail(
                    key,
                    f"{', '.join(graviton)} is Graviton (arm64); the node lock files pin x86_64 wheels only, "
                    "so use x86_64 types until an aarch64 lock exists",
                )
        if not 1 <= self.cluster_generation <= 999:
            fail("cluster_generation", "must be within 1..999")
        if self.private_subnets and not self.subnet_ids:
            fail("private_subnets", "only applies to existing subnets (subnet_ids); the stack's own VPC is public")
        if self.core_instance_count < 1:
            fail("core_instance_count", "at least one core node is needed (HDFS, application masters)")
        if self.task_instance_count < 0:
            fail("task_instance_count", "must be >= 0")
        if not 5 <= self.spot_timeout_minutes <= 1440:
            fail("spot_timeout_minutes", "EMR accepts 5..1440")
        if not 60 <= self.idle_timeout_seconds <= 604800:
            fail("idle_timeout_seconds", "EMR accepts 60..604800 seconds")
        if not 15 <= self.ebs_root_volume_size_gb <= 100:
            fail("ebs_root_volume_size_gb", "EMR accepts 15..100 GiB")
        if not 1 <= self.arrow_max_records_per_batch <= 100000:
            fail("arrow_max_records_per_batch", "must be within 1..100000")
        for key in ("log_retention_days", "noncurrent_version_days"):
            if not 1 <= getattr(self, key) <= 3650:
                fail(key, "must be within 1..3650 days")
        initial = self.core_instance_count + self.task_instance_count
        if not 1 <= self.scaling_min_units <= self.scaling_max_units:
            fail("scaling_min_units", "must be >= 1 and <= scaling_max_units")
        if not self.core_instance_count <= self.scaling_max_core_units <= self.scaling_max_units:
            fail("scaling_max_core_units", "must lie between core_instance_count and scaling_max_units")
        if not self.scaling_max_core_units <= self.scaling_max_on_demand_units <= self.scaling_max_units:
            fail("scaling_max_on_demand_units", "must be within scaling_max_core_units and scaling_max_units")
        if not self.task_spot and self.scaling_max_on_demand_units != self.scaling_max_units:
            fail("scaling_max_on_demand_units", "with on-demand task nodes it must equal scaling_max_units")
        if initial > self.scaling_max_units:
            fail("scaling_max_units", f"smaller than the initial core + task capacity ({initial})")
        if self.spot_timeout_action not in _SPOT_TIMEOUT_ACTIONS:
            fail("spot_timeout_action", f"expected one of {_SPOT_TIMEOUT_ACTIONS}")
        # Managed scaling keeps on-demand units under its cap, but the spot timeout's fallback happens at
        # launch, outside it: every initial spot task unit would become an on-demand one.
        if (
            self.task_spot
            and self.task_instance_count > 0
            and self.spot_timeout_action == "SWITCH_TO_ON_DEMAND"
            and initial > self.scaling_max_on_demand_units
        ):
            fail(
                "spot_timeout_action",
                f"SWITCH_TO_ON_DEMAND would start {initial} on-demand core + task instances, above "
                f"scaling_max_on_demand_units={self.scaling_max_on_demand_units}; use TERMINATE_CLUSTER or raise "
                "scaling_max_on_demand_units (managed scaling then adds on-demand task nodes first, up to it)",
            )
        for subnet in self.subnet_ids:
            if not _SUBNET_ID.match(subnet):
                raise SettingsError(f"setting 'subnet_ids': {subnet!r} is not a subnet id (subnet-...)")
        if self.ec2_key_name is not None and not self.ec2_key_name.strip():
            fail("ec2_key_name", "must not be blank; leave it null for no key pair")
        if self.tls_certificate_s3_uri is not None and not _S3_URI.match(self.tls_certificate_s3_uri):
            fail("tls_certificate_s3_uri", "expected s3://bucket/key.zip (a zip of PEM files)")
        if (self.weights_s3_uri is None) != (self.weights_sha256 is None):
            fail("weights_s3_uri", "weights_s3_uri and weights_sha256 must be given together")
        if self.weights_s3_uri is not None and not _S3_URI.match(self.weights_s3_uri):
            fail("weights_s3_uri", "expected s3://bucket/key")
        if self.weights_s3_uri is not None and not _FILE_NAME.match(self.weights_s3_uri.rsplit("/", 1)[-1]):
            fail("weights_s3_uri", "the file name must be letters, digits, '.', '_' or '-' (it names the local copy)")
        if self.weights_sha256 is not None and not _SHA256.match(self.weights_sha256):
            fail("weights_sha256", "expected 64 lowercase hex digits")
        for key in ("weights_dir", "venv_path"):
            if not _ABS_PATH.match(getattr(self, key)):
                fail(key, "expected an absolute path of letters, digits, '.', '_', '-', '/'")
        if not re.fullmatch(r"python3\.\d+", self.node_python):
            fail("node_python", "expected an interpreter name such as python3.11")
        if self.bootstrap_profile not in PROFILES:
            fail("bootstrap_profile", f"expected one of {PROFILES}")
        if self.bootstrap_profile == "onnx" and not (self.weights_s3_uri or "").endswith(".onnx"):
            fail(
                "bootstrap_profile",
                "the onnx profile installs no TensorFlow, so the job needs an exported model: set "
                "weights_s3_uri to an .onnx file made with `python -m job.onnx_engine`",
            )
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()):
            fail("tags", "expected a mapping of strings to strings")
        spark_memory(self)  # raises SettingsError when the executors cannot hold the model


@dataclass(frozen=True)
class SparkMemory:
    """Executor and driver sizes in MiB; :meth:`properties` is what goes into spark-defaults."""

    node_type: str
    container_mb: int
    executor_cores: int
    executor_memory_mb: int
    executor_overhead_mb: int
    driver_cores: int
    driver_memory_mb: int
    driver_overhead_mb: int

    def properties(self) -> dict[str, str]:
        return {
            "spark.executor.cores": str(self.executor_cores),
            "spark.executor.memory": f"{self.executor_memory_mb}m",
            "spark.executor.memoryOverhead": f"{self.executor_overhead_mb}m",
            "spark.driver.cores": str(self.driver_cores),
            "spark.driver.memory": f"{self.driver_memory_mb}m",
            "spark.driver.memoryOverhead": f"{self.driver_overhead_mb}m",
        }


def spark_memory(settings: Settings) -> SparkMemory:
    """Size the executors and the driver for the core and task fleets and the bootstrap profile's engine.

    The arithmetic, in MiB, with the smallest of the fleets' types in each dimension (YARN memory, vCPU):

    - container = floor32(min YARN memory / EXECUTORS_PER_NODE): two executors fit on every node of every
      type, and the driver's container (same size) fits beside one executor on a core node;
    - worker = PYTHON_WORKER_MB[engine] + WORKER_HEADROOM_MB: one Python worker per running task, each
      with its own copy of the model (spark.python.worker.reuse keeps it loaded);
    - executor cores c: the largest of min vCPU / EXECUTORS_PER_NODE, ..., 1 that leaves a heap of at
      least MIN_HEAP_MB, where heap = the largest h with h + max(JVM_OVERHEAD_MIN_MB, 10 % of h) <=
      container - c * worker;
    - spark.executor.memory = heap, spark.executor.memoryOverhead = container - heap (>= c workers + the
      JVM's own off-heap), so memory + overhead = container exactly;
    - the driver (cluster mode: the YARN application master, kept on core nodes by the node labels):
      executor cores; heap = the same rule within half the core type's YARN memory for a Python process
      of one worker + DRIVER_PYTHON_EXTRA_MB, capped at DRIVER_MAX_HEAP_MB; overhead = that Python process
      + the JVM's off-heap. Half a core node at most, so it fits beside an executor there.

    Example, the defaults (m5.xlarge everywhere: 4 vCPU, YARN 12288; tf): container 6144, worker 2048,
    c = 2, heap = 6144 - 4096 - 384 = 1664, overhead 4480; the driver: heap 6144 - 2560 - 384 = 3200,
    overhead 2560 + 384 = 2944.

    The Python memory goes into memoryOverhead, not spark.executor.pyspark.memory: the latter sets
    RLIMIT_AS, a limit on *virtual* memory, which TensorFlow's large address-space reservations exceed
    long before its resident memory does. YARN enforces the container's physical memory either way.

    Raises SettingsError naming the fleet key when no executor fits (too little memory per vCPU for the
    model, or a type missing from :data:`INSTANCE_TYPES`).
    """
    fleets = {"core_instance_type": (settings.core_instance_type,)}
    if settings.task_instance_count > 0:
        fleets["task_instance_types"] = settings.task_instance_types
    engine = settings.bootstrap_profile
    smallest, container, cores = executor_sizing(fleets, engine)
    worker = PYTHON_WORKER_MB[engine] + WORKER_HEADROOM_MB
    heap = _heap_for(container - cores * worker)
    driver_python = worker + DRIVER_PYTHON_EXTRA_MB
    core = settings.core_instance_type
    driver_container = INSTANCE_TYPES[core].yarn_memory_mb // EXECUTORS_PER_NODE // 32 * 32
    driver_heap = min(_heap_for(driver_container - driver_python), DRIVER_MAX_HEAP_MB)
    if driver_heap < MIN_HEAP_MB:
        raise SettingsError(
            f"setting 'core_instance_type': {core} gives the driver {driver_container} MiB (half its YARN "
            f"memory), too small for its Python process ({driver_python} MiB) plus a {MIN_HEAP_MB} MiB heap"
        )
    return SparkMemory(
        node_type=smallest,
        container_mb=container,
        executor_cores=cores,
        executor_memory_mb=heap,
        executor_overhead_mb=container - heap,
        driver_cores=cores,
        driver_memory_mb=driver_heap,
        driver_overhead_mb=driver_python + _jvm_overhead(driver_heap),
    )


def executor_sizing(fleets: Mapping[str, Sequence[str]], engine: str) -> tuple[str, int, int]:
    """(smallest type, container MiB, executor cores) for fleets keyed by their setting name; see spark_memory.

    Also used by the cost estimate (blueprint/estimate.py), which sizes clusters that are not settings.
    """
    for key, names in fleets.items():
        unknown = [name for name in names if name not in INSTANCE_TYPES]
        if unknown:
            raise SettingsError(
                f"setting {key!r}: no executor sizing figures for {', '.join(unknown)}; use one of "
                f"{', '.join(INSTANCE_TYPES)} or add it to blueprint.settings.INSTANCE_TYPES with AWS's "
                "published yarn.nodemanager.resource.memory-mb"
            )
    owners = {name: key for key, names in fleets.items() for name in names}
    smallest = min(owners, key=lambda name: (INSTANCE_TYPES[name].yarn_memory_mb, INSTANCE_TYPES[name].vcpus))
    container = min(INSTANCE_TYPES[n].yarn_memory_mb for n in owners) // EXECUTORS_PER_NODE // 32 * 32
    worker = PYTHON_WORKER_MB[engine] + WORKER_HEADROOM_MB
    max_cores = max(1, min(INSTANCE_TYPES[n].vcpus for n in owners) // EXECUTORS_PER_NODE)
    for cores in range(max_cores, 0, -1):
        heap = _heap_for(container - cores * worker)
        if heap >= MIN_HEAP_MB:
            break
    else:
        raise SettingsError(
            f"setting {owners[smallest]!r}: {smallest} gives YARN containers of {container} MiB (half its "
            f"{INSTANCE_TYPES[smallest].yarn_memory_mb} MiB), too small for one {engine} Python worker "
            f"({worker} MiB) plus a {MIN_HEAP_MB} MiB executor heap; use a type with more memory per vCPU"
        )
    return smallest, container, cores


def _heap_for(budget_mb: int) -> int:
    """The largest heap h (a multiple of 32 MiB) with h + _jvm_overhead(h) <= budget_mb."""
    heap = min(budget_mb - JVM_OVERHEAD_MIN_MB, int(budget_mb / (1 + JVM_OVERHEAD_FACTOR)))
    return heap // 32 * 32


def _jvm_overhead(heap_mb: int) -> int:
    """Spark's default memoryOverhead for a heap: max(384 MiB, 10 %)."""
    return max(JVM_OVERHEAD_MIN_MB, math.ceil(heap_mb * JVM_OVERHEAD_FACTOR))


def load_settings(overrides: Mapping[str, object] | None = None, cdk_json: Path | None = None) -> Settings:
    """Read the ``context`` of ``cdk.json`` (the repository's by default), apply overrides, validate."""
    path = cdk_json or CDK_JSON
    if cdk_json is None and not path.is_file():
        # A non-editable install has no cdk.json beside it: the typed defaults are the same values
        # (tests/blueprint/test_settings.py keeps them equal), so only the overrides apply.
        return Settings.from_context(dict(overrides or {}))
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read settings from {path}: {exc}") from exc
    context = document.get("context", {})
    if not isinstance(context, dict):
        raise SettingsError(f"{path}: 'context' must be an object")
    return Settings.from_context({**context, **(overrides or {})})


def _coerce(name: str, value: object, hint: object) -> object:
    """Check ``value`` against the field's type hint, accepting the string forms `-c key=value` produces."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if (value is None or value == "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise SettingsError(f"setting {name!r}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise SettingsError(f"setting {name!r}: expected an integer, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise SettingsError(f"setting {name!r}: expected a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            items: list[object] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise SettingsError(f"setting {name!r}: expected a list of strings, got {value!r}")
        if not all(isinstance(v, str) for v in items):
            raise SettingsError(f"setting {name!r}: expected a list of strings, got {value!r}")
        return tuple(items)
    if origin is Mapping or hint is Mapping:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"setting {name!r}: expected a JSON object, got {value!r}") from exc
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return types.MappingProxyType(dict(value))
        raise SettingsError(f"setting {name!r}: expected an object of strings, got {value!r}")
    raise SettingsError(f"setting {name!r}: unsupported type {hint!r}")  # pragma: no cover - a new field type
