"""Faults of the cluster itself, on the emulated EMR (issue 15): lost executors, Python workers and nodes,
a dead driver, two runs at once, storage errors. Each fault is injected while the step runs, at a chosen
moment, and the run is checked against a clean run of the same step.

The steps are the job's own (blueprint.emr_spec.spark_step over a RunSpec with the deployment's defaults),
plus ``--conf`` arguments that only steer the test: ``spark.featurizer.maxCores`` (25 partitions of 2
images, so a stage has tasks before and after a fault), the fault injectors of tests/emr/faults.py
(``spark.executorEnv.*`` for the executors' Python workers, a Hadoop filesystem class for storage faults),
and a short output-lock TTL where the test needs it. A test holds the featurize tasks of partitions >= 4
while it kills something, so the kill always lands on a task that is running (never between tasks).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from blueprint import emr_spec
from blueprint.run_spec import RunDefaults, RunSpec
from tests.conftest import fruit_images
from tests.emr import cluster as emu
from tests.emr import faults
from tests.emr.conftest import BUCKET, PER_CLASS, Emulation, StepRun

pytestmark = [pytest.mark.slow, pytest.mark.emr]

N_IMAGES = 10 * PER_CLASS
BATCH = 2
PARTITION_CORES = 20  # spark.featurizer.maxCores: 50 files -> ~17-25 partitions (by bytes) of 2-3 files
HOLD_FROM = 4  # partitions 0..3 run freely, later ones wait while the test's hold file exists
LOCK_TTL_KEY = "spark.featurizer.lockTtlSeconds"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's test weights: BatchNorm calibrated on 10 fixture images (1 per class), not 50.

    Realistic features at a fifth of the calibration's memory (the session fixture peaks at ~5 GB); the
    fault tests compare runs with each other, not with a Keras reference.
    """
    from job.decode import decode_batch
    from job.model import random_model

    batch, _, _ = decode_batch([p.read_bytes() for p in fruit_images()[::10]])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_calibrated10.weights.h5"
    random_model(batch, seed=7).save_weights(str(path))
    return path


class Faults:
    """The injectors and a fresh marker folder per step."""

    def __init__(self, emulation: Emulation) -> None:
        self.emulation = emulation
        self.root = emulation.project.root / "faults"
        self.injector = faults.write_injector(self.root / "injector")
        self._jar: Path | None = None
        self.steps = 0

    @property
    def jar(self) -> Path:
        if self._jar is None:
            self._jar = faults.build_flaky_fs(self.root / "flaky-fs")
        return self._jar

    def markers(self, name: str) -> Path:
        folder = self.root / "markers" / name
        folder.mkdir(parents=True)
        return folder

    def step_args(
        self,
        name: str,
        output: str,
        *,
        input_uri: str = f"s3://{BUCKET}/raw/fruits/",
        markers: Path | None = None,
        env: dict[str, str] | None = None,
        conf: dict[str, str] | None = None,
        spark_args: list[str] | None = None,
    ) -> list[str]:
        project = self.emulation.project
        run = RunSpec(input=input_uri, output=output, batch_size=BATCH).with_defaults(
            RunDefaults.from_settings(project.settings)
        )
        step = emr_spec.spark_step(
            name=name, zip_uri=project.deployed["zip"], entry_uri=project.deployed["entry"], job_args=run.argv()
        )
        args = list(step["HadoopJarStep"]["Args"])
        extra = {"spark.featurizer.maxCores": str(PARTITION_CORES), **(conf or {})}
        if markers is not None:
            extra["spark.executorEnv.PYTHONPATH"] = str(self.injector)
            extra["spark.executorEnv.FEATURIZER_FAULTS_DIR"] = str(markers)
            for key, value in (env or {}).items():
                extra[f"spark.executorEnv.{key}"] = value
        added = [item for key, value in extra.items() for item in ("--conf", f"{key}={value}")]
        return [args[0], *added, *(spark_args or []), *args[1:]]


@pytest.fixture(scope="module")
def injected(emulation: Emulation) -> Faults:
    return Faults(emulation)


def results_uri(name: str) -> str:
    return f"s3://{BUCKET}/results/faults-{name}/"


def local_output(emulation: Emulation, uri: str) -> Path:
    return emulation.mirror / uri.removeprefix("s3://").rstrip("/")


@pytest.fixture(scope="module")
def clean(emulation: Emulation, injected: Faults) -> dict:
    """A clean run of the same step (injector loaded, no fault): the reference every faulted run must equal."""
    markers = injected.markers("clean")
    result = emulation.run_step("faults_clean", injected.step_args("clean", results_uri("clean"), markers=markers))
    assert result.returncode == 0, emu.tail(result.stdout + result.stderr)
    check_complete(result)
    assert result.metadata["faults"]["task_retries"] == 0, result.metadata["faults"]
    tasks = result.metadata["spark"]["featurize"]["tasks"]
    assert tasks > HOLD_FROM + 2, tasks  # tasks before, during and after a held fault
    assert {b.partition for b in faults.batches(markers, "done")} == set(range(tasks))
    return {"metadata": result.metadata, "features": read_features(result.output), "output": result.output}


