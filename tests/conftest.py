"""Shared fixtures: one local SparkSession per test run, the real sample images, test weights.

With FEATURIZER_NO_SKIPS=1 (CI sets it) a skipped test fails the run: every test here is
expected to run on a fresh clone (the images are vendored in tests/data/).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# 100 real Fruits-360 JPEGs (10 classes x 10), vendored: see tests/data/fruits360/ATTRIBUTION.txt.
FRUITS = REPO / "tests" / "data" / "fruits360" / "Test"
FRUIT_COUNT, FRUIT_CLASSES = 100, 10
NO_SKIPS = os.environ.get("FEATURIZER_NO_SKIPS") == "1"

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The CDK app runs on the machine's Node (20 here, end-of-life): jsii would print its notice as Python bytes
# in every test process that imports infra/ (tests/infra and tests/emr alike).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def fruit_images() -> list[Path]:
    """The 100 vendored Fruits-360 JPEGs, sorted (class folder, then file name)."""
    images = sorted(FRUITS.rglob("*.jpg"))
    assert len(images) == FRUIT_COUNT, f"expected {FRUIT_COUNT} fixture images under {FRUITS}, found {len(images)}"
    return images


@pytest.fixture(scope="session")
def fruits_dir() -> Path:
    fruit_images()
    return FRUITS


@pytest.fixture(scope="session")
def spark():
    from job.config import JobConfig
    from job.session import start_spark

    session = start_spark(JobConfig(input="unused-in", output="unused-out", master="local[2]"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    """MobileNetV2 with seeded random weights, BatchNorm calibrated on 50 fixture images (5 per class).

    Raw random initialisation gives ~1e-11 features; calibrated statistics give features
    with a realistic spread, so numeric comparisons (Keras vs job, numpy vs job PCA) mean something.
    """
    from job.decode import decode_batch
    from job.model import random_model

    # Half the fixture: calibration runs the whole batch through the network at once (as a graph since
    # job.model.calibrate_batchnorm runs one: ~1.5 GB for 50 images; eagerly it was ~5 GB).
    batch, _, _ = decode_batch([p.read_bytes() for p in fruit_images()[::2]])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_calibrated.weights.h5"
    random_model(batch, seed=7).save_weights(str(path))
    return path


@pytest.fixture(scope="session")
def onnx_model_file(weights_file: Path, tmp_path_factory) -> Path:
    """``weights_file`` exported to ONNX once per run, by the export CLI (`python -m job.onnx_engine`).

    In a child process, as a user runs it: the conversion's memory (~1 GB of TensorFlow and tf2onnx) is not
    added to the test process, which may hold a Spark cluster's work beside it. Tests that check the
    conversion itself (the CLI in-process, the model cache) still convert on their own.
    """
    import subprocess

    out = tmp_path_factory.mktemp("onnx-export") / "mobilenet_v2_calibrated.onnx"
    argv = [sys.executable, "-m", "job.onnx_engine", "--weights", str(weights_file), "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but FEATURIZER_NO_SKIPS=1 forbids skips: {_skip_reason(report)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With FEATURIZER_NO_SKIPS=1, a test skipped in setup or in its body is reported as failed."""
    report = yield
    _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """With FEATURIZER_NO_SKIPS=1, a module skipped at import (pytest.skip, importorskip) fails too."""
    report = yield
    _fail_skip(report)
    return report
