"""Input location -> the full listing and the DataFrame of image bytes.

Spark's binaryFile source silently skips zero-byte files and names starting with '_' or '.',
so the job also lists the location itself through Hadoop's FileSystem API (local, HDFS,
s3:// on EMR alike): every listed file ends up featurized or rejected with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from job.config import UsageError


@dataclass(frozen=True)
class Listing:
    """Every file under the input that matches the glob: path -> size in bytes."""

    files: dict[str, int]

    def __len__(self) -> int:
        return len(self.files)


def hadoop_fs(spark: SparkSession, uri: str):
    """(FileSystem, Path) for a URI, through the JVM's Hadoop configuration."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def list_inputs(spark: SparkSession, uri: str, glob: str) -> Listing:
    """All files below `uri` (recursively) whose name matches the Hadoop glob."""
    fs, root = hadoop_fs(spark, uri)
    if not fs.exists(root):
        raise UsageError(f"input not found: {uri}")
    jvm = spark.sparkContext._jvm
    name_filter = jvm.org.apache.hadoop.fs.GlobFilter(glob)
    files: dict[str, int] = {}
    statuses = fs.listFiles(root, True)
    while statuses.hasNext():
        status = statuses.next()
        path = status.getPath()
        if name_filter.accept(path):
            files[path.toString()] = status.getLen()
    if not files:
        raise UsageError(f"no file matching {glob!r} under {uri}")
    return Listing(files)


def read_images(spark: SparkSession, uri: str, glob: str) -> DataFrame:
    """DataFrame(path, label, content): binaryFile, recursive, label = immediate parent folder."""
    df = spark.read.format("binaryFile").option("pathGlobFilter", glob).option("recursiveFileLookup", "true").load(uri)
    return df.select("path", label_of(F.col("path")).alias("label"), "content")


def label_of(path):
    """The name of a path's parent folder, kept as it is (spaces, accents, any script)."""
    return F.element_at(F.split(path, "/"), -2)


def skipped_reason(path: str, size: int) -> str:
    """Why binaryFile did not return a listed file."""
    name = path.rsplit("/", 1)[-1]
    if size == 0:
        return "empty file (0 bytes)"
    if name.startswith((".", "_")):
        return "hidden file name (starts with '.' or '_'): Spark does not read it"
    return "listed but not read by Spark (removed or changed during the run?)"
