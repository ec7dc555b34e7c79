"""Whose settings the job's session runs with: --master, spark-submit's, spark-defaults', --batch-size.

The job runs here with a fake ONNX model (tests/job/fakes.py) on tiny images: no TensorFlow, so
each run in a fresh process costs about the JVM start-up. metadata.json's "spark" section is what
is asserted: it records the session that actually ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pyspark
import pytest

from job.config import JobConfig
from job.pipeline import run
from tests.conftest import REPO
from tests.job.fakes import tiny_jpegs, write_noisy_model

pytestmark = pytest.mark.slow

SPARK_SUBMIT = Path(pyspark.__file__).parent / "bin" / "spark-submit"
FEATURIZER = Path(sys.executable).parent / "featurizer"


def job_env(tmp_path: Path, defaults: dict[str, str]) -> dict[str, str]:
    """The environment of a fresh job process, with its own SPARK_CONF_DIR/spark-defaults.conf."""
    conf_dir = tmp_path / "spark-conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in defaults.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONF_DIR"))}
    env.update(
        {
            "SPARK_CONF_DIR": str(conf_dir),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def job_args(tmp_path: Path) -> list[str]:
    images = tiny_jpegs(tmp_path / "in", 24)
    model = write_noisy_model(tmp_path)
    return ["--input", str(images), "--output", str(tmp_path / "out"), "--weights", str(model), "--engine", "onnx"]


def run_process(argv: list[str], env: dict[str, str], tmp_path: Path) -> dict:
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "out" / "metadata.json").read_text())


def test_featurizer_run_master_option_is_the_sessions_master(tmp_path: Path) -> None:
    """local[1], not the local[*] default (which on a 2-core machine would look like local[2])."""
    metadata = run_process(
        [str(FEATURIZER), "run", *job_args(tmp_path), "--k", "2", "--master", "local[1]"],
        job_env(tmp_path, {}),
        tmp_path,
    )
    record = metadata["spark"]
    assert record["master"] == "local[1]"
    assert record["default_parallelism"] == 1 and record["launched_by_spark_submit"] is False
    assert [executor["id"] for executor in record["featurize"]["executors"]] == ["driver"]


@pytest.mark.parametrize("master_from", ["command line", "spark-defaults"])
def test_spark_submit_master_conf_and_defaults_are_kept(tmp_path: Path, master_from: str) -> None:
    """What EMR does: spark.master (yarn there) from spark-defaults, or --master; --conf; spark-defaults."""
    defaults = {"spark.task.maxFailures": "3", "spark.sql.files.maxPartitionBytes": "123456789"}
    argv = [str(SPARK_SUBMIT), "--conf", "spark.sql.execution.arrow.maxRecordsPerBatch=7"]
    if master_from == "command line":
        argv[1:1] = ["--master", "local[1]"]
    else:
        defaults["spark.master"] = "local[1]"
    entry = REPO / "job" / "entrypoint.py"
    metadata = run_process([*argv, str(entry), *job_args(tmp_path), "--k", "2"], job_env(tmp_path, defaults), tmp_path)
    record = metadata["spark"]
    assert record["master"] == "local[1]"
    assert record["launched_by_spark_submit"] is True and record["deploy_mode"] == "client"
    settings = record["settings"]
    assert settings["spark.task.maxFailures"] == "3"
    assert settings["spark.sql.files.maxPartitionBytes"] == "123456789"
    assert settings["spark.sql.execution.arrow.maxRecordsPerBatch"] == "7"
    # The job's own defaults still fill what nobody set.
    assert settings["spark.python.worker.reuse"] == "true" and settings["spark.task.cpus"] == "1"
    # --batch-size (64 by default), not the session's 7, is the featurize stage's batch.
    assert record["featurize"]["arrow_max_records_per_batch"] == record["featurize"]["batch_size"] == 64
    # spark-submit's JVM touched file:// before the job's session existed: still no `.crc` sidecars.
    assert not list((tmp_path / "out").rglob("*.crc")), sorted((tmp_path / "out").rglob("*.crc"))[:3]


def test_batch_size_above_the_sessions_arrow_batch_is_the_model_batch(spark, tmp_path: Path) -> None:
    """The session's maxRecordsPerBatch is 64 (the fixture's default); --batch-size 100 still rules."""
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "64"
    images = tiny_jpegs(tmp_path / "in", 250)
    out = tmp_path / "out"
    cfg = JobConfig(
        input=str(images), output=str(out), weights=str(write_noisy_model(tmp_path)), engine="onnx", k=2, batch_size=100
    )
    metadata = run(spark, cfg)
    # The fake model's outputs are the size of the batch they were computed in (plus noise < 0.5).
    features = np.stack(pq.read_table(out / "features").to_pandas()["features"])
    batch_sizes = np.floor(features[:, 0]).astype(int)
    assert batch_sizes.max() == 100, np.unique(batch_sizes)
    assert metadata["spark"]["featurize"]["batch_size"] == 100
    assert metadata["spark"]["featurize"]["arrow_max_records_per_batch"] == 100
    # The session's own value is untouched after the stage.
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "64"
    assert metadata["spark"]["settings"]["spark.sql.execution.arrow.maxRecordsPerBatch"] == "64"
