"""StandardScaler + PCA, checked against numpy computed independently, and the covariance pass against RowMatrix."""

from __future__ import annotations

import numpy as np
import pytest

from job.reduce import (
    EMPTY,
    block_moments,
    choose_k,
    covariance_stats,
    covariance_stats_rowmatrix,
    feature_matrix,
    feature_moments,
    fit_pca,
    limit_blas_threads,
    list_column,
    merge_moments,
    partition_moments,
    project_batch,
    standardize_stats,
)


def correlated(n: int = 300, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    x = latent @ rng.normal(size=(4, d)) + 0.1 * rng.normal(size=(n, d)) + rng.uniform(0, 5, d)
    x[:, 3] = 2.5  # a constant feature: StandardScaler maps it to 0
    return x


def numpy_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardize (ddof=1, zero for constant columns) and PCA by SVD: scores, ratios, components."""
    std = x.std(axis=0, ddof=1)
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1), 0.0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    ratios = s**2 / np.sum(s**2)
    return z @ vt.T, ratios, vt.T


def stats_of(x: np.ndarray):
    return standardize_stats(x.mean(axis=0), np.cov(x, rowvar=False), len(x))


def test_pca_matches_numpy_svd_up_to_sign() -> None:
    x = correlated()
    pca = fit_pca(stats_of(x), variance=0.99)
    scores, ratios, components = numpy_reference(x)
    np.testing.assert_allclose(pca.explained_variance_ratio[: len(ratios)], ratios, atol=1e-10)
    k = pca.k
    ours = project_batch(x, pca)
    for j in range(k):
        sign = np.sign(ours[:, j] @ scores[:, j])
        np.testing.assert_allclose(ours[:, j], sign * scores[:, j], atol=1e-8)
        np.testing.assert_allclose(pca.components[:, j], sign * components[:, j], atol=1e-8)


def test_k_is_the_smallest_reaching_the_target() -> None:
    ratios = np.array([0.5, 0.3, 0.15, 0.05])
    assert choose_k(ratios, 0.5) == 1
    assert choose_k(ratios, 0.8) == 2
    assert choose_k(ratios, 0.81) == 3
    assert choose_k(ratios, 1.0) == 4
    pca = fit_pca(stats_of(correlated()), variance=0.9)
    cumulative = np.cumsum(pca.explained_variance_ratio)
    assert cumulative[pca.k - 1] >= 0.9 > cumulative[pca.k - 2]


def test_forced_k_and_deterministic_sign() -> None:
    stats = stats_of(correlated())
    a, b = fit_pca(stats, 0.99, k=3), fit_pca(stats, 0.99, k=3)
    assert a.k == 3
    np.testing.assert_array_equal(a.components, b.components)
    assert np.all(a.components[np.argmax(np.abs(a.components), axis=0), range(3)] > 0)


def test_constant_features_only_is_an_error() -> None:
    with pytest.raises(ValueError, match="constant"):
        fit_pca(stats_of(np.ones((10, 4))), 0.99)


@pytest.mark.slow
def test_spark_covariance_matches_numpy(spark) -> None:
    x = correlated(n=240, d=30, seed=3).astype(np.float32)
    df = spark.createDataFrame([(row.astype("<f4").tobytes(),) for row in x], "features binary").repartition(4)
    stats = covariance_stats(spark, df)
    reference = stats_of(x.astype(np.float64))
    assert stats.count == 240
    np.testing.assert_allclose(stats.mean, reference.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.correlation, reference.correlation, atol=1e-10)
    np.testing.assert_allclose(stats.scale, reference.scale, rtol=1e-10)


def staged_bytes(x: np.ndarray) -> list[bytes]:
    return [row.astype("<f4").tobytes() for row in x]


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest element-wise difference over the largest element: the 1e-10 criterion used here."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def test_moments_match_np_cov_despite_a_large_common_offset() -> None:
    """Centred per block and merged with Chan et al.'s update: no cancellation of a large mean.

    The control shows the data is hard: the textbook one-pass Gram formula misses by far more than 1e-10.
    """
    rng = np.random.default_rng(5)
    x = (1e4 + rng.normal(size=(1000, 40)) @ rng.normal(size=(40, 40))).astype(np.float32).astype(np.float64)
    reference = np.cov(x, rowvar=False)
    moments = partition_moments(staged_bytes(x), chunk_rows=37)  # 27 blocks, the last one short
    assert moments.count == 1000
    np.testing.assert_allclose(moments.mean, x.mean(axis=0), rtol=1e-13)
    assert relative_error(moments.covariance, reference) < 1e-12
    naive = (x.T @ x - len(x) * np.outer(x.mean(axis=0), x.mean(axis=0))) / (len(x) - 1)
    assert relative_error(naive, reference) > 1e-10


def test_merging_is_order_free_and_empty_is_neutral() -> None:
    x = correlated(n=200, d=12, seed=8)
    parts = [block_moments(x[a:b]) for a, b in ((0, 1), (1, 90), (90, 91), (91, 200))]
    forward, backward = EMPTY, EMPTY
    for part in parts:
        forward = merge_moments(merge_moments(forward, part), EMPTY)
    for part in reversed(parts):
        backward = merge_moments(EMPTY, merge_moments(part, backward))
    reference = np.cov(x, rowvar=False)
    for merged in (forward, backward):
        assert merged.count == 200
        assert relative_error(merged.covariance, reference) < 1e-13
    assert merge_moments(EMPTY, EMPTY) == EMPTY and partition_moments([]) == EMPTY
    with pytest.raises(ValueError, match="at least 2"):
        _ = block_moments(x[:1]).covariance


def test_arrow_feature_matrix_and_list_column_round_trip() -> None:
    import pyarrow as pa

    x = correlated(n=10, d=6).astype(np.float32)
    column = pa.array(staged_bytes(x), type=pa.binary())
    np.testing.assert_array_equal(feature_matrix(column), x)
    np.testing.assert_array_equal(feature_matrix(column.slice(3, 4)), x[3:7])  # an offset into the buffers
    lists = list_column(feature_matrix(column.slice(3, 4)))
    assert lists.type == pa.list_(pa.float32())
    np.testing.assert_array_equal(np.stack(lists.to_numpy(zero_copy_only=False)), x[3:7])
    with pytest.raises(ValueError, match="differ in length"):
        feature_matrix(pa.array([b"\0" * 8, b"\0" * 4]))
    with pytest.raises(ValueError, match="nulls"):
        feature_matrix(pa.array([b"\0" * 8, None]))


def test_blas_threads_are_limited_in_process() -> None:
    import ctypes

    from job.reduce import _openblas_libraries

    np.ones((2, 2)) @ np.ones((2, 2))
    libraries = _openblas_libraries()
    assert libraries, "numpy's OpenBLAS was not found"
    lib = ctypes.CDLL(libraries[0])
    getter = next(
        getattr(lib, n) for n in ("openblas_get_num_threads64_", "openblas_get_num_threads") if hasattr(lib, n)
    )
    before = getter()
    try:
        assert limit_blas_threads(1) and getter() == 1
    finally:
        limit_blas_threads(before)


def realistic_features(n: int, d: int = 1280, seed: int = 0) -> np.ndarray:
    """Float32 rows at the scale of pooled ReLU6 activations: non-negative, correlated, offsets 0.2-2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32)) @ rng.normal(scale=0.15, size=(32, d)) + rng.uniform(0.2, 2.0, d)
    x += rng.normal(scale=0.05, size=(n, d))
    return np.clip(x, 0.0, 6.0).astype(np.float32)


