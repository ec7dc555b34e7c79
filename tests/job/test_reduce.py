"""StandardScaler + PCA, checked against numpy computed independently."""

from __future__ import annotations

import numpy as np
import pytest

from job.reduce import choose_k, covariance_stats, fit_pca, project_batch, standardize_stats


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
