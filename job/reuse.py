"""Incremental runs (`--reuse PREVIOUS_OUTPUT`): which images keep their previous features.

An image keeps its previous 1280-d vector when its path, size and modification time equal those
recorded in the previous output's `features/`; everything else listed is featurized, and what the
previous output has but the listing lacks is dropped. The split is a distributed full outer join
of two DataFrames: the driver holds no per-image state, only the four counts.

Features are mixed only when they come from the same model: the previous run's weights digest,
model, engine and resize mode must equal this run's, else the run is refused before any work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from job.config import WEIGHT_KEYWORDS
from job.errors import UsageError
from job.featurize import FEATURE_DTYPE
from job.read import hadoop_fs, read_file

# What features/ records of each image's file so a later run can tell it is unchanged.
FILE_COLUMNS = ("size", "modification_time")  # bytes; milliseconds since the epoch (Hadoop's FileStatus)
STATUSES = ("reused", "new", "changed", "removed")
# (what must be equal, where metadata.json has it) for features of two runs to be mixed.
MUST_MATCH: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("weights digest", ("weights", "sha256")),
    ("model", ("model",)),
    ("engine", ("engine",)),
    ("resize mode", ("config", "resize")),
    # onnx-int8: the quantized model, which depends on its calibration images (a fixed --calibration set
    # keeps it; calibrating on a grown --input does not). Absent (None) on both sides for other engines.
    ("int8 model (quantization.cache_key)", ("quantization", "cache_key")),
)


def _field(metadata: Mapping, keys: Sequence[str]) -> object:
    value: object = metadata
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def incompatibility(
    previous: Mapping, current: Mapping, fields: Sequence[tuple[str, tuple[str, ...]]] = MUST_MATCH
) -> str | None:
    """Why features of the run described by `previous` (its metadata.json) cannot be mixed with this one's.

    Both are metadata.json-shaped dicts; a field missing from one side only (an older run's) is a mismatch.
    `fields`: what is compared (a dry run, which loads no weights, may not know every digest).
    """
    for name, keys in fields:
        before, now = _field(previous, keys), _field(current, keys)
        if before != now:
            shown = before if before is not None else "not recorded"
            return f"its {name} is {shown}, this run's is {now}"
    return None


def check_compatible(
    previous: Mapping, current: Mapping, where: str, fields: Sequence[tuple[str, tuple[str, ...]]] = MUST_MATCH
) -> None:
    """UsageError (exit 2), in one line, unless the previous run's features can be reused."""
    problem = incompatibility(previous, current, fields)
    if problem is not None:
        raise UsageError(f"--reuse {where}: cannot reuse its features ({problem}); run without --reuse")


def check_columns(columns: Sequence[str], where: str) -> None:
    """An output older than incremental runs lacks the file columns: refuse it in one line."""
    missing = [name for name in ("path", "label", "features", *FILE_COLUMNS) if name not in columns]
    if missing:
        raise UsageError(
            f"--reuse {where}: its features/ lack {', '.join(missing)} (an older output format); run without --reuse"
        )


def read_previous_metadata(data: bytes | None, has_success: bool, where: str) -> dict:
    """The previous output's metadata.json, refusing an output that is not complete."""
    if not has_success or data is None:
        raise UsageError(f"--reuse {where}: not a complete featurizer output (no _SUCCESS or metadata.json)")
    try:
        metadata = json.loads(data.decode("utf-8"))
    except ValueError:
        raise UsageError(f"--reuse {where}: its metadata.json is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"--reuse {where}: its metadata.json is not a JSON object")
    return metadata


def classify(listed: DataFrame, previous: DataFrame) -> DataFrame:
    """(path, status, size) for every path in either side: reused, new, changed (listed) or removed (previous
    only); size is the listed one (null for removed).

    `listed` and `previous` have path, size and modification_time; one full outer join on path.
    """
    now = listed.select("path", "size", "modification_time")
    before = previous.select(
        "path",
        F.col("size").alias("previous_size"),
        F.col("modification_time").alias("previous_modification_time"),
        F.lit(True).alias("in_previous"),
    )
    joined = now.withColumn("in_listing", F.lit(True)).join(before, "path", "full_outer")
    unchanged = (F.col("size") == F.col("previous_size")) & (
        F.col("modification_time") == F.col("previous_modification_time")
    )
    status = (
        F.when(F.col("in_previous").isNull(), "new")
        .when(F.col("in_listing").isNull(), "removed")
        .when(F.coalesce(unchanged, F.lit(False)), "reused")
        .otherwise("changed")
    )
    return joined.select("path", status.alias("status"), "size")


def count_statuses(rows: Sequence[tuple[str, int]]) -> dict[str, int]:
    """groupBy(status).count() rows -> {reused, new, changed, removed}, zero where absent."""
    found = dict(rows)
    unknown = set(found) - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown reuse status: {sorted(unknown)}")
    return {name: int(found.get(name, 0)) for name in STATUSES}


def counts(classified: DataFrame) -> dict[str, int]:
    """The four counts, in one aggregation (at most four rows reach the driver)."""
    return count_statuses([(row["status"], row["count"]) for row in classified.groupBy("status").count().collect()])


def to_featurize(classified: DataFrame) -> DataFrame:
    """(path) of the new and changed images."""
    return classified.where(F.col("status").isin("new", "changed")).select("path")


def reused_rows(previous: DataFrame, classified: DataFrame) -> DataFrame:
    """The previous rows of reused images as staged rows: path, label, features (float32 bytes), size, mtime."""
    kept = previous.join(classified.where(F.col("status") == "reused").select("path"), "path", "left_semi")
    return pack_features(kept.select("path", "label", "features", *FILE_COLUMNS))


def packed_column(column: pa.Array) -> pa.Array:
    """An Arrow list<float> column of equal-length vectors as binary float32 bytes, bit for bit."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("previous features contain nulls")
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=FEATURE_DTYPE)
    n = len(column)
    width = len(values) // n if n else 0
    if width * n != len(values):
        raise ValueError("previous feature vectors differ in length")
    offsets = np.arange(0, (n + 1) * width * FEATURE_DTYPE.itemsize, width * FEATURE_DTYPE.itemsize, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(values.tobytes())])


def pack_features(rows: DataFrame) -> DataFrame:
    """(path, label, features array<float>, size, modification_time) -> the same with features as staged bytes."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            columns = [batch.column(i) for i in range(batch.num_columns)]
            columns[2] = packed_column(columns[2])
            yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    schema = "path string, label string, features binary, size long, modification_time long"
    return rows.mapInArrow(run, schema=schema)


def read_previous(spark: SparkSession, where: str) -> DataFrame:
    """The previous output's features/ (refused in one line when it predates the file columns)."""
    previous = spark.read.parquet(f"{where.rstrip('/')}/features")
    check_columns(previous.columns, where)
    return previous


@dataclass(frozen=True)
class Plan:
    """An incremental run's split: the counts, what to featurize, and the reused rows (materialized)."""

    counts: dict[str, int]
    classified: DataFrame  # (path, status), persisted for the run: unpersist when featurized
    todo: DataFrame  # (path) of new and changed images
    reused: DataFrame  # staged rows read back from the run's own work folder

    @property
    def to_featurize(self) -> int:
        return self.counts["new"] + self.counts["changed"]


def dry_run_counts(spark: SparkSession, where: str, current: Mapping, listed: DataFrame) -> dict[str, int]:
    """--dry-run's counts: what the run would reuse, and the images it would featurize instead of all.

    Fields of `current` that are None (a weights digest the dry run cannot know without loading the
    model) are not compared; the run itself compares them all.
    """
    base = where.rstrip("/")
    fs, success = hadoop_fs(spark, f"{base}/_SUCCESS")
    previous_metadata = read_previous_metadata(read_file(spark, f"{base}/metadata.json"), fs.exists(success), where)
    known = [(name, keys) for name, keys in MUST_MATCH if _field(current, keys) is not None]
    check_compatible(previous_metadata, current, where, known)
    classified = classify(listed, read_previous(spark, where))
    todo = F.col("status").isin("new", "changed") & (F.col("size") > 0)  # Spark's scan skips empty files
    rows = classified.groupBy("status").agg(F.count("*").alias("count"), F.sum(todo.cast("long")).alias("todo"))
    found = rows.collect()  # at most four rows
    split = count_statuses([(row["status"], row["count"]) for row in found])
    return {
        "would_featurize": sum(int(row["todo"] or 0) for row in found),
        "would_reuse": split["reused"],
        "new": split["new"],
        "changed": split["changed"],
        "removed": split["removed"],
    }


def prepare(spark: SparkSession, where: str, current: Mapping, listed: DataFrame, work: str) -> Plan:
    """Check the previous output at `where`, split the listing, and copy the reused rows to `work`.

    The reused rows are written under the run's staging folder before anything is committed, so
    `where` may be the run's own --output: the commit that replaces it reads nothing from it.
    """
    base = where.rstrip("/")
    fs, success = hadoop_fs(spark, f"{base}/_SUCCESS")
    previous_metadata = read_previous_metadata(read_file(spark, f"{base}/metadata.json"), fs.exists(success), where)
    check_compatible(previous_metadata, current, where)
    previous = read_previous(spark, where)
    classified = classify(listed, previous).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        found = counts(classified)
        reused_rows(previous, classified).write.mode("errorifexists").parquet(work)
    except BaseException:
        classified.unpersist()
        raise
    return Plan(found, classified, to_featurize(classified), spark.read.parquet(work))


def dry_run_identity(spark: SparkSession, model: str, engine: str, resize: str, weights: str) -> dict:
    """This run's identity as far as a dry run knows it: a weights file's digest, never a generated one's."""
    digest = None
    if weights not in WEIGHT_KEYWORDS:
        data = read_file(spark, weights)
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
    return {"model": model, "engine": engine, "weights": {"sha256": digest}, "config": {"resize": resize}}
