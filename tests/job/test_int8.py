"""The onnx-int8 engine (issue 12 §3): a correctly quantized model, its cache, its quality gate, the job end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import int8_quality as q
from job import quantize
from job.config import JobConfig, UsageError
from job.decode import decode_batch
from tests.conftest import FRUIT_CLASSES, FRUIT_COUNT, FRUITS, fruit_images

CALIBRATION = 32  # a few hundred on real runs; enough here to set every range and keep the test quick
INT8 = 3  # onnx.TensorProto.INT8


# ---- calibration set, cache key, options (no TensorFlow) -------------------------------------------


def test_calibration_paths_are_sorted_evenly_spaced_and_cover_every_class() -> None:
    paths = [str(p) for p in fruit_images()]
    chosen = quantize.calibration_paths(reversed(paths), 20)
    assert chosen == quantize.calibration_paths(paths, 20) and len(chosen) == 20 == len(set(chosen))
    assert chosen == sorted(chosen) and chosen[0] == paths[0]
    assert {Path(p).parent.name for p in chosen} == {p.parent.name for p in fruit_images()}  # 2 per class
    assert quantize.calibration_paths(paths[:5], 20) == paths[:5]


def test_calibration_digest_follows_the_bytes_and_their_order() -> None:
    digest = quantize.calibration_digest([b"a", b"bc"])
    assert digest == quantize.calibration_digest([b"a", b"bc"])
    assert digest != quantize.calibration_digest([b"bc", b"a"])
    assert digest != quantize.calibration_digest([b"ab", b"c"])  # length-prefixed: no ambiguous joins


def test_quantization_key_covers_model_calibration_and_settings(monkeypatch) -> None:
    key, covers = quantize.quantization_key("m" * 64, "c" * 64, 256, "exact")
    assert covers["settings"] == quantize.SETTINGS and covers["onnxruntime"]
    others = [
        quantize.quantization_key("n" * 64, "c" * 64, 256, "exact"),
        quantize.quantization_key("m" * 64, "d" * 64, 256, "exact"),
        quantize.quantization_key("m" * 64, "c" * 64, 128, "exact"),
        quantize.quantization_key("m" * 64, "c" * 64, 256, "fast"),
    ]
    assert key not in {other for other, _ in others}
    monkeypatch.setitem(quantize.SETTINGS, "per_channel", False)
    assert quantize.quantization_key("m" * 64, "c" * 64, 256, "exact")[0] != key


def test_engine_and_calibration_options() -> None:
    cfg = JobConfig(input="in", output="out", engine="onnx-int8", calibration="s3://b/calib", calibration_images=64)
    assert cfg.calibration_images == 64
    JobConfig(input="in", output="out", engine="onnx-int8", weights="s3://b/m.onnx")  # an exported fp32 model
    with pytest.raises(UsageError, match="--calibration needs --engine onnx-int8"):
        JobConfig(input="in", output="out", engine="onnx", calibration="s3://b/calib")
    with pytest.raises(UsageError, match="--calibration-images"):
        JobConfig(input="in", output="out", engine="onnx-int8", calibration_images=0)


def test_cluster_run_spec_and_featurizer_run_accept_the_engine() -> None:
    """The launcher's run spec validates engines with the job's table: onnx-int8 passes, with its options."""
    from click.testing import CliRunner

    from blueprint.run_spec import RunDefaults, RunSpec
    from launcher.cli import main as cli

    spec = RunSpec(input="s3://b/in", output="s3://b/out", engine="onnx-int8", extra=("--calibration-images", "64"))
    spec = spec.with_defaults(RunDefaults(weights="s3://b/model.onnx", engine="onnx"))
    assert spec.engine == "onnx-int8"  # the user's engine wins over the profile's default
    argv = spec.argv()
    assert argv[argv.index("--engine") + 1] == "onnx-int8" and argv[-2:] == ["--calibration-images", "64"]
    help_text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    assert "onnx-int8" in help_text and "--calibration-images" in help_text


# ---- the quality metrics (pure functions) -----------------------------------------------------------


def test_quality_metrics_on_known_cases() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 30)) * 4
    labels = [f"c{i % 4}" for i in range(80)]
    x = np.stack([centres[i % 4] for i in range(80)]) + rng.normal(size=(80, 30))
    same = q.quality(x, x.copy(), labels, components=10)
    assert same["cosine_min"] == pytest.approx(1.0) and same["neighbours_identical"] == 1.0
    assert same["self_match"] == 1.0 and same["centred_cosine_median"] == pytest.approx(1.0)
    assert same["probe_accuracy_fp32"] == same["probe_accuracy_int8"] == 1.0  # separable classes
    noise = q.quality(x, rng.normal(size=x.shape), labels, components=10)
    assert noise["cosine_median"] < 0.5 and noise["neighbours_overlap"] < 0.5
    assert noise["probe_accuracy_int8"] < 0.6  # chance is 0.25
    assert noise["self_match"] < 0.2 and abs(noise["centred_cosine_median"]) < 0.3
    shifted = q.quality(x + 100.0, x + 100.0 + rng.normal(size=x.shape) * 0.5, labels, components=10)
    assert shifted["cosine_min"] > 0.99 > shifted["centred_cosine_median"]  # a common vector hides the error
    assert shifted["fp32_signal_share"] < 0.01
    assert noise["probe_test_images"] == 24  # 30 % of each class of 20


def test_split_by_image_holds_out_a_share_of_every_class() -> None:
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    test = q.split_by_image(labels)
    assert test[:10].sum() == 3 and test[10:15].sum() == 2 and not test[15]
    assert (q.split_by_image(labels) == test).all()


# ---- the quantized model (TensorFlow for the fp32 conversion) ----------------------------------------


@pytest.fixture(scope="module")
def fp32_bytes(onnx_model_file: Path) -> bytes:
    return onnx_model_file.read_bytes()  # weights_file, exported once per run (tests/conftest.py)


@pytest.fixture(scope="module")
def int8_bytes(fp32_bytes: bytes) -> bytes:
    paths = quantize.calibration_paths([str(p) for p in fruit_images()], CALIBRATION)
    return quantize.quantize(fp32_bytes, quantize.calibration_batch([Path(p).read_bytes() for p in paths], "exact"))


@pytest.fixture(scope="module")
def fixture_features(fp32_bytes: bytes, int8_bytes: bytes) -> dict:
    from job.onnx_engine import onnx_predictor

    out: dict = {"fp32": [], "int8": [], "labels": [p.parent.name for p in fruit_images()]}
    images = fruit_images()
    fp32, int8 = onnx_predictor(fp32_bytes, 1), onnx_predictor(int8_bytes, 1)
    for start in range(0, len(images), 25):  # small batches bound the test's memory
        batch, valid, _ = decode_batch([p.read_bytes() for p in images[start : start + 25]])
        assert len(valid) == len(batch)
        out["fp32"].append(fp32(batch))
        out["int8"].append(int8(batch))
    return {**out, "fp32": np.concatenate(out["fp32"]), "int8": np.concatenate(out["int8"])}


@pytest.mark.slow
def test_the_model_is_qdq_with_per_channel_int8_weights_and_takes_uint8(int8_bytes: bytes) -> None:
    import onnxruntime as ort

    from job.onnx_engine import check_model

    summary = quantize.qdq_summary(int8_bytes)
    assert summary["ops"]["QuantizeLinear"] >= 50 and summary["ops"]["DequantizeLinear"] >= 100
    conv_weights = [w for w in summary["weights"] if len(w["dims"]) == 4]
    assert len(conv_weights) == summary["ops"]["Conv"] == 52  # every convolution, none left in float
    for weight in conv_weights:
        assert weight["dtype"] == INT8 and weight["axis"] == 0
        assert weight["scales"] == weight["dims"][0] > 1  # one scale per output channel
    assert "Mul" not in summary["ops"] or summary["ops"]["Mul"] == 1  # BatchNorm folded; only the input scaling
    check_model(ort.InferenceSession(int8_bytes, providers=["CPUExecutionProvider"]))  # uint8 in, 1280 out


@pytest.mark.slow
def test_int8_features_follow_fp32_on_the_fixture(fixture_features: dict) -> None:
    """The quality gate (numbers in README): calibrated random weights, 100 real images, 10 classes."""
    fp32, int8 = fixture_features["fp32"], fixture_features["int8"]
    assert int8.dtype == np.float32 and int8.shape == (FRUIT_COUNT, 1280)
    assert float(np.abs(fp32).mean()) > 1e-3  # calibrated weights: not degenerate
    report = q.quality(fp32, int8, fixture_features["labels"], components=20)
    assert report["classes"] == FRUIT_CLASSES
    # Measured here: cosine 0.95 (min) / 0.96 (median), but only ~10 % of the fp32 features' energy
    # differs between images, and the quantization error is of that size: centred cosine ~0.4, 10-NN
    # overlap ~0.3 (chance 0.1), self-match ~0.7 (chance 0.01). A wrong quantization (scales, axes)
    # drops the last three to chance.
    assert report["cosine_min"] > 0.9 and report["cosine_median"] > 0.93
    assert report["centred_cosine_median"] > 0.25 and report["self_match"] > 0.4
    assert report["neighbours_overlap"] > 0.2
    assert report["probe_accuracy_int8"] >= report["probe_accuracy_fp32"] - 0.15


@pytest.mark.slow
def test_quantization_is_cached_by_model_and_calibration(fp32_bytes: bytes, tmp_path: Path, monkeypatch) -> None:
    from job.onnx_engine import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    contents = [p.read_bytes() for p in fruit_images()[::25]]
    first, record = quantize.cached_quantize(fp32_bytes, contents, "exact")
    assert record["from_cache"] is False and record["calibration_decoded"] == 4 and record["cache_error"] is None
    assert Path(record["cache_file"]).name.startswith("int8-") and Path(record["cache_file"]).is_file()

    def no_quantization(*args, **kwargs):
        raise AssertionError("a cached int8 model must not be quantized again")

    monkeypatch.setattr(quantize, "quantize", no_quantization)
    again, hit = quantize.cached_quantize(fp32_bytes, contents, "exact")
    assert again == first and hit["from_cache"] is True and hit["cache_key"] == record["cache_key"]
    with pytest.raises(AssertionError, match="quantized again"):  # another calibration set: another model
        quantize.cached_quantize(fp32_bytes, contents[:3], "exact")


@pytest.mark.slow
def test_a_quantized_model_in_the_shared_cache_serves_another_machine(
    spark, fp32_bytes: bytes, tmp_path: Path, monkeypatch
) -> None:
    """--model-cache: a run on another node (empty local cache) takes the int8 model from the shared folder."""
    from job.model_cache import HadoopStore, LocalStore

    shared = HadoopStore(spark, f"file://{tmp_path / 'shared'}")
    contents = [p.read_bytes() for p in fruit_images()[::25]]
    first, record = quantize.cached_quantize(fp32_bytes, contents, "exact", [LocalStore(tmp_path / "a"), shared])
    assert record["from_cache"] is False and record["cache_error"] is None
    assert (tmp_path / "shared" / f"int8-{record['cache_key']}.onnx").read_bytes() == first

    def no_quantization(*args, **kwargs):
        raise AssertionError("a shared int8 model must not be quantized again")

    monkeypatch.setattr(quantize, "quantize", no_quantization)
    again, hit = quantize.cached_quantize(fp32_bytes, contents, "exact", [LocalStore(tmp_path / "b"), shared])
    assert (
        again == first
        and hit["from_cache"] is True
        and hit["cache_file"] == shared.location(f"int8-{record['cache_key']}.onnx")
    )
    assert (tmp_path / "b" / f"int8-{record['cache_key']}.onnx").is_file()


@pytest.mark.slow
def test_featurizer_run_with_the_int8_engine(weights_file: Path, tmp_path: Path) -> None:
    """`featurizer run --engine onnx-int8` through the real job; metadata.json records the calibration."""
    featurizer = Path(sys.executable).with_name("featurizer")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONF_DIR"))}
    env |= {"PYSPARK_PYTHON": sys.executable, "FEATURIZER_CACHE_DIR": str(tmp_path / "cache")}
    env |= {"FEATURIZER_LOG_DIR": str(tmp_path / "logs")}
    cmd = [str(featurizer), "run", "--input", str(FRUITS), "--output", str(out), "--weights", str(weights_file)]
    cmd += ["--engine", "onnx-int8", "--calibration-images", str(CALIBRATION), "--k", "5", "--master", "local[2]"]
    done = subprocess.run([*cmd, "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["engine"] == "onnx-int8" and metadata["config"]["calibration_images"] == CALIBRATION
    assert metadata["counts"]["featurized"] == metadata["counts"]["model_processed"] == FRUIT_COUNT
    record = metadata["quantization"]
    assert record["calibration_source"] == "input" and record["calibration_images"] == CALIBRATION
    assert record["calibration_decoded"] == CALIBRATION and record["settings"] == quantize.SETTINGS
    assert record["fp32_model_sha256"] and record["calibration_sha256"] and record["from_cache"] is False
    assert Path(record["cache_file"]).is_file()
