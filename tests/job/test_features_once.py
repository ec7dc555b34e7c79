"""Every image goes through the model once: no later stage may recompute features.

The fake ONNX model returns fresh random features on every call (tests/job/fakes.py), so features
that a later stage recomputed (for the PCA fit, the projection or the written table) differ from
the written `features`. The written `pca_features` and metadata's explained variance must then be
exactly what numpy computes from the written `features`. An accumulator count alone cannot show
this: a stage that recomputes with its own accumulator leaves `model_processed` right.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from job.config import JobConfig
from job.pipeline import run
from tests.job.fakes import tiny_jpegs, write_noisy_model

pytestmark = pytest.mark.slow


def test_pca_and_variance_come_from_the_written_features(spark, tmp_path) -> None:
    n, k = 40, 3
    out = tmp_path / "out"
    cfg = JobConfig(
        input=str(tiny_jpegs(tmp_path / "in", n)),
        output=str(out),
        weights=str(write_noisy_model(tmp_path)),
        engine="onnx",
        k=k,
    )
    metadata = run(spark, cfg)
    assert metadata["counts"] == {"listed": n, "featurized": n, "rejected": 0, "model_processed": n}

    table = pq.read_table(out / "features").to_pandas()
    x = np.stack(table["features"]).astype(np.float64)
    written = np.stack(table["pca_features"])
    z = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)  # noise: no constant column
    eigenvalues, vectors = np.linalg.eigh(z.T @ z / (n - 1))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    ratios = np.clip(eigenvalues, 0, None) / np.clip(eigenvalues, 0, None).sum()

    np.testing.assert_allclose(metadata["pca"]["explained_variance"][:k], ratios[:k], rtol=0, atol=1e-9)
    reference = z @ vectors[:, :k]
    signs = np.sign(np.sum(written * reference, axis=0))
    assert np.all(np.abs(np.diff(eigenvalues[: k + 1])) > 1e-6 * eigenvalues[0])  # well-separated components
    np.testing.assert_allclose(written, reference * signs, rtol=0, atol=1e-6 * np.abs(reference).max())
