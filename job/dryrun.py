"""`--dry-run`: list, account and plan a run without the model, and write nothing.

What a user wants to know before spending a cluster: how many images the run would featurize, how
many it would reject and why, which files are not inputs at all (hidden, or not matching --glob),
and how the featurize stage would be split. Every count is a Spark aggregate or one Hadoop call on
the root: the driver holds no per-file state here either. Files that are corrupt are found only by
decoding them, which a dry run does not do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from job import session
from job.config import WEIGHT_KEYWORDS, JobConfig
from job.errors import UsageError
from job.read import EMPTY_FILE, Listing, file_index, hadoop_fs

HIDDEN = "hidden (name, or a folder above it, starts with '.' or '_')"
NO_MATCH = "name does not match --glob"
# A later section's counts (e.g. images --reuse would keep) join the report through this hook.
MoreCounts = Callable[[Listing], Mapping[str, int]]


def empty_files(listing: Listing) -> int:
    """How many listed files have zero bytes (Spark's scan would skip them): one aggregate per chunk of
    the listing, so the driver JVM holds one chunk's rows at a time (a dry run writes nothing to stage them)."""
    total = 0
    for chunk in listing.chunks():
        row = chunk.agg(F.sum(F.when(F.col("size") == 0, 1).otherwise(0)).alias("empty")).first()
        total += int(row["empty"] or 0)
    return total


def not_inputs(spark: SparkSession, uri: str, matched: int) -> dict[str, int]:
    """{reason: count} of the files below `uri` that are not inputs.

    Every file is counted by one Hadoop call on the root (getContentSummary: one RPC on HDFS, a
    listing on S3 and local disks); the visible ones by a second binaryFile index without the glob.
    """
    fs, root = hadoop_fs(spark, uri)
    every = int(fs.getContentSummary(root).getFileCount())
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    visible = int(file_index(reader.load(uri)).allFiles().size())
    return {HIDDEN: max(every - visible, 0), NO_MATCH: max(visible - matched, 0)}


def check_weights_exist(spark: SparkSession, weights: str) -> None:
    """UsageError when a weights path does not exist (looked up, never read: the dry run loads no model)."""
    if weights in WEIGHT_KEYWORDS:
        return
    fs, path = hadoop_fs(spark, weights)
    if not fs.exists(path):
        raise UsageError(f"weights file not found: {weights}")


def plan(
    spark: SparkSession,
    cfg: JobConfig,
    listing: Listing,
    timer,
    listing_jobs: int = -1,
    more_counts: MoreCounts | None = None,
) -> dict:
    """The dry run's report (the run's metadata.json shape where it can be): counts, reasons, partitions.

    `timer` is the run's Timer (its stages are reported); `listing_jobs` the Spark jobs the listing ran
    (> 0: Spark listed the folders in parallel).
    """
    check_weights_exist(spark, cfg.weights)
    stage = timer.stage
    with stage("account") as info:
        empty = empty_files(listing)
        info.detail = f"{empty:,} empty"
    with stage("not_inputs") as info:
        skipped = not_inputs(spark, cfg.input, len(listing))
        info.detail = f"{sum(skipped.values()):,} files"
    with stage("plan") as info:
        conf = {**dict(spark.sparkContext.getConf().getAll()), **session.settings(spark)}
        slots = session.task_slots(conf, spark.sparkContext.defaultParallelism)
        partitions = session.plan_partitions(len(listing), cfg.batch_size, slots.slots)
        info.detail = f"{partitions} partitions"
    counts = {"listed": len(listing), "would_featurize": len(listing) - empty, "would_reject": empty}
    if more_counts is not None:
        counts.update(more_counts(listing))
    return {
        "dry_run": True,
        "input": cfg.input,
        "output": cfg.output,
        "counts": counts,
        "rejected": {EMPTY_FILE: empty} if empty else {},
        "not_inputs": {reason: n for reason, n in skipped.items() if n},
        "featurize": {
            "planned_partitions": partitions,
            "task_slots": slots.slots,
            "task_slots_source": slots.source,
            "batch_size": cfg.batch_size,
        },
        "listing_spark_jobs": listing_jobs,
        "timings_s": timer.seconds,
    }


def text(report: Mapping) -> str:
    """What `--dry-run` prints on stdout."""
    counts, plan_ = report["counts"], report["featurize"]
    lines = [
        f"dry run: {report['input']} (nothing was written; the model was not loaded)",
        f"  listed {counts['listed']:,} images",
        f"  would featurize {counts['would_featurize']:,} (files that prove corrupt are rejected when decoded)",
        f"  would reject {counts['would_reject']:,}",
    ]
    lines += [f"    {n:,} {reason}" for reason, n in report["rejected"].items()]
    lines += [f"  {name.replace('_', ' ')}: {n:,}" for name, n in counts.items() if name not in DEFAULT_COUNTS]
    lines.append(f"  not inputs: {sum(report['not_inputs'].values()):,}")
    lines += [f"    {n:,} {reason}" for reason, n in report["not_inputs"].items()]
    lines.append(
        f"  featurize: {plan_['planned_partitions']:,} partitions for {plan_['task_slots']} task slots "
        f"({plan_['task_slots_source']}), batches of {plan_['batch_size']}"
    )
    return "\n".join(lines)


DEFAULT_COUNTS = ("listed", "would_featurize", "would_reject")
