"""The job end to end on real local Spark: the real sample images, then small crafted inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from job import write
from job.config import JobConfig, UsageError
from job.pipeline import JobFailed, run
from tests import contract
from tests.conftest import REPO, fruit_images

pytestmark = pytest.mark.slow


def read_table(folder: Path) -> pd.DataFrame:
    return pq.read_table(folder).to_pandas().sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def fruits_run(spark, fruits_dir, weights_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("fruits") / "out"
    cfg = JobConfig(input=str(fruits_dir), output=str(out), weights=str(weights_file))
    return run(spark, cfg), out


def test_output_layout(fruits_run) -> None:
    _, out = fruits_run
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert names == {"_SUCCESS", "features", "rejected", "metadata.json", "explained_variance.png"}
    assert not list(out.parent.glob("*.incomplete-*")) and not list(out.parent.glob("*.previous-*"))


def test_schema_counts_and_labels(fruits_run, fruits_dir) -> None:
    metadata, out = fruits_run
    assert contract.features_schema(out) == contract.FEATURES_SCHEMA
    features = read_table(out / "features")
    images = fruit_images()
    assert len(features) == len(images) > 0
    expected = {f"file:{p}": p.parent.name for p in images}
    assert dict(zip(features["path"], features["label"], strict=True)) == expected
    assert features["label"].nunique() == len({p.parent.name for p in images}) > 1
    assert {len(v) for v in features["features"]} == {1280}
    assert {len(v) for v in features["pca_features"]} == {metadata["pca"]["k"]}
    assert len(read_table(out / "rejected")) == 0
    assert list(pq.read_schema(next((out / "rejected").glob("*.parquet"))).names) == ["path", "reason"]


def column_encodings(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for part in folder.glob("*.parquet"):
        metadata = pq.ParquetFile(part).metadata
        for g in range(metadata.num_row_groups):
            for i in range(metadata.num_columns):
                column = metadata.row_group(g).column(i)
                found.setdefault(column.path_in_schema, set()).update(column.encodings)
    return found


def test_feature_vectors_are_written_without_a_dictionary(spark, tmp_path) -> None:
    """parquet-mr tries a dictionary on every float first (job.write.no_dictionary_options); with
    distinct floats it falls back to PLAIN, so only repeated values show whether the option reaches
    the column: here the default writer uses a dictionary, write_table does not (labels keep theirs)."""
    df = spark.createDataFrame(
        [(f"a/{i}.jpg", "a", [0.5] * 8, [1.0] * 3) for i in range(50)],
        "path string, label string, features array<float>, pca_features array<double>",
    )
    df.write.parquet(str(tmp_path / "default"))
    write.write_table(df, str(tmp_path / "ours"))
    default, ours = column_encodings(tmp_path / "default"), column_encodings(tmp_path / "ours")
    for column in ("features.list.element", "pca_features.list.element"):
        assert {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & default[column]
        assert not {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & ours[column] and "PLAIN" in ours[column]
    assert {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & ours["label"]


def test_features_equal_a_direct_keras_prediction(fruits_run, weights_file) -> None:
    """The seed's own pixels (PIL's resize), Keras' preprocessing and `model.predict`: no job code, no Spark."""
    from tensorflow import keras
    from tensorflow.keras.applications.mobilenet_v2 import preprocess_input

    _, out = fruits_run
    features = read_table(out / "features").set_index("path")
    sample = fruit_images()[::9]
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None)
    model.load_weights(str(weights_file))
    seed_pixels = [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in sample]
    batch = preprocess_input(np.stack(seed_pixels).astype(np.float32))
    direct = model.predict(batch, verbose=0)
    ours = np.stack([features.loc[f"file:{p}", "features"] for p in sample])
    assert float(np.abs(direct).mean()) > 1e-3  # calibrated weights: not degenerate
    np.testing.assert_allclose(ours, direct, rtol=1e-4, atol=1e-5)


