"""The benchmark's peers (bench/peers.py): the measures and the report fast, the predict_batch_udf peer slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.dataset import make_image_set
from bench.peers import (
    feature_agreement,
    k_for_variance,
    match_rows,
    missing_requirement,
    normalize_path,
    numpy_pca,
    pca_deviation,
    pca_is_wrong,
    peers_section,
    read_features,
    standardize,
)
from tests.conftest import REPO, fruit_images


def _low_rank_data(n: int = 300, d: int = 40, seed: int = 0) -> np.ndarray:
    """Data with a few dominant, well separated directions, standardized as Spark ML's scaler does."""
    rng = np.random.default_rng(seed)
    scales = np.array([10.0, 6.0, 3.0] + [0.3] * (d - 3))
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return standardize((rng.normal(size=(n, d)) * scales) @ basis.T)


def test_k_for_variance_is_the_smallest_k_reaching_the_target() -> None:
    ratios = np.array([0.5, 0.3, 0.15, 0.05])
    assert k_for_variance(ratios, 0.5) == 1
    assert k_for_variance(ratios, 0.8) == 2
    assert k_for_variance(ratios, 0.9) == 3
    assert k_for_variance(ratios, 1.0) == 4
    assert k_for_variance(np.array([0.5, 0.3]), 0.99) == 2  # never reached: all of them


def test_standardize_matches_spark_ml_scaler_convention() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    scaled = standardize(x)
    assert scaled[:, 0] == pytest.approx([-1.0, 0.0, 1.0])  # std with n - 1: 2.0
    assert scaled[:, 1] == pytest.approx([0.0, 0.0, 0.0])  # a constant column stays 0, not NaN


def test_pca_deviation_of_numpy_own_fit_is_nil() -> None:
    scaled = _low_rank_data()
    ratios, vectors = numpy_pca(scaled)
    check = pca_deviation(scaled, vectors, ratios, 0.99)
    assert check["k_fit"] == check["k_numpy"]
    assert check["captured_by_fit_k"] == pytest.approx(check["captured_by_best_k"], abs=1e-12)
    assert check["max_ratio_diff_leading"] < 1e-12
    assert min(check["leading_cosines"]) == pytest.approx(1.0, abs=1e-9)
    assert check["orthonormality_error"] < 1e-12
    assert not pca_is_wrong(check)


def test_pca_deviation_exposes_wrong_components_and_ratios() -> None:
    """What FACTS.md saw from Spark ML: a 10x smaller first ratio and a second component orthogonal to numpy's."""
    scaled = _low_rank_data()
    ratios, vectors = numpy_pca(scaled)
    wrong = vectors.copy()
    wrong[:, [1, 5]] = wrong[:, [5, 1]]  # still orthonormal, the wrong direction second
    check = pca_deviation(scaled, wrong, ratios, 0.9)
    assert check["k_fit"] == check["k_numpy"] >= 2
    assert check["leading_cosines"][0] == pytest.approx(1.0) and check["leading_cosines"][1] < 1e-9
    assert check["captured_by_fit_k"] < check["captured_by_best_k"] - 0.05  # its k directions miss variance
    assert check["orthonormality_error"] < 1e-12
    reported = ratios.copy()
    reported[0] /= 10
    check = pca_deviation(scaled, vectors, reported, 0.9)
    assert check["first_ratio_fit"] == pytest.approx(check["first_ratio_numpy"] / 10)
    assert check["max_ratio_diff_leading"] == pytest.approx(ratios[0] * 0.9)
    assert check["k_fit"] > check["k_numpy"]
    assert pca_is_wrong(check)


def test_feature_agreement_is_relative_to_each_images_largest_feature() -> None:
    ours = np.array([[1.0, 2.0, 4.0], [10.0, 0.0, 0.0]])
    theirs = ours + np.array([[0.0, 0.04, 0.0], [0.0, 0.0, 0.5]])
    agreement = feature_agreement(ours, theirs)
    assert agreement["images"] == 2
    assert agreement["max_relative"] == pytest.approx(0.05)  # 0.5 / 10
    assert agreement["median_relative"] == pytest.approx((0.01 + 0.05) / 2)
    assert agreement["min_cosine"] < 1.0
    assert feature_agreement(ours, ours)["max_relative"] == 0.0


def test_rows_are_matched_by_path_whatever_the_uri_form_and_order() -> None:
    assert normalize_path("file:/tmp/a/b.jpg") == normalize_path("file:///tmp/a/b.jpg") == "/tmp/a/b.jpg"
    ours = (["file:/x/a.jpg", "file:/x/b.jpg", "file:/x/c.jpg"], np.array([[1.0], [2.0], [3.0]]))
    theirs = (["/x/c.jpg", "/x/a.jpg", "/x/d.jpg"], np.array([[30.0], [10.0], [40.0]]))
    a, b, missing = match_rows(ours, theirs)
    assert a.ravel().tolist() == [3.0, 1.0] and b.ravel().tolist() == [30.0, 10.0]
    assert missing == {"only_ours": 1, "only_theirs": 1}