# --- checks ------------------------------------------------------------------------------------------


def read_features(output: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    table = pq.read_table(output / "features").to_pandas()
    paths = list(table["path"])
    assert len(paths) == len(set(paths)), "a path appears twice in features/"
    return {
        p: (np.asarray(f, dtype=np.float64), np.asarray(z, dtype=np.float64))
        for p, f, z in zip(paths, table["features"], table["pca_features"], strict=True)
    }


def check_complete(result: StepRun) -> None:
    """Every image exactly once, the counts add up, _SUCCESS, no staging or lock left beside OUTPUT."""
    out = result.output
    assert out is not None and (out / "_SUCCESS").is_file()
    counts = result.metadata["counts"]
    assert counts["listed"] == counts["featurized"] + counts["rejected"] == N_IMAGES, counts
    assert counts["model_processed"] >= counts["featurized"]
    features = read_features(out)  # asserts no duplicate path
    expected = set(emu.labelled_images(out.parent.parent / "raw" / "fruits"))
    assert set(features) == expected
    assert pq.read_table(out / "rejected").num_rows == counts["rejected"] == 0
    left = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + "."))
    assert not left, f"left beside the output: {left}"


def check_equals_clean(result: StepRun, clean: dict) -> None:
    """Same features and the same PCA (within 1e-9) as the clean run."""
    features = read_features(result.output)
    reference = clean["features"]
    assert set(features) == set(reference)
    for path, (vector, pca) in features.items():
        ref_vector, ref_pca = reference[path]
        np.testing.assert_array_equal(vector, ref_vector, err_msg=path)
        np.testing.assert_allclose(pca, ref_pca, rtol=0, atol=1e-9, err_msg=path)
    ours, theirs = result.metadata["pca"], clean["metadata"]["pca"]
    assert ours["k"] == theirs["k"]
    np.testing.assert_allclose(ours["explained_variance"], theirs["explained_variance"], rtol=0, atol=1e-9)


def check_survived(result: StepRun, reason: str) -> dict:
    """metadata.json and the driver's stderr say that task attempts failed and were retried."""
    record = result.metadata["faults"]
    assert record["task_retries"] >= 1, record
    assert any(re.search(reason, f["reason"]) for f in record["failed_tasks"]), record
    assert "featurizer: warning:" in result.stdout + result.stderr, emu.tail(result.stdout + result.stderr)
    return record


def one_line_error(result: StepRun) -> str:
    """The job's one-line failure (spark-submit puts the Python driver's stderr into its stdout)."""
    lines = [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("featurizer: run failed:")
    ]
    assert lines, emu.tail(result.stdout + result.stderr)
    return lines[-1]


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under folder."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def hold_and_wait(markers: Path, running: faults.RunningStep, *, held: int = 2) -> list[faults.Batch]:
    """Wait until some tasks are done and ``held`` tasks are held (running) on the executors."""

    def ready() -> list[faults.Batch] | None:
        done = {b.partition for b in faults.batches(markers, "done")}
        holding = [b for b in faults.running(markers) if b.partition >= HOLD_FROM]
        return holding if len(done) >= 2 and len(holding) >= held else None

    return faults.wait_for(ready, f"step {running.name}: tasks held", 180, process=running.process)


def executor_of(batch: faults.Batch) -> int:
    """The executor JVM running a batch: its Python worker's parent is pyspark.daemon, whose parent it is."""
    jvm = faults.parent_pid(batch.ppid)
    assert "org.apache.spark.executor.CoarseGrainedExecutorBackend" in faults.cmdline(jvm), faults.cmdline(jvm)
    return jvm


def host_of(jvm: int) -> str:
    args = faults.cmdline(jvm)
    return args[args.index("--hostname") + 1]


# --- 1. an executor is killed during featurize ---------------------------------------------------------


def test_a_killed_executor_loses_and_duplicates_nothing(emulation: Emulation, injected: Faults, clean: dict) -> None:
    markers = injected.markers("executor")
    (markers / "hold").touch()
    args = injected.step_args(
        "executor", results_uri("executor"), markers=markers, env={"FEATURIZER_FAULTS_HOLD_FROM": str(HOLD_FROM)}
    )
    running = faults.start_step(emulation, "faults_executor", args)
    try:
        held = hold_and_wait(markers, running)
        jvm = executor_of(held[0])
        victim_host = host_of(jvm)
        assert faults.kill([jvm]) == [jvm]
        faults.wait_for(lambda: not faults.alive(jvm), "executor JVM gone", 30)
    finally:
        (markers / "hold").unlink()
    result = running.finish()
    assert result.returncode == 0, emu.tail(result.stdout + result.stderr)
    check_complete(result)
    check_equals_clean(result, clean)
    record = check_survived(result, r"(?i)executor.*(lost|exited)|ExecutorLostFailure")
    assert any(f["host"] == victim_host for f in record["failed_tasks"]), record
    # The held task that died with the executor ran again (another attempt, another process).
    retried = {b.partition for b in faults.batches(markers, "done") if b.attempt >= 1}
    assert held[0].partition in retried, (held[0], faults.batches(markers, "done"))
