"""Input location -> the full listing and the DataFrame of image bytes.

The listing comes from the file index Spark's binaryFile source builds (listed in the JVM, in
parallel for large trees, brought to Python in one Py4J call), so it stays fast on 20,000+ files
and on S3. That index holds every matching file, but Spark's scan then silently skips zero-byte
files: the job compares the scan with this listing, so each listed file ends up featurized or
rejected with its reason. Names starting with '.' or '_' are hidden by Hadoop convention (like
_SUCCESS or .crc files) and are not inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F

from job.config import WEIGHT_KEYWORDS
from job.errors import LocationError, UsageError


@dataclass(frozen=True, eq=False)
class Listing:
    """Every input file (Hadoop path strings, as binaryFile's `path` column writes them).

    `source` is the binaryFile relation the listing came from: the scan reuses its file index,
    so the input location is listed once.
    """

    files: frozenset[str]
    source: DataFrame

    def __len__(self) -> int:
        return len(self.files)


def hadoop_fs(spark: SparkSession, uri: str):
    """(FileSystem, Path) for a URI, through the JVM's Hadoop configuration."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def check_filesystems(spark: SparkSession, locations: dict[str, str]) -> None:
    """LocationError unless Hadoop has a filesystem for the scheme of each location ({option: uri}).

    Checked once the JVM runs, because the filesystems are the JVM's: on EMR, s3:// is EMRFS; the
    pip pyspark has none for s3:// or s3a://. Only the class is looked up: nothing connects yet.
    """
    sc = spark.sparkContext
    jvm, conf = sc._jvm, sc._jsc.hadoopConfiguration()
    filesystem = jvm.org.apache.hadoop.fs.FileSystem
    for what, uri in locations.items():
        if not uri or uri in WEIGHT_KEYWORDS:
            continue
        try:
            scheme = jvm.org.apache.hadoop.fs.Path(uri).toUri().getScheme()
        except Exception as exc:  # java.lang.IllegalArgumentException: not a path Hadoop can parse
            cause = str(getattr(getattr(exc, "java_exception", None), "getMessage", lambda: "")() or "")
            raise LocationError(f"{what} {uri}: not a valid path or URI ({cause.splitlines()[0][:200]})") from None
        scheme = scheme or filesystem.getDefaultUri(conf).getScheme() or "file"
        try:
            filesystem.getFileSystemClass(scheme, conf)
        except Exception:  # UnsupportedFileSystemException, or a configured class that is missing
            where = (
                "here: local runs read local paths or hdfs://; run on EMR with featurizer submit"
                if sc.master.startswith("local")
                else f"on this cluster (Hadoop has no fs.{scheme}.impl)"
            )
            raise LocationError(f"{what} {uri}: no filesystem for {scheme}:// {where}") from None


def binary_files(spark: SparkSession, glob: str) -> DataFrameReader:
    return spark.read.format("binaryFile").option("pathGlobFilter", glob).option("recursiveFileLookup", "true")


def hadoop_path(uri: str) -> str:
    """java.net.URI text (file:///a%20b.jpg) -> Hadoop Path text (file:/a b.jpg), as binaryFile writes it."""
    text = unquote(uri)
    return "file:/" + text[len("file:///") :] if text.startswith("file:///") else text


def list_inputs(spark: SparkSession, uri: str, glob: str) -> Listing:
    """All non-hidden files below `uri` (recursively) whose name matches the Hadoop glob."""
    fs, root = hadoop_fs(spark, uri)
    if not fs.exists(root):
        raise UsageError(f"input not found: {uri}")
    source = binary_files(spark, glob).load(uri)
    index = source._jdf.inputFiles()
    # URI text has control characters percent-encoded, so a newline never occurs inside an entry.
    joined = spark.sparkContext._jvm.org.apache.hadoop.util.StringUtils.join("\n", index)
    files = frozenset(hadoop_path(entry) for entry in joined.split("\n") if entry)
    if not files:
        raise UsageError(f"no file matching {glob!r} under {uri}")
    return Listing(files, source)


def read_images(listing: Listing) -> DataFrame:
    """DataFrame(path, label, content, size, modification_time) of the listed files; label = immediate
    parent folder; size and modification_time (ms) go to features/ for later runs' --reuse."""
    return listing.source.select(
        "path",
        label_of(F.col("path")).alias("label"),
        "content",
        F.col("length").alias("size"),
        F.unix_millis("modificationTime").alias("modification_time"),
    )


def label_of(path):
    """The name of a path's parent folder, kept as it is (spaces, accents, any script)."""
    return F.element_at(F.split(path, "/"), -2)


def read_file(spark: SparkSession, uri: str) -> bytes | None:
    """A whole (small) file through Hadoop, or None when there is no file at `uri`."""
    fs, path = hadoop_fs(spark, uri)
    if not fs.exists(path) or fs.getFileStatus(path).isDirectory():
        return None
    stream = fs.open(path)
    try:
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def skipped_reason(spark: SparkSession, path: str) -> str:
    """Why the binaryFile scan did not return a listed file."""
    fs, hadoop = hadoop_fs(spark, path)
    if not fs.exists(hadoop):
        return "removed while the job ran"
    if fs.getFileStatus(hadoop).getLen() == 0:
        return "empty file (0 bytes)"
    return "listed but not read by Spark (changed while the job ran?)"
