"""Partitioning the job relies on: one task per core for small inputs, capped tasks for big ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from job.config import DEFAULT_GLOB
from job.read import list_inputs, read_images
from job.session import MAX_BATCHES_PER_TASK
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