def test_pca_equals_numpy_on_the_same_features(fruits_run) -> None:
    metadata, out = fruits_run
    features = read_table(out / "features")
    x = np.stack(features["features"]).astype(np.float64)
    std = x.std(axis=0, ddof=1)
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    ratios = s**2 / np.sum(s**2)
    cumulative = np.cumsum(ratios)
    k = int(np.argmax(cumulative >= 0.99) + 1)
    assert metadata["pca"]["k"] == k
    np.testing.assert_allclose(metadata["pca"]["explained_variance"][: len(ratios)], ratios, atol=1e-8)
    ours = np.stack(features["pca_features"])
    reference = z @ vt[:k].T
    signs = np.sign(np.sum(ours * reference, axis=0))
    # Components with (nearly) equal eigenvalues are not unique; compare the well-separated ones.
    gaps = np.abs(np.diff(s**2)) / (s[0] ** 2)
    separated = [j for j in range(k) if (j == 0 or gaps[j - 1] > 1e-6) and gaps[j] > 1e-6]
    assert len(separated) > k // 2
    tolerance = 1e-6 * np.abs(reference).max()
    np.testing.assert_allclose(ours[:, separated], (reference * signs)[:, separated], atol=tolerance)


def test_metadata_tells_the_whole_story(fruits_run, weights_file, fruits_dir) -> None:
    metadata, out = fruits_run
    assert json.loads((out / "metadata.json").read_text()) == metadata
    counts = metadata["counts"]
    n = len(fruit_images())
    assert counts == {"listed": n, "featurized": n, "rejected": 0, "model_processed": n}
    assert metadata["weights"]["sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert metadata["weights"]["source"] == str(weights_file) and metadata["weights"]["random"] is False
    assert metadata["input"] == str(fruits_dir) and metadata["model"].startswith("MobileNetV2")
    assert metadata["pca"]["variance_target"] == 0.99
    cumulative = metadata["pca"]["cumulative_explained_variance"]
    assert cumulative[metadata["pca"]["k"] - 1] >= 0.99 > cumulative[metadata["pca"]["k"] - 2]
    assert metadata["spark"]["master"] == "local[2]" and metadata["spark"]["featurize"]["batch_size"] == 64
    assert set(metadata["timings_s"]) == {"list", "weights", "featurize", "account", "pca_fit", "write"}
    assert {"pyspark", "numpy", "pandas", "pyarrow", "pillow", "opencv-python-headless", "python"} <= set(
        metadata["versions"]
    )


def test_plot_is_a_valid_png(fruits_run) -> None:
    _, out = fruits_run
    with Image.open(out / "explained_variance.png") as img:
        assert img.format == "PNG" and img.size == (800, 500)
        assert len(np.unique(np.asarray(img.convert("L")))) > 10  # something was drawn


# ---- small crafted inputs -------------------------------------------------------------------


@pytest.fixture()
def small_input(tmp_path) -> Path:
    """12 real images in two classes, plus files Spark alone would lose or choke on."""
    root = tmp_path / "in"
    images = fruit_images()
    for i, src in enumerate(images[:6] + images[-6:]):
        dest = root / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        if i == 0:
            shutil.copy(src, dest.with_name("UPPER.JPG"))
    bad = root / "bad class"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    (bad / "truncated.jpg").write_bytes(images[0].read_bytes()[:400])
    (bad / "_hidden.jpg").write_bytes(images[1].read_bytes())
    (bad / "ignored.txt").write_text("not matched by the glob")
    return root


def test_bad_files_are_rejected_with_reasons(spark, small_input, weights_file, tmp_path) -> None:
    out = tmp_path / "out"
    metadata = run(spark, JobConfig(input=str(small_input), output=str(out), weights=str(weights_file), k=3))
    rejected = dict(zip(*read_table(out / "rejected")[["path", "reason"]].T.values, strict=True))
    by_name = {p.rsplit("/", 1)[-1]: r for p, r in rejected.items()}
    assert set(by_name) == {"zero.jpg", "text.jpg", "truncated.jpg"}
    assert by_name["zero.jpg"].startswith("empty file")
    assert by_name["text.jpg"].startswith("not an image")
    assert by_name["truncated.jpg"].startswith("corrupt or truncated")
    counts = metadata["counts"]
    assert counts == {"listed": 16, "featurized": 13, "rejected": 3, "model_processed": 13}
    # Hidden names (Hadoop convention, like _SUCCESS) are not inputs: in neither table, not counted.
    assert not any("_hidden" in p for p in read_table(out / "features")["path"])
    assert metadata["pca"]["k"] == 3 and metadata["pca"]["k_forced"] is True
    assert "bad class" not in set(read_table(out / "features")["label"])


def test_failed_run_leaves_previous_output_intact(spark, small_input, weights_file, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    cfg = JobConfig(input=str(small_input), output=str(out), weights=str(weights_file), k=2)
    first = run(spark, cfg)
    before = read_table(out / "features")

    def crash(*args, **kwargs):
        raise RuntimeError("injected failure after featurization")

    monkeypatch.setattr(write, "commit", crash)
    with pytest.raises(RuntimeError, match="injected"):
        run(spark, cfg)
    assert (out / "_SUCCESS").exists()
    assert json.loads((out / "metadata.json").read_text())["run_id"] == first["run_id"]
    pd.testing.assert_frame_equal(read_table(out / "features"), before)
    assert sorted(p.name for p in out.parent.iterdir()) == ["in", "out"]  # no staging left behind

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="injected"):
        run(spark, JobConfig(input=str(small_input), output=str(fresh), weights=str(weights_file), k=2))
    assert not fresh.exists()


def test_rerun_replaces_output_with_identical_results(spark, small_input, weights_file, tmp_path) -> None:
    out = tmp_path / "out"
    cfg = JobConfig(input=str(small_input), output=str(out), weights=str(weights_file), k=2)
    first_meta = run(spark, cfg)
    first = read_table(out / "features")
    second_meta = run(spark, cfg)
    assert second_meta["run_id"] != first_meta["run_id"]
    pd.testing.assert_frame_equal(read_table(out / "features"), first)
    assert json.loads((out / "metadata.json").read_text())["run_id"] == second_meta["run_id"]


def test_refuses_to_overwrite_a_foreign_folder(spark, small_input, tmp_path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    with pytest.raises(UsageError, match="not a previous featurizer output"):
        run(spark, JobConfig(input=str(small_input), output=str(out), weights="random"))
    assert (out / "thesis.txt").read_text() == "do not delete"


def test_forced_k_larger_than_images_is_a_usage_error(spark, small_input, tmp_path) -> None:
    with pytest.raises(UsageError, match="larger than the number of input images"):
        run(spark, JobConfig(input=str(small_input), output=str(tmp_path / "o"), weights="random", k=100))


def test_all_rejected_fails_without_output(spark, tmp_path) -> None:
    root = tmp_path / "in" / "c"
    root.mkdir(parents=True)
    (root / "a.jpg").write_text("text")
    (root / "b.jpg").write_bytes(b"")
    with pytest.raises(JobFailed, match="only 0 of 2 images"):
        run(spark, JobConfig(input=str(tmp_path / "in"), output=str(tmp_path / "o"), weights="random"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_cli_bad_input_location_exits_2_and_writes_nothing(tmp_path, kind: str) -> None:
    source = tmp_path / "in"
    if kind == "empty":
        (source / "class").mkdir(parents=True)
        (source / "class" / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run(
        [sys.executable, "-m", "job", "--input", str(source), "--output", str(out), "--master", "local[1]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("featurizer: error:")]
    expected = "input not found" if kind == "missing" else "no file matching"
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
