"""Settings: cdk.json is the single source of defaults; bad values fail with the key's name."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from blueprint import settings as settings_module
from blueprint.run_spec import RunDefaults
from blueprint.settings import CDK_JSON, Settings, SettingsError, load_settings


def test_cdk_json_context_holds_every_setting_at_its_default() -> None:
    context = json.loads(CDK_JSON.read_text())["context"]
    own = {k: v for k, v in context.items() if not k.startswith("@")}
    assert set(own) == {f.name for f in dataclasses.fields(Settings)}
    assert load_settings() == Settings()


def test_defaults_match_the_issue() -> None:
    s = Settings()
    assert s.release_label == "emr-7.14.0"
    assert s.idle_timeout_seconds == 3600
    assert s.venv_python == "/opt/featurizer/venv/bin/python"
    assert s.retain_data is True
    assert (s.storage_stack_name, s.cluster_stack_name) == ("featurizer-storage", "featurizer-cluster")


def test_string_overrides_from_the_cdk_cli_are_coerced() -> None:
    s = load_settings(
        {
            "core_instance_count": "3",
            "scaling_max_core_units": "3",
            "scaling_max_on_demand_units": "3",
            "task_spot": "true",
            "retain_data": "false",
            "task_instance_types": "m6i.xlarge, m5a.xlarge",
            "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
            "ec2_key_name": "",
            "tags": '{"team": "vision"}',
        }
    )
    assert s.core_instance_count == 3
    assert s.retain_data is False
    assert s.task_instance_types == ("m6i.xlarge", "m5a.xlarge")
    assert s.subnet_ids == ("subnet-0123456789abcdef0", "subnet-0fedcba9876543210")
    assert s.ec2_key_name is None
    assert dict(s.tags) == {"team": "vision"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"core_instance_count": "two"}, "'core_instance_count': expected an integer"),
        ({"core_instance_count": True}, "'core_instance_count': expected an integer"),
        ({"retain_data": "yes"}, "'retain_data': expected true or false"),
        ({"release_label": 7}, "'release_label': expected a string"),
        ({"task_instance_types": [1, 2]}, "'task_instance_types': expected a list of strings"),
        ({"tags": "not json"}, "'tags': expected a JSON object"),
        ({"release_label": "emr-6.15.0"}, "expected emr-7.x.y"),
        ({"name_prefix": "Bad_Name"}, "'name_prefix'"),
        ({"idle_timeout_seconds": 30}, "EMR accepts 60..604800"),
        ({"core_instance_count": 0}, "at least one core node"),
        ({"weights_s3_uri": "s3://bucket/w.h5"}, "must be given together"),
        ({"weights_s3_uri": "s3://bucket/w.h5", "weights_sha256": "abc"}, "64 lowercase hex"),
        ({"weights_s3_uri": "/local/w.h5", "weights_sha256": "a" * 64}, "expected s3://bucket/key"),
        ({"weights_s3_uri": "s3://bucket/dir/w eights.h5", "weights_sha256": "a" * 64}, "expected s3://"),
        ({"weights_s3_uri": "s3://bucket/dir/w$(x).h5", "weights_sha256": "a" * 64}, "names the local copy"),
        ({"tls_certificate_s3_uri": "https://x/certs.zip"}, "zip of PEM files"),
        ({"subnet_ids": ["vpc-123"]}, "is not a subnet id"),
        ({"bootstrap_profile": "torch"}, "expected one of"),
        ({"scaling_max_units": 3}, "smaller than the initial core + task capacity"),
        ({"task_spot": False}, "with on-demand task nodes"),
        ({"venv_path": "relative/venv"}, "absolute path"),
        ({"colour": "blue"}, "unknown setting(s) ['colour']"),
    ],
)
def test_bad_values_fail_with_the_key_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(overrides)
    assert message in str(err.value)


def test_settings_are_hashable_values() -> None:
    tagged = load_settings({"tags": {"team": "vision"}})
    assert hash(tagged) == hash(load_settings({"tags": {"team": "vision"}}))
    assert tagged != Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tagged.core_instance_count = 5  # type: ignore[misc]


def test_cdk_internal_context_keys_are_ignored() -> None:
    assert Settings.from_context({"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:x": 1}) == Settings()


def test_weights_local_path_is_under_the_weights_dir() -> None:
    s = load_settings({"weights_s3_uri": "s3://bkt/artifacts/weights/mobilenet_v2.h5", "weights_sha256": "0" * 64})
    assert s.weights_local_path == "/opt/featurizer/weights/mobilenet_v2.h5"
    assert Settings().weights_local_path is None


def test_unreadable_cdk_json_is_a_settings_error(tmp_path: Path) -> None:
    broken = tmp_path / "cdk.json"
    broken.write_text("{not json")
    with pytest.raises(SettingsError, match="cannot read settings"):
        load_settings(cdk_json=broken)


def test_pure_modules_do_not_import_cdk() -> None:
    """The launcher imports these without aws-cdk-lib installed."""
    code = (
        "import sys, blueprint.settings, blueprint.emr_spec, blueprint.artifacts; "
        "bad = [m for m in sys.modules if m.startswith(('aws_cdk', 'constructs', 'jsii'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CDK_JSON.parent)


def test_onnx_profile_needs_an_exported_onnx_model() -> None:
    sha = "0" * 64
    keras_file = {"weights_s3_uri": "s3://weights-bucket/w_no_top.h5", "weights_sha256": sha}
    with pytest.raises(SettingsError, match="exported model"):
        load_settings({"bootstrap_profile": "onnx"})
    with pytest.raises(SettingsError, match="exported model"):
        load_settings({"bootstrap_profile": "onnx", **keras_file})
    onnx_file = {"weights_s3_uri": "s3://weights-bucket/m.onnx", "weights_sha256": sha}
    settings = load_settings({"bootstrap_profile": "onnx", **onnx_file})
    defaults = RunDefaults.from_settings(settings)
    assert defaults.engine == "onnx" and defaults.weights == "file:///opt/featurizer/weights/m.onnx"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("core_instance_type", "m6g.xlarge"),
        ("primary_instance_type", "m7g.xlarge"),
        ("task_instance_types", "m5.xlarge,c6gn.xlarge"),
        ("task_instance_types", "r6gd.xlarge"),
        ("core_instance_type", "r8g.2xlarge"),
        ("primary_instance_type", "a1.xlarge"),
    ],
)
def test_graviton_types_are_refused_until_an_aarch64_lock_exists(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"setting '{key}'.*Graviton \(arm64\)"):
        load_settings({key: value})


def test_x86_families_with_g_in_their_name_are_not_graviton() -> None:
    assert not settings_module._GRAVITON.match("g4dn.xlarge")
    assert not settings_module._GRAVITON.match("m5dn.xlarge")
    assert not settings_module._GRAVITON.match("c7i-flex.large")
    assert settings_module._GRAVITON.match("is4gen.xlarge") and settings_module._GRAVITON.match("x2gd.large")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cluster_generation": 0}, "'cluster_generation'"),
        ({"private_subnets": "true"}, "only applies to existing subnets"),
        ({"spot_timeout_action": "HIBERNATE"}, "expected one of"),
        ({"task_instance_types": "m7i.xlarge"}, "setting 'task_instance_types': no executor sizing figures for m7i"),
        ({"core_instance_type": "c5.xlarge"}, "setting 'core_instance_type': c5.xlarge gives YARN containers of 3072"),
        # Task fleet types count too, and only when there is a task fleet.
        ({"task_instance_types": "m5.xlarge,c5.xlarge"}, "setting 'task_instance_types': c5.xlarge"),
    ],
)
def test_new_settings_fail_with_the_key_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(overrides)
    assert message in str(err.value)


def test_no_task_fleet_means_task_types_do_not_size_executors() -> None:
    settings = load_settings({"task_instance_count": 0, "task_instance_types": "c5.xlarge"})
    assert settings.spark_memory.node_type == "m5.xlarge"


def test_the_onnx_worker_fits_where_tensorflow_does_not() -> None:
    """c5.xlarge: YARN 6144 MiB, half per executor; ONNX Runtime workers are ~0.6 GB lighter."""
    onnx = {"bootstrap_profile": "onnx", "weights_s3_uri": "s3://bkt/m.onnx", "weights_sha256": "0" * 64}
    plan = load_settings({**onnx, "task_instance_types": "c5.xlarge"}).spark_memory
    assert plan.node_type == "c5.xlarge" and plan.container_mb == 3072
    assert plan.executor_cores == 1  # two ONNX workers would leave less than the minimum heap


@pytest.mark.parametrize("profile", ["tf", "onnx"])
@pytest.mark.parametrize("instance_type", sorted(settings_module.INSTANCE_TYPES))
def test_every_executor_that_the_plan_accepts_fits_its_node(profile: str, instance_type: str) -> None:
    """The arithmetic's invariants, for every type in the table: containers fit YARN, workers fit overhead."""
    weights = {"weights_s3_uri": "s3://bkt/m.onnx", "weights_sha256": "0" * 64} if profile == "onnx" else {}
    try:
        settings = load_settings(
            {"core_instance_type": instance_type, "task_instance_types": instance_type,
             "bootstrap_profile": profile, **weights}
        )  # fmt: skip
    except SettingsError as err:  # too little memory per vCPU for this model: refused by name
        assert "gives YARN containers" in str(err) or "gives the driver" in str(err)
        return
    node = settings_module.INSTANCE_TYPES[instance_type]
    plan = settings.spark_memory
    workers = plan.executor_cores * (settings_module.PYTHON_WORKER_MB[profile] + settings_module.WORKER_HEADROOM_MB)
    assert plan.executor_memory_mb + plan.executor_overhead_mb == plan.container_mb
    assert plan.executor_overhead_mb >= workers + max(384, plan.executor_memory_mb // 10)
    assert plan.executor_memory_mb >= settings_module.MIN_HEAP_MB
    assert 2 * plan.container_mb <= node.yarn_memory_mb  # two executors per node, or one beside the driver
    assert plan.driver_memory_mb + plan.driver_overhead_mb <= node.yarn_memory_mb // 2  # beside an executor
    assert 1 <= plan.executor_cores <= node.vcpus // 2
