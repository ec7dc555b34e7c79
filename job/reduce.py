"""StandardScaler(withMean, withStd) + PCA, as one covariance pass and one eigendecomposition.

Spark ML's PCA gives wrong components on this stack (pure-Java LAPACK fallback, see
FACTS.md), and the seed fit it twice (once with k=1280 to pick k, once with k). Here one
distributed pass computes the exact count, mean and covariance of the staged features: each
partition reduces its rows to float64 moments (count, mean, centred Gram matrix) with numpy's
BLAS, in chunks, and the partitions' moments are merged with the parallel-variance formula
(Chan, Golub & LeVeque) in a tree reduce. The driver standardizes the 1280x1280 covariance
into the correlation matrix, decomposes it once with numpy, picks k, and executors project.

Spark's own `RowMatrix.computeCovariance` gives the same matrix (to ~1e-16 relative, tested) but,
without a native BLAS, runs Spark's pure-Java fallback: ~17 s for 8,000 x 1,280 on 2 cores, where
these moments take ~1 s (bench/covariance.py). It stays here as the reference the tests compare with.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from job.featurize import FEATURE_DTYPE, forget_zip_finders, unpack


@dataclass(frozen=True)
class Standardized:
    """Column statistics with Spark StandardScaler's conventions (n-1, zero scale for std 0)."""

    count: int
    mean: np.ndarray
    scale: np.ndarray  # 1/std, or 0 where std == 0
    correlation: np.ndarray  # covariance of the standardized features


@dataclass(frozen=True)
class Pca:
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (n_features, k), unit columns, deterministic sign
    explained_variance_ratio: np.ndarray  # every component, descending

    @property
    def k(self) -> int:
        return int(self.components.shape[1])


def standardize_stats(mean: np.ndarray, covariance: np.ndarray, count: int) -> Standardized:
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    correlation = covariance * scale[:, None] * scale[None, :]
    return Standardized(count=count, mean=mean, scale=scale, correlation=correlation)


# Rows a task turns into one float64 block before its Gram product: 1,024 x 1,280 doubles = 10 MiB.
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred sum of squares (sum over rows of (x - mean)(x - mean)^T) of some rows."""

    count: int
    mean: np.ndarray | None  # (d,) float64; None when count == 0
    m2: np.ndarray | None  # (d, d) float64

    @property
    def covariance(self) -> np.ndarray:
        """Sample covariance (n - 1 in the denominator, as numpy's np.cov and Spark's RowMatrix)."""
        if self.count < 2 or self.m2 is None:
            raise ValueError(f"the covariance needs at least 2 rows, got {self.count}")
        return self.m2 / (self.count - 1)


EMPTY = Moments(0, None, None)


def block_moments(block: np.ndarray) -> Moments:
    """Moments of an (n, d) block, centred on its own mean (so a large common offset does not cancel)."""
    x = np.asarray(block, dtype=np.float64)
    if len(x) == 0:
        return EMPTY
    mean = x.mean(axis=0)
    centred = x - mean
    return Moments(len(x), mean, centred.T @ centred)  # numpy runs a.T @ a as one BLAS syrk


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan et al.'s pairwise update: exact, and stable because each side is already centred."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2
    m2 += np.outer(delta, delta * (a.count * b.count / n))
    return Moments(n, mean, m2)


def limit_blas_threads(threads: int) -> bool:
    """Set OpenBLAS's thread count in this process (numpy reads OPENBLAS_NUM_THREADS only at import).

    A Python worker is one Spark task of `spark.task.cpus` cores; OpenBLAS would otherwise start one
    thread per core of the machine in every concurrent task. Returns whether a library was found.
    """
    found = False
    for path in _openblas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(max(int(threads), 1))
                found = True
                break
    return found


def _openblas_libraries() -> list[str]:
    """OpenBLAS libraries numpy loaded (its wheel bundles one under numpy.libs / numpy/.libs)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            loaded = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
        if loaded:
            return sorted(loaded)
    except OSError:
        pass
    base = os.path.dirname(os.path.dirname(np.__file__))
    return sorted(
        glob.glob(os.path.join(base, "numpy.libs", "*openblas*"))
        + glob.glob(os.path.join(base, "numpy", ".libs", "*openblas*"))
    )


def _task_cpus() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.cpus() if context is not None else 1


def partition_moments(vectors: Iterable[bytes], chunk_rows: int = CHUNK_ROWS) -> Moments:
    """Moments of staged feature vectors (float32 bytes), `chunk_rows` rows per BLAS call."""
    total = EMPTY
    block: np.ndarray | None = None
    filled = 0
    for raw in vectors:
        vector = unpack(raw)
        if block is None:
            block = np.empty((chunk_rows, len(vector)), dtype=np.float64)
        block[filled] = vector
        filled += 1
        if filled == chunk_rows:
            total = merge_moments(total, block_moments(block))
            filled = 0
    if filled:
        total = merge_moments(total, block_moments(block[:filled]))
    return total


