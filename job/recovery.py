"""What a run survived, and what it could not: task attempts Spark retried, and the inputs of a task that
kept failing.

Spark re-runs a task whose attempt failed: an executor lost with its node (spot reclaim), a Python worker
killed for memory, a storage error while writing. The run then succeeds with every image exactly once
(each task writes its partition's rows through Spark's output committer, and only the attempt that
commits counts), but it was not a clean run: `failed_tasks` reads those attempts back from Spark's status
store for metadata.json's `faults` section and the driver's warning line.

A task that fails on every attempt (a file that crashes or exhausts the Python worker each time) aborts
the stage with a message that names a task index and a stage. `failed_partition` reads it and
`partition_files` lists the files of that input partition, so the one-line error names them.
"""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

# How many failed attempts metadata.json describes one by one (all are counted).
MAX_DESCRIBED = 20


def _store(spark: SparkSession):
    jsc = spark.sparkContext._jsc.sc()
    with suppress(Exception):  # task-end events reach the status store asynchronously
        jsc.listenerBus().waitUntilEmpty(30_000)
    return jsc.statusStore()


def last_job_id(spark: SparkSession) -> int:
    """The highest Spark job id so far (-1 if none): the run's own jobs come after it."""
    try:
        jobs = _store(spark).jobsList(None)
        return max((int(jobs.apply(i).jobId()) for i in range(jobs.size())), default=-1)
    except Exception:  # the record is best effort; the run does not depend on it
        return -1


def failed_tasks(spark: SparkSession, after_job: int) -> dict:
    """{"task_retries": failed task attempts of the jobs after `after_job`, "failed_tasks": the first few}.

    Each described attempt: stage, stage_attempt, partition (task index), attempt, executor, host and
    reason (the first line of Spark's error). Attempts killed on purpose (speculation) are not counted.
    """
    record: dict = {"task_retries": 0, "failed_tasks": []}
    try:
        store = _store(spark)
        tracker = spark.sparkContext.statusTracker()
        jobs = store.jobsList(None)
        stages: set[int] = set()
        for i in range(jobs.size()):
            job = jobs.apply(i)
            if int(job.jobId()) > after_job:
                ids = job.stageIds()
                stages.update(int(ids.apply(j)) for j in range(ids.size()))
        for stage in sorted(stages):
            info = tracker.getStageInfo(stage)
            for attempt in range((info.currentAttemptId if info else 0) + 1):
                try:
                    tasks = store.taskList(stage, attempt, 2**31 - 1)
                except Exception:  # an attempt (or a skipped stage) the store does not hold
                    continue
                for k in range(tasks.size()):
                    task = tasks.apply(k)
                    if str(task.status()) != "FAILED":
                        continue
                    record["task_retries"] += 1
                    if len(record["failed_tasks"]) < MAX_DESCRIBED:
                        message = task.errorMessage()
                        record["failed_tasks"].append(
                            {
                                "stage": stage,
                                "stage_attempt": attempt,
                                "partition": int(task.index()),
                                "attempt": int(task.attempt()),
                                "executor": str(task.executorId()),
                                "host": str(task.host()),
                                "reason": reason_line(str(message.get()) if message.isDefined() else ""),
                            }
                        )
    except Exception as exc:  # never fail a finished run over its own report
        record["error"] = f"could not read Spark's status store: {type(exc).__name__}"
    return record


def reason_line(message: str) -> str:
    """The line of a task's error that says what happened (a Python worker's exception, else the first)."""
    lines = []
    for line in message.splitlines():
        if line.startswith("\tat ") or line.startswith("Caused by"):
            break
        if line.strip():
            lines.append(line.strip())
    if not lines:
        return ""
    if "Traceback (most recent call last)" in lines[0] and len(lines) > 1:
        return lines[-1][:300]
    return lines[0][:300]


def summary(record: dict) -> str:
    """One line for the driver's log: how many attempts failed, and the first reason."""
    n = record["task_retries"]
    first = record["failed_tasks"][0] if record["failed_tasks"] else None
    where = f" (first: partition {first['partition']} on {first['host']}, {first['reason']})" if first else ""
    return f"{n} task attempt{'s' if n != 1 else ''} failed and {'were' if n != 1 else 'was'} retried{where}"


@dataclass(frozen=True)
class FailedPartition:
    partition: int
    attempts: int | None
    reason: str


# Spark's two ways of giving up on a task (TaskSetManager): too many failed attempts, or no executor
# left that excludeOnFailure allows it on. Both messages span several lines.
_ABORTED = re.compile(r"Task (\d+) in stage [\d.]+ failed (\d+) times", re.IGNORECASE)
_EXCLUDED = re.compile(r"task (\d+)\s+\(partition (\d+)\)\s+cannot run anywhere", re.IGNORECASE)
_LAST = re.compile(
    r"most recent failure:\s*(?:Lost task [\d.]+ in stage [\d.]+ \(TID \d+\) \([^)]*\):\s*)?([^\n]+)", re.IGNORECASE
)


def failed_partition(exc: BaseException) -> FailedPartition | None:
    """The partition whose task exhausted its attempts, from the stage's abort message (or None)."""
    text = str(exc)
    with suppress(Exception):
        throwable = getattr(exc, "java_exception", None)
        if throwable is not None:
            text += "\n" + str(throwable.toString())
    aborted, excluded = _ABORTED.search(text), _EXCLUDED.search(text)
    last = _LAST.search(text)
    reason = last.group(1).strip() if last else ""
    reason = re.sub(r"^(org\.apache\.spark\.|java\.\w+\.)[\w.]*?(\w+Exception|\w+Error): ", "", reason)
    if aborted:
        return FailedPartition(int(aborted.group(1)), int(aborted.group(2)), reason[:300])
    if excluded:
        return FailedPartition(int(excluded.group(2)), None, reason[:300])
    return None


def partition_files(images: DataFrame, partition: int, limit: int = 3) -> tuple[list[str], int]:
    """(up to `limit` paths, how many) of one input partition of `images`.

    Call with the stage's own runtime settings in force: the scan splits its files the same way for
    the same listing and settings (it reads only the paths here, no image bytes).
    """
    rows = (
        images.select("path")
        .withColumn("_partition", F.spark_partition_id())
        .where(F.col("_partition") == partition)
        .select("path")
        .collect()
    )
    paths = sorted(row.path for row in rows)
    return paths[:limit], len(paths)
