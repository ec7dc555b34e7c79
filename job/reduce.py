"""StandardScaler(withMean, withStd) + PCA, as one covariance pass and one eigendecomposition.

Spark ML's PCA gives wrong components on this stack (pure-Java LAPACK fallback, see
FACTS.md), and the seed fit it twice (once with k=1280 to pick k, once with k). Here Spark
computes the exact column statistics and covariance in a distributed pass (RowMatrix, which
matches numpy to ~1e-16); the driver standardizes the 1280x1280 covariance into the
correlation matrix, decomposes it once with numpy, picks k, and executors project.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.mllib.linalg import Vectors
from pyspark.mllib.linalg.distributed import RowMatrix
from pyspark.sql import DataFrame, SparkSession
from pyspark.storagelevel import StorageLevel

from job.featurize import forget_zip_subpackage_finders, unpack


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


def covariance_stats(spark: SparkSession, features: DataFrame) -> Standardized:
    """Mean and covariance of the staged `features` (float32 bytes) with Spark's RowMatrix (distributed)."""
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


def project(spark: SparkSession, features: DataFrame, pca: Pca) -> DataFrame:
    """Staged rows -> (path, label, features array<float>, pca_features array<double> k), on the executors."""
    model = spark.sparkContext.broadcast(pca)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        forget_zip_subpackage_finders()  # as in featurize: this task may run in a worker that ran none of those
        for pdf in batches:
            if len(pdf) == 0:
                continue
            vectors = np.stack([unpack(b) for b in pdf["features"]])
            pca_features = project_batch(vectors.astype(np.float64), model.value)
            yield pdf.assign(features=list(vectors), pca_features=list(pca_features))

    schema = "path string, label string, features array<float>, pca_features array<double>"
    return features.select("path", "label", "features").mapInPandas(run, schema=schema)