@pytest.mark.slow
def test_moments_equal_rowmatrix_and_np_cov_in_one_spark_job(spark, tmp_path) -> None:
    """1e-10 relative to the matrix's largest entry, against both Spark's RowMatrix and numpy.

    The features are staged as the job stages them (a Parquet table of float32 bytes, 5 files, one
    of them empty) and read back: the covariance pass is then a single Spark job.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = realistic_features(600)
    for part, rows in enumerate([*np.array_split(np.arange(600), 4), np.arange(0)]):
        table = pa.table({"features": pa.array(staged_bytes(x[rows]), type=pa.binary())})
        pq.write_table(table, tmp_path / f"part-{part}.parquet")
    df = spark.read.parquet(str(tmp_path))
    spark.sparkContext.setJobGroup("moments-test", "covariance pass")
    try:
        moments = feature_moments(df, chunk_rows=64)  # several chunks per partition
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup("moments-test")) == 1
    reference = covariance_stats_rowmatrix(spark, df)
    ours = covariance_stats(spark, df)
    assert moments.count == ours.count == reference.count == 600
    covariance = np.cov(x.astype(np.float64), rowvar=False)
    assert relative_error(moments.covariance, covariance) < 1e-12
    reference_covariance = reference.correlation / np.outer(reference.scale, reference.scale)
    assert relative_error(moments.covariance, reference_covariance) < 1e-10
    assert relative_error(ours.correlation, reference.correlation) < 1e-10
    np.testing.assert_allclose(ours.mean, reference.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.scale, reference.scale, rtol=1e-10)
