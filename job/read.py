"""Input location -> the listing (a DataFrame of file statuses) and the DataFrame of image bytes.

The listing is the file index Spark's binaryFile source builds: listed in the JVM, by a Spark job
over the folders once a level holds more than spark.sql.sources.parallelPartitionDiscovery.threshold
(32) of them, and kept there (the scan reuses it). Its statuses become a DataFrame without passing
through Python, so the driver's Python holds no per-file state and makes no per-file call. That
index holds every matching file, but Spark's scan then silently skips zero-byte files: the job
anti-joins the scan's paths with the listing, so each listed file ends up featurized or rejected
with its reason. Names starting with '.' or '_' are hidden by Hadoop convention (like _SUCCESS or
.crc files) and are not inputs.

The listing's rows (path, size, modification time) are built from the index in chunks of
STATUS_CHUNK files, each a Dataset in the JVM. They are built only when used: a real run writes
them chunk by chunk to its staging folder and reads them back (`stage_listing`), so the driver
holds one chunk at a time and no plan keeps them in memory; a dry run counts empty files chunk by
chunk. Only what needs the whole listing as one in-memory DataFrame (`Listing.statuses` before
staging: a dry run with --reuse, calibration folders) keeps every row in the driver JVM.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from pyspark.sql import DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F

from job.config import WEIGHT_KEYWORDS
from job.errors import JobFailed, LocationError, UsageError

# One element of java.util.List.toString() over Hadoop FileStatus objects (FileStatus.toString; the
# index holds LocatedFileStatus, or a FileSystem's subclass of it), cut after its modification time
# by ELEMENT_SPLIT, which consumes each element's tail (access time, owner, permission, ...) up to
# the next element's start: the rows the driver keeps until the listing is used are then less than
# half as long. The tail may run past the closing brace (S3A's statuses append " isEmptyDirectory=...
# eTag=..."). The greedy path group ends at the last "; isDirectory=", so a path may hold any character.
STATUS_PATTERN = (
    r"^\[?\w*FileStatus\{path=(.*); isDirectory=false; length=(\d+); replication=\d+; "
    r"blocksize=\d+; modification_time=(\d+)$"
)
ELEMENT_SPLIT = r"; access_time=\d+; .*?(?:, (?=\w*FileStatus\{path=)|\]$)"
STATUS_CHUNK = 50_000  # statuses turned into text per JVM call: bounds the transient JVM string
EMPTY_FILE = "empty file (0 bytes)"
NOT_READ = "listed but not read by Spark (removed or changed while the job ran)"
# Every element must parse (check_status_text looks at the first, Spark SQL at each): a file is never
# dropped silently because its FileSystem prints its status differently.
UNREADABLE_STATUS = "cannot read the input listing: a file status in an unknown format (please report it)"


class Listing:
    """Every input file. `statuses` is DataFrame(path, size, modification_time) with Hadoop path strings
    (as binaryFile's `path` column writes them), size in bytes and modification time in ms.

    `source` is the binaryFile relation the listing came from: the scan reuses its file index,
    so the input location is listed once. `count` is the index's size (one JVM call). Until the
    listing is staged (`stage_listing`), `statuses` is built from the index on first use and then
    held in memory (a LocalRelation per chunk); `chunks()` yields the same rows one chunk at a time.
    """

    def __init__(self, source: DataFrame, count: int, statuses: DataFrame | None = None) -> None:
        self.source = source
        self.count = count
        self._statuses = statuses

    @property
    def statuses(self) -> DataFrame:
        if self._statuses is None:
            self._statuses = status_frame(self.source.sparkSession, file_index(self.source))
        return self._statuses

    def chunks(self) -> Iterator[DataFrame]:
        """The statuses as DataFrames of at most STATUS_CHUNK rows (the whole, once built or staged)."""
        if self._statuses is not None:
            yield self._statuses
        else:
            yield from status_chunks(self.source.sparkSession, file_index(self.source))

    def __len__(self) -> int:
        return self.count


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


def file_index(source: DataFrame):
    """The JVM file index (InMemoryFileIndex) behind a binaryFile relation."""
    return source._jdf.queryExecution().analyzed().relation().location()


def status_chunks(spark: SparkSession, index) -> Iterator[DataFrame]:
    """DataFrame(path, size, modification_time) per STATUS_CHUNK files of a file index, built in the JVM.

    Each chunk of statuses becomes one JVM string, split into one element per file and wrapped as a
    Dataset[String] there (Py4J returns lists and builders as references, not copies); the fields are
    parsed by Spark SQL on the executors. Python sees a handful of references per chunk, and holds
    only the yielded chunk's: a caller that drops each chunk after use lets the JVM free its rows.
    """
    jvm = spark.sparkContext._jvm
    files = jvm.scala.collection.JavaConverters.seqAsJavaList(index.allFiles())
    total = files.size()
    for start in range(0, total, STATUS_CHUNK):
        chunk = files.subList(start, min(total, start + STATUS_CHUNK))
        elements, frame = split_statuses(spark, jvm.java.lang.StringBuilder().append(chunk))
        check_status_text(elements.get(0), elements.size(), chunk.size())
        del elements, chunk  # the JVM list of texts: the Dataset holds its own copy of the rows
        yield parse_statuses(frame)


def status_frame(spark: SparkSession, index) -> DataFrame:
    """The whole listing as one in-memory DataFrame (the union of `status_chunks`)."""
    frames = list(status_chunks(spark, index))
    if not frames:
        return spark.createDataFrame([], "path string, size long, modification_time long")
    return functools.reduce(DataFrame.unionAll, frames)


def stage_listing(listing: Listing, uri: str) -> Listing:
    """The listing written to `uri` (Parquet, one file per chunk) and read back from there.

    Chunk by chunk: the driver JVM holds one chunk's rows at a time, and the returned listing's plan
    holds a Parquet scan instead of every row. Executors may be lost later (spot nodes): what they
    read back is in the staging folder, not in a cache that died with them.
    """
    spark = listing.source.sparkSession
    for frame in listing.chunks():
        frame.coalesce(1).write.mode("append").parquet(uri)
        del frame  # its rows can go as soon as Py4J releases the reference
    return Listing(listing.source, listing.count, spark.read.parquet(uri))


def split_statuses(spark: SparkSession, text) -> tuple[object, DataFrame]:
    """(JVM list, DataFrame(value)) of one JVM string holding a List<FileStatus>'s text: one row per file,
    split in the JVM (Python holds references only)."""
    jvm = spark.sparkContext._jvm
    splitter = jvm.java.util.regex.Pattern.compile(ELEMENT_SPLIT)
    elements = splitter.splitAsStream(text).collect(jvm.java.util.stream.Collectors.toList())
    return elements, DataFrame(
        spark._jsparkSession.createDataset(elements, jvm.org.apache.spark.sql.Encoders.STRING()).toDF(), spark
    )


def parse_statuses(text: DataFrame) -> DataFrame:
    """DataFrame(value) of status texts -> (path, size, modification_time), on the executors; a text that
    does not parse fails the job that reads it (raise_error) instead of dropping its file."""
    path = F.regexp_extract("value", STATUS_PATTERN, 1)
    unreadable = F.concat(F.lit(f"{UNREADABLE_STATUS}: "), F.substring("value", 1, 200))
    return text.select(
        F.when(path == "", F.raise_error(unreadable)).otherwise(path).alias("path"),
        F.regexp_extract("value", STATUS_PATTERN, 2).cast("long").alias("size"),
        F.regexp_extract("value", STATUS_PATTERN, 3).cast("long").alias("modification_time"),
    )


def check_status_text(first: str, elements: int, statuses: int) -> None:
    """JobFailed unless the JVM text of a chunk of statuses splits and parses as expected.

    A FileSystem whose statuses print differently would otherwise lose files silently.
    """
    if elements != statuses or re.match(STATUS_PATTERN, first) is None:
        raise JobFailed(
            f"cannot read the input listing: {statuses} file statuses gave {elements} entries "
            f"(first: {first[:200]!r}); please report this with the filesystem in use"
        )


def list_inputs(spark: SparkSession, uri: str, glob: str) -> Listing:
    """All non-hidden files below `uri` (recursively) whose name matches the Hadoop glob."""
    fs, root = hadoop_fs(spark, uri)
    if not fs.exists(root):
        raise UsageError(f"input not found: {uri}")
    source = binary_files(spark, glob).load(uri)  # lists here, into the relation's file index
    index = file_index(source)
    count = int(index.allFiles().size())
    if not count:
        raise UsageError(f"no file matching {glob!r} under {uri}")
    return Listing(source, count)


def skipped(listing: Listing, returned: DataFrame) -> DataFrame:
    """(path, reason) of listed files the scan did not return: a distributed anti-join.

    The reason comes from the listed size: Spark's scan skips zero-byte files; a listed file with
    bytes that the scan did not return was removed or changed after listing.
    """
    missing = listing.statuses.join(returned.select("path"), "path", "left_anti")
    return missing.select("path", F.when(F.col("size") == 0, EMPTY_FILE).otherwise(NOT_READ).alias("reason"))


def unlisted(listing: Listing, returned: DataFrame) -> DataFrame:
    """Paths the scan returned that the listing lacks (none, unless the input changed): an anti-join."""
    return returned.select("path").join(listing.statuses.select("path"), "path", "left_anti")


def spread_paths(listing: Listing, count: int) -> list[str]:
    """`count` listed paths spread evenly over the sorted paths (all if fewer), found on the executors.

    The same choice as sorting every path on the driver and taking every (n/count)-th, which this
    replaces: only the chosen paths reach the driver.
    """
    n = len(listing)
    if n <= count:
        wanted = set(range(n))
    else:
        step = n / count
        wanted = {int(i * step) for i in range(count)}
    paths = listing.statuses.rdd.map(lambda row: row.path).sortBy(lambda path: path).zipWithIndex()
    return sorted(paths.filter(lambda pair: pair[1] in wanted).keys().collect())


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
