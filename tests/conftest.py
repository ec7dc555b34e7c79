"""Shared fixtures: one local SparkSession per test run, the real sample images, test weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FRUITS = SHARED_DATA / "fruits360-sample" / "Test"

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fruit_images() -> list[Path]:
    """The 750 real Fruits-360 JPEGs, used where they are (never copied into the repo)."""
    if not FRUITS.is_dir():
        pytest.skip(f"real sample images not found at {FRUITS}")
    return sorted(FRUITS.rglob("*.jpg"))


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
    """MobileNetV2 with seeded random weights, BatchNorm calibrated on 64 real images.

    Raw random initialisation gives ~1e-11 features; calibrated statistics give features
    with a realistic spread, so numeric comparisons (Keras vs job, numpy vs job PCA) mean something.
    """
    from job.decode import decode_batch
    from job.model import random_model

    images = fruit_images()[::12][:64]
    batch, _, _ = decode_batch([p.read_bytes() for p in images])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_calibrated.weights.h5"
    random_model(batch, seed=7).save_weights(str(path))
    return path
