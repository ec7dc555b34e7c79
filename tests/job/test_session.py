"""Partitioning the job relies on: one task per core for small inputs, capped tasks for big ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from job.config import DEFAULT_GLOB
from job.read import list_inputs, read_images
from job.session import MAX_BATCHES_PER_TASK, MAX_CORES_KEY, TaskSlots, plan_partitions, task_slots
from tests.conftest import fruit_images


def linked_images(dest: Path, n: int) -> Path:
    sources = fruit_images()
    for i in range(n):
        target = dest / sources[i % len(sources)].parent.name / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[i % len(sources)], target)
    return dest


def partition_sizes(spark, folder: Path) -> list[int]:
    images = read_images(list_inputs(spark, str(folder), DEFAULT_GLOB))
    return images.rdd.glom().map(len).collect()


@pytest.mark.parametrize("n", [40, 750])
def test_small_inputs_run_as_one_task_per_core(spark, tmp_path: Path, n: int) -> None:
    sizes = partition_sizes(spark, linked_images(tmp_path, n))
    assert len(sizes) == spark.sparkContext.defaultParallelism == 2
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1


def test_big_inputs_are_cut_into_capped_tasks(spark, tmp_path: Path) -> None:
    cap = MAX_BATCHES_PER_TASK * 64  # the default batch size
    sizes = partition_sizes(spark, linked_images(tmp_path, 2 * cap + 300))
    first, second, last = sorted(sizes, reverse=True)
    # Each small file costs the open cost plus its own bytes, so a full task holds just under the cap.
    assert cap - 2 <= second <= first <= cap and first + second + last == 2 * cap + 300


# ---- partitions planned from the listing and the cluster's largest size ------------------------


def test_task_slots_default_to_default_parallelism() -> None:
    assert task_slots({}, 2) == TaskSlots(2, "defaultParallelism")
    assert task_slots({"spark.task.cpus": "2"}, 8).slots == 4
    assert task_slots({}, 0).slots == 1


def test_task_slots_follow_dynamic_allocation_limits() -> None:
    """EMR's default: executors come later; the scan must be planned for the cluster's maximum."""
    conf = {
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.maxExecutors": "10",
        "spark.executor.cores": "4",
    }
    assert task_slots(conf, 2) == TaskSlots(40, "spark.dynamicAllocation.maxExecutors x spark.executor.cores")
    assert task_slots({**conf, "spark.task.cpus": "2"}, 2).slots == 20
    # Unlimited (Spark's default: Int.MaxValue), unknown executor size, or dynamic allocation off.
    assert task_slots({**conf, "spark.dynamicAllocation.maxExecutors": "2147483647"}, 2).slots == 2
    assert task_slots({k: v for k, v in conf.items() if k != "spark.executor.cores"}, 2).slots == 2
    assert task_slots({**conf, "spark.dynamicAllocation.enabled": "false"}, 2).slots == 2


def test_explicit_max_cores_wins() -> None:
    conf = {
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.maxExecutors": "10",
        "spark.executor.cores": "4",
        MAX_CORES_KEY: "64",
    }
    assert task_slots(conf, 2) == TaskSlots(64, MAX_CORES_KEY)
    assert task_slots({MAX_CORES_KEY: "not a number"}, 3).slots == 3


@pytest.mark.parametrize(
    ("n_files", "slots", "expected"),
    [
        (40, 2, 2),  # one wave, one task per slot
        (750, 2, 2),
        (750, 40, 40),  # a growing cluster: plan for its maximum, not for the 2 cores registered now
        (10, 40, 10),  # never more partitions than files
        (2 * 1024 + 300, 2, 3),  # the per-task cap: at most 16 model batches of 64
        (100_000, 40, 98),
        (1, 1, 1),
    ],
)
def test_plan_partitions(n_files: int, slots: int, expected: int) -> None:
    assert plan_partitions(n_files, 64, slots) == expected
    assert MAX_BATCHES_PER_TASK == 16


@pytest.mark.slow
def test_the_featurize_stage_runs_the_planned_partitions(spark, tmp_path: Path) -> None:
    """On the real scan: 30 small files, a cluster declared at 5 cores -> 5 tasks (not 2 = cores now)."""
    from job.config import JobConfig
    from job.pipeline import run
    from tests.job.fakes import tiny_jpegs, write_noisy_model

    images = tiny_jpegs(tmp_path / "in", 30)
    cfg = JobConfig(
        input=str(images), output=str(tmp_path / "o"), weights=str(write_noisy_model(tmp_path)), engine="onnx", k=2
    )
    spark.conf.set(MAX_CORES_KEY, "5")
    try:
        metadata = run(spark, cfg)
    finally:
        spark.conf.unset(MAX_CORES_KEY)
    featurize = metadata["spark"]["featurize"]
    assert featurize["task_slots"] == 5 and featurize["task_slots_source"] == MAX_CORES_KEY
    assert featurize["planned_partitions"] == 5
    assert featurize["tasks"] == 5
    assert spark.conf.get("spark.sql.files.minPartitionNum", None) is None  # the stage's setting did not stay
