"""Settings: cdk.json is the single source of defaults; bad values fail with the key's name."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spec.run_spec import RunDefaults
from spec.settings import CDK_JSON, Settings, SettingsError, load_settings


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
            "task_instance_types": "m6i.xlarge, m6a.xlarge",
            "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
            "ec2_key_name": "",
            "tags": '{"team": "vision"}',
        }
    )
    assert s.core_instance_count == 3
    assert s.retain_data is False
    assert s.task_instance_types == ("m6i.xlarge", "m6a.xlarge")
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
        "import sys, spec.settings, spec.emr_spec, spec.artifacts; "
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