def feature_moments(features: DataFrame, chunk_rows: int = CHUNK_ROWS) -> Moments:
    """One pass over `features` (column "features", float32 bytes): count, mean and centred Gram matrix.

    Each task reduces its partition to one Moments with numpy (OpenBLAS limited to the task's
    cores); a tree reduce merges them, so the driver receives a few 1280x1280 matrices, not one
    per partition.
    """

    def run(rows: Iterator) -> Iterator[Moments]:
        forget_zip_finders()
        limit_blas_threads(_task_cpus())
        yield partition_moments((row[0] for row in rows), chunk_rows)

    partials = features.select("features").rdd.mapPartitions(run)
    return partials.treeAggregate(EMPTY, merge_moments, merge_moments, depth=2)


def covariance_stats(spark: SparkSession, features: DataFrame) -> Standardized:
    """Count, mean and covariance of the staged `features` (float32 bytes) in one distributed pass."""
    moments = feature_moments(features)
    if moments.count < 2:
        raise ValueError(f"PCA needs at least 2 feature vectors, got {moments.count}")
    return standardize_stats(moments.mean, moments.covariance, moments.count)


def covariance_stats_rowmatrix(spark: SparkSession, features: DataFrame) -> Standardized:
    """The same statistics with Spark's RowMatrix: the reference (slow without a native BLAS)."""
    # Imported here: pyspark.mllib pulls in pyspark.ml (~0.35 s), which no executor task needs.
    from pyspark.mllib.linalg import Vectors
    from pyspark.mllib.linalg.distributed import RowMatrix
    from pyspark.storagelevel import StorageLevel

    rows = features.select("features").rdd.map(lambda r: Vectors.dense(unpack(r[0])))
    rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        matrix = RowMatrix(rows)
        summary = matrix.computeColumnSummaryStatistics()
        count = int(summary.count())
        mean = np.asarray(summary.mean(), dtype=np.float64)
        covariance = matrix.computeCovariance().toArray()
    finally:
        rows.unpersist()
    return standardize_stats(mean, np.asarray(covariance, dtype=np.float64), count)


def choose_k(ratios: np.ndarray, variance: float) -> int:
    """Smallest k whose cumulative explained variance reaches `variance`."""
    cumulative = np.cumsum(ratios)
    k = int(np.searchsorted(cumulative, variance - 1e-12) + 1)
    return min(k, len(ratios))


def fit_pca(stats: Standardized, variance: float, k: int | None = None) -> Pca:
    """One eigendecomposition of the correlation matrix; k forced or chosen by variance."""
    eigenvalues, vectors = np.linalg.eigh(stats.correlation)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    vectors = vectors[:, order]
    total = eigenvalues.sum()
    if total <= 0:
        raise ValueError("all features are constant: PCA is undefined")
    ratios = eigenvalues / total
    chosen = k if k is not None else choose_k(ratios, variance)
    components = vectors[:, :chosen]
    # Deterministic orientation: the largest-magnitude loading of each component is positive.
    signs = np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(chosen)])
    components = components * np.where(signs == 0, 1.0, signs)
    return Pca(stats.mean, stats.scale, components, ratios)


def project_batch(vectors: np.ndarray, pca: Pca) -> np.ndarray:
    return ((vectors - pca.mean) * pca.scale) @ pca.components


def feature_matrix(column: pa.Array) -> np.ndarray:
    """An Arrow binary column of staged vectors as one (n, d) float32 matrix, without a copy per row.

    Staged vectors are equal-length float32 bytes, so the column's data buffer is already the matrix.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("staged features contain nulls")
    if len(column) == 0:
        return np.empty((0, 0), dtype=FEATURE_DTYPE)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    widths = np.diff(offsets)
    if widths[0] % FEATURE_DTYPE.itemsize or np.any(widths != widths[0]):
        raise ValueError("staged feature vectors differ in length")
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view(FEATURE_DTYPE).reshape(len(column), widths[0] // FEATURE_DTYPE.itemsize)


def list_column(matrix: np.ndarray) -> pa.ListArray:
    """An (n, d) matrix as an Arrow list<...> column (one flat buffer plus offsets)."""
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).reshape(-1)))


def project(spark: SparkSession, features: DataFrame, pca: Pca, keep: tuple[str, ...] = ()) -> DataFrame:
    """Staged rows -> (path, label, features array<float>, pca_features array<double> k, *keep), on the executors.

    `keep` names columns passed through unchanged after those four (the file columns of job/reuse.py).

    Arrow batches in and out (mapInArrow): the staged bytes are read as one matrix and the two list
    columns are built from flat buffers, where pandas made one Python object per row and column
    (measured on 8,000 x 1,280, k = 415: the stage's write took 2-4 s instead of 4-7.5 s).
    """
    model = spark.sparkContext.broadcast(pca)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        forget_zip_finders()  # as in featurize: this task may run in a worker that ran none of those
        limit_blas_threads(_task_cpus())
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = feature_matrix(batch.column(2))
            pca_features = project_batch(vectors.astype(np.float64), model.value)
            columns = [batch.column(0), batch.column(1), list_column(vectors), list_column(pca_features)]
            columns += [batch.column(3 + i) for i in range(len(keep))]
            yield pa.RecordBatch.from_arrays(columns, names=["path", "label", "features", "pca_features", *keep])

    schema = "path string, label string, features array<float>, pca_features array<double>"
    schema += "".join(f", {name} {features.schema[name].dataType.simpleString()}" for name in keep)
    return features.select("path", "label", "features", *keep).mapInArrow(run, schema=schema)
