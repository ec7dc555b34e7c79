"""Faults of the cluster itself, on the emulated EMR (issue 15): lost executors, Python workers and nodes,
a poison input, a dead driver, two runs at once, storage errors. Each fault is injected while the step
runs, at a chosen moment, and the run is checked against a clean run of the same step.

The steps are the job's own (blueprint.emr_spec.spark_step over a RunSpec with the deployment's defaults),
plus ``--conf`` arguments that only steer the test: ``spark.featurizer.maxCores`` (a handful of featurize
partitions, so a stage has tasks before and after a fault), and the fault injectors of tests/emr/faults.py
(``spark.executorEnv.*`` for the executors' Python workers, a Hadoop filesystem class for storage faults).
A test holds the featurize tasks of partitions >= HOLD_FROM while it kills something, so the kill always
lands on a task that is running (never between tasks), after some tasks have completed.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from blueprint import emr_spec
from blueprint.run_spec import RunDefaults, RunSpec
from tests.emr import cluster as emu
from tests.emr import faults
from tests.emr.conftest import BUCKET, PER_CLASS, Emulation, StepRun

pytestmark = [pytest.mark.slow, pytest.mark.emr]

N_IMAGES = 10 * PER_CLASS
BATCH = 2
PARTITION_CORES = 6  # spark.featurizer.maxCores: the 50 files in ~6-7 partitions (Spark splits by bytes)
HOLD_FROM = 2  # partitions 0 and 1 run freely, later ones wait while the test's hold file exists


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
    assert tasks >= HOLD_FROM + 3, tasks  # tasks before, during and after a held fault
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


# --- 2. a Python worker is killed (the OOM killer); a poison input kills it on every attempt ---------------


def test_a_killed_python_worker_loses_and_duplicates_nothing(
    emulation: Emulation, injected: Faults, clean: dict
) -> None:
    markers = injected.markers("python-worker")
    (markers / "hold").touch()
    args = injected.step_args(
        "python-worker",
        results_uri("python-worker"),
        markers=markers,
        env={"FEATURIZER_FAULTS_HOLD_FROM": str(HOLD_FROM)},
    )
    running = faults.start_step(emulation, "faults_python_worker", args)
    try:
        held = hold_and_wait(markers, running)
        victim = held[0]
        jvm = executor_of(victim)
        assert faults.kill([victim.pid]) == [victim.pid]
        faults.wait_for(lambda: not faults.alive(victim.pid), "Python worker gone", 30)
        time.sleep(1)
        assert faults.alive(jvm), "the executor itself should survive its Python worker"
    finally:
        (markers / "hold").unlink()
    result = running.finish()
    assert result.returncode == 0, emu.tail(result.stdout + result.stderr)
    check_complete(result)
    check_equals_clean(result, clean)
    check_survived(result, r"(?i)python worker exited unexpectedly|crashed")
    retried = {b.partition for b in faults.batches(markers, "done") if b.attempt >= 1}
    assert victim.partition in retried


def test_a_poison_input_fails_the_run_in_one_line_naming_it(
    emulation: Emulation, injected: Faults, clean: dict
) -> None:
    """An input that kills its Python worker on every attempt: exit 1 after Spark's attempts, one line naming
    the partition and the file, the previous output as it was."""
    source = emulation.mirror / BUCKET / "raw" / "fruits"
    poisoned = emulation.mirror / BUCKET / "raw-poison" / "fruits"
    images = sorted(source.rglob("*.jpg"))
    for image in images:
        target = poisoned / image.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(image)
    victim = poisoned / images[7].relative_to(source)
    poison = victim.with_name("poison-" + victim.name)
    victim.rename(poison)
    output = clean["output"]
    before = tree_digest(output)
    markers = injected.markers("poison")
    args = injected.step_args(
        "poison",
        results_uri("clean"),
        input_uri=f"s3://{BUCKET}/raw-poison/fruits/",
        markers=markers,
        env={"FEATURIZER_FAULTS_POISON": "/poison-"},
        # Once the task is excluded on both executors and they are idle, Spark waits this long (120 s by
        # default) for a new executor before it gives up (README, Guarantees: retries on the cluster).
        conf={"spark.scheduler.excludeOnFailure.unschedulableTaskSetTimeout": "5s"},
    )
    result = emulation.run_step("faults_poison", args)
    assert result.returncode == 1, emu.tail(result.stdout + result.stderr)
    line = one_line_error(result)
    crashed = [b for b in faults.batches(markers, "start") if any("/poison-" in p for p in b.paths)]
    attempts = {b.attempt for b in crashed}
    assert len(attempts) >= 2, crashed  # Spark tried it again before giving up
    [partition] = {b.partition for b in crashed}
    assert f"input partition {partition} " in line, line
    assert f"file:{poison}" in line, line
    assert tree_digest(output) == before, "the previous output changed"
    left = sorted(p.name for p in output.parent.iterdir() if p.name.startswith(output.name + "."))
    assert not left, left


# --- 4 and 5. two runs to one OUTPUT at once; the winner's driver dies; the next run cleans up ------------------


def test_a_second_run_to_a_busy_output_fails_and_a_dead_runs_staging_is_cleaned_up(
    emulation: Emulation, injected: Faults, clean: dict
) -> None:
    """Run A holds the output lock while its tasks are held; B, to the same OUTPUT, fails in one line and
    touches nothing of A's. Then A's driver is SIGKILLed: the previous output stays complete, A's staging
    and lock stay behind. C, a re-run, takes over the dead run's lock, removes its staging and commits."""
    output = clean["output"]
    uri = results_uri("clean")
    before = tree_digest(output)
    markers = injected.markers("driver")
    (markers / "hold").touch()
    args = injected.step_args("driver", uri, markers=markers, env={"FEATURIZER_FAULTS_HOLD_FROM": str(HOLD_FROM)})
    a = faults.start_step(emulation, "faults_driver_a", args)
    try:
        hold_and_wait(markers, a)
        [staging_a] = [p for p in output.parent.iterdir() if p.name.startswith(output.name + ".incomplete-")]
        run_a = staging_a.name.split(".incomplete-", 1)[1]
        lock = output.parent / (output.name + ".lock")
        staged_a = tree_digest(staging_a)

        # B: the same OUTPUT while A lives (B's scheduler need not wait for cores A holds: it stops first).
        b_args = injected.step_args("driver-b", uri, conf={"spark.scheduler.maxRegisteredResourcesWaitingTime": "1s"})
        try:
            b = faults.start_step(emulation, "faults_driver_b", b_args).finish(timeout=150)
        except subprocess.TimeoutExpired:
            pytest.fail("B kept running beside A: a second run to a busy OUTPUT must stop at once")
        assert b.returncode == 1, emu.tail(b.stdout + b.stderr)
        line = one_line_error(b)
        assert "is being written by another run" in line and run_a in line, line
        assert tree_digest(staging_a) == staged_a, "B touched A's staging"
        assert json.loads(lock.read_text())["run_id"] == run_a
        assert tree_digest(output) == before

        # A's driver dies (spark-submit's JVM and the Python driver).
        a.kill_driver()
    finally:
        (markers / "hold").unlink()
    dead = a.finish(timeout=60)
    assert dead.returncode != 0
    assert tree_digest(output) == before, "the previous output changed"
    assert staging_a.is_dir() and lock.is_file()  # what a dead driver leaves

    c = emulation.run_step("faults_driver_c", injected.step_args("driver-c", uri))
    assert c.returncode == 0, emu.tail(c.stdout + c.stderr)
    warnings = c.stdout + c.stderr
    assert f"took over the output lock of run {run_a}" in warnings, emu.tail(warnings)
    assert f"removed {staging_a.as_uri().replace('file:///', 'file:/')}" in warnings, emu.tail(warnings)
    check_complete(c)  # nothing left beside OUTPUT: no staging, no lock
    check_equals_clean(c, clean)
    assert c.metadata["run_id"] != run_a


