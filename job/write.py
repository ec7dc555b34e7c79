"""Everything the job writes, staged next to OUTPUT and committed with renames.

A run writes into `<OUTPUT>.incomplete-<run id>` and only when every file is there does it
swap that folder into OUTPUT (previous output moved aside, new one renamed in, `_SUCCESS`
written last, previous output deleted). A crashed run therefore never leaves an OUTPUT that
looks complete, and a previous complete OUTPUT stays in place until the new one is ready.
All I/O goes through Hadoop's FileSystem API, so local paths, HDFS and s3:// behave alike.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from job.config import UsageError
from job.read import hadoop_fs, read_file

SUCCESS = "_SUCCESS"
METADATA = "metadata.json"
PLOT = "explained_variance.png"
REJECTED_SCHEMA = "path string, reason string"
TOOL = "emr-image-featurizer"


def staging_uri(output: str, run_id: str) -> str:
    return f"{output.rstrip('/')}.incomplete-{run_id}"


def check_output_replaceable(spark: SparkSession, output: str) -> None:
    """Refuse to overwrite a non-empty folder that is not a previous output of this job."""
    fs, path = hadoop_fs(spark, output)
    if not fs.exists(path):
        return
    if not fs.getFileStatus(path).isDirectory():
        raise UsageError(f"output exists and is a file: {output}")
    if not fs.listStatus(path):
        return
    marker = read_file(spark, f"{output.rstrip('/')}/{METADATA}")
    if marker is None or json.loads(marker.decode("utf-8")).get("tool") != TOOL:
        raise UsageError(
            f"output exists and is not a previous featurizer output: {output} (remove it or choose another)"
        )


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    fs, path = hadoop_fs(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = hadoop_fs(spark, uri)
    if fs.exists(path):
        fs.delete(path, True)


def write_table(df: DataFrame, uri: str) -> None:
    df.write.mode("errorifexists").parquet(uri)


def write_metadata(spark: SparkSession, staging: str, metadata: Mapping[str, object]) -> None:
    write_bytes(spark, f"{staging}/{METADATA}", json.dumps(metadata, indent=2, sort_keys=True).encode())


def write_plot(spark: SparkSession, staging: str, ratios: np.ndarray, k: int, target: float | None) -> None:
    write_bytes(spark, f"{staging}/{PLOT}", explained_variance_png(ratios, k, target))


def explained_variance_png(ratios: np.ndarray, k: int, target: float | None) -> bytes:
    """The seed's plot: cumulative explained variance against components, chosen k marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cumulative = np.cumsum(ratios)
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative, color="tab:blue", label="cumulative")
    ax.axvline(k, color="tab:red", linestyle="--", label=f"k = {k} ({cumulative[k - 1]:.4f})")
    if target is not None:
        ax.axhline(target, color="tab:gray", linestyle=":", label=f"target {target}")
    ax.set_xlabel("number of principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def commit(spark: SparkSession, staging: str, output: str, run_id: str) -> None:
    """Swap the complete staging folder into OUTPUT; `_SUCCESS` is the last thing written."""
    fs, out = hadoop_fs(spark, output)
    jvm = spark.sparkContext._jvm
    previous = None
    if fs.exists(out):
        fs.delete(jvm.org.apache.hadoop.fs.Path(out, SUCCESS), False)
        previous = jvm.org.apache.hadoop.fs.Path(f"{output.rstrip('/')}.previous-{run_id}")
        if not fs.rename(out, previous):
            raise OSError(f"could not move the previous output aside: {output}")
    _, staged = hadoop_fs(spark, staging)
    if not fs.rename(staged, out):
        if previous is not None:
            fs.rename(previous, out)  # put the previous output back (without its _SUCCESS)
        raise OSError(f"could not move {staging} to {output}")
    write_bytes(spark, f"{output.rstrip('/')}/{SUCCESS}", b"")
    if previous is not None:
        fs.delete(previous, True)
