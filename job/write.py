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

from job.errors import CommitFailed, UsageError
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
    """The seed's plot: cumulative explained variance against components, chosen k marked.

    The x axis ends a little past the larger of k and the rank (components with any variance): with
    fewer images than 1280 features everything beyond the rank is a flat line at 1.0 that would
    squeeze the useful part into the left edge.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cumulative = np.cumsum(ratios)
    shown = plot_extent(ratios, k)
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, shown + 1), cumulative[:shown], color="tab:blue", label="cumulative")
    ax.set_xlim(0.5, shown + 0.5)
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


def plot_extent(ratios: np.ndarray, k: int) -> int:
    """Components the plot shows: max(k, rank) plus 10 % (at least 5), within the number of ratios."""
    top = float(np.max(ratios)) if len(ratios) else 0.0
    rank = int(np.count_nonzero(ratios > top * 1e-12)) if top > 0 else 0
    useful = max(k, rank)
    return int(min(len(ratios), useful + max(5, -(-useful // 10))))


def commit(spark: SparkSession, staging: str, output: str, run_id: str) -> None:
    """Swap the complete staging folder into OUTPUT; `_SUCCESS` is written last, in OUTPUT only.

    1. check staging holds `features/`, `rejected/` and `metadata.json` (else stop: OUTPUT untouched);
    2. delete OUTPUT/_SUCCESS, then move the previous output aside (`<OUTPUT>.previous-<run id>`);
    3. rename staging to OUTPUT (on S3 a file-by-file copy: OUTPUT is partial meanwhile, without
       `_SUCCESS`), then check OUTPUT holds `features/`;
    4. write OUTPUT/_SUCCESS, then delete the previous output.
    If 2 or 3 fails, whatever part of the new output reached OUTPUT is removed, the previous output
    is moved back and its `_SUCCESS` rewritten (it was complete), and CommitFailed is raised.
    The previous output is deleted only after the new one is in place with its `_SUCCESS`.
    """
    fs, out = hadoop_fs(spark, output)
    _, staged = hadoop_fs(spark, staging)
    base = output.rstrip("/")
    missing = [name for name in ("features", "rejected", METADATA) if not fs.exists(_child(spark, staged, name))]
    if missing:
        raise CommitFailed(f"staging folder {staging} lacks {', '.join(missing)}: nothing committed")
    success = _child(spark, out, SUCCESS)
    previous = None
    if fs.exists(out):
        fs.delete(success, False)
        previous = _child(spark, None, f"{base}.previous-{run_id}")
        if not _rename(fs, out, previous):
            if fs.exists(out) and not fs.exists(previous):  # nothing moved: still the previous output
                write_bytes(spark, f"{base}/{SUCCESS}", b"")
            raise CommitFailed(f"could not move the previous output aside: {output} -> {previous}")
    if not _rename(fs, staged, out) or not fs.exists(_child(spark, out, "features")):
        if fs.exists(out):
            fs.delete(out, True)  # a partial copy of the new output (or one without its data)
        if previous is not None and _rename(fs, previous, out):
            write_bytes(spark, f"{base}/{SUCCESS}", b"")  # the previous output, complete again
        raise CommitFailed(f"could not move {staging} to {output}; previous output restored")
    write_bytes(spark, f"{base}/{SUCCESS}", b"")
    if previous is not None:
        fs.delete(previous, True)


def _child(spark: SparkSession, parent, name: str):
    """A Hadoop Path: `name` under `parent`, or `name` itself when parent is None."""
    jvm = spark.sparkContext._jvm
    return jvm.org.apache.hadoop.fs.Path(name) if parent is None else jvm.org.apache.hadoop.fs.Path(parent, name)


def _rename(fs, source, target) -> bool:
    """Hadoop's rename, with an exception (S3 copy failing half-way, ...) reported as False."""
    try:
        return bool(fs.rename(source, target))
    except Exception:  # Py4J wraps the Java IOException; the caller restores and raises
        return False