# --- 6. storage errors during the write ----------------------------------------------------------------


def flaky_fs(injected: Faults, name: str, pattern: str, times: int) -> tuple[dict[str, str], list[str], Path]:
    tokens = injected.root / "flaky" / name
    tokens.mkdir(parents=True)
    conf = {
        "spark.hadoop.fs.file.impl": faults.FLAKY_FS_CLASS,
        "spark.hadoop.featurizer.faults.fail.pattern": pattern,
        "spark.hadoop.featurizer.faults.fail.dir": str(tokens),
        "spark.hadoop.featurizer.faults.fail.times": str(times),
        "spark.executor.extraClassPath": str(injected.jar),
    }
    return conf, ["--driver-class-path", str(injected.jar)], tokens


def test_a_transient_storage_error_in_a_write_task_is_retried(
    emulation: Emulation, injected: Faults, clean: dict
) -> None:
    conf, spark_args, tokens = flaky_fs(injected, "transient", r".*/features/_temporary/.*part-.*", 1)
    args = injected.step_args("storage", results_uri("storage"), conf=conf, spark_args=spark_args)
    result = emulation.run_step("faults_storage", args)
    assert result.returncode == 0, emu.tail(result.stdout + result.stderr)
    assert [p.name for p in tokens.iterdir()] == ["failure-0"]  # the fault did happen, once
    check_complete(result)
    check_equals_clean(result, clean)
    check_survived(result, r"injected storage fault")


