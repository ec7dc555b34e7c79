"""Typed deployment settings, read from the ``context`` of the repository's ``cdk.json``.

This is the one place where the infrastructure is configured: the CDK app, the launcher (which builds a
transient cluster from the same values) and the tests all read a :class:`Settings`. The module is pure
Python on purpose: the launcher imports it on machines without aws-cdk-lib installed.

Values given with ``cdk synth -c key=value`` arrive as strings, so integers, booleans and lists are also
accepted in their string forms ("3", "true", "m5.xlarge,m5a.xlarge"); anything else fails loudly with
the name of the offending key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from spec.errors import SettingsError

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
_PROFILES = ("tf", "onnx")


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
    # Minutes EMR waits for spot capacity before it provisions on-demand instead.
    spot_timeout_minutes: int = 10
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
    subnet_ids: tuple[str, ...] = ()
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
    # Rows per Arrow batch handed to the pandas UDF (images are large; the Spark default is 10000).
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
        if self.bootstrap_profile not in _PROFILES:
            fail("bootstrap_profile", f"expected one of {_PROFILES}")
        if self.bootstrap_profile == "onnx" and not (self.weights_s3_uri or "").endswith(".onnx"):
            fail(
                "bootstrap_profile",
                "the onnx profile installs no TensorFlow, so the job needs an exported model: set "
                "weights_s3_uri to an .onnx file made with `python -m job.onnx_engine`",
            )
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()):
            fail("tags", "expected a mapping of strings to strings")


def load_settings(overrides: Mapping[str, object] | None = None, cdk_json: Path | None = None) -> Settings:
    """Read the ``context`` of ``cdk.json`` (the repository's by default), apply overrides, validate."""
    path = cdk_json or CDK_JSON
    if cdk_json is None and not path.is_file():
        # A non-editable install has no cdk.json beside it: the typed defaults are the same values
        # (tests/spec/test_settings.py keeps them equal), so only the overrides apply.
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