def test_ray_is_reported_missing_only_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    assert missing_requirement("spark-udf") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "not installed" in missing_requirement("ray-data")


def _results(peer_walls: dict[str, float], jobs: dict[str, float], n: int = 100) -> dict:
    runs = [
        {
            "name": name,
            "wall_s": wall,
            "images": n,
            "model_processed": n,
            "k": 90,
            "agreement": {"max_relative": 2e-6, "min_cosine": 0.9999999},
        }
        for name, wall in peer_walls.items()
    ]
    runs.append({"name": "ray-data", "skipped": "not installed: Ray Data is an optional bench extra"})
    return {
        "config": {"layout": {"cores": 2}},
        "jobs": [{"engine": e, "images": n, "wall_s": w} for e, w in jobs.items()]
        + [{"engine": "tf", "images": 4 * n, "wall_s": 999.0}],
        "peers": {"images": n, "reference_engine": "tf", "runs": runs},
        "seed": {"images": n, "wall_s": 300.0, "model_processed": 3 * n, "k": 91},
    }


def test_peers_table_has_each_peers_ratio_to_each_engine_and_says_who_leads() -> None:
    text = "\n".join(peers_section(_results({"spark-udf": 60.0}, {"tf": 40.0, "onnx": 30.0})))
    assert "| peer | end-to-end s | peer / job (onnx) | peer / job (tf) |" in text
    assert "| spark-udf | 60.0 | 2.00 | 1.50 | 100 | 100 | 2.00e-06 | 0.9999999 | 90 |" in text
    assert "| seed notebook | 300.0 | 10.00 | 7.50 | 100 | 300 | - | - | 91 |" in text
    assert "| ray-data | - | - | - |" in text and "not installed" in text
    assert "The job (onnx, 30.0 s) leads every peer; the closest takes 2.00x." in text


def test_peers_table_says_plainly_when_a_peer_is_faster() -> None:
    text = "\n".join(peers_section(_results({"spark-udf": 25.0}, {"tf": 40.0, "onnx": 30.0})))
    assert "does NOT lead: spark-udf" in text


def test_peers_section_flags_spark_ml_pca_with_its_numbers() -> None:
    results = _results({"spark-udf": 60.0}, {"tf": 40.0})
    results["peers"]["runs"][0]["pca_check"] = {
        "variance_target": 0.99,
        "k_fit": 300,
        "k_numpy": 200,
        "captured_by_fit_k": 0.5,
        "captured_by_best_k": 0.995,
        "first_ratio_fit": 0.027,
        "first_ratio_numpy": 0.272,
        "max_ratio_diff_leading": 0.245,
        "leading_cosines": [1.0, 0.0],
        "orthonormality_error": 1e-3,
    }
    text = "\n".join(peers_section(results))
    assert "Spark ML's PCA is numerically wrong here" in text and "not usable" in text
    assert "0.2720" in text and "0.0270" in text and "k = 300, numpy k = 200" in text
    agreeing = {"k_fit": 200, "captured_by_fit_k": 0.995, "first_ratio_fit": 0.272, "max_ratio_diff_leading": 0.0}
    results["peers"]["runs"][0]["pca_check"].update(agreeing, leading_cosines=[1.0, 1.0], orthonormality_error=0.0)
    text = "\n".join(peers_section(results))
    assert "Spark ML's PCA agreed with numpy in this run" in text and "wrong here" not in text
    assert peers_section({"jobs": [], "config": {}}) == []  # no peers run: no section


@pytest.mark.slow
def test_predict_batch_udf_peer_matches_a_direct_keras_call(tmp_path: Path, weights_file: Path) -> None:
    """The spark-udf peer on 10 fixture images: its features equal Keras' within 1e-4 relative."""
    images = make_image_set(tmp_path / "images", 10, fruit_images()[::10])
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [sys.executable, "-m", "bench.peers", "spark-udf", "--input", str(images), "--output", str(output)]
    cmd += ["--weights", str(weights_file), "--cores", "2", "--batch-size", "4"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    report = json.loads(next(line for line in lines if line.startswith("RUN "))[4:])["report"]
    assert report["images"] == report["model_processed"] == 10
    check = json.loads(next(line for line in lines if line.startswith("PEER_CHECK "))[11:])
    assert check["k_fit"] == report["k"] and 1 <= report["k"] <= 10

    import tensorflow as tf

    from job.decode import decode_batch, preprocess_input

    paths, features = read_features(output)
    written = sorted(Path(normalize_path(p)).parts[-2:] for p in paths)
    assert written == sorted(p.parts[-2:] for p in images.rglob("*.jpg"))
    model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None)
    model.load_weights(str(weights_file))
    pixels, _, _ = decode_batch([Path(normalize_path(p)).read_bytes() for p in paths])
    keras = model(preprocess_input(pixels.astype(np.float32)), training=False).numpy()
    assert np.abs(keras).max() > 1e-3  # calibrated weights: real features, not ~1e-11
    assert feature_agreement(keras, features)["max_relative"] < 1e-4