def test_a_persistent_storage_error_fails_cleanly(emulation: Emulation, injected: Faults, clean: dict) -> None:
    """The driver cannot write metadata.json (every attempt): exit 1, one line, the previous output intact,
    no staging or lock left."""
    output = clean["output"]
    before = tree_digest(output)
    conf, spark_args, tokens = flaky_fs(injected, "persistent", r".*\.incomplete-.*/metadata\.json", 1000)
    result = emulation.run_step(
        "faults_storage_fails",
        injected.step_args("storage-fails", results_uri("clean"), conf=conf, spark_args=spark_args),
    )
    assert result.returncode == 1, emu.tail(result.stdout + result.stderr)
    assert "injected storage fault" in one_line_error(result)
    assert list(tokens.iterdir())
    assert tree_digest(output) == before
    left = sorted(p.name for p in output.parent.iterdir() if p.name.startswith(output.name + "."))
    assert not left, left


# --- 3. a whole worker (node) is lost during featurize: the spot-reclaim case --------------------------------


def test_a_lost_worker_node_completes_on_the_other(emulation: Emulation, injected: Faults, clean: dict) -> None:
    cluster = emulation.cluster
    markers = injected.markers("worker")
    (markers / "hold").touch()
    args = injected.step_args(
        "worker", results_uri("worker"), markers=markers, env={"FEATURIZER_FAULTS_HOLD_FROM": str(HOLD_FROM)}
    )
    running = faults.start_step(emulation, "faults_worker", args)
    n = None
    try:
        held = hold_and_wait(markers, running)
        jvm = executor_of(held[0])
        lost_host = host_of(jvm)
        n = cluster.worker_hosts.index(lost_host) + 1
        daemon = faults.worker_daemon_pid(cluster, n)
        # The node goes away at once: its worker daemon, executor JVM and Python workers.
        faults.kill([daemon, jvm, *faults.descendants(jvm)])
        faults.wait_for(lambda: not faults.alive(daemon) and not faults.alive(jvm), "node gone", 30)
    finally:
        (markers / "hold").unlink()
    try:
        result = running.finish()
        assert result.returncode == 0, emu.tail(result.stdout + result.stderr)
        check_complete(result)
        check_equals_clean(result, clean)
        record = check_survived(result, r"(?i)executor.*(lost|exited)|ExecutorLostFailure|worker lost")
        assert {f["host"] for f in record["failed_tasks"]} == {lost_host}, record
        # Everything after the loss ran on the other node.
        retried = [b for b in faults.batches(markers, "done") if b.attempt >= 1]
        assert held[0].partition in {b.partition for b in retried}
        assert {b.host for b in retried} == set(cluster.worker_hosts) - {lost_host}, retried
    finally:
        if n is not None:  # the node comes back for whatever runs next on this cluster
            cluster.daemons[n].start()
            emu.wait_until(lambda: cluster.status().get("aliveworkers") == emu.WORKERS, "worker back", 90, poll=0.5)
